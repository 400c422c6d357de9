"""Structure rules the code keeps: private names stay in their module."""

from __future__ import annotations

import ast

from conftest import REPO


def test_no_module_imports_another_modules_private_names():
    """`from .refit import _previous` and the like: a module's `_name` is its own business."""
    bad = []
    for path in sorted((REPO / "meta_study").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("meta_study")):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: from {'.' * node.level}"
                                   f"{node.module or ''} import {alias.name}")
            # another object's private attribute reached through a module-level name, e.g. store._f
            if (isinstance(node, ast.Attribute) and node.attr == "_f" and isinstance(node.value, ast.Name)
                    and node.value.id not in ("self", "cls") and path.name != "store.py"):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.id}._f")
    assert not bad, "\n".join(bad)
