"""Tasks, splits and the task registry: what the engine trains and probes on.

A :class:`Task` has a ``train`` and a ``test`` :class:`Split`, a number of classes and an image
size. A split is a fixed, indexable set of labelled images: ``split.images(idx)`` returns the
images at ``idx`` as a float tensor in [-1, 1] (big_vision's ``value_range(-1, 1)``), and the
same index always gives the same image, whatever batch it is in. That is what makes epochs,
data fractions and exact resume well defined for procedural data, which is rendered on the fly.

Tasks are looked up by name (``get_task("synth_us", img_size=32)``). The procedural suite
(:mod:`meta_study.train.synth`) registers itself; data on disk is loaded with
:func:`meta_study.train.disk.load_imagefolder` / :func:`~meta_study.train.disk.load_parquet`
and registered under a name with :func:`register_task`, so a sweep config can name it.
"""

from __future__ import annotations

import abc
import dataclasses
import fnmatch
import inspect
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Protocol

import numpy as np
import torch


class Split(Protocol):
    """A fixed, indexable set of labelled images."""

    #: int64 labels of every example, in [0, num_classes).
    labels: np.ndarray

    def __len__(self) -> int: ...

    def images(self, idx: np.ndarray) -> torch.Tensor:
        """Images at ``idx`` as float32 (len(idx), C, H, W) in [-1, 1]; deterministic per index."""
        ...


@dataclass(frozen=True)
class Task:
    """A classification task with a train and a test split.

    Attributes:
        name: registry name; also the ``us_task`` / ``ds_task`` in metric keys.
        num_classes: labels are in [0, num_classes).
        img_size: images are square, ``img_size`` pixels a side.
        train: the split models are trained on (upstream) or few-shot examples drawn from (downstream).
        test: the held-out split accuracies are measured on.
        description: one line for docs and logs.
        in_chans: channels per image.
    """

    name: str
    num_classes: int
    img_size: int
    train: Split
    test: Split
    description: str = ""
    in_chans: int = 3

    def __post_init__(self) -> None:
        """Refuse labels outside [0, num_classes) or not integers, naming the task and split: a
        registered task with 1-based ids crashed pre-training deep in cross_entropy ("Target 3 is
        out of bounds"; a device-side assert on a GPU), and float labels were read as class
        probabilities."""
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"task {self.name!r}: num_classes={k!r}: must be an integer >= 1")
        for what, split in (("train", self.train), ("test", self.test)):
            # a list passed here, then failed pre-training at its first batch, in numpy's fancy
            # indexing: "only integer scalar arrays can be converted to a scalar index"
            if not isinstance(split.labels, np.ndarray):
                raise ValueError(f"task {self.name!r}: {what} labels are a {type(split.labels).__name__}; give a "
                                 "numpy array of integer class ids (np.asarray(labels))")
            y = split.labels
            if y.ndim != 1:   # one-hot rows passed the range check, then failed in cross_entropy naming neither
                raise ValueError(f"task {self.name!r}: {what} labels have shape {y.shape}; give one class id per "
                                 "example, a 1-D array (one-hot rows: labels.argmax(1))")
            if y.dtype.kind not in "iu":
                raise ValueError(f"task {self.name!r}: {what} labels have dtype {y.dtype}; class ids must be "
                                 "integers in [0, num_classes)")
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ValueError(f"task {self.name!r}: {what} labels span [{y.min()}, {y.max()}], outside [0, "
                                 f"num_classes={k}) (1-based ids? number classes from 0)")
            # images held in memory are checked against the declared size (the model is built from
            # it): grayscale pixels under the default in_chans=3 failed pre-training in the model's
            # first conv ("expected input[8, 1, 8, 8] to have 3 channels"), naming neither
            px = getattr(split, "pixels", None)
            want = (self.in_chans, self.img_size, self.img_size)
            if isinstance(px, torch.Tensor) and px.ndim == 4 and tuple(px.shape[1:]) != want:
                raise ValueError(f"task {self.name!r}: {what} images are {tuple(px.shape[1:])} (C, H, W), not "
                                 f"in_chans={self.in_chans} x img_size={self.img_size} px a side")


@dataclass
class TensorSplit:
    """A split held in memory as uint8 images (N, C, H, W); ~3 KB per 32 px RGB image."""

    pixels: torch.Tensor
    labels: np.ndarray

    def __post_init__(self) -> None:
        """Refuse pixels that are not uint8 (N, C, H, W), one per label: float images in [0, 1]
        were scaled as 0..255, every image nearly black ([-1, -0.992]) and trained on without a
        word; fewer images than labels was an IndexError mid-training."""
        px = self.pixels
        if not isinstance(px, torch.Tensor) or px.dtype != torch.uint8 or px.ndim != 4:
            what = f"{px.dtype} {tuple(px.shape)}" if isinstance(px, torch.Tensor) else type(px).__name__
            raise ValueError(f"TensorSplit: pixels are {what}; expected a uint8 tensor (N, C, H, W) in [0, 255] "
                             "(float images in [0, 1]: (x * 255).round().to(torch.uint8))")
        if len(px) != len(self.labels):
            raise ValueError(f"TensorSplit: {len(px)} images but {len(self.labels)} labels; one label per image")

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, idx: np.ndarray) -> torch.Tensor:
        return to_float(self.pixels[torch.as_tensor(np.asarray(idx, dtype=np.int64))])


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return pixels.float().mul_(2.0 / 255.0).sub_(1.0)


class CachedSplit(abc.ABC):
    """Base of splits whose images are produced on demand (rendered, decoded) as uint8.

    Subclasses set ``labels`` and implement ``_produce(idx) -> uint8 (len(idx), C, S, S)``.
    Produced images are kept in memory when the whole split fits in ``cache_mb``, so epochs
    after the first cost nothing to load. The cache is per process (DataLoader workers each
    fill their own).
    """

    labels: np.ndarray

    def __init__(self, n: int, shape: tuple[int, int, int], cache_mb: float) -> None:
        fits = n * shape[0] * shape[1] * shape[2] <= cache_mb * 2**20
        self._cache = torch.empty((n, *shape), dtype=torch.uint8) if fits else None
        self._cached = np.zeros(n, bool)

    def __len__(self) -> int:
        return len(self.labels)

    @abc.abstractmethod
    def _produce(self, idx: np.ndarray) -> torch.Tensor:
        """uint8 images ``(len(idx), C, S, S)`` for the indices ``idx``."""

    def pixels(self, idx: np.ndarray) -> torch.Tensor:
        """uint8 images at ``idx``, produced or from the cache."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._cache is None:
            return self._produce(idx)
        todo = np.unique(idx[~self._cached[idx]])
        if len(todo):
            self._cache[torch.from_numpy(todo)] = self._produce(todo)
            self._cached[todo] = True
        return self._cache[torch.from_numpy(idx)]

    def images(self, idx: np.ndarray) -> torch.Tensor:
        return to_float(self.pixels(idx))


TaskFactory = Callable[..., Task]
_TASKS: dict[str, TaskFactory] = {}
_BUILTINS_LOADED = False


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Register a task factory under ``name``.

    The factory is called as ``factory(img_size=..., seed=..., **kwargs)`` and returns a
    :class:`Task`; :func:`get_task` names it ``name`` whatever name the factory gave it (the
    metric keys ``us/{us_task}/top1``, ``ds/{ds_task}/...`` must be the names a config gives).
    Registering a name twice replaces the first factory (so a notebook can re-register), which
    is why names of the built-in suite start with ``synth_``.

    Example::

        @register_task("pets")
        def pets(img_size: int = 224, seed: int = 0) -> Task:
            return load_imagefolder("/data/pets", name="pets", img_size=img_size, seed=seed)
    """

    def deco(factory: TaskFactory) -> TaskFactory:
        _TASKS[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        from . import synth  # noqa: F401  (registers the procedural suite)

        _BUILTINS_LOADED = True


def list_tasks(pattern: str = "*") -> list[str]:
    """Registered task names matching a glob ``pattern``, sorted."""
    _load_builtins()
    return sorted(n for n in _TASKS if fnmatch.fnmatchcase(n, pattern))


def get_task(name: str, **kwargs: object) -> Task:
    """Build the task registered as ``name``; kwargs (``img_size``, ``seed``, ...) go to its factory.

    The task is named ``name``, whatever its factory called it. A factory returning
    ``load_imagefolder("/data/pets_v2", ...)`` (named after its directory) gave a task whose
    metrics were logged as ``us/pets_v2/top1`` and ``ds/pets_v2/...`` under a config naming
    ``pets``: a sweep's scheduler waited for ``us/pets/top1`` in vain, and the store held the
    results under a name no config had.

    Raises:
        KeyError: no task is registered as ``name``.
        TypeError: the factory returned something other than a :class:`Task`.
    """
    _load_builtins()
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered: {', '.join(sorted(_TASKS))}")
    task = _TASKS[name](**kwargs)
    if not isinstance(task, Task):
        raise TypeError(f"task {name!r}: its factory returned a {type(task).__name__}, not a Task")
    return task if task.name == name else dataclasses.replace(task, name=name)


def _keywords(factory: TaskFactory) -> frozenset[str] | None:
    """The keyword arguments ``factory`` takes; None when it takes any (``**kwargs``)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def task_kwargs(name: str, kwargs: Mapping[str, object], what: str = "task kwargs") -> dict[str, object]:
    """The part of ``kwargs`` that the factory of task ``name`` takes.

    A sweep sets its task kwargs once for all its tasks: the smoke variant's sizing keys of the
    procedural suite (``n_train``, ``n_train_per_class``, ``n_test``) mean nothing to a dataset on
    disk, whose loader failed on them (``load_imagefolder() got an unexpected keyword argument``)
    in every trial that mixed the two. So each task gets the keys its factory takes. A key that
    no registered factory takes is a typo, refused by name (``what`` names the config field).
    """
    _load_builtins()
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered: {', '.join(sorted(_TASKS))}")
    takes = _keywords(_TASKS[name])
    if takes is None:
        return dict(kwargs)
    known = [_keywords(f) for f in _TASKS.values()]
    for key in kwargs:
        if key not in takes and not any(k is None or key in k for k in known):
            anywhere = sorted(set().union(*(k for k in known if k is not None)) - {"img_size", "seed"})
            raise ValueError(f"{what} key {key!r}: no task factory takes it (the registered ones take "
                             f"{', '.join(anywhere)})")
    return {k: v for k, v in kwargs.items() if k in takes}


# --------------------------------------------------------------------------------------------
# Sampling: data fractions and epoch orders are pure functions of seeds, so a resumed run
# recomputes them instead of storing them.
# --------------------------------------------------------------------------------------------


def ceil_product(fraction: float, n: int) -> int:
    """``ceil(fraction * n)`` of the product the decimal ``fraction`` means: 0.07 * 100 is
    7.000000000000001 in floating point, and its ceil took 8 examples (0.14 of 6,000: 841). A
    product within its rounding error (a few ulps: the fraction's and the product's) of a whole
    number is that number."""
    x = fraction * n
    return round(x) if abs(x - round(x)) <= 4 * math.ulp(x) else math.ceil(x)


def fraction_indices(n: int, data_fraction: float, seed: int = 0) -> np.ndarray:
    """The first ``ceil(data_fraction * n)`` indices of a fixed permutation of ``range(n)``.

    Subsets are nested: a smaller fraction is a prefix of a larger one with the same seed, so
    a data-fraction sweep adds data rather than redrawing it. Returned sorted.
    """
    if not 0.0 < data_fraction <= 1.0:
        raise ValueError(f"data_fraction must be in (0, 1], got {data_fraction}")
    k = max(1, ceil_product(data_fraction, n))
    perm = np.random.default_rng([seed, 0xF4AC]).permutation(n)
    return np.sort(perm[:k])


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The order ``indices`` are visited in during ``epoch``: a permutation seeded by (seed, epoch)."""
    return indices[np.random.default_rng([seed, epoch, 0xE90C]).permutation(len(indices))]


class StepBatches:
    """The training batch of each step, as a pure function of (indices, batch_size, seed, step).

    Each epoch visits ``indices`` in the order :func:`epoch_order` gives, in
    ``len(indices) // batch_size`` full batches (the remainder is dropped, as in big_vision).
    Because batch ``s`` does not depend on what came before, a resumed run continues the exact
    data order, and a ``torch.utils.data.DataLoader`` (``batch_size=None``, sampler = step
    numbers) can render batches in worker processes.
    """

    def __init__(self, split: Split, indices: np.ndarray, batch_size: int, seed: int, *, rank: int = 0,
                 world: int = 1) -> None:
        self.split, self.indices, self.seed = split, np.asarray(indices, dtype=np.int64), seed
        self.batch_size = min(batch_size, len(self.indices))
        self.steps_per_epoch = max(1, len(self.indices) // self.batch_size)
        # Data-parallel training: every rank takes every world-th example of the same global batch,
        # so the union over ranks is exactly the single-process batch.
        self.rank, self.world = rank, world
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, order) of the last epoch used

    def batch_indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(self.indices, self.seed, epoch))
        return self._order[1][pos * self.batch_size:(pos + 1) * self.batch_size][self.rank::self.world]

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batch_indices(step)
        # int64 whatever the split holds (Task takes any integer dtype): cross_entropy refused
        # int32 targets ("expected target dtype to be Long or Byte, but got Int")
        return self.split.images(idx), torch.as_tensor(self.split.labels[idx], dtype=torch.long)


def iterate_split(split: Split, batch_size: int, indices: np.ndarray | None = None,
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches over ``indices`` (default: the whole split) in order, last batch partial."""
    idx_all = np.arange(len(split)) if indices is None else np.asarray(indices)
    for i in range(0, len(idx_all), batch_size):
        idx = idx_all[i:i + batch_size]
        yield split.images(idx), torch.as_tensor(split.labels[idx], dtype=torch.long)
