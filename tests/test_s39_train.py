"""Defects found in the s39 review of the training loop, checkpoints and trial functions: each
test failed before its fix."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.fs as pafs
import pytest
import torch

import meta_study.train as train_pkg
from meta_study.train import TrainConfig, checkpoint_step, create_model, get_task, load_checkpoint
from meta_study.train import save_checkpoint, smoke_config
from meta_study.train import trial as train_trial_mod
from meta_study.train.optim import build_optimizer, build_schedule

torch.set_num_threads(1)


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    model, _ = create_model("vit_tiny_cpu", num_classes=4, img_size=8)
    opt = build_optimizer(model)
    return model, opt, build_schedule(opt, 10, 1)


def _save(directory: Path, step: int) -> Path:
    model, opt, sched = _parts()
    return Path(save_checkpoint(str(directory), model=model, opt=opt, sched=sched, step=step, cfg=TrainConfig()))


def _flip_a_weight_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record of a torch.save zip (not its header)."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little") \
        + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_checkpoint_with_a_damaged_weight_is_refused_not_resumed(tmp_path: Path) -> None:
    # torch.load does not check the zip's CRC-32s: a flipped byte in the weights loaded without a
    # word, and the run resumed with another model than the one it saved
    path = _save(tmp_path, 3)
    _flip_a_weight_byte(path)
    model, opt, sched = _parts()
    with pytest.raises(ValueError, match=r"checkpoint\.pt: not a readable checkpoint \(damaged: its record .* "
                                         r"fails its CRC-32 check\)") as e:
        load_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched)
    assert "\n" not in str(e.value)


def test_checkpoint_step_reads_the_header_only_and_names_a_damaged_file(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # it loaded the whole checkpoint (weights, optimizer state) to read one int, then
    # evaluate_checkpoint loaded it again; a damaged file was torch's UnpicklingError, naming nothing
    _save(tmp_path / "good", 7)
    calls: list[dict[str, Any]] = []
    real = torch.load

    def spy(*a: Any, **kw: Any) -> Any:
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    assert checkpoint_step(str(tmp_path / "good")) == 7
    assert [c.get("mmap") for c in calls] == [True]
    monkeypatch.setattr(torch, "load", real)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad/checkpoint\.pt: not a readable checkpoint \(UnpicklingError: "
                                         r"Weights only load failed\)$"):
        checkpoint_step(str(tmp_path / "bad"))


def _restart_with(monkeypatch: pytest.MonkeyPatch, latest: Path) -> dict[str, Any]:
    """Run the single-process trial body as Tune restarts it from ``latest``; what run_trial got."""
    import ray.tune
    from ray.train import Checkpoint

    from meta_study.tune.trial import TrialHooks, _train_local

    seen: dict[str, Any] = {}

    def fake_run_trial(cfg: Any, *, resume_from: str | None = None, **kw: Any) -> Any:
        seen["step"] = checkpoint_step(resume_from) if resume_from else None
        return SimpleNamespace(metrics=lambda: {"us/x/top1": 0.5})

    monkeypatch.setattr(ray.tune, "get_checkpoint", lambda: Checkpoint(str(latest), filesystem=pafs.LocalFileSystem()))
    monkeypatch.setattr(train_pkg, "run_trial", fake_run_trial)
    _train_local({}, TrialHooks())
    return seen


def test_a_restarted_trial_resumes_from_the_previous_checkpoint_when_the_latest_is_damaged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # the latest checkpoint truncated on the storage: every retry of the trial failed on it
    # ("not a readable checkpoint", naming the trial's temporary copy), though Tune kept the one before
    trial = tmp_path / "trial_1"
    _save(trial / "checkpoint_000000", 2)
    _save(trial / "checkpoint_000001", 4)
    latest = _save(trial / "checkpoint_000002", 6)
    latest.write_bytes(latest.read_bytes()[:300])
    assert _restart_with(monkeypatch, trial / "checkpoint_000002") == {"step": 4}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{latest}: not a readable checkpoint" in err[0], err
    assert err[0].endswith(f"resuming from the earlier checkpoint {trial / 'checkpoint_000001'}"), err
    # a good latest one is taken as it is, in silence
    assert _restart_with(monkeypatch, trial / "checkpoint_000001") == {"step": 4}
    assert capsys.readouterr().err == ""


def test_a_restarted_trial_with_no_readable_checkpoint_says_so_naming_the_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trial = tmp_path / "trial_1"
    for i in range(2):
        p = _save(trial / f"checkpoint_00000{i}", i + 1)
        _flip_a_weight_byte(p)
    with pytest.raises(ValueError) as e:
        _restart_with(monkeypatch, trial / "checkpoint_000001")
    msg = str(e.value)
    assert msg.startswith(f"{trial / 'checkpoint_000001' / 'checkpoint.pt'}: not a readable checkpoint (damaged"), msg
    assert "no earlier readable checkpoint beside it" in msg and "\n" not in msg and "meta-study-trial-" not in msg


def test_a_data_parallel_trial_records_its_result_before_its_final_report(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # the completion record was written after TorchTrainer.fit() returned, after Tune had the final
    # report: a trial killed in between ran its resume, probes and diagnostics again and reported
    # twice. A single-process trial records first (run_with_machinery); so does rank 0 now.
    import ray.train

    from meta_study.tune.trial import FINAL_FILE, _train_loop_per_worker

    record = tmp_path / "trial_1" / FINAL_FILE
    done = tmp_path / "done" / "key" / "trial_1.json"
    at_report: list[bool] = []
    monkeypatch.setattr(ray.train, "get_context", lambda: SimpleNamespace(get_world_rank=lambda: 0))
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.train, "report", lambda m, **kw: at_report.append(record.exists() and done.exists()))
    monkeypatch.setattr(train_pkg, "run_trial",
                        lambda cfg, **kw: SimpleNamespace(metrics=lambda: {"us/x/top1": 0.5}))
    fs = pafs.LocalFileSystem()
    _train_loop_per_worker({"cfg": {}, "datasets": {}, "records": [(fs, str(record)), (fs, str(done))]})
    assert at_report == [True]
    assert json.loads(record.read_text())["final"] == 1.0 and json.loads(done.read_text())["us/x/top1"] == 0.5


def test_a_ds_task_of_another_image_size_is_refused_before_pretraining(monkeypatch: pytest.MonkeyPatch) -> None:
    # a factory that ignores img_size: after the whole pre-training, the probe crashed in timm's
    # patch embedding ("AssertionError: Input height (24) doesn't match model (16).")
    from meta_study.train.data import _TASKS

    get_task("synth_us", img_size=8, n_train=8, n_test=8)   # the built-in suite registered first
    monkeypatch.setitem(_TASKS, "s39_fixed24", lambda img_size=16, seed=0: get_task(   # unregistered after
        "synth_shape", img_size=24, seed=seed, n_train_per_class=2, n_test=8))

    def no_pretrain(*a: Any, **kw: Any) -> Any:
        raise AssertionError("pre-trained before the DS tasks were checked")

    monkeypatch.setattr(train_trial_mod, "pretrain", no_pretrain)
    cfg = smoke_config(ds_tasks=("s39_fixed24",), shots=(1,), us_task_kwargs={"n_train": 64, "n_test": 16})
    # named as the config names it (get_task names a task as registered, s45)
    with pytest.raises(ValueError, match=r"^DS task s39_fixed24: its images are 24x24 px with 3 channel\(s\), the "
                                         r"model's input \(US task synth_us, img_size=16\) 16x16 px with 3: its "
                                         "factory must render"):
        train_pkg.run_trial(cfg)


def test_a_torch_file_that_is_not_a_checkpoint_is_named_not_a_key_error(tmp_path: Path) -> None:
    # a bare state_dict given as resume_from: KeyError: 'model' (checkpoint_step: KeyError: 'step')
    model, opt, sched = _parts()
    torch.save(model.state_dict(), tmp_path / "checkpoint.pt")
    for call in (lambda: load_checkpoint(str(tmp_path), model=model, opt=opt, sched=sched),
                 lambda: checkpoint_step(str(tmp_path))):
        with pytest.raises(ValueError, match=r"checkpoint\.pt: not a readable checkpoint \(a torch file without "
                                             r"model, optimizer, scheduler, step, rng: not one save_checkpoint wrote\)"):
            call()
