"""Training-engine benchmarks on CPU: loop overhead, data generation rate, few-shot eval time.

    .venv/bin/python benchmarks/bench_train.py --threads 1   # ~3 min on a 2-core VM
    .venv/bin/python benchmarks/bench_train.py --quick        # fewer steps and repeats (~1 min)

1. Training throughput of ``pretrain`` vs a bare timm loop (forward, cross-entropy, backward,
   AdamW step) with the same model, batch size and images already in memory, as a ratio
   measured in the same run (target >= 0.9x). Ours also clips gradients, steps the schedule
   and gathers batches from a uint8 split; a row without clipping shows what clipping costs.
2. Procedural data generation rate (images/s, rendering only, no cache) next to the training
   rate: rendering must never be the bottleneck of a tiny model.
3. Few-shot evaluation on cached features: 5 tasks x 4 shot settings x 3 seeds (ViT-S width).
4. ``--vit-b32`` (on a GPU): images/s and MFU of the loop for ViT-B/32 at 224 px in bf16.

    .venv/bin/python benchmarks/bench_train.py --vit-b32 --batch 256 --steps 50   # on a GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from meta_study.train import (Task, TensorSplit, TrainConfig, create_model, fewshot_lsr, get_task, pretrain)


def _in_memory_task(n: int, img_size: int, num_classes: int) -> Task:
    g = torch.Generator().manual_seed(0)
    px = torch.randint(0, 256, (n, 3, img_size, img_size), dtype=torch.uint8, generator=g)
    split = TensorSplit(px, np.arange(n) % num_classes)
    return Task("bench", num_classes, img_size, split, TensorSplit(px[:64], np.arange(64) % num_classes))


def _ours(model_name: str, task: Task, steps: int, batch: int, clip: float) -> float:
    torch.manual_seed(0)
    model, info = create_model(model_name, num_classes=task.num_classes, img_size=task.img_size)
    cfg = TrainConfig(model_name=model_name, steps=steps, batch_size=batch, grad_clip=clip, device="cpu")
    return pretrain(model, info, task, cfg).images_per_s


def _bare(model_name: str, task: Task, steps: int, batch: int) -> float:
    torch.manual_seed(0)
    model, _ = create_model(model_name, num_classes=task.num_classes, img_size=task.img_size)
    opt = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.999), weight_decay=0.1)
    xs = [task.train.images(np.arange(i * batch, (i + 1) * batch) % len(task.train)) for i in range(8)]
    ys = [torch.as_tensor(task.train.labels[np.arange(i * batch, (i + 1) * batch) % len(task.train)]) for i in range(8)]
    model.train()
    t0 = time.perf_counter()
    for s in range(steps):
        loss = F.cross_entropy(model(xs[s % 8]), ys[s % 8])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def bench_loop(models: list[str], steps: int, repeats: int, batch: int = 128, img: int = 32) -> list[tuple]:
    """Per model: median img/s of bare, ours, and the median of back-to-back ratios ours / bare.

    Runs alternate which loop goes first, and each ratio compares two adjacent runs, so load
    from other processes (a shared CI box) mostly cancels out of the ratio.
    """
    task = _in_memory_task(batch * 8, img, 240)
    rows = []
    for name in models:
        _ours(name, task, 3, batch, 1.0), _bare(name, task, 3, batch)  # warm up allocator and kernels
        bare, ours, noclip = [], [], []
        for i in range(repeats):
            first_bare = i % 2 == 0
            b0 = _bare(name, task, steps, batch) if first_bare else None
            ours.append(_ours(name, task, steps, batch, 1.0))
            noclip.append(_ours(name, task, steps, batch, 0.0))
            bare.append(b0 if first_bare else _bare(name, task, steps, batch))
        rows.append((name, statistics.median(bare), statistics.median(ours),
                     statistics.median(o / b for o, b in zip(ours, bare)),
                     statistics.median(o / b for o, b in zip(noclip, bare))))
    return rows


def bench_render(img: int, batch: int = 256, batches: int = 8) -> tuple[float, float]:
    """(upstream images/s rendered without cache, count-task images/s): the two costliest scenes."""
    out = []
    for name, kw in (("synth_us", dict(n_train=batch * batches)), ("synth_count", dict(n_train_per_class=400))):
        t = get_task(name, img_size=img, cache_mb=0, **kw)
        t.train.images(np.arange(batch))
        t0 = time.perf_counter()
        for i in range(batches):
            t.train.images(np.arange(i * batch, (i + 1) * batch) % len(t.train))
        out.append(batches * batch / (time.perf_counter() - t0))
    return out[0], out[1]


def bench_fewshot(dim: int = 384, repeats: int = 3) -> tuple[float, float]:
    """Seconds for 5 tasks x 4 shots x 3 seeds at l2 = 2^10, and with an 8-value l2 sweep."""
    rng = np.random.default_rng(0)
    tasks = [(c, rng.normal(size=(75 * c, dim)).astype(np.float32), np.repeat(np.arange(c), 75),
              rng.normal(size=(1200, dim)).astype(np.float32), rng.integers(0, c, 1200)) for c in (24, 6, 6, 8, 8)]
    times = {(): [], tuple(2.0 ** np.arange(0, 16, 2)): []}
    for sweep in times:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for c, x, y, xt, yt in tasks:
                fewshot_lsr(x, y, xt, yt, c, shots=(1, 5, 10, 25), seeds=(0, 1, 2), l2_sweep=sweep)
            times[sweep].append(time.perf_counter() - t0)
    return tuple(statistics.median(v) for v in times.values())  # type: ignore[return-value]


#: Untimed training steps before the ViT-B/32 measurement (a separate ``pretrain`` call).
WARMUP_STEPS = 5

#: Dense bf16 peak of common accelerators, TFLOP/s (vendor datasheets, SXM parts, no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def train_flops_per_image(model: torch.nn.Module, img: int) -> float:
    """FLOPs of one training step per image (forward and backward), counted by torch's
    FlopCounterMode on one image (matmuls and convolutions; the usual MFU convention)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, img, img)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def bench_vit_b32(device: str, steps: int, batch: int, peak_tflops: float | None) -> None:
    """Images/s and MFU of our pre-training loop for ViT-B/32 at 224 px in bf16 (the paper's
    smallest ViT): what one GPU does for a lab. MFU = images/s x training FLOPs per image / peak."""
    name, img = "vit_base_patch32_224", 224
    model, info = create_model(name, num_classes=1000, img_size=img)
    flops = train_flops_per_image(model, img)
    task = _in_memory_task(max(batch * 8, 64), img, 1000)
    cfg = TrainConfig(model_name=name, steps=steps, batch_size=batch, device=device, precision="bf16")
    # Untimed warm-up first on an accelerator, as bench_loop warms its loops up: the first steps on
    # a GPU pay the cuBLAS/cuDNN handles, kernel selection and the caching allocator's first blocks,
    # while the whole measurement is short (50 steps of ViT-B/32 at 40% MFU of an H100: ~17 ms
    # each, ~0.9 s). Not on a CPU (the dry run): no first-step cost there (three calls of 3 steps at
    # batch 4 on one thread: 0.83, 0.82, 0.83 img/s).
    if torch.device(device).type != "cpu":
        pretrain(model, info, task, dataclasses.replace(cfg, steps=min(WARMUP_STEPS, steps)))
    ips = pretrain(model, info, task, cfg).images_per_s
    dev = torch.device(device)
    label = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if peak_tflops is None:
        peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in label), None)
    mfu = f"{100 * ips * flops / (peak_tflops * 1e12):.1f}% of {peak_tflops:g} TFLOP/s" if peak_tflops else "n/a (give --peak-tflops)"
    print(f"{name} bf16 on {label}: batch {batch}, {steps} steps: {ips:,.1f} img/s, "
          f"{flops / 1e9:.1f} GFLOP per image (fwd+bwd), MFU {mfu}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--vit-b32", action="store_true",
                    help="only the GPU benchmark: ViT-B/32 at 224 px in bf16, images/s and MFU")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: by name)")
    args = ap.parse_args(argv)
    for flag, v in (("--threads", args.threads), ("--batch", args.batch), ("--steps", args.steps)):
        if v < 1:
            ap.error(f"{flag} {v}: must be at least 1")   # one line, exit 2
    torch.set_num_threads(args.threads)
    if args.vit_b32:
        bench_vit_b32(args.device, args.steps, args.batch, args.peak_tflops)
        return
    steps, repeats = (8, 3) if args.quick else (16, 5)
    print(f"$ {' '.join([sys.executable.split('/')[-1], *sys.argv])}   (torch {torch.__version__}, "
          f"{args.threads} threads, batch 128, 32 px, 240 classes)\n")
    print(f"{'model':<16} {'bare img/s':>10} {'ours img/s':>10} {'ratio':>6} {'no clip':>8}")
    models = ["vit_tiny_cpu", "mixer_tiny_cpu", "resnet_tiny_cpu"]
    for name, bare, ours, ratio, noclip in bench_loop(models, steps, repeats):
        print(f"{name:<16} {bare:>10.0f} {ours:>10.0f} {ratio:>5.2f}x {noclip:>7.2f}x")
    us, count = bench_render(32)
    print(f"\nprocedural rendering, 32 px, no cache: synth_us {us:,.0f} img/s, synth_count {count:,.0f} img/s")
    base, sweep = bench_fewshot()
    print(f"few-shot (5 tasks x 4 shots x 3 seeds, D=384): {base:.2f} s; with an 8-value l2 sweep: {sweep:.2f} s")


if __name__ == "__main__":
    main()
