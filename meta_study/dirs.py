"""Directories a command makes, and takes back when it fails: one rule for the analysis
commands' ``--out`` (:func:`meta_study.analysis.outputs.output_dir`) and the sweep's storage probe
(:func:`meta_study.tune.preflight.check_storage_on_nodes`). A failed command leaves no empty
directory it created, nor the parents it had to create for it; a directory that existed before,
or one holding a file, is never removed."""

from __future__ import annotations

import contextlib
import os
from typing import Sequence


def missing_dirs(path: str) -> list[str]:
    """``path`` and its ancestors that do not exist yet, deepest first (empty: ``path`` exists,
    or is a link, even a dangling one)."""
    out: list[str] = []
    d = os.path.abspath(path)
    while not os.path.lexists(d):
        out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return out


def remove_made_dirs(made: Sequence[str]) -> None:
    """Remove the directories ``made`` (:func:`missing_dirs`, deepest first) while they hold no
    file: the first of them (an ``--out``) after the empty folders inside it; a file anywhere
    keeps it and its parents."""
    if made and os.path.isdir(made[0]) and not os.path.islink(made[0]):
        for root, dirs, _files in os.walk(made[0], topdown=False):
            for name in dirs:
                with contextlib.suppress(OSError):   # not empty, or a link: kept
                    os.rmdir(os.path.join(root, name))
    for d in made:   # a body that failed half-way made some of the parents only
        try:
            os.rmdir(d)
        except FileNotFoundError:
            continue
        except OSError:   # not empty (a file, or a folder another process made): it and its parents stay
            return
