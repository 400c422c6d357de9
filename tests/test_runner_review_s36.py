"""Review of meta_study/tune/runner.py (session 36): task names MLflow refuses as metric keys,
and the early-stopped count of an interrupted sweep."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError
from meta_study.tune.runner import SweepSpec, grid, parse_options, run_sweep, sweep_main

SPEC = SweepSpec(name="t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 base=dict(model_name="vit_s", img_size=32), smoke=dict(model_name="vit_tiny_cpu", epochs=2))


def refusal(tmp_path, *argv: str) -> str:
    options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), *argv])
    with pytest.raises(UserError) as e:
        run_sweep(SPEC, options)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "sw").exists()                      # refused before anything was made
    return str(e.value)


def test_a_dataset_name_mlflow_refuses_in_a_metric_key_is_refused_before_ray(tmp_path):
    """``--dataset pets+aug=...`` trained every trial, then the writer left out every
    ``ds/pets+aug/...`` metric (MLflow refuses '+'): the trials' DS accuracies lost."""
    says = refusal(tmp_path, "--dataset", "pets+aug=imagefolder:/nonexistent", "--ds-task", "pets+aug")
    assert says.startswith("--dataset 'pets+aug': MLflow refuses its metric key 'ds/pets+aug/1shot/top1'"), says
    assert "only letters, digits" in says


def test_an_upstream_dataset_name_mlflow_refuses_is_refused(tmp_path):
    says = refusal(tmp_path, "--dataset", "in21k+=imagefolder:/nonexistent", "--us-task", "in21k+")
    assert "--dataset 'in21k+': MLflow refuses its metric key 'us/in21k+/top1'" in says, says


def test_a_name_whose_longest_key_is_over_250_characters_is_refused(tmp_path):
    """The key's length counts, not the name's: 235 characters fit ``ds/NAME/10shot/top1`` (249)
    but not its layer-wise keys (``--layerwise``: ``ds/NAME/10shot/layer{L}/top1``)."""
    name = "p" * 235
    common = ("--dataset", f"{name}=imagefolder:/nonexistent", "--ds-task", name)
    options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), *common])
    from meta_study.tune.runner import check_fixed_config

    check_fixed_config(SPEC, options)                          # its keys all fit: accepted
    says = refusal(tmp_path, *common, "--layerwise")
    assert says.startswith(f"--dataset '{name}': MLflow refuses its metric key 'ds/{name}/1shot/layer")
    assert "1 to 250 characters" in says, says


def test_the_refusal_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sweep_main(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"), "--dataset",
                          "pets+aug=imagefolder:/nonexistent", "--ds-task", "pets+aug"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "MLflow refuses" in err, err


def test_a_dataset_name_given_twice_with_two_paths_is_refused():
    """``--dataset pets=imagefolder:/a --dataset pets=imagefolder:/b``: the sweep trained on /b
    without a word (the last one won), its rows under the name of both."""
    with pytest.raises(UserError) as e:
        parse_options(SPEC, ["--dataset", "pets=imagefolder:/a", "--dataset", "pets=imagefolder:/b"])
    assert str(e.value) == ("--dataset pets given twice, as imagefolder:/a and as imagefolder:/b: "
                            "give each name one dataset")
    same = parse_options(SPEC, ["--dataset", "pets=imagefolder:/a", "--dataset", "pets=imagefolder:/a"])
    assert dict(same.datasets) == {"pets": "imagefolder:/a"}          # the same twice: harmless


ASHA_SCRIPT = '''"""A test sweep: ASHA over three trials run one at a time."""
from meta_study.tune.runner import SweepSpec, grid, sweep_main

# the first trial learns and finishes; the second barely moves (lr 1e-9): below the first at
# ASHA's first rung, stopped; the third is the first again: above the cutoff, it trains on
SPEC = SweepSpec(name="asha_t", doc=__doc__, space=lambda o: {"lr": grid([2e-3, 1e-9, 2e-3])},
                 smoke=dict(model_name="vit_tiny_cpu", epochs=2), scheduler="asha")

if __name__ == "__main__":
    sweep_main(SPEC)
'''


@pytest.mark.slow(240)
def test_ctrl_c_counts_the_trials_asha_had_stopped(tmp_path):
    """Ctrl-C after ASHA had stopped a trial: the summary said early_stopped 0 (hard-coded), the
    stopped trial counted only among the interrupted. Now 1; the trial Ctrl-C stopped while it
    trained is not counted (Tune stops it without telling the callbacks, so it looks the same)."""
    from conftest import interrupt_sweep

    script = tmp_path / "asha_t.py"
    script.write_text(ASHA_SCRIPT)
    _, out, s = interrupt_sweep(script, ["--smoke", "--storage-path", str(tmp_path / "ray"), "--max-concurrent", "1",
                                         "--set", "epochs=20"],
                                "ray/asha_t-smoke/*_00002/checkpoint_000000", timeout=600)   # the third trial past its first report
    assert (s["trials"], s["finished"], s["errored"]) == (3, 1, 0), s
    assert s["early_stopped"] == 1 and s["interrupted"] == 2, s    # the ASHA-stopped run waits too: KILLED
