"""Data-parallel pre-training (what a multi-GPU Ray Train trial runs), on CPU with gloo, and
evaluating a checkpoint without training (for early-stopped trials)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from meta_study.train import checkpoint_step, evaluate_checkpoint, run_trial, smoke_config

torch.set_num_threads(1)

CFG = dict(img_size=16, steps=12, batch_size=64, eval_every=6, diagnostics=False, shots=(5,), fewshot_seeds=1,
           ds_tasks=("synth_combo",), us_task_kwargs={"n_train": 1024, "n_test": 256},
           ds_task_kwargs={"n_train_per_class": 10, "n_test": 100})


def _spawn(fn, out: str) -> None:   # noqa: ANN001
    """Two ranks of ``fn`` on a free port: picked free, bound by rank 0 only later, another test
    may take it meanwhile (then rank 0 fails with "address already in use"): a new port, twice."""
    from mlflow_server import free_port

    for attempt in range(3):
        try:
            mp.spawn(fn, args=(2, free_port(), out), nprocs=2, join=True)
            return
        except mp.ProcessRaisedException as e:
            if "ddress already in use" not in str(e) or attempt == 2:
                raise


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ckpt = os.path.join(out, f"ckpt{rank}")
        r = run_trial(smoke_config(**CFG), checkpoint_dir=ckpt)
        torch.save({"losses": r.pretrain.losses, "us": r.us_accuracy, "probes": len(r.fewshot),
                    "final_loss": r.metrics()["train/final_loss"],
                    "report_losses": [m["train/loss"] for m in r.pretrain.history]},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_like_one_process(tmp_path):
    single = run_trial(smoke_config(**CFG))
    _spawn(_worker, str(tmp_path))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    # each rank's loss is averaged over the ranks at every report (its own was its half-batch mean):
    # the full-batch loss, step by step, because DDP's averaged gradient is the single-process
    # gradient (same trajectory up to float noise)
    assert torch.equal(torch.as_tensor(r0["losses"]), torch.as_tensor(r1["losses"]))
    assert torch.allclose(torch.as_tensor(r0["losses"]), torch.as_tensor(single.pretrain.losses), rtol=2e-4,
                          atol=2e-4), (r0["losses"], single.pretrain.losses)
    # what Tune logs is rank 0's: the global loss, not rank 0's half batch
    assert r0["report_losses"] == r1["report_losses"] and r0["final_loss"] == r1["final_loss"]
    assert r0["final_loss"] == pytest.approx(single.metrics()["train/final_loss"], abs=1e-4)
    assert r0["us"] == pytest.approx(single.us_accuracy, abs=0.01) and r0["us"] == r1["us"]
    assert r0["probes"] == 1 and r1["probes"] == 0             # only rank 0 probes
    assert (tmp_path / "ckpt0" / "checkpoint.pt").exists() and not (tmp_path / "ckpt1").exists()


def _agreement_worker(rank: int, world: int, port: int, out: str) -> None:
    """Two checks every rank must agree on, or one rank raises alone and the others wait in the
    next collective (under NCCL, until its timeout): an uneven batch, a loss not finite on one rank."""
    import datetime

    import torch.distributed as dist

    from meta_study.train import TrainConfig, create_model, get_task, pretrain
    from meta_study.train import loop

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    task = get_task("synth_us", img_size=16, n_train=256, n_test=32)
    errors: dict[str, str] = {}

    def attempt(key: str, cfg: TrainConfig) -> None:
        torch.manual_seed(0)
        model, info = create_model(cfg.model_name, num_classes=task.num_classes, img_size=16)
        try:
            pretrain(model, info, task, cfg)
        except Exception as e:  # noqa: BLE001 - recorded for the test to compare across ranks
            errors[key] = f"{type(e).__name__}: {e}"

    try:
        attempt("uneven", TrainConfig(steps=2, batch_size=5, us_eval_examples=8))
        real_step, calls = loop.train_step, [0]

        def nan_on_rank1_at_step2(*a, **kw):  # the last step before a report: no later step spreads it
            loss = real_step(*a, **kw)
            calls[0] += 1
            return torch.full_like(loss, float("nan")) if rank == 1 and calls[0] == 2 else loss

        loop.train_step = nan_on_rank1_at_step2
        attempt("diverged", TrainConfig(steps=4, batch_size=8, eval_every=2, us_eval_examples=8))
        torch.save(errors, os.path.join(out, f"agree{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_refusing_a_run(tmp_path):
    _spawn(_agreement_worker, str(tmp_path))
    e0 = torch.load(tmp_path / "agree0.pt", weights_only=False)
    e1 = torch.load(tmp_path / "agree1.pt", weights_only=False)
    assert e0["uneven"] == e1["uneven"] and e0["uneven"].startswith(
        "ValueError: batch_size=5, after capping") and "multiple of the 2 data-parallel workers" in e0["uneven"]
    assert e0["diverged"] == e1["diverged"] and e0["diverged"].startswith(
        "DivergedError: training diverged: the loss is not finite from step 2 of 4")


def test_evaluate_checkpoint_measures_without_training(tmp_path):
    full = run_trial(smoke_config(**CFG), checkpoint_dir=str(tmp_path))
    assert checkpoint_step(str(tmp_path)) == 12
    again = evaluate_checkpoint(smoke_config(**CFG), str(tmp_path))
    assert again.us_accuracy == pytest.approx(full.us_accuracy)
    assert again.ds_accuracy("synth_combo", 5) == pytest.approx(full.ds_accuracy("synth_combo", 5))
    # the losses are the checkpoint's own history, restored with it (nothing trained after it)
    torch.testing.assert_close(torch.as_tensor(again.pretrain.losses), torch.as_tensor(full.pretrain.losses))
