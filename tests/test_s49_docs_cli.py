"""The docs' command lines against the command line (session 49): what a reader types must work as written.

- every outcome line ``meta-study refit`` can print (``refit: <status>: ...``) is quoted in
  docs/cluster.md: the ``empty`` one (a store with no group to fit) was missing, and the page said
  that a new store whose only source failed was never made, while a source whose every row was
  rejected makes it (its quarantine holds them) and the refit then says ``refit: empty``, exit 1;
- every ``meta-study`` command line of the pages (docs/*.md, README.md) parses as click parses it,
  with its values: a choice, a number or a range that the command no longer takes fails here
  (tests/test_s45_docs.py checks the flags' names only);
- the refit lines a scheduler runs (cluster.md's cron line, the systemd unit's ExecStart), which
  name ``.venv/bin/meta-study`` and so were read by neither scan, take refit's options as written.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from conftest import run_cli
from test_s45_docs import PAGES, _joined, _lines, _meta_study_commands, _rel

REPO = Path(__file__).resolve().parents[1]


def _cluster_md() -> str:
    return " ".join((REPO / "docs" / "cluster.md").read_text().split())


def test_every_refit_outcome_line_is_quoted_in_cluster_md() -> None:
    src = (REPO / "meta_study" / "refit.py").read_text()
    statuses = set(re.findall(r'RefitResult\(status="(\w+)"', src))
    assert {"noop", "locked", "empty", "published", "refitted"} <= statuses, statuses
    page = _cluster_md()
    missing = [s for s in sorted(statuses - {"refitted"}) if f"`refit: {s}: " not in page]
    assert not missing, f"docs/cluster.md quotes no `refit: <status>: ...` line for {missing}"
    assert "refit: 3 changed, 72 unchanged group(s) -> " in page   # "refitted" prints its counts


def test_a_refit_of_a_new_store_whose_source_is_all_rejected_is_as_cluster_md_says(tmp_path: Path) -> None:
    page = _cluster_md()
    # every row rejected: the store is made to hold the quarantine, the refit finds no groups, exit 1
    (tmp_path / "runs.csv").write_text("run_id,us_task,ds_task,eval_protocol,us_accuracy,ds_accuracy\n"
                                       "r1,a,b,kfold,0.5,0.5\nr2,a,b,kfold,0.6,0.5\n")
    st = tmp_path / "st"
    r = run_cli("refit", "--store", str(st), "--source", str(tmp_path / "runs.csv"), "--tracking-uri", "none",
                "--out", str(tmp_path / "out"), "--serial")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert f"refit: empty: {st}: no groups to fit" in r.stdout, r.stdout
    assert "refit: 1 source(s) failed" in r.stderr, r.stderr
    q = run_cli("store", "quarantine", str(st))
    assert q.returncode == 0 and "2 quarantined row(s)" in q.stdout, q.stdout + q.stderr
    assert "that refit finds no groups, `refit: empty: ...`, and exits 1" in page
    # a source that stores nothing at all (a mapping that does not fit the file): no store, exit 2
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    st2 = tmp_path / "st2"
    r = run_cli("refit", "--store", str(st2), "--source", str(tmp_path / "other.csv"), "--mapping",
                str(REPO / "examples" / "mappings" / "timm_long.yaml"), "--tracking-uri", "none",
                "--out", str(tmp_path / "out2"), "--serial")
    assert r.returncode == 2 and not st2.exists(), (r.returncode, r.stdout, r.stderr)
    assert "no store was made, nothing to refit: every source failed" in r.stderr
    assert "no store was made, nothing to refit: every source failed (...)`, exit 2" in page
    # an existing store with no group: the empty line, exit 0, no version
    r = run_cli("refit", "--store", str(st), "--tracking-uri", "none", "--out", str(tmp_path / "out3"), "--serial")
    assert r.returncode == 0 and f"refit: empty: {st}: no groups to fit" in r.stdout, (r.stdout, r.stderr)
    assert not (tmp_path / "out3" / "LATEST").exists()
    assert "`refit: empty: STORE: no groups to fit (0.1 s)`, exit 0" in page


#: What the pages' placeholders stand for, as values each option's type takes.
PLACEHOLDERS = {"STORE": "st", "S": "st", "DIR": "out", "OUT": "out", "N": "2", "T": "imagenet", "Y": "0.5",
                "A": "0.8", "L": "3", "P": "fewshot", "q": "0.8", "SOURCE...": "src", "MAPPING.yaml": "m.yaml",
                "ray://...": "ray://head:10001", "...": None, "SELECTION": None, "FIT": None}


def _variants(words: str) -> list[str]:
    """The command without its optional ``[...]`` parts, then with each of them alone, and each
    ``a | b`` alternative of a part on its own."""
    parts = re.findall(r"\[([^\[\]]*)\]", words)
    base = re.sub(r"\s*\[[^\[\]]*\]", "", words)
    return [base] + [f"{base} {alt}" for p in parts for alt in p.split(" | ")]


def _argvs(text: str) -> list[list[str]]:
    """The words of ``text`` with its placeholders filled in; a value ``lsq|huber|log`` gives one
    argument list per alternative."""
    out: list[list[str]] = [[]]
    for a in shlex.split(text):
        a = re.sub(r",\.\.\.$", "", a)          # --laws eq1,power,... : the names given
        value = PLACEHOLDERS.get(a, a)
        if value is None:
            continue
        alts = value.split("|") if re.fullmatch(r"[\w.-]+(\|[\w.-]+)+", value) else [value]
        out = [argv + [alt] for argv in out for alt in alts]
    return out


def _parse_errors(path: list[str], cmd: click.Command, words: str) -> list[str]:
    errors = []
    # `[--frontiers ...]`: some value, whichever; the option's name is test_s45_docs.py's
    words = re.sub(r"--[\w-]+ \.\.\.(?=[\s\]]|$)", "", words.strip().rstrip("`"))
    for v in _variants(words):
        try:
            argvs = [a[1 + len(path):] for a in _argvs(v)]
        except ValueError:   # prose with an apostrophe after the command: not a command line
            continue
        for argv in argvs:
            try:
                cmd.make_context(" ".join(path), list(argv))   # click consumes the list it parses
            except click.exceptions.Exit:
                pass
            except click.MissingParameter:   # a command named in prose, without its arguments
                pass
            except (click.BadParameter, click.BadOptionUsage) as e:
                errors.append(f"meta-study {' '.join(path)} {' '.join(argv)}: {e.format_message()}")
            except click.UsageError:   # prose after the command's words ("... lists them)"); a flag
                pass                   # the command lacks is test_s45_docs.py's
    return errors


def test_the_value_check_catches_a_value_the_command_does_not_take() -> None:
    from meta_study.cli import cli

    fit = cli.commands["fit"]
    assert _parse_errors(["fit"], fit, "meta-study fit STORE --out DIR [--loss lsq|huber|log]") == []
    assert _parse_errors(["fit"], fit, "meta-study fit STORE --out DIR --loss squared")
    assert _parse_errors(["fit"], fit, "meta-study fit STORE --out DIR [--max-group-figures -1]")
    sens = cli.commands["sensitivity"]
    assert _parse_errors(["sensitivity"], sens, "meta-study sensitivity STORE --out DIR [--workers 0 | --serial]")


def test_every_meta_study_command_line_of_the_pages_parses_with_its_values() -> None:
    wrong, seen = [], 0
    for page in PAGES:
        for n, text in _joined(_lines(page)):
            for path, cmd, words in _meta_study_commands(text):
                seen += 1
                wrong += [f"{_rel(page)}:{n}: {e}" for e in _parse_errors(path, cmd, words)]
    assert seen > 40, f"only {seen} meta-study command lines found: the scan is broken"
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("page", ["README.md", "docs/cluster.md", "cluster/systemd/meta-study-refit.service"])
def test_the_scheduled_refit_lines_take_the_options_refit_has(page: str) -> None:
    """The refit lines a scheduler runs, as written: the README's tour, cluster.md's one machine and
    its cron line, and the systemd unit's ExecStart (the cron line and the unit run
    ``.venv/bin/meta-study``, which the scan above, as test_s45_docs.py's, does not read as a command)."""
    from meta_study.cli import cli

    refit = cli.commands["refit"]
    lines = [t for _, t in _joined(_lines(REPO / page)) if re.search(r"meta-study refit\s+--store", t)]
    assert lines, page
    for line in lines:
        words = line[line.index("meta-study refit"):]
        words = re.split(r"\s#\s|\s>>?\s|`", words)[0]
        words = re.sub(r"\$\{?META_STUDY_REFIT_ARGS\}?", "", words)     # optional extra arguments
        words = re.sub(r"\$\{(\w+)\}", r"$\1", words)                  # systemd's ${VAR}
        refit.make_context("refit", shlex.split(words)[2:])   # raises on an option, value or argument refit lacks
