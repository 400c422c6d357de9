"""Norms, distance to initialization and margins of a trained model (paper appendix D).

Definitions (all on the upstream task):

- ``head_norm``: L2 (Frobenius) norm of the classifier's weight and bias together.
- ``layer{L}/norm``: L2 norm of all parameters of block L (weights, biases, norm scales).
- ``layer{L}/dist_init``: L2 norm of (block L's parameters now - at initialization). The init
  weights are captured before training (:func:`capture_init`), or re-created from the seed.
- ``margin/head``: mean over training examples of z_y - max_{j != y} z_j, with z the logits:
  positive means correctly classified; in logit units, so it grows with the head's scale.
- ``margin/head_normalized``: the same per-example margin divided by ||W_head||_F * ||h||_2
  (h the example's pre-logits, W_head the weight of the head's final projection; of an MLP
  head, its last layer): scale-free, comparable across head weight decays.
- ``margin/prelogits``: how linearly separable the pre-logit representation is, whatever head
  the model learned: fit the few-shot probe's ridge regression (standardized features + bias,
  targets in {-1, +1}, l2 = 2**10) from pre-logits to the training labels on the same examples,
  then average s_y - max_{j != y} s_j over them, with s the regression outputs. Targets are +-1,
  so a perfectly fit example scores 2; 0 means it sits on a decision boundary.

"Training examples" are the first ``n`` examples of a fixed permutation of the upstream
training subset the model was trained on (``data_fraction`` respected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Task
from .fewshot import DEFAULT_L2, fit_probe
from .loop import Runtime
from .models import ModelInfo, eval_mode, head_module

InitState = dict[str, torch.Tensor]


def capture_init(model: nn.Module) -> InitState:
    """A CPU copy of every parameter, keyed by name; ~4 bytes per parameter."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


def _norm_and_dist(model: nn.Module, prefix: str, init: InitState) -> tuple[float, float]:
    sq, dsq = 0.0, 0.0
    for name, p in model.get_submodule(prefix).named_parameters(prefix=prefix):
        w = p.detach().float().cpu()
        sq += float(w.square().sum())
        # a parameter missing from ``init`` (init={}: every distance was 0.0) or of another shape (an
        # init of a model built for other classes: the head's distance broadcast a (1, D) row) was
        # a distance to init of the parameters that happened to match, logged as the block's
        ref = init.get(name)
        if ref is None or tuple(ref.shape) != tuple(w.shape):
            got = "missing" if ref is None else f"of shape {tuple(ref.shape)}"
            raise ValueError(f"init weights: {name} {tuple(w.shape)} is {got} (capture_init of this model "
                             "before training)")
        dsq += float((w - ref.float()).square().sum())
    return sq**0.5, dsq**0.5


@dataclass(frozen=True)
class WeightStats:
    """Norms and distances to init of the head and each block (L2, parameter units)."""

    head_norm: float
    head_dist_init: float
    layer_norms: tuple[float, ...]
    layer_dist_init: tuple[float, ...]


def weight_stats(model: nn.Module, info: ModelInfo, init: InitState) -> WeightStats:
    """Per-block and head L2 norms and distances to the ``init`` weights.

    Raises:
        ValueError: ``init`` lacks a parameter of the head or a block, or holds it in another shape.
    """
    head = _norm_and_dist(model, info.head_name, init)
    layers = [_norm_and_dist(model, n, init) for n in info.block_names]
    return WeightStats(head[0], head[1], tuple(a for a, _ in layers), tuple(b for _, b in layers))


@dataclass(frozen=True)
class Margins:
    """Mean margins on training data; see the module docstring for definitions."""

    head: float
    head_normalized: float
    prelogits: float


def _class_margin(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example score of the true class minus the best other class."""
    true = scores.gather(1, y[:, None])[:, 0]
    other = scores.scatter(1, y[:, None], float("-inf")).max(1).values
    return true - other


def _projection(head: nn.Module) -> torch.Tensor:
    """The weight of the head's final projection: its last parameter of 2+ dimensions. timm's
    classifier is a Linear (or 1x1 conv) for most models, but a wrapper for some (Sequencer's and
    SAM-ViT's ClassifierHead, CAFormer's MlpHead: fc1, norm, fc2), which have no ``weight``: the
    diagnostics failed with an AttributeError after the whole pre-training."""
    kernels = [p for p in head.parameters() if p.ndim >= 2]
    if not kernels:
        raise ValueError(f"classifier {type(head).__name__} has no weight matrix; head margins need one")
    return kernels[-1]


@torch.no_grad()
def margins(model: nn.Module, info: ModelInfo, task: Task, indices: np.ndarray, rt: Runtime,
            batch_size: int = 512, l2: float = DEFAULT_L2) -> Margins:
    """Head and pre-logit margins on the upstream train examples ``indices``.

    Raises:
        ValueError: a head of fewer than 2 classes (no other class to take a margin to: every
            margin was inf), no examples, or pre-logits or logits that are not finite (NaN or
            inf: eigh failed as "ill-conditioned", or the head margins were NaN).
    """
    if info.num_classes < 2:
        raise ValueError(f"US task {task.name}: margins need 2 or more classes; the model's head has "
                         f"{info.num_classes}")
    if not len(indices):
        raise ValueError(f"US task {task.name}: no train examples to measure margins on")
    head = head_module(model)[1]
    feats, logits = [], []
    with eval_mode(model):   # and each module back in its mode after: an on_report may measure mid-training
        for i in range(0, len(indices), batch_size):
            x = rt.prepare(task.train.images(indices[i:i + batch_size]))
            with rt.autocast():
                f = model.forward_features(x)
                h, z = model.forward_head(f, pre_logits=True), model.forward_head(f)  # head may be a 1x1 conv
            feats.append(h.float().cpu())
            logits.append(z.float().cpu())
    h, z = torch.cat(feats), torch.cat(logits)
    bad = int((~torch.isfinite(h).flatten(1).all(1) | ~torch.isfinite(z).flatten(1).all(1)).sum())
    if bad:
        raise ValueError(f"US task {task.name}: {bad} of {len(h)} train examples have pre-logits or logits that "
                         "are not finite (NaN or inf); their margins are undefined")
    y = torch.as_tensor(task.train.labels[indices], dtype=torch.long)   # gather() refused uint8 / int32 labels
    m = _class_margin(z, y)
    w_norm = torch.linalg.vector_norm(_projection(head).detach().float().cpu())
    probe = fit_probe(h, y.numpy(), info.num_classes)
    s = torch.from_numpy(probe.scores(h, l2))
    return Margins(head=float(m.mean()), head_normalized=float((m / (w_norm * h.norm(dim=1) + 1e-12)).mean()),
                   prelogits=float(_class_margin(s, y).mean()))


@dataclass(frozen=True)
class Diagnostics:
    """Weight statistics and margins of one trained model."""

    weights: WeightStats
    margins: Margins

    def metrics(self) -> dict[str, float]:
        """Flat ``diag/...`` metrics: head_norm, layer{L}/norm, layer{L}/dist_init, margin/*."""
        w, m = self.weights, self.margins
        out = {"diag/head_norm": w.head_norm, "diag/head_dist_init": w.head_dist_init,
               "diag/margin/head": m.head, "diag/margin/head_normalized": m.head_normalized,
               "diag/margin/prelogits": m.prelogits}
        for i, (n, d) in enumerate(zip(w.layer_norms, w.layer_dist_init)):
            out[f"diag/layer{i}/norm"] = n
            out[f"diag/layer{i}/dist_init"] = d
        return out


def diagnose(model: nn.Module, info: ModelInfo, init: InitState, task: Task, train_indices: np.ndarray,
             rt: Runtime, *, n: int = 2048, seed: int = 0, batch_size: int = 512) -> Diagnostics:
    """Norms, distances to init and margins on ``n`` of the upstream examples the model trained on.

    Args:
        model, info: the trained model.
        init: its weights at initialization (:func:`capture_init`).
        task: the upstream task.
        train_indices: the upstream train examples it was trained on.
        rt: device and precision.
        n: examples to measure margins on (cost: one forward each, plus a ridge fit of
            min(n, feature_dim + 1)^3).
        seed: which examples.
    """
    pick = np.random.default_rng([seed, 0xD1A6]).permutation(len(train_indices))[:n]
    return Diagnostics(weight_stats(model, info, init),
                       margins(model, info, task, np.sort(train_indices[pick]), rt, batch_size))
