"""Shared plumbing of the ``analysis/*.py`` scripts: arguments, store loading, one-line errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..errors import UserError


def parser(doc: str) -> argparse.ArgumentParser:
    """STORE --out DIR plus the group selection every script accepts."""
    # no abbreviations, as the commands (click) take none: ``--ou DIR`` was --out to this parser
    # but not to :func:`_out_argument`'s, so a failed run left the DIR it had made behind
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0], epilog=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("store", metavar="STORE", help="meta-study store path or URI")
    p.add_argument("--out", required=True, metavar="DIR", type=_out, help="output directory")
    p.add_argument("--us-task", action="append", type=_name, default=[], help="only these upstream tasks")
    p.add_argument("--ds-task", action="append", type=_name, default=[], help="only these downstream tasks")
    p.add_argument("--eval-protocol", "--protocol", dest="eval_protocol", action="append", type=_name, default=[],
                   help="only these eval protocols (--protocol is an alias)")
    p.add_argument("--shots", action="append", type=int, default=[], help="only these shot counts")
    return p


def _out(text: str) -> str:
    """``--out`` as the commands take it (``cli._out_dir``): a local directory, ``~`` expanded.
    ``--out=~/res`` (no shell expands ``~`` after ``=``) made ./~/res and failed writing to
    ~/res, exit 1; ``--out s3://b/x`` made ./s3: and ended in pyarrow's traceback; ``--out ""``
    said "cannot write there"."""
    import os

    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: an empty path; give a directory")
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text}: outputs go to a local directory, not a URI")
    return os.path.expanduser(text)


def _name(text: str) -> str:
    """A task or protocol name as the store holds it, as ``meta-study`` reads it: spaces at either
    end stripped, accents composed (NFC), zero-width characters dropped. ``--ds-task "oxford pets "``
    or a decomposed "é" matched nothing here, where the commands found the task."""
    from ..validation import canonical_name

    return canonical_name(text)


def count(text: str) -> int:
    """An argparse type: an integer of 0 or more (``--max-group-figures -1`` drew every group's
    figure but the last: a Python slice ``[:-1]``; the CLI refuses it)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer of 0 or more, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def command_flags(p: argparse.ArgumentParser) -> tuple[str, frozenset[str]]:
    """A script's name and flags (its options' every spelling, as ``p`` takes them): what a
    :class:`~meta_study.analysis.results.ResultsDir`'s refusal may advise it to give."""
    flags = frozenset(o for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings)
    return p.prog, flags


def selection(args: argparse.Namespace) -> Any:
    from .groups import Selection

    return Selection(us_task=tuple(args.us_task), ds_task=tuple(args.ds_task), eval_protocol=tuple(args.eval_protocol),
                     shots=tuple(args.shots))


def rows(store: Any, args: argparse.Namespace) -> Any:
    """The store's rows under the selection (all layers), as pandas.

    Raises:
        UserError: a value given to a selection option that no group of the store has, as
            :func:`analyse` refuses it (``--ds-task a --ds-task typo`` left ``typo`` out, exit 0);
            no row at all matching the selection, with the values the store has.
    """
    from .groups import unknown_selection

    unknown = unknown_selection(args.store, store, selection(args))
    if unknown:
        raise UserError(unknown)
    filters = {k: v for k, v in (("us_task", args.us_task), ("ds_task", args.ds_task),
                                 ("eval_protocol", args.eval_protocol), ("shots", args.shots)) if v}
    out = store.to_pandas(filters)
    if out.empty:   # with what the store has, as the commands say it: fig6_layerwise.py --ds-task typo
        # said the bare "no rows match the selection", not the tasks the store holds
        from .groups import no_match

        raise UserError(no_match(args.store, store, selection(args)))
    return out


def run(main: Callable[[], None]) -> None:
    """Run a script's main as ``meta-study`` runs its commands: a user error is one line on stderr
    and exit code 2; the machine failing (a full disk, an S3 endpoint gone) is one line with the
    OS's words and exit code 1, its traceback only with
    ``META_STUDY_TRACEBACK=1`` (it printed a traceback, where the commands print one line); a store
    locked, busy or changed under a commit is exit 1 too, and Ctrl-C one line and exit 130."""
    from .outputs import removed_if_failed

    # --out is made before the script reads the store: a failure (no such rows, a damaged store)
    # left an empty directory behind, as if the script had written results there
    with removed_if_failed(_out_argument()):
        _run(main)


def _out_argument() -> str | None:
    """The ``--out`` of this process's command line (None: not given, or given without a value:
    the script's own parser says so, with its usage; this one printed "usage: fig1_grid.py [--out
    OUT]", as if that were the script's)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--out")
    try:
        known, _ = pre.parse_known_args()
        # as the script's parser reads it: ``--out=~/res`` is the ~/res it writes to, not ./~/res
        return None if known.out is None else _out(known.out)
    except (argparse.ArgumentError, argparse.ArgumentTypeError):   # the script's parser says so
        return None


def _run(main: Callable[[], None]) -> None:
    import os

    from ..errors import OptionError, StoreBusyError, StoreConflictError, StoreLockedError, option_message

    try:
        main()
    except OptionError as e:   # named by the flag the user typed, in its units, as the commands say it
        # the commands' own words (``cli.flag_errors``): re-worded here, ``--holdout-quantile 80``
        # lacked the commands' "did you mean 0.8?", and a value that is no number was a TypeError
        print(f"{sys.argv[0]}: error: {option_message(e.option, e.value, e.allowed)}", file=sys.stderr)
        sys.exit(2)
    except UserError as e:
        print(f"{sys.argv[0]}: error: {_first_line(e)}", file=sys.stderr)
        # a store changing under the read or another writer, not the input: exit 1, as the commands
        # say it (a scheduler read exit 2 as a wrong setting, never to be retried)
        sys.exit(1 if isinstance(e, (StoreLockedError, StoreConflictError, StoreBusyError)) else 2)
    except KeyboardInterrupt:   # Ctrl-C: as the commands, one line and 130 (it printed a traceback)
        print(f"{sys.argv[0]}: aborted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if os.environ.get("META_STUDY_TRACEBACK"):
            raise
        print(f"{sys.argv[0]}: error: {_first_line(e)} (META_STUDY_TRACEBACK=1 shows where)", file=sys.stderr)
        sys.exit(1)


def _first_line(e: BaseException) -> str:
    """An error's first line, its control characters shown, not obeyed."""
    from ..validation import printable

    return printable((str(e).strip().splitlines() or [type(e).__name__])[0])


def sizes(text: str | None) -> tuple[int, ...] | None:
    """``--sizes 10,30,100`` as sample sizes (None: the default steps).

    Raises:
        UserError: one line naming ``--sizes``, for text that is not comma-separated integers.
    """
    if not text:   # as the commands' --sizes: "" is the default steps
        return None
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        out = ()
    if not out:   # "--sizes ," ran the default sizes, as if no --sizes had been given
        raise UserError(f"--sizes must be comma-separated integers, got {text!r}")
    return out


def analyse(args: argparse.Namespace, options: Any, *, figures: bool = True, max_group_figures: int = 60,
            address: str | None = None, use_ray: bool = False, parser: argparse.ArgumentParser | None = None,
            commands: Callable[[str], Any] | None = None) -> tuple[Any, Any]:
    """The one pipeline (:func:`~meta_study.analysis.results.analyze`, then the results
    directory), as the CLI runs it: returns (analysis, paths written). ``parser`` is the script's:
    a refusal of ``--out`` names only its flags (without it, the options that differ). A
    selection that matches nothing is a :class:`UserError`. Parts of ``--out`` of another store,
    store version or selection are said in one line (:func:`~.results.stale_parts_line`), with the
    ``meta-study`` commands that make them of this one where ``commands`` (``meta_study.cli.flags_of``,
    a floor above this one) tells their flags."""
    from ..store import open_store
    from .results import ResultsDir, analyze, stale_parts_line
    from .tables import options_text
    from .outputs import footer

    from .groups import unknown_selection

    store = open_store(args.store)
    sel = selection(args)
    unknown = unknown_selection(args.store, store, sel)
    if unknown:   # a typo among several names: its group was left out, exit 0 (the CLI refuses it)
        raise UserError(unknown)
    if use_ray:   # as the commands check it: before the work, and even where every output is reused (a
        # mistyped --address passed, exit 0, beside a reused part)
        from ..ray_session import check_target, refuse_empty_address   # what cli.check_ray does without --workers

        refuse_empty_address(address)
        check_target(address)
    # a refusal names the flags this script has: `sensitivity --loss huber --out D`, then
    # `fig3_sensitivity.py --out D` was told to give the same options, and it has no --loss
    results = ResultsDir(args.out, command=None if parser is None else command_flags(parser))
    # figures=: a part recorded without figures (`fit --no-figures`, tables_f1_f2.py) is made again
    # when this script draws them; reused as it was, fig1_grid.py drew no figure and said nothing
    # group_figures: as the CLI asks it, a fits part drawn with fewer per-group figures than asked is fitted
    # again (`fig1_grid.py --max-group-figures 1`, then `--max-group-figures 20`: "reused fits", one figure)
    analysis = analyze(store, sel, options, results=results, use_ray=use_ray, address=address, figures=figures,
                       group_figures=max_group_figures if figures else None)
    if analysis.n_groups == 0:   # with what the store has, as the commands say it
        from .groups import no_match

        raise UserError(no_match(args.store, store, sel))
    out = results.write(analysis, sel, figures=figures, max_group_figures=max_group_figures,
                        footer_text=footer(store, options_text(options.fit), analysis.provenance.get("store version")))
    for part in analysis.reused:   # as the CLI says it: the tables in DIR are the earlier command's
        print(f"reused {part} from {args.out} (same options, selection and store version)")
    # parts of DIR of another store, store version or selection beside this script's: said as the
    # commands say it (fig3_sensitivity.py B --out D beside the fits of store A in D said nothing)
    stale = stale_parts_line(results, analysis, args.store, args.out, sel, command_flags=commands)
    if stale:
        print(stale)
    if figures and options.fits and analysis.n_groups > max_group_figures:   # said, as the CLI says it
        print(f"per-group figures for the first {max_group_figures} of {analysis.n_groups} groups (in the order "
              "of fits.csv; --max-group-figures for more, or --ds-task to choose)")
    return analysis, out


def done(out: Any) -> None:
    for p in list(out.tables) + list(out.figures):
        if p.endswith((".parquet", ".png")):
            print(f"wrote {p}")
