"""Review s40 of the analysis periphery: correlation tables, controlled experiments, the analysis/ scripts."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, make_rows, one_error_line
from meta_study.analysis.controlled import head_wd_effect, layerwise
from meta_study.analysis.correlations import increase_likelihood, shots_correlation
from meta_study.store import Store
from meta_study.validation import validate


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / name), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def _probe(run: str, layer: int | None, ds: float, *, source: str = "s", shots: int = 10) -> dict:
    return {"source": source, "run_id": run, "us_task": "u", "ds_task": "d", "eval_protocol": "fewshot",
            "shots": shots, "us_accuracy": 0.7, "representation_layer": layer, "ds_accuracy": ds}


def test_layerwise_prelogits_reference_is_of_the_runs_probed_per_block():
    # 3 runs probed per block (pre-logits 0.6, blocks 0.3-0.5) beside a zoo of 50 weak models at
    # the same setting: the reference was the zoo's mean, 0.22, drawn below the probed blocks
    recs = [_probe(f"p{i}", layer, ds) for i in range(3)
            for layer, ds in ((None, 0.6), (0, 0.3), (1, 0.4), (2, 0.5))]
    recs += [_probe(f"z{i}", None, 0.2, shots=shots) for i in range(50) for shots in (5, 10)]
    df = pd.DataFrame(recs).astype({"representation_layer": "Int64", "shots": "Int64"})
    t = layerwise(df).set_index(["shots", "layer"])
    assert t.loc[(10, -1), "ds_accuracy"] == pytest.approx(0.6) and t.loc[(10, -1), "runs"] == 3
    assert t.loc[(10, 2), "ds_accuracy"] == pytest.approx(0.5) and t.loc[(10, 2), "runs"] == 3
    # a setting without block probes keeps every run's pre-logits accuracy
    assert t.loc[(5, -1), "ds_accuracy"] == pytest.approx(0.2) and t.loc[(5, -1), "runs"] == 50


def test_runs_are_counted_per_source_and_run_id():
    # run "0" of two exports: two runs averaged, said "over 1 run"
    recs = [{**_probe("0", None, ds, source=src), "head_wd": 0.1} for src, ds in (("a", 0.4), ("b", 0.6))]
    df = pd.DataFrame(recs).astype({"representation_layer": "Int64"})
    curves, _ = head_wd_effect(df)
    assert curves["ds_accuracy"].iloc[0] == pytest.approx(0.5) and curves["runs"].iloc[0] == 2
    assert layerwise(df)["runs"].iloc[0] == 2


def _fits(params: list[tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"us_task": "u", "ds_task": "d", "eval_protocol": "fewshot", "law": "eq1",
                          "frontier": "vertices", "shots": shots, "k": k, "alpha": a, "e_ir": e,
                          "status": "at_bound" if k == 0 else "ok"}
                         for shots, (k, a, e) in zip((1, 5, 10, 25), params)])


def test_f1_f2_leave_out_alpha_of_a_flat_fit():
    # 1-shot fit flat (k = 0: alpha not identified, left at its lower bound 1e-3), then alpha
    # falls with shots: the 1e-3 read as "alpha rises" (F.1 +, F.2 a third of the steps up)
    f = _fits([(0.0, 1e-3, 0.5), (1.0, 2.0, 0.4), (1.0, 1.5, 0.3), (1.0, 1.0, 0.2)])
    f1 = shots_correlation(f).iloc[0]
    assert f1["n_shots"] == 4 and f1["corr_alpha"] < -0.9 and f1["corr_e_ir"] < -0.9
    f2 = increase_likelihood(f).iloc[0]
    assert f2["p_increase_alpha"] == 0.0 and f2["trend_alpha"] == -1.0
    assert f2["p_increase_k"] == pytest.approx(1 / 3)       # k's own steps all count
    # with only 2 identified alphas F.1 has no correlation for it
    f1 = shots_correlation(_fits([(0.0, 1e-3, 0.5), (0.0, 1e-3, 0.4), (1.0, 1.5, 0.3), (1.0, 1.0, 0.2)])).iloc[0]
    assert pd.isna(f1["corr_alpha"]) and not pd.isna(f1["corr_e_ir"])


@pytest.fixture(scope="module")
def linear_layer_store(tmp_path_factory) -> str:
    """Linear probes per layer beside pre-logits linear probes: no few-shot row."""
    df = make_rows(10).assign(eval_protocol="linear", shots=None)
    v = validate(pd.concat([df, df.assign(representation_layer=2)], ignore_index=True))
    assert v.n_rejected == 0
    path = str(tmp_path_factory.mktemp("s40") / "store")
    Store(path).commit(v.table)
    return path


def test_fig6_names_layer_probes_of_another_protocol(linear_layer_store, tmp_path):
    # "representation_layer is null everywhere" was said of a store of linear probes per layer
    r = script("fig6_layerwise.py", linear_layer_store, "--out", str(tmp_path / "o"))
    one_error_line(r, "no few-shot layer-wise probe rows", "linear")
    assert not (tmp_path / "o").exists()


def test_script_options_are_not_abbreviated(linear_layer_store, tmp_path):
    # `--ou DIR` was --out to the script, not to the guard that removes the DIR of a failed run:
    # DIR (and its parent) stayed behind, empty
    r = script("fig6_layerwise.py", linear_layer_store, "--ou", str(tmp_path / "new" / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()


def test_fig3_refuses_address_beside_serial(tmp_path):
    # --address was ignored under --serial: the user believed a cluster did the work
    r = script("fig3_sensitivity.py", str(tmp_path / "store"), "--out", str(tmp_path / "o"), "--serial",
               "--address", "local")
    one_error_line(r, "--address", "--serial")
    assert not (tmp_path / "o").exists()


def test_f20_keeps_one_source_of_a_repeated_run_on_every_task():
    # one export ingested as A and B; task x's rows came A then B, task y's B then A: x kept A's
    # copy and y B's, and F.20 said "0 models have both" of 6
    from meta_study.analysis.correlations import correlation_tables

    def row(src: str, i: int, task: str) -> dict:
        return {"source": src, "run_id": f"r{i}", "us_task": "u", "ds_task": task, "eval_protocol": "fewshot",
                "shots": 5, "us_accuracy": 0.3 + 0.1 * i, "ds_accuracy": 0.2 + 0.1 * i + (0.01 if task == "y" else 0)}

    recs = [row(src, i, task) for task, srcs in (("x", "AB"), ("y", "BA")) for src in srcs for i in range(6)]
    t = correlation_tables(pd.DataFrame(recs))["f20_ds_task_spearman"].set_index(["ds_task_a", "ds_task_b"])
    assert t.loc[("x", "y"), "n_models"] == 6 and t.loc[("x", "y"), "spearman"] == pytest.approx(1.0)
    f21 = correlation_tables(pd.DataFrame(recs))["f21_us_ds_spearman"]
    assert f21["n_models"].tolist() == [6, 6]


def test_layerwise_reference_of_a_run_ingested_twice():
    # the same probes under sources A and B, pre-logits rows B first, block rows A first: the
    # reference must still be of the probed run (one source kept on every row of it)
    pre = [_probe("p0", None, 0.6, source=s) for s in "BA"]
    blocks = [_probe("p0", layer, 0.3 + 0.1 * layer, source=s) for s in "AB" for layer in range(3)]
    df = pd.DataFrame(pre + blocks).astype({"representation_layer": "Int64"})
    t = layerwise(df).set_index("layer")
    assert t.loc[-1, "ds_accuracy"] == pytest.approx(0.6) and t["runs"].eq(1).all()


def test_fig3_checks_its_address_where_the_part_is_reused(linear_layer_store, tmp_path):
    # a mistyped --address beside a reused sensitivity part passed, exit 0 (the commands check it
    # before any work)
    out = str(tmp_path / "o")
    assert script("fig3_sensitivity.py", linear_layer_store, "--out", out, "--serial", "--trials", "1",
                  "--sizes", "5").returncode == 0
    r = script("fig3_sensitivity.py", linear_layer_store, "--out", out, "--trials", "1", "--sizes", "5",
               "--address", "127.0.0.1:1")
    one_error_line(r, "--address 127.0.0.1:1")
    assert (tmp_path / "o" / "sensitivity.parquet").exists()      # what was there stays


@pytest.mark.parametrize("error, code, words", [
    (KeyboardInterrupt(), 130, "aborted"),
    ("busy", 1, "changed under every read"),
    ("user", 2, "no such thing"),
])
def test_scripts_exit_as_the_commands_do(monkeypatch, capsys, tmp_path, error, code, words):
    # Ctrl-C printed a traceback; a store busy under the read was exit 2, a wrong setting to a
    # scheduler, where the commands say exit 1
    from meta_study.analysis import scripts
    from meta_study.errors import StoreBusyError, UserError

    exc = {"busy": StoreBusyError("store: changed under every read; run it again"),
           "user": UserError("no such thing")}.get(error, error)

    def main() -> None:
        (tmp_path / "new" / "o").mkdir(parents=True)
        raise exc

    monkeypatch.setattr(sys, "argv", ["fig.py", "STORE", "--out", str(tmp_path / "new" / "o")])
    got: object = None
    try:
        scripts.run(main)
    except SystemExit as e:
        got = e.code
    except KeyboardInterrupt:     # escaped: a regression fails this test, not the whole run
        got = "KeyboardInterrupt"
    assert got == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()
