"""The sweep's fixed model is built once on the meta device before Ray starts (session 44)."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO
from meta_study.errors import UserError
from meta_study.tune.runner import check_fixed_config, parse_options


def _spec(script: str):
    sys.path.insert(0, str(REPO / "sweeps"))
    try:
        import importlib

        return importlib.import_module(script).SPEC
    finally:
        sys.path.remove(str(REPO / "sweeps"))


@pytest.mark.parametrize("argv, says", [
    (["--set", "model_name=resnet18"], "got an unexpected keyword argument 'patch_size'"),
    (["--set", "img_size=30"], "img_size=30 is not a multiple of its patch size 4"),
    (["--set", "model_kwargs={'depth': -1}"], "model 'vit_s'"),
])
def test_a_fixed_model_that_cannot_be_built_is_one_line_before_ray(argv, says):
    """``--set model_name=resnet18`` on head_wd (whose base passes a ViT's ``patch_size``), or an
    ``img_size`` its patches do not divide: every trial failed after Ray started, retried, a
    traceback each (21 trials x 3 attempts)."""
    spec = _spec("head_wd")
    with pytest.raises(UserError) as e:
        check_fixed_config(spec, parse_options(spec, argv))
    msg = str(e.value)
    assert says in msg and msg.endswith("every trial would fail on it (change it with --set model_name=..., "
                                        "model_kwargs=... or img_size=...)") and "\n" not in msg, msg


@pytest.mark.parametrize("argv", [[], ["--smoke"], ["--set", "model_name=resnet18", "--set", "model_kwargs={}"]])
def test_a_fixed_model_that_builds_passes(argv):
    spec = _spec("head_wd")
    check_fixed_config(spec, parse_options(spec, argv))
