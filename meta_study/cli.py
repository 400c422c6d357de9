"""The ``meta-study`` command line: thin wrappers over the library.

A user error (bad file, bad mapping, not a store) is one line on stderr and exit code 2; click's
own usage errors are folded into the same one-line form. Heavy imports happen inside commands so
``meta-study --help`` starts fast.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import click

from . import __version__
from .errors import UserError


def _fail(msg: str) -> None:
    raise UserError(msg)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr as a ``progress(description, completed, total)`` callback."""
    if not enabled or not sys.stderr.isatty():
        last: dict[str, Any] = {}

        def plain(description: str, completed: int, total: int | None) -> None:
            # Without a terminal, print each new phase once instead of redrawing a bar.
            if last.get("d") != description.split(" ")[0]:
                last["d"] = description.split(" ")[0]
                if enabled:
                    click.echo(f"  {description}", err=True)
        yield plain
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=_stderr_console()) as p:
        task = p.add_task("starting", total=None)

        def update(description: str, completed: int, total: int | None) -> None:
            p.update(task, description=description, completed=completed, total=total)
        yield update


def _stderr_console() -> Any:
    from rich.console import Console
    return Console(stderr=True)


class _Group(click.Group):
    """A click group whose errors are one line and exit 2 (click prints usage + error otherwise)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **kw: Any) -> Any:  # type: ignore[override]
        try:
            return super().main(args=args, prog_name=prog_name, standalone_mode=False, **kw)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help() if e.ctx else "", err=False)
            sys.exit(0)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "meta-study"
            click.echo(f"{where}: error: {e.format_message()}", err=True)
            sys.exit(2)
        except UserError as e:
            click.echo(f"meta-study: error: {e}", err=True)
            sys.exit(2)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("meta-study: aborted", err=True)
            sys.exit(130)
        except click.ClickException as e:
            click.echo(f"meta-study: error: {e.format_message()}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="meta-study")
def cli() -> None:
    """meta-study: sweeps, a Parquet meta-study store and scaling-law fits (Abnar et al. 2022)."""


# --------------------------------------------------------------------------------------------
# store
# --------------------------------------------------------------------------------------------


@cli.group()
def store() -> None:
    """Inspect a meta-study store."""


@store.command("info")
@click.argument("store_uri", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def store_info(store_uri: str, as_json: bool) -> None:
    """Rows per (US task, DS task, protocol, shots), sources and the last ingest."""
    import json

    from .store import open_store

    s = open_store(store_uri).summary()
    if as_json:
        click.echo(json.dumps({
            "uri": s.uri, "version": s.version, "rows": s.rows, "quarantined": s.quarantined,
            "last_ingest": s.last_ingest, "pending_finalize": s.pending_finalize,
            "groups": s.groups.astype(object).where(s.groups.notna(), None).to_dict("records"),
            "sources": s.sources.astype(str).to_dict("records"),
        }, indent=1, default=str))
        return
    click.echo(f"store      {s.uri}")
    click.echo(f"version    {s.version}")
    click.echo(f"rows       {s.rows}")
    click.echo(f"quarantine {s.quarantined}")
    click.echo(f"last ingest {s.last_ingest or '-'}")
    if s.pending_finalize:
        click.echo("note: the last commit was interrupted after its commit point; the next write finishes it")
    click.echo("")
    click.echo(_table(s.sources, ["source", "rows", "runs", "last_ingested_at"]))
    click.echo("")
    click.echo(_table(s.groups, ["us_task", "ds_task", "eval_protocol", "shots", "rows", "models"]))


@store.command("quarantine")
@click.argument("store_uri", metavar="STORE")
@click.option("--source", default=None, help="Only rows from this source.")
@click.option("--limit", default=20, show_default=True, help="Rows to show (0 = all).")
def store_quarantine(store_uri: str, source: str | None, limit: int) -> None:
    """Rejected rows with their reasons."""
    from .store import open_store

    q = open_store(store_uri).quarantine().to_pandas()
    if source is not None:
        q = q[q["source"] == source]
    click.echo(f"{len(q)} quarantined row(s)")
    shown = q if limit == 0 else q.head(limit)
    for r in shown.astype(object).where(shown.notna(), None).itertuples():
        click.echo(f"- [{r.source}] {r.run_id or '-'}: {r.reason}")


def _table(df: Any, cols: list[str]) -> str:
    if df is None or len(df) == 0:
        return "(none)"
    rows = [[("-" if v is None or (isinstance(v, float) and v != v) or str(v) == "<NA>" else str(v)) for v in r]
            for r in df[cols].itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


# --------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------


@cli.command()
@click.argument("sources", nargs=-1, metavar="SOURCE...")
@click.option("--store", "store_uri", required=True, metavar="STORE", help="Store path or URI (created if absent).")
@click.option("--mapping", "mapping_path", default=None, metavar="MAPPING.yaml",
              help="How source columns / MLflow keys become canonical columns (docs/ingest.md).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def ingest(sources: tuple[str, ...], store_uri: str, mapping_path: str | None, quiet: bool) -> None:
    """Ingest CSV / Parquet / JSONL exports (files or directories) into STORE.

    Rows are validated; bad rows go to the store's quarantine with a reason. Re-ingesting
    unchanged data writes nothing.
    """
    from .ingest import ingest_sources, load_mapping, open_sources
    from .store import Store

    if not sources:
        _fail("ingest: give at least one SOURCE")
    mapping = load_mapping(mapping_path) if mapping_path else None
    srcs = open_sources(list(sources), mapping)
    store_obj = Store(store_uri)
    with progress_bar(not quiet) as progress:
        reports = ingest_sources(srcs, store_obj, progress=progress)
    for r in reports:
        click.echo(r.line(), err=not r.ok)
    failed = [r for r in reports if not r.ok]
    if failed and len(failed) == len(reports):
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="meta-study")


if __name__ == "__main__":  # pragma: no cover
    main()
