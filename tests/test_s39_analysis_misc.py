"""Review s39 of the analysis helpers (groups, sensitivity/bootstrap options, the analysis/ scripts)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from meta_study.analysis.bootstrap import BootstrapOptions
from meta_study.analysis.groups import groups_from_frame
from meta_study.analysis.sensitivity import SensitivityOptions
from meta_study.errors import OptionError
from meta_study.store import Store
from meta_study.validation import validate


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / name), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def _rows(ds_task: str, ds: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"source": "s", "run_id": ["1", "2", "3"], "us_task": "u", "ds_task": ds_task,
                         "eval_protocol": "fewshot", "shots": 5, "us_accuracy": [0.1, 0.2, 0.3], "ds_accuracy": ds})


def test_groups_of_a_frame_with_repeated_index_labels_keep_their_own_rows():
    # two frames concatenated without ignore_index: labels 0, 1, 2 twice; each group took both
    # frames' rows of its labels (6 points, DS task b's in a's group)
    df = pd.concat([_rows("a", [0.1, 0.2, 0.3]), _rows("b", [0.4, 0.5, 0.6])])
    groups = {g.ds_task: g for g in groups_from_frame(df)}
    assert groups["a"].n == 3 and groups["b"].n == 3
    np.testing.assert_array_equal(groups["a"].ds_accuracy, [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(groups["b"].ds_accuracy, [0.4, 0.5, 0.6])


@pytest.mark.parametrize("make", [lambda: SensitivityOptions(seed=-1), lambda: BootstrapOptions(seed=-1)])
def test_a_negative_seed_is_an_option_error(make):
    # it was numpy's "expected non-negative integer" deep in the first draw
    with pytest.raises(OptionError, match="seed"):
        make()


def test_fig3_script_refuses_a_negative_seed_in_one_line(tmp_path):
    r = script("fig3_sensitivity.py", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--seed", "-1",
               "--serial")
    assert r.returncode == 2, r.stderr
    assert "--seed must be" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def head_wd_store(tmp_path_factory) -> str:
    """Two DS tasks x 3 head WDs x 2 seeds, 10-shot, with layer probes."""
    rng = np.random.default_rng(0)
    recs = []
    for hw_i, hw in enumerate((0.0, 1e-2, 1e-1)):
        for seed in range(2):
            base = {"source": "sim", "run_id": f"hw{hw_i}-s{seed}", "us_task": "up", "eval_protocol": "fewshot",
                    "shots": 10, "head_wd": hw, "seed": seed, "us_accuracy": 0.6 - hw + rng.normal(0, 0.01)}
            for ds in ("near", "far"):
                acc = 0.5 + hw + rng.normal(0, 0.01)
                recs.append({**base, "ds_task": ds, "ds_accuracy": acc})
                for layer in range(2):
                    recs.append({**base, "ds_task": ds, "representation_layer": layer, "ds_accuracy": acc / 2})
    store = str(tmp_path_factory.mktemp("hw") / "store")
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    Store(store).commit(v.table)
    return store


@pytest.mark.parametrize("name", ["head_wd_d1_d4.py", "fig6_layerwise.py"])
def test_row_scripts_refuse_a_mistyped_task_among_several(head_wd_store, tmp_path, name):
    # --ds-task near --ds-task fra: "fra" matched nothing and was left out, exit 0, as if the
    # tables were of both tasks (the fit scripts and the CLI refuse it)
    out = tmp_path / "out"
    r = script(name, head_wd_store, "--out", str(out), "--ds-task", "near", "--ds-task", "fra")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--ds-task fra: no such value in the store" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    r = script(name, head_wd_store, "--out", str(out), "--ds-task", "near", "--ds-task", "far")
    assert r.returncode == 0, r.stderr


def test_a_frontier_named_twice_is_drawn_and_counted_once():
    # ("vertices", "vertices") fitted each resample twice: n_ok 40 of 20 resamples, every row twice
    from meta_study.analysis.bootstrap import bootstrap_group
    from meta_study.analysis.sensitivity import sensitivity_group

    rng = np.random.default_rng(0)
    us = rng.uniform(0.2, 0.8, 40)
    ds = 0.9 - 0.8 * (1 - us) ** 1.5 + rng.normal(0, 0.01, 40)
    key = ("u", "d", "fewshot", 5)
    b = bootstrap_group(key, us, ds, BootstrapOptions(samples=20, frontiers=("vertices", "vertices")))
    assert len(b) == 4 and (b["n_ok"] <= 20).all()
    pd.testing.assert_frame_equal(b, bootstrap_group(key, us, ds, BootstrapOptions(samples=20, frontiers=("vertices",))))
    s = sensitivity_group(key, us, ds, SensitivityOptions(trials=2, sizes=(10,), frontiers=("all", "all")))
    assert len(s) == 2 and list(s["trial"]) == [0, 1]


def test_controlled_tables_count_a_run_repeated_by_another_source_once():
    # run A ingested from two sources: the head-WD and layer-wise means weighed it double
    # (0.467 "over 2 runs" of 0.4 and 0.6), the D.4 correlation counted 3 models of 2
    from meta_study.analysis.controlled import head_wd_effect, layerwise, optimal_head_wd_vs_correlation

    base = {"us_task": "u", "ds_task": "d", "eval_protocol": "fewshot", "shots": 10, "representation_layer": np.nan,
            "head_wd": 0.1}
    rows = pd.DataFrame([{**base, "source": "a", "run_id": "A", "us_accuracy": 0.5, "ds_accuracy": 0.4},
                         {**base, "source": "b", "run_id": "A", "us_accuracy": 0.5, "ds_accuracy": 0.4},
                         {**base, "source": "a", "run_id": "B", "us_accuracy": 0.7, "ds_accuracy": 0.6}])
    curves, best = head_wd_effect(rows)
    assert curves["ds_accuracy"].tolist() == pytest.approx([0.5]) and curves["runs"].tolist() == [2]
    assert best["best_ds_accuracy"].tolist() == pytest.approx([0.5])
    assert layerwise(rows)["ds_accuracy"].tolist() == pytest.approx([0.5])
    assert optimal_head_wd_vs_correlation(rows)["models"].tolist() == [2]
    # another measurement of run A (other accuracies) is a row of its own
    other = pd.concat([rows, rows.iloc[[1]].assign(ds_accuracy=0.8)], ignore_index=True)
    assert head_wd_effect(other)[0]["ds_accuracy"].tolist() == pytest.approx([0.6])


def test_a_size_given_twice_with_replacement_is_drawn_once():
    # sizes (10, 10) with replacement: the same seeded draws twice, 4 "trials" of 2 in the summary
    from meta_study.analysis.sensitivity import sensitivity_group, summarize_sensitivity

    rng = np.random.default_rng(1)
    us = rng.uniform(0.2, 0.8, 40)
    ds = 0.9 - 0.8 * (1 - us) ** 1.5 + rng.normal(0, 0.01, 40)
    opts = SensitivityOptions(trials=2, sizes=(10, 10), replace=True, frontiers=("all",))
    s = sensitivity_group(("u", "d", "fewshot", 5), us, ds, opts)
    assert len(s) == 2
    assert summarize_sensitivity(s)["trials"].tolist() == [2]
