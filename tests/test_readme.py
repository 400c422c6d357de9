"""The README's two commands stay true: CI runs (b) verbatim."""

from __future__ import annotations

import re

from conftest import REPO


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_has_two_commands_at_the_top():
    text = (REPO / "README.md").read_text()
    a, b = _commands()
    assert text.index(a) < text.index("## ")  # both commands come before the first section
    assert "pip install -e ." in a and "meta-study" in a
    assert "pip install -e '.[test]'" in b and b.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    _, b = _commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert b.strip() in ci.splitlines()
