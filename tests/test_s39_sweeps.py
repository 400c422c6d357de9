"""Defects found in a review of the sweep scripts (sweeps/head_wd.py, head_lr.py, scaling.py), each
with the test that failed before its fix. No Ray: the specs and the checks run before it starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, sweep_module

from meta_study.errors import UserError
from meta_study.tune.runner import check_fixed_config, fixed_config, parse_options


@pytest.mark.parametrize("smoke", [False, True])
def test_head_lr_refuses_a_body_lr_of_zero(smoke):
    """``sweeps/head_lr.py --set lr=0`` passed every check (TrainConfig takes lr >= 0) and swept
    head lrs of 0.1x..10x of 0: five identical head lrs of 0 per seed, a sweep of nothing."""
    spec = sweep_module("head_lr").SPEC
    options = parse_options(spec, [*(["--smoke"] if smoke else []), "--set", "lr=0"])
    with pytest.raises(UserError) as e:
        check_fixed_config(spec, options)
    assert str(e.value).startswith("--set lr=0: sweep head_lr ") and "\n" not in str(e.value)
    check_fixed_config(spec, parse_options(spec, [*(["--smoke"] if smoke else []), "--set", "lr=1e-3"]))


@pytest.mark.slow(15)    # a Python that imports torch: ~5 s idle, 20 s on 2 busy cores
def test_head_lr_with_a_body_lr_of_zero_is_one_line_before_ray(tmp_path):
    """From the command line: exit 2, one line, no Ray started (it ran the sweep)."""
    r = subprocess.run([sys.executable, "sweeps/head_lr.py", "--smoke", "--set", "lr=0", "--address", "local",
                        "--quiet", "--storage-path", str(tmp_path / "ray")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("head_lr: --set lr=0: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_scaling_sweeps_the_papers_epochs():
    """Section 3 scales "number of epochs (7, 14, and 21 epochs)"; the sweep ran 7, 14 and 30 (a
    third point at 30 epochs, off the paper's grid and ~20% of the sweep's GPU-hours more)."""
    spec = sweep_module("scaling").SPEC
    space = spec.space(parse_options(spec, []))
    assert space["epochs"]["grid_search"] == [7, 14, 21]
    sizes = [len(v["grid_search"]) for v in space.values()]
    assert sizes == [4, 3, 3]                                  # docs/sweeps.md: 4 x 3 x 3
    assert "{7, 14, 21}" in spec.doc and "30" not in spec.doc.split("Full size:")[1]


def test_head_wd_keeps_the_body_wd_of_appendix_c1():
    """Appendix C.1: "the weight decay for the rest of the network is kept at 0.01" (G.2: the
    default 0.1 holds "unless the changed value is mentioned"); the sweep kept the body at 0.1."""
    spec = sweep_module("head_wd").SPEC
    for argv in ([], ["--smoke"]):
        options = parse_options(spec, argv)
        assert fixed_config(spec, options)["wd"] == 0.01
    full = spec.space(parse_options(spec, []))["head_wd"]["grid_search"]
    assert len(full) == 7 and 0.01 in full and min(full) == 0.0 and max(full) == 3.0   # the body's among them
    assert "wd 0.01" in spec.doc


def test_code_version_of_a_tree_with_a_file_name_that_is_not_utf8(tmp_path, monkeypatch):
    """A file in meta_study/ whose name is not UTF-8 (café.py saved as Latin-1) made code_version
    raise UnicodeEncodeError, a traceback at every sweep's start; UTF-8 names hash as before."""
    import hashlib
    import os

    from meta_study.tune import provenance

    pkg = tmp_path / "meta_study"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", pkg)
    before = hashlib.sha256(b"meta_study/a.py\0x = 1\n\0").hexdigest()[:16]
    assert provenance.code_version() == before              # the versions sweeps already recorded
    (pkg / os.fsdecode(b"caf\xe9.py")).write_text("y = 2\n")
    version = provenance.code_version()
    assert len(version) == 16 and version != before
