"""Session 48, the lead's small fixes: wording a reviewer found garbled or ambiguous."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from meta_study.analysis.fitting import FitOptions, fit_groups


def test_the_extrapolation_flag_reads_as_a_sentence() -> None:
    """It read "so the stop-paying point (is never reached) and the saturation are not findings"."""
    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 200)
    ds = expit(0.2 + 1.2 * logit(us)) - rng.exponential(0.01, 200)   # rises to 100%: never stops paying
    s = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0))[0]
    flag = [w for w in s.warnings if w.startswith("extrapolation")]
    assert flag, s.warnings
    assert "(is never reached)" not in flag[0] and "are not findings" not in flag[0]
    assert flag[0].endswith("neither the stop-paying point (never, on the laws' curve) nor the saturation is a finding")


def test_the_frontier_ranking_says_every_fitting_model_not_all_models() -> None:
    """"2.61 pt with all models" sat beside the frontier named `all`: the full sample is meant."""
    from meta_study.analysis.sensitivity import frontier_ranking_text, rank_frontiers

    rows = [{"us_task": "u", "ds_task": "d", "eval_protocol": "p", "shots": None, "frontier": fr, "n": n,
             "fit_err_mean": e, "fit_err_std": 0.0, "pred_err_mean": e * s, "pred_err_std": 0.0, "trials": 3, "ok": 3}
            for fr, e in (("bins", 0.011), ("vertices", 0.02)) for n, s in ((10, 1.0), (40, 0.5))]
    text = frontier_ranking_text(rank_frontiers(pd.DataFrame(rows)))
    assert "with all models" not in text and "with every fitting model" in text, text


def _saturating_group() -> tuple[np.ndarray, np.ndarray]:
    """Models below a law that has nearly levelled off at the best of them: e_DS = 0.8 e_US^2.5 + 0.1
    (true slope 0.063 DS pt per US pt at 90% US), with exponential gaps below it."""
    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 200)
    return us, 1 - 0.8 * (1 - us) ** 2.5 - 0.1 - rng.exponential(0.01, 200)


def test_a_trusted_step_states_the_laws_spread_of_its_slope() -> None:
    """The step's slope was stated alone (0.21 DS pt per US pt where the true law gives 0.06): the
    levelling laws say ~0 and the rising ones much more; the answer now says how far they disagree."""
    from meta_study.analysis.answers import answer_text
    from meta_study.analysis.groups import Group
    from meta_study.analysis.headline import point_secant
    from meta_study.analysis.tables import fits_frame

    us, ds = _saturating_group()
    sel = fit_groups([(us, ds)], FitOptions(holdout_quantile=1.0))[0]
    st = sel.claims.steps[0]
    true = float(point_secant(lambda u: 1 - 0.8 * (1 - u) ** 2.5 - 0.1, np.array([st.us]))[0])
    assert st.slope_lo <= true <= st.slope_hi < 1.0 and st.slope_lo < st.slope < st.slope_hi
    row = fits_frame([Group("u", "d", "p", None, us, ds)], [sel]).iloc[0].to_dict()
    assert row["slope_plus1_lo"] == st.slope_lo and row["slope_plus1_hi"] == st.slope_hi
    text = answer_text(row)
    assert sel.trusted, sel.trust_reason
    said = f"{st.slope:.2f} DS pt per US pt (spread of the laws: {st.slope_lo:.2f}-{st.slope_hi:.2f})"
    assert "+1 US pt: " in text and said in text, text
    # a row written before the spread was stored states the slope alone, as it did
    old = {k: v for k, v in row.items() if not (k.startswith("slope_plus") and k.endswith(("_lo", "_hi")))}
    assert f"{st.slope:.2f} DS pt per US pt;" in answer_text(old) and "spread of the laws: 0" not in answer_text(old)


def test_a_sweeps_tracking_uri_with_a_slash_in_its_password_never_shows_it() -> None:
    """--tracking-uri http://u:pa/ss@h:5000 printed urllib's "Port could not be cast to integer
    value as 'pa'": the URI was parsed before its credentials were refused."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.tune.preflight import refuse_secrets

    with pytest.raises(UserError) as e:
        refuse_secrets(tracking_uri="http://u:zq/xy@h:5000", storage_path=None)
    assert "zq" not in str(e.value) and "xy" not in str(e.value) and "credentials" in str(e.value), str(e.value)


def test_a_demo_sweep_whose_end_of_sweep_check_could_not_run_is_not_ingested(tmp_path, monkeypatch) -> None:
    """SweepResult.unreconciled (MLflow's search failed at the sweep's end: runs may be left
    RUNNING, which ingest does not read): the demo went on to ingest and report without a word."""
    import pytest

    from meta_study import demo
    from meta_study.tune import runner

    res = runner.SweepResult(name="demo", experiment_dir="/x/ray/demo", tracking_uri="sqlite:///x.db",
                             parent_run_id="p", trials=18, finished=18, errored=0, early_stopped=0, seconds=1.0,
                             unreconciled="ConnectionError: refused")
    monkeypatch.setattr(runner, "run_sweep", lambda spec, options: res)
    with pytest.raises(demo.DemoStepFailed, match=r"could not check its runs .*ConnectionError: refused.* nothing "
                                                  r"was ingested"):
        demo._train(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", serial=True, log=lambda m: None)


def test_run_ids_from_a_binary_column_are_its_text() -> None:
    """A run id from a Parquet binary column (pyarrow gives bytes) was Python's repr, "b'r1'",
    bare or in a template; the validator already reads such bytes as their text elsewhere."""
    from meta_study.ingest.mapping import render_run_ids

    frame = pd.DataFrame({"rid": [b"r1", b"caf\xc3\xa9"], "seed": [b"s1", b"s2"]})
    bare, _ = render_run_ids("rid", frame, "f.parquet")
    assert bare.tolist() == ["r1", "café"]
    templ, problems = render_run_ids("{rid}-{seed}", frame, "f.parquet")
    assert templ.tolist() == ["r1-s1", "café-s2"] and not any(problems or [])


def test_a_sources_file_entry_given_as_text_is_told_entries_are_maps(tmp_path) -> None:
    """"- runs.csv" in a sources file said "sources[0] needs a 'uri'", which did not say why."""
    import pytest

    from meta_study.errors import UserError
    from meta_study.ingest.sources import load_sources_file

    f = tmp_path / "sources.yaml"
    f.write_text("sources:\n  - runs.csv\n")
    with pytest.raises(UserError, match=r"sources\[0\] is the text 'runs.csv'; each entry is a map with a 'uri' "
                                        r"\(- uri: runs.csv\)"):
        load_sources_file(str(f))
