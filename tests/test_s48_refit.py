"""Review (session 48) of the refit's options and of what a refused results directory and a selection
matching nothing say: a library refit's fit options reached the headline fits only (the sensitivity
and the bootstrap ran with the default loss and split); a refusal told `correlations` to give the
same --loss, which it has no flag for; "no rows match the selection" printed an S3 store's secret."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import committed_store, make_rows, one_error_line, quick_refit_config, run_cli  # noqa: E402

from meta_study.analysis.bootstrap import BootstrapOptions  # noqa: E402
from meta_study.analysis.fitting import FitOptions  # noqa: E402
from meta_study.analysis.groups import Selection, no_match, unknown_selection  # noqa: E402
from meta_study.analysis.results import MAIN_TABLE, MANIFEST, AnalysisOptions, ResultsDir, _key  # noqa: E402
from meta_study.analysis.sensitivity import SensitivityOptions  # noqa: E402
from meta_study.errors import UserError  # noqa: E402
from meta_study.refit import RefitConfig, refit  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


# --------------------------------------------------------------------------------------------
# RefitConfig(fit=...) reaches the sensitivity and the bootstrap
# --------------------------------------------------------------------------------------------


def test_a_refit_config_fits_every_part_with_its_fit_options():
    """RefitConfig(fit=FitOptions(loss="huber")) fitted the headlines with huber and every
    sensitivity draw and bootstrap resample with the default loss and hold-out split, while the
    run logged loss=huber for all of it."""
    fit = FitOptions(loss="huber", holdout_quantile=0.7, alpha_max=5.0, nondecreasing=True)
    cfg = RefitConfig(store="s", out="o", fit=fit, sensitivity=SensitivityOptions(trials=3),
                      bootstrap=BootstrapOptions(samples=20, seed=4))
    for part in (cfg.sensitivity, cfg.bootstrap):
        assert part.fit == cfg.fit, part
    # their own settings stay
    assert cfg.sensitivity.trials == 3 and cfg.bootstrap.samples == 20 and cfg.bootstrap.seed == 4
    # the defaults too (the refit's 1,000 resamples)
    assert RefitConfig(store="s", out="o", fit=fit).bootstrap.fit.loss == "huber"
    # with the threshold given apart: the fit that carries it is the one every part gets
    cfg = RefitConfig(store="s", out="o", fit=fit, threshold=0.3)
    assert cfg.sensitivity.fit.loss == "huber" and cfg.bootstrap.fit.holdout_quantile == 0.7
    # as `meta-study refit` builds it: nothing changes, nor does its options fingerprint
    cli = RefitConfig(store="s", out="o", fit=fit, sensitivity=SensitivityOptions(fit=fit),
                      bootstrap=BootstrapOptions(samples=1000, fit=fit))
    assert cli.options_fingerprint() == RefitConfig(store="s", out="o", fit=fit).options_fingerprint()


def test_a_refit_config_refuses_a_part_fitted_otherwise():
    """Two sets of fitting options: the run logs one (fit's), so the other part's numbers would
    be described wrongly; refused, naming the field."""
    with pytest.raises(ValueError, match=r"sensitivity\.fit differs from fit: loss 'log' \(fit: 'huber'\)"):
        RefitConfig(store="s", out="o", fit=FitOptions(loss="huber"),
                    sensitivity=SensitivityOptions(fit=FitOptions(loss="log")))
    with pytest.raises(ValueError, match=r"bootstrap\.fit differs from fit: holdout_quantile 0\.6 \(fit: 0\.8\)"):
        RefitConfig(store="s", out="o", bootstrap=BootstrapOptions(fit=FitOptions(holdout_quantile=0.6)))
    # the same fitting options with another selection (laws, back-tests) are the same fits
    from meta_study.analysis.selection import SelectionOptions

    cfg = RefitConfig(store="s", out="o", fit=FitOptions(loss="huber"),
                      sensitivity=SensitivityOptions(fit=FitOptions(loss="huber",
                                                                    selection=SelectionOptions(laws=("eq1",)))))
    assert cfg.sensitivity.fit.loss == "huber"


@pytest.mark.slow(40)
def test_a_library_refit_records_its_loss_in_every_part(tmp_path):
    """End to end: the version's results.json says each part was made with the refit's loss."""
    s = committed_store(tmp_path / "st", runs=20, tasks=("a",))
    res = refit(quick_refit_config(s, tmp_path / "out", fit=FitOptions(loss="huber")), log=lambda m: None)
    assert res.status == "refitted", res.message
    parts = json.loads((Path(res.version_dir) / MANIFEST).read_text())["parts"]
    for part in ("fits", "sensitivity", "bootstrap", "correlations"):
        assert "loss='huber'" in parts[part]["options"], (part, parts[part]["options"])


def test_one_source_is_a_tuple_of_it():
    """RefitConfig(sources="runs.csv") was read letter by letter: sources "r", "u", "n", ..."""
    assert RefitConfig(store="s", out="o", sources="runs.csv").sources == ("runs.csv",)
    assert RefitConfig(store="s", out="o", sources=Path("runs.csv")).sources == ("runs.csv",)
    assert RefitConfig(store="s", out="o", sources=["a.csv", "b.csv"]).sources == ("a.csv", "b.csv")
    cfg = RefitConfig(store=Path("s"), out=Path("o"), mapping=Path("m.yaml"), sources_file=Path("f.yaml"))
    assert (cfg.store, cfg.out, cfg.mapping, cfg.sources_file) == ("s", "o", "m.yaml", "f.yaml")


@pytest.mark.slow(10)
def test_a_refit_of_a_store_given_as_a_path(tmp_path):
    """RefitConfig(store=Path(...)) fitted every group, then ended in "argument of type 'PosixPath'
    is not iterable" (recording where the store is), leaving no version."""
    s = committed_store(tmp_path / "st", runs=20, tasks=("a",))
    cfg = quick_refit_config(s, tmp_path / "out")
    from dataclasses import replace

    res = refit(replace(cfg, store=tmp_path / "st", out=tmp_path / "out", max_group_figures=0), log=lambda m: None)
    assert res.status == "refitted", res.message
    info = json.loads((Path(res.version_dir) / "refit.json").read_text())
    assert info["store"] == str(tmp_path / "st"), info["store"]


# --------------------------------------------------------------------------------------------
# A refused results directory: advice in the running command's flags
# --------------------------------------------------------------------------------------------


def _recorded(d: Path, part: str, options: AnalysisOptions) -> None:
    """D holding ``part`` as a command with ``options`` recorded it (its main table and results.json)."""
    table = d / MAIN_TABLE[part]
    table.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x": [1]}).to_parquet(table)
    entry = {**_key(part, options, Selection()), "store_snapshot": "1:x", "code": "x", "figures": False}
    (d / MANIFEST).write_text(json.dumps({"parts": {part: entry}}))


def _plan_in(command: click.Command, d: Path, part: str, options: AnalysisOptions) -> str:
    with click.Context(command, info_name=command.name):
        with pytest.raises(UserError) as e:
            ResultsDir(d).plan(part, options, Selection(), "1:x")
    return str(e.value)


def test_a_refusal_says_the_same_options_only_where_the_command_has_their_flags(tmp_path):
    """`report --loss huber --out D`, then `correlations --out D`: "made with other options: --loss
    huber (this command: lsq); give another --out, or the same options to reuse it", and
    correlations has no --loss."""
    _recorded(tmp_path, "correlations", AnalysisOptions(fit=FitOptions(loss="huber"), fits=False, correlations=True))
    here = AnalysisOptions(fits=False, correlations=True)
    no_loss = click.Command("correlations", params=[click.Option(["--no-figures"], is_flag=True)])
    msg = _plan_in(no_loss, tmp_path, "correlations", here)
    assert msg.endswith("made with other options: --loss huber (this command: lsq); correlations has no --loss "
                        "option: give another --out"), msg
    # a command with the flag: the same options reuse it
    with_loss = click.Command("report", params=[click.Option(["--loss"])])
    msg = _plan_in(with_loss, tmp_path, "correlations", here)
    assert msg.endswith("; give another --out, or the same options to reuse it"), msg
    # a hidden flag (refused where given) is no flag to give
    hidden = click.Command("bootstrap", params=[click.Option(["--loss"], hidden=True)])
    assert "bootstrap has no --loss option" in _plan_in(hidden, tmp_path, "correlations", here)
    # a library caller (no command): as before
    with pytest.raises(UserError, match="give another --out, or the same options to reuse it$"):
        ResultsDir(tmp_path).plan("correlations", here, Selection(), "1:x")


def test_a_sensitivity_setting_no_command_has_is_not_asked_for(tmp_path):
    """A sensitivity part with the library's n_sizes: `sensitivity --out D` was told to give the
    same --n-sizes, a flag no command has; its --bootstrap (replace) is sensitivity's own."""
    _recorded(tmp_path, "sensitivity", AnalysisOptions(fits=False, sensitivity=SensitivityOptions(n_sizes=4,
                                                                                                replace=True)))
    sens = click.Command("sensitivity", params=[click.Option(["--bootstrap", "replace"], is_flag=True),
                                                click.Option(["--trials"])])
    msg = _plan_in(sens, tmp_path, "sensitivity", AnalysisOptions(fits=False, sensitivity=SensitivityOptions()))
    assert "--n-sizes 4 (this command: 8)" in msg and msg.endswith("sensitivity has no --n-sizes option: give "
                                                                    "another --out"), msg


def test_correlations_into_a_dir_of_a_reports_loss_names_no_flag_it_lacks(tmp_path):
    """The command itself, on a DIR whose correlations were made with --loss huber."""
    s = committed_store(tmp_path / "st", runs=20, tasks=("a",))
    d = tmp_path / "D"
    d.mkdir()
    _recorded(d, "correlations", AnalysisOptions(fit=FitOptions(loss="huber"), fits=False, correlations=True))
    r = run_cli("correlations", s.uri, "--out", str(d), "--no-figures")
    line = one_error_line(r, "made with other options: --loss huber (this command: lsq)")
    assert line.endswith("correlations has no --loss option: give another --out"), line


# --------------------------------------------------------------------------------------------
# A selection matching nothing names the store without its secrets
# --------------------------------------------------------------------------------------------


def test_no_match_and_unknown_values_mask_the_store_uris_secrets(tmp_path):
    s = committed_store(tmp_path / "st", runs=10, tasks=("a",))
    for uri in ("s3://AKIA:SECRET@lab/x?endpoint_override=127.0.0.1:9&scheme=http",
                "s3://lab/x?access_key=AKIA&secret_key=SECRET"):
        msg = no_match(uri, s, Selection(ds_task=("nope",)))
        assert "SECRET" not in msg and "no rows match the selection: --ds-task nope is not in the store (it has a)" in msg, msg
        assert msg.startswith("s3://") and "***" in msg, msg
        msg = unknown_selection(uri, s, Selection(ds_task=("a", "nope")))
        assert msg is not None and "SECRET" not in msg and "--ds-task nope: no such value in the store" in msg, msg
    # a local path stays as typed
    assert no_match("st/", s, Selection(ds_task=("nope",))).startswith("st/: no rows match the selection")


def test_fit_on_an_s3_store_with_keys_in_its_uri_never_prints_them(tmp_path, s3, monkeypatch):
    """`fit s3://KEY:SECRET@lab/st --ds-task typo --out D` printed SECRET in its one error line."""
    from meta_study.store import Store
    from meta_study.validation import validate

    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = (f"s3://testing:testing-secret@lab/s48?endpoint_override=127.0.0.1:{s3.port}&scheme=http"
           "&region=us-east-1")
    Store(uri).commit(validate(make_rows(4, ds_tasks=("a",))).table)
    for extra in (("--ds-task", "typo"), ("--ds-task", "a", "--ds-task", "typo")):
        r = run_cli("fit", uri, "--out", str(tmp_path / "D"), "--no-figures", *extra)
        line = one_error_line(r, "s3://testing:***@lab/s48")
        assert "testing-secret" not in r.stderr + r.stdout, line


def test_nothing_to_fit_masks_the_store_uris_secrets():
    """sensitivity / bootstrap's "no group ... to fit" line printed an s3:// store's keys."""
    from meta_study.analysis.fitting import FitOptions
    from meta_study.cli import _nothing_to_fit

    line = _nothing_to_fit("s3://KEY:SECRET@lab/x?secret_key=S2", FitOptions())
    assert "SECRET" not in line and "S2" not in line and "lab/x" in line
