"""End to end on the real timm results: ingest, then fit, sensitivity, bootstrap, correlations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from meta_study.analysis.frontiers import FRONTIERS
from meta_study.analysis.laws import LAWS
from meta_study.analysis.tables import FITS_COLUMNS
from meta_study.validation import validate
from meta_study.store import Store
from conftest import one_error_line, MAPPINGS, make_rows, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def timm_store(tmp_path_factory, timm_dir) -> str:
    store = str(tmp_path_factory.mktemp("timm") / "store")
    r = run_cli("ingest", str(timm_dir), "--mapping", str(MAPPINGS / "timm_wide.yaml"), "--store", store, "--quiet")
    assert r.returncode == 0, r.stderr
    return store


def _figure_ok(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 5000, path
    assert path.read_bytes()[:8] == PNG
    assert path.with_suffix(".svg").read_text().lstrip().startswith("<?xml")


def test_fit(timm_store, tmp_path):
    out = tmp_path / "out"
    r = run_cli("fit", timm_store, "--out", str(out), "--max-group-figures", "2")
    assert r.returncode == 0, r.stderr
    assert "5 groups, " in r.stdout and "150/150 candidate fits usable" in r.stdout
    assert f"wrote {out / 'fits.parquet'}\n" in r.stdout        # an --out outside the working directory: absolute
    assert "per-group figures for the first 2 of 5 groups" in r.stdout  # the other 3 have none: said
    fits = pd.read_parquet(out / "fits.parquet")
    assert list(fits.columns) == list(FITS_COLUMNS)
    # per group: its headline row and every law on every frontier
    assert len(fits) == 5 * (1 + len(LAWS) * len(FRONTIERS)) and set(fits["frontier"]) == {*FRONTIERS, "ensemble"}
    assert len(pd.read_csv(out / "fits.csv")) == len(fits)
    heads = fits[fits["headline"]]
    assert len(heads) == 5 and heads["ds_task"].nunique() == 5 and (heads["law"] == "ensemble").all()
    assert (fits.loc[~fits["headline"], "trusted"] == False).all()  # noqa: E712 - trust is the headline's
    real = fits[(fits["ds_task"] == "imagenet-real")].set_index(["law", "frontier"])
    # ImageNet-ReaL tracks ImageNet closely: the paper's fit and the headline predict the hidden frontier
    assert real.loc[("eq1", "vertices"), "pred_err"] < 0.015 and heads.set_index("ds_task").loc[
        "imagenet-real", "pred_err"] < 0.015
    assert 0.9 < real.loc[("eq1", "vertices"), "saturation"] <= 1.0
    # ImageNet-A: the hull is a chord and no law back-tests well: not trusted, and why
    a = heads.set_index("ds_task").loc["imagenet-a"]
    assert not a["trusted"] and a["trust_reason"].startswith("back-test error") and "chord" in a["warnings"]
    assert "imagenet-a (shift): not trusted (back-test error" in r.stdout
    assert (heads["backtest_err"] < heads["flat_backtest_err"]).sum() >= 4       # Sketch is a near tie
    assert (fits["n_points"] >= 1555).all() and (fits["holdout_threshold"].between(0.8, 0.9)).all()
    _figure_ok(out / "figures" / "fits_grid.png")
    assert len(list((out / "figures" / "groups").glob("*.png"))) == 2


def test_sensitivity_on_ray_and_serial_agree(timm_store, tmp_path):
    args = ["--ds-task", "imagenet-real", "--ds-task", "sketch", "--trials", "3", "--sizes", "10,40,160,640",
            "--seed", "5"]
    r1 = run_cli("sensitivity", timm_store, "--out", str(tmp_path / "ray"), "--workers", "2", *args)
    assert r1.returncode == 0, r1.stderr
    r2 = run_cli("sensitivity", timm_store, "--out", str(tmp_path / "serial"), "--serial", *args)
    assert r2.returncode == 0, r2.stderr
    a = pd.read_parquet(tmp_path / "ray" / "sensitivity.parquet")
    b = pd.read_parquet(tmp_path / "serial" / "sensitivity.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 2 * 4 * 3 * len(FRONTIERS)
    assert {"n", "trial", "frontier", "k", "alpha", "e_ir", "fit_err", "pred_err", "status"} <= set(a.columns)
    _figure_ok(tmp_path / "ray" / "figures" / "sensitivity.png")


def test_bootstrap_and_correlations(timm_store, tmp_path):
    r = run_cli("bootstrap", timm_store, "--out", str(tmp_path), "--samples", "50", "--serial",
                "--ds-task", "imagenetv2")
    assert r.returncode == 0, r.stderr
    b = pd.read_parquet(tmp_path / "bootstrap.parquet")
    assert len(b) == 8 and (b["lo"] <= b["hi"]).all()
    r = run_cli("correlations", timm_store, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "F.1/F.2 are empty: no group has a shot setting" in r.stdout     # says why, not just "0 rows"
    f21 = pd.read_parquet(tmp_path / "correlations" / "f21_us_ds_spearman.parquet").set_index("ds_task")
    assert f21.loc["imagenet-real", "spearman"] > 0.95 and f21.loc["imagenet-real", "n_models"] == 1556
    f20 = pd.read_parquet(tmp_path / "correlations" / "f20_ds_task_spearman.parquet")
    assert len(f20) == 25
    assert pd.read_parquet(tmp_path / "correlations" / "f1_shots_correlation.parquet").empty  # no shots here
    _figure_ok(tmp_path / "figures" / "f21_us_ds.png")
    _figure_ok(tmp_path / "figures" / "f20_imagenet_shift.png")


def test_bad_groups_are_reported_and_the_run_goes_on(tmp_path):
    store = Store(str(tmp_path / "st"))
    good = make_rows(40, ds_tasks=("good",))
    flat = make_rows(5, ds_tasks=("flat",), run_prefix="f")
    flat["us_accuracy"] = 0.7                       # constant US: k and alpha not identified
    tiny = make_rows(2, ds_tasks=("tiny",), run_prefix="t")
    store.commit(validate(pd.concat([good, flat, tiny])).table)
    r = run_cli("fit", str(store.uri), "--out", str(tmp_path / "o"), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert "flat" in r.stdout and "degenerate" in r.stdout and "too_few_points" in r.stdout
    fits = pd.read_parquet(tmp_path / "o" / "fits.parquet").set_index(["ds_task", "law", "frontier"])
    assert fits.loc[("good", "eq1", "all"), "status"] in ("ok", "at_bound")
    heads = fits[fits["headline"]].reset_index().set_index("ds_task")
    assert set(heads.index) == {"good", "flat", "tiny"} and not heads.loc["tiny", "trusted"]
    r = run_cli("sensitivity", str(store.uri), "--out", str(tmp_path / "o"), "--serial", "--trials", "2",
                "--no-figures")
    assert r.returncode == 0, r.stderr


def test_fit_on_every_point_with_a_target_and_chosen_candidates(timm_store, tmp_path):
    out = tmp_path / "o"
    r = run_cli("fit", timm_store, "--out", str(out), "--holdout-quantile", "1.0", "--ds-target", "0.8",
                "--laws", "eq1,logit-linear", "--frontiers", "vertices,bins,all", "--ds-task", "imagenetv2",
                "--ds-task", "imagenet-real", "--no-figures")
    assert r.returncode == 0, r.stderr
    fits = pd.read_parquet(out / "fits.parquet")
    # per group: the headline row and 2 laws x 3 frontiers
    assert len(fits) == 2 * (1 + 2 * 3) and set(fits["law"]) == {"ensemble", "eq1", "logit-linear"}
    assert (fits["n_heldout"] == 0).all() and fits["pred_err"].isna().all()      # nothing held out
    assert fits["backtest_err"].notna().all()                                     # back-tests inside the data
    heads = fits[fits["headline"]].set_index("ds_task")
    assert (heads["ds_target"] == 0.8).all()
    v2 = heads.loc["imagenetv2"]
    from meta_study.analysis import predict_fit
    if v2["us_needed"] < 1:    # the law reaches 80% DS at the US accuracy it says
        assert predict_fit(v2, [v2["us_needed"]])[0] == pytest.approx(0.8, abs=2e-3)
        assert v2["us_needed_lo"] <= v2["us_needed_hi"]


def test_analysis_user_errors(timm_store, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for args, needle in [(("fit", str(tmp_path / "nope"), "--out", str(tmp_path)), "no such store"),
                         (("fit", timm_store, "--out", str(tmp_path), "--holdout-quantile", "1.5"), "--holdout-quantile"),
                         (("fit", timm_store, "--out", str(tmp_path), "--ds-task", "cifar"),
                          "no rows match the selection: --ds-task cifar is not in the store (it has imagenet-a, imagenet-r, "
                          "imagenet-real, imagenetv2, sketch)"),
                         (("sensitivity", timm_store, "--out", str(tmp_path), "--sizes", "10,x"), "--sizes"),
                         (("sensitivity", timm_store, "--out", str(tmp_path), "--trials", "0"), "--trials"),
                         (("fit", timm_store, "--out", str(tmp_path), "--laws", "eq1,eq7"), "--laws: unknown name(s) eq7"),
                         (("fit", timm_store, "--out", str(tmp_path), "--frontiers", "hull"), "--frontiers"),
                         (("fit", timm_store, "--out", str(tmp_path), "--tolerance", "0"), "--tolerance"),
                         (("fit", timm_store, "--out", str(tmp_path), "--ds-target", "80"), "--ds-target"),
                         (("fit", timm_store, "--out", str(a_file)), "exists and is not a directory"),
                         (("report", timm_store, "--out", "/dev/null/x"), "cannot write there"),
                         (("fit", timm_store, "--out", "s3://bucket/x"), "local directory, not a URI")]:
        r = run_cli(*args)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.slow(60)
def test_outputs_are_reused_with_the_same_options_and_never_overwritten_with_others(timm_store, tmp_path):
    """One results directory, several commands: what was made with the same options, selection and
    store version is reused; a command with other options refuses in one line and writes nothing."""
    import shutil

    timm_store = shutil.copytree(timm_store, tmp_path / "store")   # this test commits to its store
    timm_store = str(timm_store)
    out = str(tmp_path / "out")
    sel = ("--ds-task", "imagenetv2", "--ds-task", "imagenet-real")
    assert run_cli("bootstrap", timm_store, "--out", out, "--samples", "50", "--serial", *sel).returncode == 0
    assert run_cli("sensitivity", timm_store, "--out", out, "--trials", "2", "--serial", *sel).returncode == 0
    boot = Path(out) / "bootstrap.parquet"
    before = boot.read_bytes(), boot.stat().st_mtime_ns

    # the report of the same options reuses both, and computes only what is missing
    r = run_cli("report", timm_store, "--out", out, "--samples", "50", "--trials", "2", "--serial", *sel)
    assert r.returncode == 0, r.stderr
    assert "reused bootstrap" in r.stdout and "reused sensitivity" in r.stdout and "reused fits" not in r.stdout
    assert (boot.read_bytes(), boot.stat().st_mtime_ns) == before
    assert (Path(out) / "index.html").exists() and "reused: " in (Path(out) / "index.html").read_text()

    # other options (the report's default, 1000 resamples): one line, exit 2, nothing rewritten
    r = run_cli("report", timm_store, "--out", out, "--trials", "2", "--serial", *sel)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    assert "bootstrap.parquet" in line and "samples 50 (this command: 1000)" in line and "another --out" in line
    assert (boot.read_bytes(), boot.stat().st_mtime_ns) == before
    # another selection is refused the same way
    r = run_cli("fit", timm_store, "--out", out)
    assert r.returncode == 2 and "another selection" in r.stderr
    # the same fit again is reused; a new store version recomputes it (an update, not a conflict)
    r = run_cli("fit", timm_store, "--out", out, *sel)
    assert r.returncode == 0 and "reused fits" in r.stdout
    Store(timm_store).commit(validate(make_rows(3, us_task="other", run_prefix="reuse-")).table)
    r = run_cli("fit", timm_store, "--out", out, *sel)
    assert r.returncode == 0 and "reused fits" not in r.stdout


def test_bootstrap_and_sensitivity_refuse_the_headlines_options(timm_store, tmp_path):
    """`bootstrap --frontiers bins` bootstrapped vertices and all (the default) without a word, and
    --laws, --tolerance, --ds-target were accepted and ignored."""
    out = tmp_path / "b"
    r = run_cli("bootstrap", timm_store, "--out", str(out), "--samples", "20", "--serial", "--ds-task", "imagenetv2",
                "--frontiers", "bins")
    assert r.returncode == 0, r.stderr
    assert set(pd.read_parquet(out / "bootstrap.parquet")["frontier"]) == {"bins"}
    for cmd, own in (("bootstrap", ("--samples", "20")), ("sensitivity", ("--trials", "1"))):
        # sensitivity took them too, and recorded --laws power beside the five laws it did not fit
        for flag, value in (("--laws", "power"), ("--tolerance", "5"), ("--ds-target", "0.8")):
            r = run_cli(cmd, timm_store, "--out", str(tmp_path / "x"), *own, "--serial", flag, value)
            line = one_error_line(r, f"{flag}: {cmd} refits the paper's Eq. 1 only")
            assert "--frontiers" in line
            assert not (tmp_path / "x").exists()
        # and their help no longer offers them
        shown = run_cli(cmd, "--help").stdout
        assert "--frontiers" in shown and not any(f in shown for f in ("--laws", "--tolerance", "--ds-target"))


def test_a_bootstrap_is_reused_by_a_report_with_other_answer_options(timm_store, tmp_path):
    """`bootstrap --out D` then `report --out D --threshold 0.2` was refused: "made with other
    options: --threshold 0.1", an option bootstrap does not have (nor --ds-target, --tolerance,
    none of which change a bootstrap)."""
    out = str(tmp_path / "out")
    sel = ("--ds-task", "imagenetv2")
    assert run_cli("bootstrap", timm_store, "--out", out, "--samples", "20", "--serial", *sel).returncode == 0
    r = run_cli("report", timm_store, "--out", out, "--samples", "20", "--trials", "2", "--serial", "--threshold", "0.2",
                "--ds-target", "0.8", *sel)
    assert r.returncode == 0, r.stderr
    assert "reused bootstrap" in r.stdout
    # the fits are another matter: a fit with a target, then one without, names the flag plainly
    r = run_cli("fit", timm_store, "--out", out, "--threshold", "0.2", *sel)
    line = one_error_line(r, "fits.parquet: made with other options: --ds-target")
    assert "None" not in line and "not given" in line, line


def test_a_report_on_fits_made_without_figures_draws_them(timm_store, tmp_path):
    """`fit --no-figures` then `report` said "reused fits", and the page had no fits grid and no
    per-group figures, without a word."""
    out = tmp_path / "out"
    sel = ("--ds-task", "imagenetv2")
    assert run_cli("fit", timm_store, "--out", str(out), "--no-figures", *sel).returncode == 0
    assert not (out / "figures" / "fits_grid.png").exists()
    r = run_cli("report", timm_store, "--out", str(out), "--samples", "20", "--trials", "2", "--serial", *sel)
    assert r.returncode == 0, r.stderr
    assert "reused fits" not in r.stdout and (out / "figures" / "fits_grid.png").exists()
    assert "DS vs US accuracy" in (out / "index.html").read_text()
    # with its figures drawn, the fits are reused by the next report
    r = run_cli("report", timm_store, "--out", str(out), "--samples", "20", "--trials", "2", "--serial", *sel)
    assert "reused fits" in r.stdout


def test_results_of_another_store_are_never_reused(tmp_path):
    """`fit stA --out R` then `fit stB --out R` said "reused fits from R (same options, selection
    and store version)" and gave stA's fits for stB: both stores were at version 1."""
    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    a.commit(validate(make_rows(40, ds_tasks=("from_a",), seed=1)).table)
    b.commit(validate(make_rows(40, ds_tasks=("from_b",), seed=2)).table)
    out = tmp_path / "R"
    assert run_cli("fit", a.uri, "--out", str(out), "--no-figures").returncode == 0
    second = run_cli("fit", b.uri, "--out", str(out), "--no-figures")
    assert second.returncode == 0, second.stderr
    assert "reused" not in second.stdout
    assert set(pd.read_parquet(out / "fits.parquet")["ds_task"]) == {"from_b"}
    again = run_cli("fit", b.uri, "--out", str(out), "--no-figures")   # the same store and version: reused
    assert "reused fits" in again.stdout
    # made by other analysis code (an upgrade, a fix to a law): the package version alone did not
    # change between commits, and the old fits were reused
    import json

    m = json.loads((out / "results.json").read_text())
    assert m["parts"]["fits"]["code"]
    m["parts"]["fits"]["code"] = "0123456789abcdef"
    (out / "results.json").write_text(json.dumps(m))
    third = run_cli("fit", b.uri, "--out", str(out), "--no-figures")
    assert third.returncode == 0 and "reused" not in third.stdout, third.stdout
    assert "reused fits" in run_cli("fit", b.uri, "--out", str(out), "--no-figures").stdout


def test_a_store_of_layer_probes_only_is_not_called_empty(tmp_path):
    """A layer-wise sweep's store (every row a probe of an intermediate layer): `fit` said "no rows
    match the selection (the store is empty)", and sent its owner looking for lost data."""
    rows = make_rows(12).assign(representation_layer=3)
    s = Store(str(tmp_path / "st"))
    s.commit(validate(rows).table)
    r = run_cli("fit", s.uri, "--out", str(tmp_path / "o"))
    line = one_error_line(r, "no rows match the selection")
    assert "empty" not in line and "every row is a probe of an intermediate layer (3); fit, report, ... --layer N" in line, line
    assert run_cli("fit", s.uri, "--out", str(tmp_path / "o"), "--layer", "3", "--no-figures").returncode == 0
    r = run_cli("refit", "--store", s.uri, "--out", str(tmp_path / "r"), "--serial", env={"MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0 and "refit: empty" in r.stdout and "intermediate layer (3)" in r.stdout, r.stdout
