"""Review of the sweep entry points' preflight checks (session 37): tasks a search space gives
trials, and ``--dataset`` names that are built-in tasks."""

from __future__ import annotations

import pytest
from ray import tune

from meta_study.errors import UserError
from meta_study.tune.preflight import check_dataset_paths, check_searched_tasks, space_values
from meta_study.tune.runner import SweepOptions, SweepSpec, grid, parse_options, run_sweep

SPEC = SweepSpec(name="t", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                 base=dict(model_name="vit_s", img_size=32), smoke=dict(model_name="vit_tiny_cpu", epochs=2))


def refused(space, options=SweepOptions(), cfg=None) -> str:
    with pytest.raises(UserError) as e:
        check_searched_tasks(space, cfg or {}, options)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_the_values_of_a_search_space_entry_are_listed():
    assert space_values(grid([["a"], ["b"]])) == [["a"], ["b"]]
    assert space_values(tune.choice(["synth_us", "pets"])) == ["synth_us", "pets"]
    assert space_values(["synth_shape"]) == [["synth_shape"]]          # a plain value: itself
    assert space_values(tune.uniform(0, 1)) is None                     # nothing to list


def test_a_misspelt_searched_ds_task_is_refused():
    """``"ds_tasks": grid([["synth_shape"], ["synth_shpe"]])``: only the fixed config's tasks were
    checked, so every trial of the misspelt one failed at its first evaluation, retried."""
    says = refused({"ds_tasks": grid([["synth_shape"], ["synth_shpe"]])})
    assert says.startswith("search space ds_tasks: no such task 'synth_shpe'"), says
    says = refused({"us_task": tune.choice(["synth_us", "in21k"])})
    assert says.startswith("search space us_task: no such task 'in21k'"), says


def test_a_searched_ds_tasks_choice_that_is_not_a_list_is_refused():
    """``tune.choice(["synth_shape", "synth_combo"])``: a trial's ds_tasks was a string."""
    says = refused({"ds_tasks": tune.choice(["synth_shape", "synth_combo"])})
    assert "search space ds_tasks: 'synth_shape' is not a list of task names" in says, says
    says = refused({"ds_tasks": grid([["synth_shape", "synth_shape"]])})
    assert "'synth_shape' given twice" in says, says


def test_a_metric_key_of_a_searched_setting_mlflow_refuses_is_refused():
    """A 235-character dataset name fits every key of a fixed ``layerwise=False``, but not the
    layer-wise keys of the trials whose searched ``layerwise`` is True: their DS metrics lost."""
    name = "p" * 235
    options = SweepOptions(datasets={name: "imagefolder:/nonexistent"})
    check_searched_tasks({"seed": grid([0])}, {"ds_tasks": [name]}, options)        # fixed: accepted
    says = refused({"layerwise": tune.choice([False, True])}, options, {"ds_tasks": [name]})
    assert says.startswith(f"--dataset '{name}': MLflow refuses its metric key 'ds/{name}/1shot/layer"), says


def test_searched_tasks_that_exist_are_accepted():
    options = SweepOptions(datasets={"pets": "imagefolder:/nonexistent"})
    check_searched_tasks({"ds_tasks": grid([["pets"], ["synth_shape", "synth_combo"]]),
                          "us_task": tune.choice(["synth_us", "pets"]), "shots": grid([[1, 5], [10]])}, {}, options)
    check_searched_tasks(lambda trial: {}, {}, options)           # define-by-run: nothing to list


def test_a_dataset_named_after_a_built_in_task_is_refused(tmp_path):
    """``--dataset synth_combo=imagefolder:/data/x`` replaced the procedural task in every trial
    without a word, and its results were stored as the built-in task's."""
    with pytest.raises(UserError) as e:
        check_dataset_paths({"synth_combo": f"imagefolder:{tmp_path}"}, on_this_machine=True)
    assert str(e.value).startswith(f"--dataset synth_combo=imagefolder:{tmp_path}: synth_combo is a built-in task")
    check_dataset_paths({"combo2": f"imagefolder:{tmp_path}"}, on_this_machine=True)      # another name: fine


def test_run_sweep_refuses_a_built_in_name_before_anything_starts(tmp_path):
    options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"),
                                   "--dataset", f"synth_us=imagefolder:{tmp_path}", "--us-task", "synth_us"])
    with pytest.raises(UserError) as e:
        run_sweep(SPEC, options)
    assert "synth_us is a built-in task" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "sw").exists()


def test_a_zoo_model_outside_the_table_is_sized_from_its_parameter_count():
    """``vit_l`` (304M parameters) got the fixed 8 GiB of an unknown model, less than ViT-B's 12
    (86M); a BiT-R50x1 (24M, ResNet-50's size) a whole GPU instead of ResNet-50's half."""
    from meta_study.tune import sizing    # the zoo's sizing (sweeps/zoo.py's, before)

    gpu = SweepOptions(gpus_per_trial=1.0, cpus_per_trial=4.0)
    vit_b, vit_l = (sizing.resources({"model_name": m, "img_size": 32}, gpu) for m in ("vit_b", "vit_l"))
    assert vit_l.gpu == 1.0 and 30 <= vit_l.memory_gb <= 34 and vit_l.memory_gb > vit_b.memory_gb, vit_l
    bit = sizing.resources({"model_name": "resnetv2_50x1_bit", "img_size": 32}, gpu)
    assert bit.gpu == sizing.SIZES["resnet_50"][0] == 0.5 and 6 <= bit.memory_gb <= 8, bit
    assert sizing.size_of({"model_name": "no_such_model"}) == sizing.UNKNOWN_SIZE


@pytest.mark.parametrize("smoke", [False, True])
def test_head_lr_sweeps_multiples_of_the_body_lr_given_with_set(smoke):
    """``sweeps/head_lr.py --set lr=1e-3`` swept 8e-5..8e-3, 0.08x to 8x the body's lr, not the
    documented 0.1x to 10x."""
    from conftest import sweep_module

    head_lr = sweep_module("head_lr")
    options = parse_options(head_lr.SPEC, [*(["--smoke"] if smoke else []), "--set", "lr=1e-3"])
    ratios = [v / 1e-3 for v in head_lr.SPEC.space(options)["head_lr"]["grid_search"]]
    assert ratios == pytest.approx([0.1, 10.0] if smoke else [0.1, 0.3, 1.0, 3.0, 10.0])
    plain = parse_options(head_lr.SPEC, [])
    assert head_lr.SPEC.space(plain)["head_lr"]["grid_search"][0] == pytest.approx(0.1 * head_lr.BODY_LR)


def test_a_spool_object_with_bytes_that_are_not_utf8_does_not_block_the_others(tmp_path):
    """One spool object with non-UTF-8 bytes (a damaged disk) raised UnicodeDecodeError out of
    ``spooled()``: the writer left the whole spool, good objects too, for a next session that
    failed the same way, so their MLflow operations were never sent."""
    import json

    from meta_study.tune.state import SPOOL, StateDir

    state = StateDir(str(tmp_path / "sweep"))
    good = json.dumps({"kind": "tag", "trial": "t1", "payload": {"key": "k", "value": "v"}})
    state.write_bytes(f"{SPOOL}/1-1-a.jsonl", b'{"kind": "tag", "trial": "t0", "pay\xff\xfe"}\n' + good.encode() + b"\n")
    state.write_bytes(f"{SPOOL}/2-1-b.jsonl", (good + "\n").encode())
    (first, lines), (second, more) = state.spooled()
    assert (first, second) == ("1-1-a.jsonl", "2-1-b.jsonl") and more == [good] and lines[1] == good
    with pytest.raises(ValueError):        # the damaged line: skipped by the writer, never sent
        json.loads(lines[0])


@pytest.mark.parametrize("uri", ["sqlite://mlflow.db", "sqlite://", "sqlite:///:memory:"])
def test_a_sqlite_tracking_uri_without_a_file_is_one_line(uri):
    """``--tracking-uri sqlite://mlflow.db`` (two slashes) was SQLAlchemy's multi-line ArgumentError
    out of the sweep; ``sqlite://`` an in-memory database the writer process does not share."""
    from meta_study.tune.preflight import check_tracking_uri

    with pytest.raises(UserError) as e:
        check_tracking_uri(uri)
    assert str(e.value).startswith(f"--tracking-uri {uri}: ") and "sqlite:////ABSOLUTE/mlflow.db" in str(e.value)
    assert "\n" not in str(e.value)
    for fine in ("sqlite:///mlflow.db", "sqlite:////tmp/x/mlflow.db", "sqlite:///C:/x/mlflow.db"):
        check_tracking_uri(fine)


def test_run_sweep_refuses_a_two_slash_sqlite_uri_before_anything_starts(tmp_path):
    options = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "sw"),
                                   "--tracking-uri", "sqlite://mlflow.db"])
    with pytest.raises(UserError) as e:
        run_sweep(SPEC, options)
    assert "a host (mlflow.db)" in str(e.value)
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("spec", ["imagefolder:", "parquet:", "parquet:,/data/test.parquet", "imagefolder: ",
                                  "parquet:/a/train.parquet,/a/test.parquet,/a/more.parquet"])
def test_a_dataset_without_a_path_or_with_three_is_refused(spec, tmp_path):
    """``--dataset pets=imagefolder:`` passed the checks and every trial failed on the empty path;
    a third parquet path was read as part of the test file's name."""
    with pytest.raises(UserError) as e:
        check_dataset_paths({"pets": spec}, on_this_machine=False)
    assert str(e.value).startswith(f"--dataset pets={spec}: expected "), str(e.value)
    (tmp_path / "t.parquet").write_bytes(b"")
    check_dataset_paths({"pets": f"parquet:{tmp_path}/t.parquet,"}, on_this_machine=True)   # no test file: fine


def test_a_blank_tracking_uri_is_named_blank_not_a_plain_path():
    # "--tracking-uri ' '" was described as "a plain path"
    from meta_study.errors import UserError
    from meta_study.tune.preflight import refuse_secrets

    with pytest.raises(UserError, match=r"^--tracking-uri ' ': empty; e\.g\. http://HOST:5000"):
        refuse_secrets(tracking_uri=" ", storage_path=None)
