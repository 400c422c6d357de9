"""big_vision's ``fewshot_lsr`` protocol: closed-form ridge regression on frozen features.

For each downstream task, shots in (1, 5, 10, 25) and seeds (0, 1, 2): draw that many training
examples per class, standardize the features with the mean/std of those examples, append a
constant bias feature (100, so the bias is almost unregularized), and solve L2-regularized
least squares onto one-hot targets in {-1, +1}; predict the argmax on the task's test split.
The reported accuracy is the mean over seeds, at ``l2 = 2**10`` unless told otherwise.

Solving for many l2 values reuses one eigendecomposition per draw (big_vision's trick). With
X (N x D) and Y (N x C) the standardized features and targets:

    N >= D:  W = (X^T X + l2 I)^-1 X^T Y,  and with X^T X = Q diag(e) Q^T,
             W = Q diag(1 / (e + l2)) Q^T X^T Y           (lhs = Q, rhs = Q^T X^T Y)
    N <  D:  W = X^T (X X^T + l2 I)^-1 Y,  and with X X^T = Q diag(e) Q^T,
             W = X^T Q diag(1 / (e + l2)) Q^T Y           (lhs = X^T Q, rhs = Q^T Y)

so each l2 costs a (D x r) @ (r x C) and an (N_test x D) @ (D x C) product after an O(min(N, D)^3) eigh. Arithmetic is
float64 torch on the CPU (it follows ``torch.set_num_threads``). Features are extracted once per model and task (:func:`extract_features`) and
reused for every shots, seed, l2 and layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data import Task, iterate_split
from .loop import Runtime
from .models import ModelInfo, eval_mode, representations

BIAS_CONSTANT = 100.0  # big_vision: a large constant feature, so the ridge barely shrinks the bias
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2 = 2.0**10


@dataclass(frozen=True)
class ProbeCache:
    """One draw's eigendecomposition (float64 tensors): W(l2) = lhs @ (rhs / (eigs + l2)[:, None])."""

    eigs: torch.Tensor  # (r,)
    lhs: torch.Tensor   # (D + 1, r)
    rhs: torch.Tensor   # (r, C)
    mean: torch.Tensor  # (D,) standardization of the draw
    std: torch.Tensor   # (D,)

    def weights(self, l2: float) -> np.ndarray:
        """(D + 1, C) ridge solution; the last row is the bias (times BIAS_CONSTANT)."""
        return self._weights(l2).numpy()

    def design(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw features (N, D) -> (N, D + 1): standardized with this draw's statistics, bias appended."""
        return _design(_f64(x), self.mean, self.std)

    def scores(self, x: np.ndarray | torch.Tensor, l2: float) -> np.ndarray:
        """(N, C) regression outputs for raw features ``x``."""
        return (self.design(x) @ self._weights(l2)).numpy()

    def _weights(self, l2: float) -> torch.Tensor:
        # A null direction of the design (a dead feature, constant over the draw; a duplicated
        # example) has eigenvalue ~0: at l2 = 0 its 1 / 0 made every weight NaN, a chance accuracy
        # (0.25 of 4 classes where l2 = 1e-3 gave 1.0). It is dropped, as a pseudo-inverse does
        # (the l2 -> 0 limit of ridge); no l2 above ~1e-9 of the largest eigenvalue is affected.
        d = self.eigs + l2
        tol = float(self.eigs.abs().max()) * len(self.eigs) * torch.finfo(torch.float64).eps
        return self.lhs @ (self.rhs * torch.where(d > tol, 1.0 / d, 0.0)[:, None])


def _f64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _design(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    z = (x - mean) / std
    return torch.cat([z, torch.full((len(z), 1), BIAS_CONSTANT, dtype=z.dtype)], dim=1)


def fit_probe(x: np.ndarray | torch.Tensor, y: np.ndarray, num_classes: int) -> ProbeCache:
    """Standardize ``x`` (N, D), append the bias, eigendecompose; ready for any l2.

    Arithmetic is float64 torch on the CPU, so ``torch.set_num_threads`` governs it (numpy's
    BLAS pool would not follow it, and oversubscribes a busy machine).

    Args:
        x: features of the training draw.
        y: int labels in [0, num_classes).
        num_classes: width of the one-hot target.

    Raises:
        ValueError: features that are not finite (NaN, inf): eigh failed on them as "ill-conditioned
            or has too many repeated eigenvalues", naming neither the features nor the examples.
    """
    x = _f64(x)
    bad = int((~torch.isfinite(x)).any(1).sum()) if x.ndim == 2 else 0
    if bad:
        raise ValueError(f"{bad} of {len(x)} examples have features that are not finite (NaN or inf); "
                         "the ridge probe cannot be fit to them")
    mean, std = x.mean(0), x.std(0, unbiased=False) + 1e-5  # population std, as jnp.std
    xd = _design(x, mean, std)
    t = 2.0 * torch.nn.functional.one_hot(torch.as_tensor(y, dtype=torch.long), num_classes).double() - 1.0
    if len(xd) >= xd.shape[1]:
        eigs, q = torch.linalg.eigh(xd.T @ xd)
        lhs, rhs = q, q.T @ (xd.T @ t)
    else:
        eigs, q = torch.linalg.eigh(xd @ xd.T)
        lhs, rhs = xd.T @ q, q.T @ t
    return ProbeCache(eigs, lhs, rhs, mean, std)


def probe_accuracy(cache: ProbeCache, x: np.ndarray | torch.Tensor, y: np.ndarray, l2: float = DEFAULT_L2) -> float:
    """Top-1 accuracy (fraction) of the ridge probe at ``l2`` on features ``x`` with labels ``y``."""
    return _accuracy(cache.design(x), cache, _long(y), l2)


def _long(y: np.ndarray) -> torch.Tensor:
    """Labels as int64: torch compares no uint16 / uint32 / uint64 tensor with argmax's int64
    ("Promotion for uint16, uint32, uint64 types is not supported"), a Task's labels may be any
    integer dtype, and the probe failed so after the whole pre-training."""
    return torch.as_tensor(np.asarray(y, dtype=np.int64))


def _accuracy(design: torch.Tensor, cache: ProbeCache, y: torch.Tensor, l2: float) -> float:
    return float(((design @ cache._weights(l2)).argmax(1) == y).double().mean())


def fewshot_draw(labels: np.ndarray, shots: int, seed: int, *, task: str = "") -> np.ndarray:
    """Indices of ``shots`` examples of every class in ``labels``, for draw ``seed`` (sorted).

    Within a seed, draws are nested: the 5-shot set is a prefix of the 25-shot set per class.

    Args:
        labels: int labels of the pool to draw from (a task's whole train split).
        shots: examples per class, >= 1.
        seed: the draw.
        task: named in the error, when given.

    Raises:
        ValueError: ``shots`` < 1, no labels, or a class with fewer than ``shots`` examples (named,
            with its count): the draw took all of them, without a word, so every larger shot count
            and every seed got the same examples, and a "25-shot" mean over 3 seeds was one draw
            of 10 a class.
    """
    of = f"DS task {task}: " if task else ""
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ValueError(f"{of}shots={shots!r}: must be a whole number of examples per class >= 1")
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError(f"{of}no train examples to draw {shots}-shot examples from")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < shots:
        small = classes[counts < shots]
        c = int(np.argmin(counts))
        raise ValueError(f"{of}class {classes[c]} has {counts[c]} train examples, fewer than shots={shots} "
                         f"({len(small)} of {len(classes)} classes have fewer); draw fewer shots from it")
    rng = np.random.RandomState(seed)
    out = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        out.append(pool[rng.permutation(len(pool))[:shots]])
    return np.sort(np.concatenate(out))


@dataclass(frozen=True)
class FewShotResult:
    """Accuracy of the few-shot probe for one (task, shots, layer).

    Attributes:
        task: downstream task name.
        shots: examples per class.
        layer: block index probed, or None for pre-logits.
        accuracy: mean over seeds at ``l2`` (fraction): the reported number.
        seed_accuracies: one accuracy per seed, at ``l2``.
        l2: the regularizer of ``accuracy``.
        sweep: l2 -> mean accuracy over seeds, for every l2 evaluated (``l2`` included). Picking
            the best of these on the test split is optimistic; it is a diagnostic.
    """

    task: str
    shots: int
    layer: int | None
    accuracy: float
    seed_accuracies: tuple[float, ...]
    l2: float
    sweep: Mapping[float, float] = field(default_factory=dict)


def fewshot_lsr(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                num_classes: int, *, task: str = "", layer: int | None = None,
                shots: Sequence[int] = DEFAULT_SHOTS, seeds: Sequence[int] = (0, 1, 2), l2: float = DEFAULT_L2,
                l2_sweep: Sequence[float] = (), draw: Callable[[int, int], np.ndarray] | None = None,
                ) -> list[FewShotResult]:
    """big_vision few-shot accuracies on cached features, one result per shots.

    Args:
        train_x, train_y: the pool few-shot examples are drawn from (features, int labels).
        test_x, test_y: where accuracy is measured.
        num_classes: number of classes of the task.
        task, layer: recorded in the results.
        shots: examples per class.
        seeds: one draw per seed; accuracies are averaged.
        l2: the reported regularizer.
        l2_sweep: extra regularizers to evaluate, reusing each draw's eigendecomposition.
        draw: (shots, seed) -> rows of ``train_x`` to fit on; default :func:`fewshot_draw` on ``train_y``.

    Returns:
        One :class:`FewShotResult` per entry of ``shots``, in order.

    Raises:
        ValueError: a class of ``test_y`` with no example in ``train_y`` (the probe never predicts
            it: its test examples capped the accuracy without a word); with the default ``draw``,
            a class of ``train_y`` with fewer than ``max(shots)`` examples (:func:`fewshot_draw`).
            No ``seeds``: the mean over no draws was NaN.
    """
    if not len(seeds):   # the mean over no draws: every accuracy NaN, logged as a result
        raise ValueError(f"{f'DS task {task}: ' if task else ''}seeds=(): give one or more few-shot draws")
    l2s = [l2] + [v for v in l2_sweep if v != l2]
    y_test = _long(test_y)
    absent = np.setdiff1d(np.asarray(test_y), np.asarray(train_y))
    if len(absent):
        raise ValueError(f"{f'DS task {task}: ' if task else ''}class {', '.join(map(str, absent[:5].tolist()))} has "
                         "test examples but no train examples to draw few-shot examples of")
    draw = draw or (lambda n_shots, seed: fewshot_draw(train_y, n_shots, seed, task=task))
    out = []
    for n_shots in shots:
        acc = np.zeros((len(seeds), len(l2s)))
        for i, seed in enumerate(seeds):
            idx = draw(n_shots, seed)
            cache = fit_probe(train_x[idx], train_y[idx], num_classes)
            z = cache.design(test_x)  # standardized once per draw, reused for every l2
            acc[i] = [_accuracy(z, cache, y_test, v) for v in l2s]
        mean = acc.mean(0)
        out.append(FewShotResult(task, n_shots, layer, float(mean[0]), tuple(float(a) for a in acc[:, 0]), l2,
                                 {float(v): float(m) for v, m in zip(l2s, mean)}))
    return out


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSet:
    """Frozen representations of a task, extracted once.

    Attributes:
        task, num_classes: the task.
        train, train_labels: pre-logits (N, D) of the train examples few-shot draws can use.
        train_index: their indices in the task's train split (sorted).
        pool_labels: labels of the whole train split, which draws are made from.
        test, test_labels: pre-logits of the whole test split.
        train_layers, test_layers: per block, pooled block outputs (empty unless layer-wise).
    """

    task: str
    num_classes: int
    train: np.ndarray
    train_labels: np.ndarray
    train_index: np.ndarray
    pool_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    train_layers: tuple[np.ndarray, ...] = ()
    test_layers: tuple[np.ndarray, ...] = ()


@torch.no_grad()
def _extract(model: nn.Module, info: ModelInfo, split, indices: np.ndarray, rt: Runtime, layers: bool,
             batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    pre, blocks = [], []
    for x, _ in iterate_split(split, batch_size, indices):
        with rt.autocast():
            z, zs = representations(model, info, rt.prepare(x), layers)
        pre.append(z.float().cpu())
        blocks.append([t.float().cpu() for t in zs])
    per_layer = [torch.cat([b[i] for b in blocks]).numpy() for i in range(len(blocks[0]))] if blocks else []
    return torch.cat(pre).numpy(), per_layer


def extract_features(model: nn.Module, info: ModelInfo, task: Task, rt: Runtime, *, layers: bool = False,
                     shots: Sequence[int] = DEFAULT_SHOTS, seeds: Sequence[int] = (0, 1, 2),
                     batch_size: int = 512) -> FeatureSet:
    """Pre-logits (and block outputs with ``layers``) of the examples a few-shot eval needs.

    Only the union of the train examples drawn for ``shots`` x ``seeds`` is embedded (at most
    max(shots) x classes x seeds images), plus the whole test split, in eval mode; the model's
    modules are back in their modes after (:func:`~meta_study.train.models.eval_mode`).

    Raises:
        ValueError: a class of the train split with fewer than ``max(shots)`` examples, named
            with the task (:func:`fewshot_draw`), before anything is embedded; no shots or seeds;
            an empty test split.
    """
    if not len(shots) or not len(seeds):   # max() of no shots, a concatenation of no draws
        raise ValueError(f"DS task {task.name}: shots={tuple(shots)}, seeds={tuple(seeds)}: give one or more of each")
    if len(task.test) == 0:   # a raw "torch.cat(): expected a non-empty list of Tensors", after the train draws
        raise ValueError(f"DS task {task.name}: its test split holds no examples to measure accuracy on")
    labels = task.train.labels
    need = np.unique(np.concatenate([fewshot_draw(labels, max(shots), s, task=task.name) for s in seeds]))
    with eval_mode(model):
        tr, tr_l = _extract(model, info, task.train, need, rt, layers, batch_size)
        te, te_l = _extract(model, info, task.test, np.arange(len(task.test)), rt, layers, batch_size)
    return FeatureSet(task.name, task.num_classes, tr, labels[need], need, labels, te, task.test.labels.copy(),
                      tuple(tr_l), tuple(te_l))


def _rows(fs: FeatureSet, shots: int, seed: int) -> np.ndarray:
    """Rows of ``fs.train`` for a draw made on the whole train split (identical to drawing there).

    Raises:
        ValueError: the draw holds examples that were not embedded (``fs`` was extracted for
            fewer shots or other seeds): searchsorted gave the rows of their neighbours, a
            "5-shot" fit on 7 examples of one class and 3 of another, or an IndexError.
    """
    draw = fewshot_draw(fs.pool_labels, shots, seed, task=fs.task)
    rows = np.searchsorted(fs.train_index, draw)
    if len(rows) and (rows.max() >= len(fs.train_index) or not np.array_equal(fs.train_index[rows], draw)):
        raise ValueError(f"DS task {fs.task}: the {shots}-shot draw of seed {seed} holds train examples its features "
                         "were not extracted for; extract_features with these shots and seeds")
    return rows


def fewshot_features(fs: FeatureSet, *, shots: Sequence[int] = DEFAULT_SHOTS, seeds: Sequence[int] = (0, 1, 2),
                     l2: float = DEFAULT_L2, l2_sweep: Sequence[float] = (), layerwise: bool = False,
                     ) -> list[FewShotResult]:
    """Few-shot results of a :class:`FeatureSet`: pre-logits, then each block if ``layerwise``.

    Raises:
        ValueError: features that are not finite (NaN, inf), named by task and layer: the probe's
            weights were NaN and its accuracy chance (0.25 of 4 classes), logged as a result.
            ``layerwise`` on features extracted without block outputs (``extract_features(...,
            layers=False)``): it gave the pre-logit results alone, without a word.
    """
    if layerwise and not (fs.train_layers and fs.test_layers):
        raise ValueError(f"DS task {fs.task}: layerwise=True, but its features hold no block outputs; "
                         "extract_features with layers=True")
    for where, arrays in [("pre-logits", (fs.train, fs.test))] + [
            (f"block {i}", pair) for i, pair in enumerate(zip(fs.train_layers, fs.test_layers)) if layerwise]:
        bad = sum(int((~np.isfinite(a).all(axis=tuple(range(1, a.ndim)))).sum()) for a in arrays)
        if bad:
            raise ValueError(f"DS task {fs.task}: {bad} of {sum(len(a) for a in arrays)} examples have {where} "
                             "features that are not finite (NaN or inf); their few-shot accuracy would be chance")
    kw = dict(task=fs.task, shots=shots, seeds=seeds, l2=l2, l2_sweep=l2_sweep, draw=lambda n_shots, s: _rows(fs, n_shots, s))
    out = fewshot_lsr(fs.train, fs.train_labels, fs.test, fs.test_labels, fs.num_classes, **kw)
    if layerwise:
        for i, (tr, te) in enumerate(zip(fs.train_layers, fs.test_layers)):
            out += fewshot_lsr(tr, fs.train_labels, te, fs.test_labels, fs.num_classes, layer=i, **kw)
    return out
