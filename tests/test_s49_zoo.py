"""The zoo's sizing (meta_study.tune.sizing, once in sweeps/zoo.py) counts a trial's US task's classes
(s49 review)."""

import os
import threading

import pytest
from conftest import sweep_module

from meta_study.tune import sizing
from meta_study.tune.runner import SweepOptions

pytest.importorskip("torch")

IN21K = 21_843


def _folders(root, n, *, under="train"):
    base = root / under if under else root
    base.mkdir(parents=True)
    for i in range(n):
        os.mkdir(base / f"n{i:08d}")
    os.mkdir(base / ".ipynb_checkpoints")   # hidden: never a class
    return root


def test_a_21k_class_us_task_is_sized_with_its_head(tmp_path):
    """Counted with 1,000 classes whatever the task, ViT-L on a 21,843-class imagefolder asked for
    32.5 GiB (34.5 with its head), and ViT-B kept the table's 12 GiB (14)."""
    root = _folders(tmp_path / "in21k", IN21K)
    gpu = SweepOptions(gpus_per_trial=1.0, datasets={"in21k": f"imagefolder:{root}"})
    assert sizing.us_classes({"us_task": "in21k"}, gpu.datasets) == IN21K
    vit_l = sizing.resources({"model_name": "vit_l", "img_size": 32, "us_task": "in21k"}, gpu)
    assert vit_l.gpu == 1.0 and vit_l.memory_gb == 34.5, vit_l
    vit_b = sizing.resources({"model_name": "vit_b", "img_size": 32, "us_task": "in21k"}, gpu)
    assert vit_b.gpu == 1.0 and vit_b.memory_gb == 14.0, vit_b
    # the default procedural task (240 classes): the table, and ViT-L as documented
    assert sizing.resources({"model_name": "vit_b", "img_size": 32}, gpu).memory_gb == 12
    assert sizing.resources({"model_name": "vit_l", "img_size": 32}, gpu).memory_gb == 32.5


def test_the_class_count_follows_the_task_kwargs_and_the_dataset(tmp_path):
    assert sizing.us_classes({}) == 240
    assert sizing.us_classes({"us_task": "synth_us", "us_task_kwargs": {"n_triples": 12}}) == 24
    assert sizing.us_classes({"us_task": "synth_shape", "us_task_kwargs": {"n_train": 10**9}}) == 6
    small = _folders(tmp_path / "small", 3, under=None)
    big = _folders(tmp_path / "big", 3000, under="Training")
    cfg = {"model_name": "resnet_50", "img_size": 32, "us_task": "pets"}
    a = sizing.resources(cfg, SweepOptions(gpus_per_trial=1.0, datasets={"pets": f"imagefolder:{small}"}))
    b = sizing.resources(cfg, SweepOptions(gpus_per_trial=1.0, datasets={"pets": f"imagefolder:{big}"}))
    assert (a.gpu, a.memory_gb) == sizing.SIZES["resnet_50"] and b.memory_gb > a.memory_gb, (a, b)


def test_a_parquet_us_task_has_its_labels_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [b"x"] * 5000, "label": list(range(2500)) * 2}), tmp_path / "t.parquet")
    spec = {"jft": f"parquet:{tmp_path / 't.parquet'}"}
    assert sizing.us_classes({"us_task": "jft"}, spec) == 2500


def test_sizing_never_waits_long_nor_fails_on_a_dataset_it_cannot_read(tmp_path, monkeypatch, capsys):
    """A hung mount or an unreadable dataset: 1,000 classes, said once, and the sweep goes on."""
    release = threading.Event()
    calls = []

    def hang(root, train_dir):
        calls.append(root)
        release.wait(60)
        return 5

    monkeypatch.setattr(sizing, "_imagefolder_classes", hang)
    monkeypatch.setattr(sizing, "COUNT_TIMEOUT_S", 0.2)
    try:
        opts = SweepOptions(gpus_per_trial=1.0, datasets={"in21k": "imagefolder:/mnt/hung"})
        cfg = {"model_name": "vit_b", "img_size": 32, "us_task": "in21k"}
        assert sizing.us_classes(cfg, opts.datasets) == sizing.FALLBACK_CLASSES
        assert sizing.resources(cfg, opts).memory_gb == 12.5       # 1,000 classes: more than the table's 240
        assert sizing.resources(cfg, opts).memory_gb == 12.5
        assert len(calls) == 1                                     # once per dataset, not per trial
    finally:
        release.set()
    err = capsys.readouterr().err
    assert err.count("sizing: could not count the classes of US task 'in21k'") == 1 and "1,000 classes" in err, err
    # a dataset that is not there, an unregistered task: the same fallback, no traceback
    missing = {"pets": f"parquet:{tmp_path / 'none.parquet'}"}
    assert sizing.us_classes({"us_task": "pets"}, missing) == sizing.FALLBACK_CLASSES
    assert sizing.us_classes({"us_task": "my_own_task"}) == sizing.FALLBACK_CLASSES


def test_head_wd_real_data_runbook_trains_the_model_whose_cost_it_gives():
    """The runbook's ImageNet-21k line gave the cost of ViT-B/16 but left the sweep's ViT-S: a
    user who pasted it trained ViT-S/16 and budgeted for ViT-B."""
    import re
    import shlex

    from meta_study.tune.runner import fixed_config, parse_options

    head_wd = sweep_module("head_wd")
    doc = " ".join(head_wd.__doc__.split())
    line = re.search(r"With real data, add e\.g\. ``(.+?)``", doc)
    assert line and "ViT-B/16" in doc[line.end():line.end() + 80], doc
    args = shlex.split(line.group(1))
    cfg = fixed_config(head_wd.SPEC, parse_options(head_wd.SPEC, args))
    assert (cfg["model_name"], cfg["img_size"], cfg["model_kwargs"], cfg["epochs"], cfg["us_task"]) == \
        ("vit_b", 224, {"patch_size": 16}, 7, "in21k"), cfg
