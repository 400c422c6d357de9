"""Review s49 (parts): sensitivity, bootstrap and correlations as pure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from meta_study.analysis import bootstrap as bootstrap_mod
from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap_group


def _cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    us = rng.uniform(0.5, 0.9, n)
    return us, 0.2 + 0.5 * us ** 2 + rng.normal(0, 0.01, n)


def test_bootstrap_fits_its_resamples_a_block_at_a_time(monkeypatch):
    """Every resample of a group (its drawn indices, each frontier's points) was held in memory at
    once and fitted in one call: 6.7 GB per task at --samples 100000 on a 1,200-model group. The
    resamples are now drawn and fitted a block at a time, the same draws, the same intervals."""
    us, ds = _cloud(60)
    key = ("u", "d", "p", None)
    opts = BootstrapOptions(samples=200, seed=3)
    monkeypatch.setattr(bootstrap_mod, "BOOTSTRAP_BLOCK_POINTS", 10 ** 9)   # one block: all at once
    whole = bootstrap_group(key, us, ds, opts)

    calls: list[int] = []
    real = bootstrap_mod.fit_power_laws

    def counting(e_us, e_ds, **kw):
        calls.append(len(e_us))
        return real(e_us, e_ds, **kw)

    monkeypatch.setattr(bootstrap_mod, "fit_power_laws", counting)
    monkeypatch.setattr(bootstrap_mod, "BOOTSTRAP_BLOCK_POINTS", 480)       # 10 resamples of 48 points
    blocks = bootstrap_group(key, us, ds, opts)
    assert max(calls) <= 2 * 10, calls        # old code: one call of 2 x 201 problems
    pd.testing.assert_frame_equal(blocks.drop(columns=["estimate", "lo", "hi"]),
                                  whole.drop(columns=["estimate", "lo", "hi"]))
    for c in ("estimate", "lo", "hi"):        # the same draws: equal to the solver's rounding
        np.testing.assert_allclose(blocks[c], whole[c], rtol=1e-8, atol=1e-12)


def test_sensitivity_fits_its_draws_a_block_at_a_time(monkeypatch):
    """Every draw's frontier points (and a dict per row) were held until the group's end and
    fitted in one call: ~39 MB per 100 trials of a 1,500-model group, 3.9 GB per task at
    --trials 10000, for a table of 0.7 MB. Now a block at a time: the same rows, in order."""
    from meta_study.analysis import sensitivity as sens

    us, ds = _cloud(80, seed=1)
    us[5] = np.nan
    for key, opts in ((("u", "d", "p", None), sens.SensitivityOptions(trials=6, sizes=(5, 20, 200))),
                      (("u", "d", "p", 5), sens.SensitivityOptions(trials=4, sizes=(5, 90), replace=True))):
        monkeypatch.setattr(sens, "SENSITIVITY_BLOCK_POINTS", 10 ** 9)
        whole = sens.sensitivity_group(key, us, ds, opts)
        calls: list[int] = []
        real = sens.fit_power_laws

        def counting(e_us, e_ds, **kw):
            calls.append(sum(len(u) for u in e_us))
            return real(e_us, e_ds, **kw)

        monkeypatch.setattr(sens, "fit_power_laws", counting)
        monkeypatch.setattr(sens, "SENSITIVITY_BLOCK_POINTS", 300)
        blocks = sens.sensitivity_group(key, us, ds, opts)
        monkeypatch.setattr(sens, "fit_power_laws", real)
        assert len(calls) > 3 and max(calls) < 300 + 6 * 90, calls    # old code: one call of every draw
        assert list(blocks.dtypes) == list(whole.dtypes)
        num = ["k", "alpha", "e_ir", "saturation", "fit_err", "pred_err"]
        pd.testing.assert_frame_equal(blocks.drop(columns=num), whole.drop(columns=num))
        for c in num:
            np.testing.assert_allclose(blocks[c].to_numpy(float), whole[c].to_numpy(float), rtol=1e-8, atol=1e-12)
    empty = sens.sensitivity_group(("u", "d", "p", None), us, ds,
                                   sens.SensitivityOptions(fit=sens.FitOptions(holdout_above=0.0)))
    assert empty.empty and list(empty.columns) == list(sens.SENSITIVITY_COLUMNS)
