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
