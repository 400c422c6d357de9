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


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ckpt = os.path.join(out, f"ckpt{rank}")
        r = run_trial(smoke_config(**CFG), checkpoint_dir=ckpt)
        torch.save({"losses": r.pretrain.losses, "us": r.us_accuracy, "probes": len(r.fewshot)},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_like_one_process(tmp_path):
    from mlflow_server import free_port

    single = run_trial(smoke_config(**CFG))
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    # each rank's loss is its half-batch mean; their average is the full-batch loss, step by step,
    # because DDP's averaged gradient is the single-process gradient (same trajectory up to float noise)
    mean = (torch.as_tensor(r0["losses"]) + torch.as_tensor(r1["losses"])) / 2
    assert torch.allclose(mean, torch.as_tensor(single.pretrain.losses), rtol=2e-4, atol=2e-4), \
        (mean, single.pretrain.losses)
    assert r0["us"] == pytest.approx(single.us_accuracy, abs=0.01) and r0["us"] == r1["us"]
    assert r0["probes"] == 1 and r1["probes"] == 0             # only rank 0 probes
    assert (tmp_path / "ckpt0" / "checkpoint.pt").exists() and not (tmp_path / "ckpt1").exists()


def test_evaluate_checkpoint_measures_without_training(tmp_path):
    full = run_trial(smoke_config(**CFG), checkpoint_dir=str(tmp_path))
    assert checkpoint_step(str(tmp_path)) == 12
    again = evaluate_checkpoint(smoke_config(**CFG), str(tmp_path))
    assert again.us_accuracy == pytest.approx(full.us_accuracy)
    assert again.ds_accuracy("synth_combo", 5) == pytest.approx(full.ds_accuracy("synth_combo", 5))
    assert torch.isnan(torch.as_tensor(again.pretrain.losses)).all()   # no step was trained
