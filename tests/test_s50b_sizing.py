"""Trial sizing moved from sweeps/zoo.py into meta_study/tune/sizing.py (s50b): the same requests
for every model, size and option as before, imported normally by the sweeps that size by model."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO, sweep_module

from meta_study.tune import sizing
from meta_study.tune.runner import PerTrialResources, SweepOptions, TrialResources

GiB = 2**30

#: The options each request below is made under.
OPTIONS = {
    "gpu1": SweepOptions(gpus_per_trial=1.0),
    "gpu0.5_cpu4": SweepOptions(gpus_per_trial=0.5, cpus_per_trial=4.0),
    "cpu2": SweepOptions(cpus_per_trial=2.0),
    "smoke": SweepOptions(smoke=True),
}

#: (model, options) -> (cpu, gpu, host memory GiB) as sweeps/zoo.py's resources() gave them before the
#: move (32 px, the default 240-class procedural US task), for every model of its table and three
#: sized from their parameter count (ViT-L 304M, BiT-R50x1 ~24M, and one timm does not know).
EXPECTED = {
    "vit_ti": {"gpu1": (1.0, 0.25, 4), "gpu0.5_cpu4": (4.0, 0.125, 4), "cpu2": (0.5, 0.0, 4), "smoke": (0.25, 0.0, 4)},
    "vit_s": {"gpu1": (1.0, 0.5, 6), "gpu0.5_cpu4": (4.0, 0.25, 6), "cpu2": (1.0, 0.0, 6), "smoke": (0.5, 0.0, 6)},
    "vit_b": {"gpu1": (1.0, 1.0, 12), "gpu0.5_cpu4": (4.0, 0.5, 12), "cpu2": (2.0, 0.0, 12), "smoke": (1.0, 0.0, 12)},
    "mixer_s": {"gpu1": (1.0, 0.5, 6), "gpu0.5_cpu4": (4.0, 0.25, 6), "cpu2": (1.0, 0.0, 6), "smoke": (0.5, 0.0, 6)},
    "mixer_b": {"gpu1": (1.0, 1.0, 12), "gpu0.5_cpu4": (4.0, 0.5, 12), "cpu2": (2.0, 0.0, 12),
                "smoke": (1.0, 0.0, 12)},
    "resnet_18": {"gpu1": (1.0, 0.25, 4), "gpu0.5_cpu4": (4.0, 0.125, 4), "cpu2": (0.5, 0.0, 4),
                  "smoke": (0.25, 0.0, 4)},
    "resnet_50": {"gpu1": (1.0, 0.5, 8), "gpu0.5_cpu4": (4.0, 0.25, 8), "cpu2": (1.0, 0.0, 8), "smoke": (0.5, 0.0, 8)},
    "vit_tiny_cpu": {"gpu1": (1.0, 1.0, 0.25), "gpu0.5_cpu4": (4.0, 0.5, 0.25), "cpu2": (2.0, 0.0, 0.25),
                     "smoke": (1.0, 0.0, 0.25)},
    "mixer_tiny_cpu": {"gpu1": (1.0, 1.0, 0.25), "gpu0.5_cpu4": (4.0, 0.5, 0.25), "cpu2": (2.0, 0.0, 0.25),
                       "smoke": (1.0, 0.0, 0.25)},
    "resnet_tiny_cpu": {"gpu1": (1.0, 0.5, 0.25), "gpu0.5_cpu4": (4.0, 0.25, 0.25), "cpu2": (1.0, 0.0, 0.25),
                        "smoke": (0.5, 0.0, 0.25)},
    # sized from the parameter count (built on the meta device)
    "vit_l": {"gpu1": (1.0, 1.0, 32.5), "gpu0.5_cpu4": (4.0, 0.5, 32.5), "cpu2": (2.0, 0.0, 32.5),
              "smoke": (1.0, 0.0, 32.5)},
    "resnetv2_50x1_bit": {"gpu1": (1.0, 0.5, 6.5), "gpu0.5_cpu4": (4.0, 0.25, 6.5), "cpu2": (1.0, 0.0, 6.5),
                          "smoke": (0.5, 0.0, 6.5)},
    "no_such_model": {"gpu1": (1.0, 1.0, 8.0), "gpu0.5_cpu4": (4.0, 0.5, 8.0), "cpu2": (2.0, 0.0, 8.0),
                      "smoke": (1.0, 0.0, 8.0)},
    "vit_small_cpu": {"gpu1": (1.0, 1.0, 0.25), "gpu0.5_cpu4": (4.0, 0.5, 0.25), "cpu2": (2.0, 0.0, 0.25),
                      "smoke": (1.0, 0.0, 0.25)},
}

#: The same on a 2,500-class Parquet US task (more than the table's 240: the head's parameters added).
EXPECTED_2500 = {
    "vit_ti": {"gpu1": (1.0, 0.25, 4.5), "cpu2": (0.5, 0.0, 4.5)},
    "vit_b": {"gpu1": (1.0, 1.0, 12.5), "cpu2": (2.0, 0.0, 12.5)},
    "resnet_50": {"gpu1": (1.0, 0.5, 8.5), "cpu2": (1.0, 0.0, 8.5)},
    "mixer_s": {"gpu1": (1.0, 0.5, 6.5), "cpu2": (1.0, 0.0, 6.5)},
    "vit_l": {"gpu1": (1.0, 1.0, 32.5), "cpu2": (2.0, 0.0, 32.5)},
}


def _triple(r: TrialResources) -> tuple[float, float, float]:
    return (r.cpu, r.gpu, r.memory_gb)


def test_the_table_has_every_model_and_only_those():
    assert set(EXPECTED) - {"vit_l", "resnetv2_50x1_bit", "no_such_model"} == set(sizing.SIZES)
    zoo = sweep_module("zoo")
    assert {m for ms in (*zoo.FULL.values(), *zoo.SMOKE.values()) for m in ms} <= set(sizing.SIZES)


@pytest.mark.parametrize("model", sorted(set(EXPECTED) - {"vit_l", "resnetv2_50x1_bit", "no_such_model"}))
def test_every_tabled_model_asks_what_it_asked_before(model):
    pytest.importorskip("torch")          # the task's classes: the procedural task built at a few examples
    got = {k: _triple(sizing.resources({"model_name": model, "img_size": 32}, o)) for k, o in OPTIONS.items()}
    assert got == EXPECTED[model]


@pytest.mark.parametrize("model", ["vit_l", "resnetv2_50x1_bit", "no_such_model"])
def test_a_parameter_count_sized_model_asks_what_it_asked_before(model):
    pytest.importorskip("torch")
    got = {k: _triple(sizing.resources({"model_name": model, "img_size": 32}, o)) for k, o in OPTIONS.items()}
    assert got == EXPECTED[model]


def test_a_larger_us_task_asks_what_it_asked_before(tmp_path):
    pytest.importorskip("torch")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [b"x"] * 5000, "label": list(range(2500)) * 2}), tmp_path / "t.parquet")
    datasets = {"jft": f"parquet:{tmp_path / 't.parquet'}"}
    for model, want in EXPECTED_2500.items():
        got = {k: _triple(sizing.resources({"model_name": model, "img_size": 32, "us_task": "jft"},
                                           SweepOptions(gpus_per_trial=OPTIONS[k].gpus_per_trial,
                                                        cpus_per_trial=OPTIONS[k].cpus_per_trial, datasets=datasets)))
               for k in want}
        assert got == want, model


def test_the_rule_as_pure_functions():
    """The derivation at the top of sizing.py, checked on numbers (no torch, no task)."""
    ref = sizing.REFERENCE_PARAMS
    assert [sizing.share_of_params(p) for p in (1e6, ref / 4, ref / 4 + 1, ref, 3 * ref)] == [0.25, 0.25, 0.5, 1, 1]
    assert sizing.memory_gb_of_params(ref) == 8 and sizing.memory_gb_of_params(ref / 16) == 0.5
    assert sizing.size_from_params(None) == sizing.UNKNOWN_SIZE
    assert sizing.size_from_params(int(ref)) == (1.0, 12.0)             # ViT-B outside the table: its entry
    assert sizing.size_with_head((0.5, 8), 69_000_000, 25_000_000) == (1.0, 12.5)   # ResNet-50 + a 21k head
    assert sizing.size_with_head((0.5, 8), None, 25_000_000) == (0.5, 8)
    assert sizing.request(0.25, 4, SweepOptions(gpus_per_trial=2.0)) == TrialResources(cpu=1.0, gpu=0.5, memory_gb=4)
    assert sizing.request(0.25, 4, SweepOptions(cpus_per_trial=3.0)) == TrialResources(cpu=0.75, memory_gb=4)


def test_the_sweeps_import_the_sizing_and_load_no_sweep_by_path():
    """scaling.py loaded zoo.py by its file path to reuse its sizing; both now import it."""
    pytest.importorskip("torch")          # ViT-L is sized from its parameter count
    zoo, scaling = sweep_module("zoo"), sweep_module("scaling")
    assert zoo.SPEC.resources is sizing.resources
    for name in ("zoo", "scaling", "head_wd"):
        tree = ast.parse((REPO / "sweeps" / f"{name}.py").read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
                {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "importlib.util" not in names and "importlib" not in names, name
    # scaling: the zoo's requests at full size, the options' own for its smoke models
    gpu = SweepOptions(gpus_per_trial=1.0)
    for model in ("vit_ti", "vit_s", "vit_b", "vit_l"):
        assert scaling.resources({"model_name": model, "img_size": 32}, gpu) == \
            sizing.resources({"model_name": model, "img_size": 32}, gpu)
    assert PerTrialResources(scaling.SPEC.resources, SweepOptions(smoke=True))({"model_name": "vit_small_cpu"}) == \
        {"cpu": 1.0, "gpu": 0.0, "memory": 0.25 * GiB}
    assert PerTrialResources(scaling.SPEC.resources, gpu)({"model_name": "vit_ti", "img_size": 32}) == \
        {"cpu": 1.0, "gpu": 0.25, "memory": 4 * GiB}
