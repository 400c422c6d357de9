"""Review (session 39) of the analysis commands' refusals."""

from __future__ import annotations


def test_a_bootstrap_with_nothing_to_fit_writes_nothing(tmp_path):
    """`bootstrap --holdout-above 0` (every point held out) wrote bootstrap.parquet of rows of NaNs
    ("too_few_points"), printed "vertices no fit; all no fit" per group and exited 0. Refused as
    sensitivity is, naming the frontiers and the split; DIR holds nothing of it."""
    from conftest import committed_store, one_error_line, run_cli

    committed_store(tmp_path / "st", runs=40, tasks=("a",))
    out = tmp_path / "D"
    r = run_cli("bootstrap", str(tmp_path / "st"), "--out", str(out), "--holdout-above", "0", "--serial",
                "--samples", "10")
    one_error_line(r, "no group of the selection has at least 3 points to fit on any frontier (vertices, all) at or "
                      "below the hold-out split (--holdout-above 0)")
    assert not (out / "results.json").exists() and not list(out.glob("**/*.parquet"))
    # a split that leaves points to fit still bootstraps
    r = run_cli("bootstrap", str(tmp_path / "st"), "--out", str(out), "--serial", "--samples", "10")
    assert r.returncode == 0, r.stderr
    assert (out / "bootstrap.parquet").exists()


def test_a_csv_exported_again_leaves_out_every_index_pandas_wrote(tmp_path, monkeypatch):
    """A CSV read back and written again with ``to_csv`` leads with ``Unnamed: 0.1, Unnamed: 0``:
    the first is no ``Unnamed: 0``, so neither was taken for pandas' index, both went into every
    row's extra, and a sorted re-export "updated" every row. Both are left out (and a third export's
    three), in a file read in pieces too; an unnamed column that is not the leading run is kept."""
    import pandas as pd
    from conftest import run_cli
    from test_ingest_s37 import _extras, _frame

    p = tmp_path / "idx.csv"
    _frame().to_csv(p)
    pd.read_csv(p).to_csv(p)
    assert list(pd.read_csv(p).columns[:2]) == ["Unnamed: 0.1", "Unnamed: 0"]
    r = run_cli("ingest", str(p), "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(Unnamed: 0.1, Unnamed: 0)" in r.stdout + r.stderr, r.stdout + r.stderr
    assert _extras(tmp_path / "st") == {f"r{i}": [] for i in range(4)}
    f = pd.read_csv(p)
    f.sort_values("ds_accuracy").reset_index(drop=True).to_csv(p)      # a third export, re-sorted
    r = run_cli("ingest", str(p), "--store", str(tmp_path / "st"))
    assert "0 new, 0 updated, 4 unchanged" in r.stdout + r.stderr, r.stdout + r.stderr
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)
    r = run_cli("ingest", str(p), "--store", str(tmp_path / "st_big"))
    assert r.returncode == 0 and _extras(tmp_path / "st_big") == {f"r{i}": [] for i in range(4)}, r.stderr
    assert files.index_candidate(["Unnamed: 0", "a", "Unnamed: 0.1"], None) == ("Unnamed: 0",)


def test_mapping_and_sources_file_options_expand_the_home_directory(tmp_path, monkeypatch):
    """``--mapping=~/m.yaml`` and ``--sources-file=~/s.yaml`` (no shell expands ``~`` after ``=``)
    said "no such file", where ``--out=~/x`` is expanded."""
    from conftest import run_cli
    from test_ingest_s37 import _frame

    monkeypatch.setenv("HOME", str(tmp_path))
    _frame().rename(columns={"ds_accuracy": "acc"}).to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "m.yaml").write_text("rename: {acc: ds_accuracy}\n")
    r = run_cli("ingest", str(tmp_path / "r.csv"), "--mapping=~/m.yaml", "--store", str(tmp_path / "st"))
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "s.yaml").write_text(f"sources:\n  - uri: {tmp_path / 'r.csv'}\n    mapping: {tmp_path / 'm.yaml'}\n")
    r = run_cli("ingest", "--sources-file=~/s.yaml", "--store", str(tmp_path / "st2"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_fit_with_more_group_figures_than_before_draws_them(tmp_path):
    """`fit --max-group-figures 1`, then `fit --max-group-figures 4` on the same DIR said "reused fits"
    and left one group figure: the CLI now asks for the figures it wants, and the fits are fitted
    again when fewer were drawn."""
    from conftest import committed_store, run_cli

    committed_store(tmp_path / "st", runs=30, tasks=("a", "b", "c"))
    out = tmp_path / "D"
    r = run_cli("fit", str(tmp_path / "st"), "--out", str(out), "--max-group-figures", "1")
    assert r.returncode == 0, r.stderr

    def group_figures():
        return {p.stem for p in (out / "figures").rglob("*.png") if p.parent.name == "groups" or "group" in p.stem}
    one = group_figures()
    r = run_cli("fit", str(tmp_path / "st"), "--out", str(out), "--max-group-figures", "3")
    assert r.returncode == 0, r.stderr
    assert "reused fits" not in r.stdout, r.stdout
    assert len(group_figures()) > len(one), (one, group_figures())


def test_a_storage_path_with_keys_in_its_query_is_refused():
    """``s3://b/p?access_key=AK&secret_key=SK`` and an ``endpoint_override`` with user:password were
    accepted: pyarrow reads them, and the path reached the sweep record and the printed summary."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.tune.preflight import has_credentials, refuse_secrets

    for uri in ("s3://b/p?access_key=AK&secret_key=SK", "s3://b/p?session_token=T",
                "s3://b/p?endpoint_override=http://u:pw@minio:9000",
                "s3://b/p?endpoint_override=http%3A%2F%2Fu%3Apw%40minio%3A9000"):
        assert has_credentials(uri), uri
        with pytest.raises(UserError, match="credentials in the storage URI are refused") as e:
            refuse_secrets(tracking_uri=None, storage_path=uri)
        assert "SK" not in str(e.value) and "pw" not in str(e.value)
    for uri in ("s3://b/p", "s3://b/p?region=us-east-1&endpoint_override=http://127.0.0.1:9000",
                "s3://b/p?access_key="):
        assert not has_credentials(uri), uri


def test_f2_states_the_papers_signed_trend_beside_the_share():
    """Table F.2 of the paper is signed (k -0.65: k falls as shots grow); the table held only
    P(increase) in [0, 1]. trend_<param> is the mean sign of the change: +1 up, -1 down, 0 tie."""
    import pandas as pd
    import pytest

    from meta_study.analysis.correlations import increase_likelihood

    rows = []
    for ds, ks in (("a", [3.0, 2.0, 1.0, 1.0]), ("b", [1.0, 2.0, 1.5, 1.0])):
        for shots, k in zip((1, 5, 10, 25), ks):
            rows.append({"us_task": "up", "ds_task": ds, "eval_protocol": "fewshot", "frontier": "vertices",
                         "shots": shots, "law": "eq1", "status": "ok", "k": k, "alpha": 1.0 + shots / 100,
                         "e_ir": 0.5 - shots / 100})
    f2 = increase_likelihood(pd.DataFrame(rows)).iloc[0]
    # a: down, down, tie -> -2/3 ; b: up, down, down -> -1/3 ; mean -0.5
    assert f2["trend_k"] == pytest.approx(-0.5) and f2["p_increase_k"] == pytest.approx((0 + 1 / 3) / 2)
    assert f2["trend_alpha"] == pytest.approx(1.0) and f2["trend_e_ir"] == pytest.approx(-1.0)


def test_a_sweep_whose_summary_fails_still_closes_its_parent_run(tmp_path, monkeypatch, capsys):
    """The summary and the close shared one try: a summary the server refused left the parent
    RUNNING (a live sweep in the UI and to ingest) though every trial was done."""
    import types

    from mlflow.tracking import MlflowClient

    from meta_study.tune import runner, tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("s")
    run = c.create_run(exp)

    def refused(*a, **k):
        raise RuntimeError("INVALID_PARAMETER_VALUE: refused")
    monkeypatch.setattr(tracking, "log_sweep_summary", refused)
    rec = types.SimpleNamespace(experiment_id=exp, parent_run_id=run.info.run_id)
    runner._end_parent(uri, rec, "FINISHED", {"done": 2})
    assert c.get_run(run.info.run_id).info.status == "FINISHED"
    assert "could not summarize the MLflow parent run" in capsys.readouterr().err
