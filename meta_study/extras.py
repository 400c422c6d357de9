"""What an install has: the core (store, ingest, analysis, report, refit) or also training.

``pip install meta-study`` is the core: no torch, timm or optuna (the CUDA build of torch alone
is ~6 GB). ``meta-study[train]`` adds them for sweeps and the demo's training. Commands that
train check here first, so that a core install says in one line what to install instead of
failing inside a Ray worker.
"""

from __future__ import annotations

import importlib.util

from .errors import UserError

#: The modules the training extra brings (pyproject.toml, ``[project.optional-dependencies] train``).
TRAIN_MODULES = ("torch", "timm", "optuna")


def missing(modules: tuple[str, ...] = TRAIN_MODULES) -> list[str]:
    """The modules of ``modules`` that this interpreter cannot import (found, not imported)."""
    out = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(m)
    return out


def require_training(what: str) -> None:
    """Raise a :class:`UserError` naming ``what`` and the extra to install when training
    modules are missing."""
    gone = missing()
    if gone:
        raise UserError(f"{what} trains models, and this install lacks {', '.join(gone)}: "
                        "pip install 'meta-study[train]' (in a clone: pip install -e '.[train]')")
