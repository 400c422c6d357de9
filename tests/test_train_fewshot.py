"""Few-shot probe (big_vision fewshot_lsr) and diagnostics (norms, distance to init, margins)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_study.train import (capture_init, create_model, diagnose, extract_features, fewshot_draw, fewshot_features,
                              fewshot_lsr, fit_probe, get_task, resolve_runtime, TrainConfig, weight_stats)
from meta_study.train.fewshot import BIAS_CONSTANT
from meta_study.train.diagnostics import margins

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust
RT = resolve_runtime(TrainConfig(device="cpu"), "vit")


def _clusters(n_per_class: int, classes: int, dim: int, sep: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * sep
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_separable_features_are_solved() -> None:
    x, y = _clusters(40, 10, 32, sep=4.0, seed=0)
    xt, yt = _clusters(50, 10, 32, sep=4.0, seed=0)  # same centres, new noise
    res = fewshot_lsr(x, y, xt, yt, 10, task="blobs")
    assert [r.shots for r in res] == [1, 5, 10, 25]
    assert res[-1].accuracy >= 0.99 and res[1].accuracy >= 0.95
    assert all(len(r.seed_accuracies) == 3 and r.l2 == 2.0**10 for r in res)


def test_random_labels_give_chance() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 64)), rng.integers(0, 10, 500)
    xt, yt = rng.normal(size=(3000, 64)), rng.integers(0, 10, 3000)
    for r in fewshot_lsr(x, y, xt, yt, 10, l2_sweep=(1.0, 2.0**15)):
        assert abs(r.accuracy - 0.1) < 0.03  # 3000 test points: sd ~0.005 per seed
        assert all(abs(a - 0.1) < 0.04 for a in r.sweep.values())


@pytest.mark.parametrize("n", [12, 200])  # fewer and more points than dimensions (both eigh branches)
def test_eig_solution_is_ridge_regression(n: int) -> None:
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 40)) * 3 + 1, rng.integers(0, 5, n)
    cache = fit_probe(x, y, 5)
    z = np.concatenate([(x - x.mean(0)) / (x.std(0) + 1e-5), np.full((n, 1), BIAS_CONSTANT)], 1)
    t = 2 * np.eye(5)[y] - 1
    for l2 in (0.5, 2.0**10):
        direct = np.linalg.solve(z.T @ z + l2 * np.eye(41), z.T @ t)
        np.testing.assert_allclose(cache.weights(l2), direct, rtol=1e-6, atol=1e-8)


def test_draws_are_balanced_nested_and_seeded() -> None:
    y = np.repeat(np.arange(4), 30)
    d5, d25 = fewshot_draw(y, 5, seed=0), fewshot_draw(y, 25, seed=0)
    assert np.bincount(y[d5]).tolist() == [5] * 4 and set(d5) <= set(d25)
    assert not np.array_equal(d5, fewshot_draw(y, 5, seed=1))
    np.testing.assert_array_equal(d5, fewshot_draw(y, 5, seed=0))


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create_model("vit_tiny_cpu", num_classes=240, img_size=16)


def test_features_once_then_every_shot_seed_and_layer(tiny_vit) -> None:
    model, info = tiny_vit
    task = get_task("synth_xpos", img_size=16, n_train_per_class=30, n_test=160)
    fs = extract_features(model, info, task, RT, layers=True, shots=(1, 5, 25), seeds=(0, 1, 2))
    assert len(fs.train) <= 25 * 8 * 3 and fs.test.shape == (160, info.feature_dim)
    assert len(fs.train_layers) == len(fs.test_layers) == info.num_blocks == 2
    res = fewshot_features(fs, shots=(1, 5, 25), seeds=(0, 1, 2), layerwise=True)
    keys = [(r.shots, r.layer) for r in res]
    assert keys == [(k, layer) for layer in (None, 0, 1) for k in (1, 5, 25)]
    assert all(0.0 <= r.accuracy <= 1.0 for r in res)
    # Draws made on the whole train split: identical to probing features of the whole split.
    full = extract_features(model, info, task, RT, shots=(30,), seeds=(0,))
    assert len(full.train) == len(task.train)
    direct = fewshot_lsr(full.train, full.train_labels, full.test, full.test_labels, 8, shots=(1, 5, 25))
    assert [r.accuracy for r in direct] == [r.accuracy for r in res[:3]]


def test_weight_stats_and_margins(tiny_vit) -> None:
    model, info = tiny_vit
    init = capture_init(model)
    w = weight_stats(model, info, init)
    assert w.head_dist_init == 0.0 and all(d == 0.0 for d in w.layer_dist_init)
    assert len(w.layer_norms) == info.num_blocks and all(n > 0 for n in w.layer_norms)
    expected = float(torch.cat([model.head.weight.detach().flatten(), model.head.bias.detach()]).norm())
    assert w.head_norm == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        model.blocks[1].mlp.fc1.weight.add_(1.0)
    moved = weight_stats(model, info, init)
    assert moved.layer_dist_init[1] == pytest.approx(float(np.sqrt(model.blocks[1].mlp.fc1.weight.numel())), rel=1e-5)
    assert moved.layer_dist_init[0] == 0.0

    task = get_task("synth_us", img_size=16, n_train=480, n_test=240)
    idx = np.arange(200)
    m1 = margins(model, info, task, idx, RT)
    with torch.no_grad():
        model.head.weight.mul_(2.0)
        model.head.bias.mul_(2.0)
    m2 = margins(model, info, task, idx, RT)
    assert m2.head == pytest.approx(2 * m1.head, rel=1e-4)  # logit units: scales with the head
    assert m2.head_normalized == pytest.approx(m1.head_normalized, rel=1e-4)  # scale-free
    assert m2.prelogits == pytest.approx(m1.prelogits, rel=1e-6)  # independent of the head
    assert -2.0 < m1.prelogits < 2.0

    d = diagnose(model, info, init, task, np.arange(480), RT, n=100)
    keys = set(d.metrics())
    assert {"diag/head_norm", "diag/margin/head", "diag/margin/prelogits", "diag/layer0/norm",
            "diag/layer1/dist_init"} <= keys


def test_prelogit_margin_is_high_for_separable_representations() -> None:
    x, y = _clusters(30, 6, 16, sep=6.0, seed=3)
    probe = fit_probe(x, y, 6)
    s = probe.scores(x, 1.0)
    margin = (s[np.arange(len(y)), y] - np.where(np.eye(6)[y] > 0, -np.inf, s).max(1)).mean()
    assert margin > 1.0  # targets are +-1: a perfect fit scores 2
