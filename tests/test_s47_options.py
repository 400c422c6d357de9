"""Review s47 (sensitivity, bootstrap, frontiers, resampling options): every count option is a
whole number checked up front, in one line; intervals of too few resamples for their level are
said to be; one frontier name is one name, not its letters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from meta_study.analysis.bootstrap import BootstrapOptions, bootstrap_group, min_samples, resolution_note
from meta_study.analysis.fitting import FitOptions
from meta_study.analysis.frontiers import check_frontier_names, frontier_points
from meta_study.analysis.sensitivity import SensitivityOptions, sensitivity_group
from meta_study.errors import UserError

KEY = ("u", "d", "p", None)


def _group(seed: int, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    us = r.uniform(0.3, 0.9, n)
    return us, 1 - (0.1 + 0.5 * (1 - us) ** 1.5) - r.uniform(0, 0.1, n)


@pytest.mark.parametrize("option", ["trials", "n_sizes", "min_size", "seed"])
def test_sensitivity_count_options_given_as_whole_floats_are_ints(option):
    # SensitivityOptions(trials=1e1) was accepted as the float 10.0 and failed later, in range()
    # inside a Ray worker ("'float' object cannot be interpreted as an integer")
    o = SensitivityOptions(**{option: 1e1})
    assert getattr(o, option) == 10 and type(getattr(o, option)) is int


@pytest.mark.parametrize("kw,shown", [({"trials": 2.5}, "trials (draws per sample size) must be a whole number, got 2.5"),
                                      ({"trials": True}, "trials"), ({"trials": "5"}, "'5'"),
                                      ({"n_sizes": 8.5}, "n_sizes"), ({"min_size": 10.5}, "min_size"),
                                      ({"seed": 1.5}, "seed"), ({"seed": math.nan}, "seed"),
                                      ({"sizes": (10.5, 20)}, "sizes (models in a sample) must be a whole number, "
                                                              "got 10.5"),
                                      ({"sizes": "10"}, "sizes")])
def test_sensitivity_count_options_that_are_no_whole_number_are_one_user_error(kw, shown):
    # 2.5 trials ran 2 and 10.5 models drew 10, without a word; "5" was a TypeError from a comparison
    with pytest.raises(UserError) as e:
        SensitivityOptions(**kw)
    assert shown in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("kw", [{"samples": 20.5}, {"seed": 0.5}, {"samples": "20"}, {"samples": True}])
def test_bootstrap_count_options_share_the_same_user_error(kw):
    # the bootstrap's own check raised a plain ValueError: a traceback, not a user's error, at the CLI
    with pytest.raises(UserError, match=rf"{next(iter(kw))} \(.*\) must be a whole number, got"):
        BootstrapOptions(**kw)


def test_a_sensitivity_of_whole_float_options_runs_and_equals_the_int_one():
    us, ds = _group(0)
    fit = FitOptions(holdout_quantile=None)
    kw = {"frontiers": ("all",), "fit": fit}
    a = sensitivity_group(KEY, us, ds, SensitivityOptions(trials=2.0, sizes=(10.0,), seed=1.0, **kw))
    b = sensitivity_group(KEY, us, ds, SensitivityOptions(trials=2, sizes=(10,), seed=1, **kw))
    assert len(a) == 2 and a.equals(b)


def test_one_sample_size_and_a_list_of_them_are_tuples():
    # sizes=10 was "'int' object is not iterable"; a list made the frozen options unhashable
    assert SensitivityOptions(sizes=10).sizes == (10,)
    o = SensitivityOptions(sizes=[10, np.int64(30)])
    assert o.sizes == (10, 30) and all(type(n) is int for n in o.sizes)
    hash(o)


def test_a_frontier_name_is_one_name_not_its_letters():
    # check_frontier_names("vertices") read the string letter by letter ("unknown frontier(s) 'v',
    # 'e', ..."): SensitivityOptions(frontiers="all") and BootstrapOptions(frontiers="vertices")
    # were refused on their letters, while SelectionOptions(frontiers="vertices") took one name
    assert check_frontier_names("vertices") == ("vertices",)
    assert check_frontier_names(["all", "vertices", "all"]) == ("all", "vertices")
    assert SensitivityOptions(frontiers="all").frontiers == ("all",)
    assert BootstrapOptions(frontiers="vertices").frontiers == ("vertices",)
    with pytest.raises(ValueError, match=r"unknown frontier\(s\) 'vertcies'; the frontiers are vertices, "):
        check_frontier_names("vertcies")


def test_frontiers_that_are_no_names_are_one_clear_error():
    with pytest.raises(ValueError, match="frontiers must be a frontier name or a sequence of them, got None"):
        SensitivityOptions(frontiers=None)
    # a list given as one name was "TypeError: unhashable type: 'list'"
    with pytest.raises(ValueError, match=r"unknown frontier\(s\) \['vertices'\]"):
        frontier_points(["vertices"], np.array([0.5, 0.6]), np.array([0.4, 0.5]))


def test_min_samples_put_a_resample_beyond_each_end_of_the_interval():
    assert [min_samples(x) for x in (0.9, 0.95, 0.99)] == [21, 41, 201]
    for level in (0.8, 0.9, 0.95, 0.99):
        b = min_samples(level)
        p = (1 - level) / 2
        assert p * (b - 1) >= 1 - 1e-9 > p * (b - 2)
        # at one resample fewer, the ends of np.quantile lie strictly between the two most extreme values
        vals = np.arange(b - 1, dtype=float)
        lo, hi = np.quantile(vals, [p, 1 - p])
        assert 0 < lo < 1 and b - 3 < hi < b - 2


def _table(samples: int, level: float = 0.95, n_ok: int | None = None) -> pd.DataFrame:
    rows = [{"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "frontier": f, "param": "alpha",
             "estimate": 2.0, "lo": 1.5, "hi": 2.5, "level": level, "samples": samples,
             "n_ok": samples if n_ok is None or f == "all" else n_ok, "status": "ok"} for f in ("vertices", "all")]
    return pd.DataFrame(rows)


def test_bootstrap_says_when_its_resamples_are_too_few_for_the_level():
    # `meta-study bootstrap --samples 10` at the default 95% printed intervals narrower than 95% as 95%
    from meta_study.cli import bootstrap_lines

    lines = bootstrap_lines(_table(10), alpha_max=10.0)
    assert lines[0] == "alpha with its 95% interval:"
    assert lines[-1] == ("note: 10 resamples per group are too few for 95% intervals: each end lies between the two "
                         "most extreme resamples, and the intervals are narrower than 95%; --samples 41 or more "
                         "resolves them")
    assert "--samples 201 or more" in resolution_note(_table(100, level=0.99))
    assert resolution_note(_table(41)) == "" and resolution_note(_table(1000)) == ""
    assert len(bootstrap_lines(_table(1000), alpha_max=10.0)) == 2
    # enough resamples asked, too few usable on one frontier
    assert resolution_note(_table(200, n_ok=30)) == (
        "note: 1 of 2 intervals rest on fewer than 41 usable resamples, too few for 95%: each of their ends lies "
        "between the two most extreme usable resamples, and they are narrower than 95%")
    # no interval at all (NaN ends), or a table without the counts: nothing to say
    nan = _table(10).assign(lo=math.nan, hi=math.nan)
    assert resolution_note(nan) == "" and resolution_note(_table(10).drop(columns=["samples"])) == ""


def test_a_real_bootstrap_of_few_resamples_gets_the_note():
    us, ds = _group(1)
    t = bootstrap_group(KEY, us, ds, BootstrapOptions(samples=20, level=0.9, frontiers=("all",),
                                                      fit=FitOptions(holdout_quantile=None)))
    assert "note: 20 resamples per group are too few for 90% intervals" in resolution_note(t)
    assert "--samples 21 or more" in resolution_note(t)
