"""The docs pages against the code (session 45): what a reader would act on must exist as written.

Each test scans every page (docs/*.md and README.md) for one kind of claim and checks it against the
code, so that a renamed flag, a moved file, a changed default or a broken link fails here:

- every ``--flag`` given to a ``meta-study`` command (also on ``\\``-continued lines, and the
  SELECTION / FIT lines of docs/analysis.md) is one of that command's options;
- the numbers of analysis.md's synopsis (``[--trials 10]``) are the options' defaults;
- every flag given to a sweep script, ``python -m meta_study.tune.submit`` or ``analysis/refit.py``
  exists there, and docs/sweeps.md's argument table lists exactly the sweeps' options;
- every relative link and ``#anchor`` resolves, and every repository path in backticks exists;
- every ``from meta_study... import`` name, every dotted ``meta_study.<module>...`` name and the
  keyword arguments of every documented call exist;
- every ``META_STUDY_*`` variable a page names is read by the code.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from meta_study.cli import cli

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
FLAG = re.compile(r"(?<![\w/.-])(--[a-zA-Z][\w-]*)")


def _lines(page: Path) -> list[str]:
    return page.read_text().splitlines()


def _rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def _joined(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(first line number, text) per logical line: shell continuations (a trailing ``\\``) joined."""
    i = 0
    while i < len(lines):
        start, text = i + 1, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i]
        yield start, text
        i += 1


def _command_text(rest: str, in_code_span: bool) -> str:
    """The command's own words: up to the end of its code span, a shell comment, `&&` or a redirection."""
    if in_code_span:
        rest = rest.split("`", 1)[0]
    rest = re.split(r"\s#\s|\s&&\s|\s>>?\s", rest, maxsplit=1)[0]
    return rest


def _options(cmd: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for p in cmd.params:
        names.update(p.opts)
        names.update(p.secondary_opts)
    return names


def _meta_study_commands(text: str) -> Iterator[tuple[list[str], click.Command, str]]:
    """Each ``meta-study CMD [SUB]`` in ``text``: its path, the click command and its own words."""
    for m in re.finditer(r"(?<![\w/-])meta-study((?:\s+[a-z][a-z-]*)+)", text):
        c: click.Command = cli
        path: list[str] = []
        for w in m.group(1).split():
            if isinstance(c, click.Group) and w in c.commands:
                c = c.commands[w]
                path.append(w)
            else:
                break
        if not path or isinstance(c, click.Group):
            continue
        in_span = text[:m.start()].count("`") % 2 == 1
        yield path, c, _command_text(text[m.start():], in_span)


def test_every_flag_a_page_gives_a_meta_study_command_is_one_of_its_options() -> None:
    wrong, seen = [], 0
    for page in PAGES:
        lines = _lines(page)
        for n, text in _joined(lines):
            for path, cmd, words in _meta_study_commands(text):
                seen += 1
                opts = _options(cmd)
                for flag in FLAG.findall(words):
                    if flag not in opts:
                        wrong.append(f"{_rel(page)}:{n}: meta-study {' '.join(path)} has no {flag}")
            # analysis.md's synopsis: the selection and fit options shared by the analysis commands
            m = re.match(r"(SELECTION|FIT):\s+(.*)", text)
            if m:
                opts = _options(cli.commands["fit"])
                wrong += [f"{_rel(page)}:{n}: {m.group(1)} names {f}, not an option of meta-study fit"
                          for f in FLAG.findall(m.group(2)) if f not in opts]
    assert seen > 40, f"only {seen} meta-study command lines found: the scan is broken"
    assert not wrong, "\n".join(wrong)


def test_the_synopsis_numbers_of_docs_analysis_are_the_defaults() -> None:
    """``[--trials 10]`` in the synopsis is read as "10 unless you say otherwise"."""
    text = (REPO / "docs" / "analysis.md").read_text()
    block = text.split("## Commands and outputs", 1)[1].split("```", 2)[1]
    wrong, checked = [], 0
    current: click.Command | None = None
    for line in block.splitlines():
        m = re.match(r"meta-study (\w+)", line)
        if m:
            current = cli.commands[m.group(1)]
        elif line.startswith(("SELECTION:", "FIT:")):
            current = cli.commands["fit"]
        if current is None:
            continue
        for flag, value in re.findall(r"\[?(--[\w-]+) (-?\d+(?:\.\d+)?)\b(?![,\w])", line):
            p = next(q for q in current.params if flag in q.opts)
            checked += 1
            if p.default is None or float(p.default) != float(value):
                wrong.append(f"docs/analysis.md: meta-study {current.name} {flag} {value}: the default is {p.default}")
    assert checked >= 10, f"only {checked} defaults found in the synopsis: the scan is broken"
    assert not wrong, "\n".join(wrong)


def _sweep_parser() -> argparse.ArgumentParser:
    from meta_study.tune.runner import build_parser

    spec = importlib.util.spec_from_file_location("_s45_head_wd", REPO / "sweeps" / "head_wd.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return build_parser(mod.SPEC)


def _submit_options() -> set[str]:
    from meta_study.tune import submit

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        submit.main(["--help"])
    return set(FLAG.findall(out.getvalue())) | {"-h", "--help"}


def test_sweeps_md_argument_table_lists_exactly_the_sweeps_options() -> None:
    text = (REPO / "docs" / "sweeps.md").read_text()
    table = text.split("## Arguments (every script)", 1)[1].split("\n## ", 1)[0]
    documented = {f for row in table.splitlines() if row.startswith("| `--")
                  for f in FLAG.findall(row.split(" | ", 1)[0])}
    parser = _sweep_parser()
    # the --fail-* options are failure injection for the tests, hidden from --help
    shown = {o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings
             if o.startswith("--") and o != "--help"}
    assert documented - shown == set(), f"docs/sweeps.md documents options the sweeps lack: {documented - shown}"
    assert shown - documented == set(), f"options missing from docs/sweeps.md's table: {shown - documented}"


def test_every_flag_given_to_a_sweep_the_submit_wrapper_or_a_refit_script_exists() -> None:
    sweep = set(_sweep_parser()._option_string_actions)
    submit = _submit_options()
    refit = _options(cli.commands["refit"])
    wrong, seen = [], 0
    for page in PAGES:
        for n, text in _joined(_lines(page)):
            for m in re.finditer(r"(python -m meta_study\.tune\.submit|sweeps/\w+\.py|analysis/refit\.py)", text):
                in_span = text[:m.start()].count("`") % 2 == 1
                words = _command_text(text[m.end():], in_span)
                if m.group(1).endswith("submit"):
                    words, opts = words.split(" -- ", 1)[0], submit
                else:
                    opts = refit if m.group(1).startswith("analysis/") else sweep
                    if not re.match(r"\s+(--|\.\.\.|$)", words):   # the file named, not run
                        continue
                seen += 1
                wrong += [f"{_rel(page)}:{n}: {m.group(1)} has no {f}" for f in FLAG.findall(words) if f not in opts]
    assert seen > 10, f"only {seen} command lines found: the scan is broken"
    assert not wrong, "\n".join(wrong)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    h = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    out, seen, fence = set(), {}, False
    for line in _lines(page):
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"#{1,6}\s+(.*?)\s*#*$", line)
        if m:
            s = _slug(m.group(1))
            k = seen.get(s, 0)
            seen[s] = k + 1
            out.add(s if k == 0 else f"{s}-{k}")
    return out


def test_every_relative_link_and_anchor_resolves() -> None:
    wrong, seen = [], 0
    for page in PAGES:
        for n, line in enumerate(_lines(page), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, mailto:
                    continue
                seen += 1
                path, _, frag = target.partition("#")
                dest = (page.parent / path) if path else page
                if not dest.exists():
                    wrong.append(f"{_rel(page)}:{n}: {target}: no such file")
                elif frag and dest.suffix == ".md" and frag not in _anchors(dest):
                    wrong.append(f"{_rel(page)}:{n}: {target}: no heading #{frag} in {dest.name}")
    assert seen > 40, f"only {seen} links found: the scan is broken"
    assert not wrong, "\n".join(wrong)


#: directories of the repository whose files the pages name
_TOP = r"(?:docs|cluster|examples|benchmarks|meta_study|sweeps|analysis|tests|\.github|\.ci)"


def test_every_repository_path_a_page_names_exists() -> None:
    mods = _submodules()
    wrong, seen = [], 0
    for page in PAGES:
        for n, line in enumerate(_lines(page), 1):
            for t in re.findall(rf"(?<![\w./~$-]){_TOP}/[\w./*-]*[\w*/]", line):
                if t.startswith("meta_study/") and not t.endswith(".py") and t.split("/")[1] not in mods:
                    continue   # meta_study/sweep.json, meta_study/spool/: a sweep's state under its storage path
                seen += 1
                if not any(REPO.glob(t.rstrip("/"))):
                    wrong.append(f"{_rel(page)}:{n}: {t} does not exist")
    assert seen > 100, f"only {seen} paths found: the scan is broken"
    assert not wrong, "\n".join(wrong)


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for a in parts[i:]:
            if not hasattr(obj, a):
                return False
            obj = getattr(obj, a)
        return True
    return False


def _submodules() -> set[str]:
    pkg = REPO / "meta_study"
    return {p.stem for p in pkg.glob("*.py")} | {p.name for p in pkg.iterdir() if (p / "__init__.py").exists()}


def test_every_meta_study_name_a_page_gives_exists() -> None:
    """``from meta_study.x import y`` and dotted ``meta_study.x.y`` (not the ``meta_study.*`` MLflow tags)."""
    pytest.importorskip("torch")   # meta_study.train's names
    mods = _submodules()
    wrong, seen = [], 0
    for page in PAGES:
        for n, line in enumerate(_lines(page), 1):
            for d in re.findall(r"\bmeta_study(?:\.[A-Za-z_]\w*)+", line):
                if d.split(".")[1] not in mods:
                    continue
                seen += 1
                if not _resolve(d):
                    wrong.append(f"{_rel(page)}:{n}: {d}")
            for mod, names in re.findall(r"from (meta_study[\w.]*) import ([\w, ]+)", line):
                for name in filter(None, (x.strip() for x in names.split(","))):
                    seen += 1
                    if not _resolve(f"{mod}.{name}"):
                        wrong.append(f"{_rel(page)}:{n}: from {mod} import {name}")
    assert seen > 20, f"only {seen} names found: the scan is broken"
    assert not wrong, "\n".join(wrong)


def _python_blocks(page: Path) -> Iterator[tuple[int, str]]:
    text = page.read_text()
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        yield text[:m.start()].count("\n") + 2, m.group(1)


def _signature_problem(func: object, call: ast.Call) -> str | None:
    try:
        sig = inspect.signature(func)   # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    try:
        sig.bind(*range(len(call.args)), **{k.arg: None for k in call.keywords if k.arg})
    except TypeError as e:
        return str(e)
    return None


def test_every_documented_call_binds_to_the_signature() -> None:
    """The Python examples (code blocks, and inline ``meta_study.x.f(a, b=...)``) call with parameters
    the functions have: a renamed keyword fails here, not in a reader's session."""
    pytest.importorskip("torch")   # meta_study.train's names
    wrong, seen = [], 0
    for page in PAGES:
        for first, code in _python_blocks(page):
            tree = ast.parse(code)
            names: dict[str, object] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("meta_study"):
                    mod = importlib.import_module(node.module or "")
                    names.update({a.asname or a.name: getattr(mod, a.name) for a in node.names})
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
                    seen += 1
                    problem = _signature_problem(names[node.func.id], node)
                    if problem:
                        wrong.append(f"{_rel(page)}:{first + node.lineno - 1}: {ast.unparse(node)}: {problem}")
        for n, line in enumerate(_lines(page), 1):
            for dotted, args in re.findall(r"`(meta_study(?:\.\w+)+)\(([^()`]*)\)`", line):
                seen += 1
                head, _, attr = dotted.rpartition(".")
                func = getattr(importlib.import_module(head), attr)
                call = ast.parse(f"f({args.replace('...', '0')})", mode="eval").body
                assert isinstance(call, ast.Call)
                problem = _signature_problem(func, call)
                if problem:
                    wrong.append(f"{_rel(page)}:{n}: {dotted}({args}): {problem}")
    assert seen > 10, f"only {seen} calls found: the scan is broken"
    assert not wrong, "\n".join(wrong)


def test_every_meta_study_variable_a_page_names_is_read_by_the_code() -> None:
    code = "\n".join(p.read_text(errors="replace") for d in ("meta_study", "cluster", "sweeps", "analysis")
                     for p in (REPO / d).rglob("*") if p.is_file() and p.suffix not in (".pyc", ".png"))
    wrong, seen = [], set()
    for page in PAGES:
        for n, line in enumerate(_lines(page), 1):
            for v in re.findall(r"\bMETA_STUDY_[A-Z0-9_]*[A-Z0-9]\b", line):
                seen.add(v)
                if not re.search(rf"\b{v}\b", code):
                    wrong.append(f"{_rel(page)}:{n}: {v} is read nowhere")
    assert len(seen) > 5, f"only {len(seen)} variables found: the scan is broken"
    assert not wrong, "\n".join(wrong)
