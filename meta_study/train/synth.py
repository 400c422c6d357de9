"""The procedural image suite: one upstream task and six downstream tasks, rendered on the fly.

Nothing is downloaded or stored. Each split holds a few numbers per example (the scene: which
objects, where, what colour, ...), drawn once from the task seed; images are rendered from the
scenes per batch with vectorized torch ops (~0.1 ms per 32 px image on one core, see
``benchmarks/bench_train.py``). ``docs/data.md`` describes every task.

Scenes are built from four attributes:

- shape: disk, square, triangle, cross, ring, bar (rotated, scaled, anti-aliased);
- texture: solid, stripes, checker, dots (upstream); waves, grid (only in ``synth_texture``);
- colour: six hues (red, yellow, green, cyan, blue, magenta) with jittered hue/saturation/value;
- layout: one large object, or a pair of identical smaller objects.

The upstream task ``synth_us`` labels an image by (shape, texture, colour, layout): 120 of the
144 (shape, texture, colour) triples times 2 layouts = 240 classes, under nuisances (position,
scale, rotation, texture phase and frequency, background tint and gradient, pixel noise, small
clutter blobs). The 24 triples it never shows are the classes of ``synth_combo``.
"""

from __future__ import annotations

import functools

import hashlib
from dataclasses import dataclass, fields

import numpy as np
import torch

from .data import CachedSplit, Task, register_task

SHAPES = ("disk", "square", "triangle", "cross", "ring", "bar")
FILL = len(SHAPES)  # shape id of a full-image "object" (texture task)
TEXTURES = ("solid", "stripes", "checker", "dots", "waves", "grid")
US_TEXTURES = 4  # textures 0..3 appear upstream; waves and grid are novel
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
_HUES = np.array([0.0, 60.0, 120.0, 180.0, 240.0, 300.0]) / 360.0
_NOISE_BANK = 64  # noise fields per task; an example picks one (per-pixel noise without per-pixel RNG)


def is_held_out(shape: int, texture: int, colour: int) -> bool:
    """Whether a (shape, texture, colour) triple is held out of upstream (24 of 144 triples).

    One colour per (shape, texture) pair, chosen so each shape and colour is held out 4 times
    and each texture 6 times: every attribute value is seen upstream, only the combination is new.
    """
    return (shape + 2 * texture + colour) % len(COLOURS) == 0


def _triples(held_out: bool) -> np.ndarray:
    t = [(s, x, c) for s in range(len(SHAPES)) for x in range(US_TEXTURES) for c in range(len(COLOURS))
         if is_held_out(s, x, c) == held_out]
    return np.array(t, dtype=np.int64)


US_TRIPLES = _triples(held_out=False)    # (120, 3)
HELD_OUT_TRIPLES = _triples(held_out=True)  # (24, 3)


# --------------------------------------------------------------------------------------------
# Scenes: per-example parameters, (N, K) arrays for K object slots. Slot order is paint order.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenes:
    """Parameters of N scenes with K object slots; positions and sizes in image units ([-1, 1] wide)."""

    active: np.ndarray   # (N, K) bool: slot holds an object
    shape: np.ndarray    # (N, K) int: index into SHAPES, or FILL
    texture: np.ndarray  # (N, K) int: index into TEXTURES
    cx: np.ndarray       # (N, K) centre x
    cy: np.ndarray       # (N, K) centre y
    r: np.ndarray        # (N, K) radius of the bounding circle
    theta: np.ndarray    # (N, K) rotation, radians
    rgb: np.ndarray      # (N, K, 3) colour in [0, 1]
    freq: np.ndarray     # (N, K) texture half-periods per radius (sin(u freq pi), u in radii: 1.2-1.6 periods)
    phase: np.ndarray    # (N, K) texture phase, radians
    bg: np.ndarray       # (N, 3) background colour
    grad: np.ndarray     # (N, 2) background brightness gradient per image unit
    noise: np.ndarray    # (N,) index into the noise bank
    noise_amp: np.ndarray  # (N,) noise standard deviation, in [0, 1] intensity units

    def take(self, idx: np.ndarray) -> "Scenes":
        return Scenes(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.active)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.stack([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return (v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _colours(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """Jittered RGB for colour ids: hue +-12 degrees, saturation and value in [0.6, 1]."""
    h = _HUES[colour] + rng.uniform(-12.0, 12.0, colour.shape) / 360.0
    return _hsv_to_rgb(h % 1.0, rng.uniform(0.6, 1.0, colour.shape), rng.uniform(0.6, 1.0, colour.shape))


def _empty(rng: np.random.Generator, n: int, k: int) -> dict[str, np.ndarray]:
    """Slots all inactive, random nuisances filled in; a sampler then sets the slots it uses."""
    level = rng.uniform(0.15, 0.85, (n, 1))
    tint = rng.uniform(-0.08, 0.08, (n, 3))
    return dict(
        active=np.zeros((n, k), bool), shape=np.zeros((n, k), np.int64), texture=np.zeros((n, k), np.int64),
        cx=np.zeros((n, k), np.float32), cy=np.zeros((n, k), np.float32), r=np.full((n, k), 0.3, np.float32),
        theta=rng.uniform(0, 2 * np.pi, (n, k)).astype(np.float32),
        rgb=_colours(rng, rng.integers(0, len(COLOURS), (n, k))),
        freq=rng.uniform(2.4, 3.2, (n, k)).astype(np.float32),
        phase=rng.uniform(0, 2 * np.pi, (n, k)).astype(np.float32),
        bg=np.clip(level + tint, 0, 1).astype(np.float32), grad=rng.uniform(-0.15, 0.15, (n, 2)).astype(np.float32),
        noise=rng.integers(0, _NOISE_BANK, n), noise_amp=rng.uniform(0.02, 0.08, n).astype(np.float32),
    )


def _place(s: dict[str, np.ndarray], rng: np.random.Generator, slots: slice, n_obj: np.ndarray, grid: int,
           r_lo: float, r_hi: float) -> None:
    """Activate the first ``n_obj`` of ``slots`` per scene, in distinct cells of a grid x grid layout.

    Radii are drawn in [r_lo, r_hi] (r_hi < 1/grid keeps objects inside their cells, so they never
    overlap); centres are jittered within their cells.
    """
    n, k = len(n_obj), slots.stop - slots.start
    cells = rng.random((n, grid * grid)).argsort(1)[:, :k]
    half = 1.0 / grid
    r = rng.uniform(r_lo, r_hi, (n, k))
    jit = np.maximum(half - r, 0.0)
    s["r"][:, slots] = r
    s["cx"][:, slots] = -1 + (2 * (cells % grid) + 1) * half + rng.uniform(-1, 1, (n, k)) * jit
    s["cy"][:, slots] = -1 + (2 * (cells // grid) + 1) * half + rng.uniform(-1, 1, (n, k)) * jit
    s["active"][:, slots] = np.arange(k)[None, :] < n_obj[:, None]


def _single(s: dict[str, np.ndarray], rng: np.random.Generator, slot: int, mask: np.ndarray, r_lo: float,
            r_hi: float) -> None:
    """One object in ``slot`` for scenes in ``mask``, anywhere fully inside the image."""
    n = int(mask.sum())
    r = rng.uniform(r_lo, r_hi, n)
    s["r"][mask, slot] = r
    s["cx"][mask, slot] = rng.uniform(-1, 1, n) * (1 - r)
    s["cy"][mask, slot] = rng.uniform(-1, 1, n) * (1 - r)
    s["active"][mask, slot] = True


def _clutter(s: dict[str, np.ndarray], rng: np.random.Generator, slots: slice) -> None:
    """0-2 small blobs (radius 0.05-0.09) of random colour under the objects: upstream nuisance."""
    n, k = s["active"].shape[0], slots.stop - slots.start
    s["active"][:, slots] = np.arange(k)[None, :] < rng.integers(0, k + 1, n)[:, None]
    s["r"][:, slots] = rng.uniform(0.05, 0.09, (n, k))
    s["cx"][:, slots] = rng.uniform(-0.9, 0.9, (n, k))
    s["cy"][:, slots] = rng.uniform(-0.9, 0.9, (n, k))
    s["shape"][:, slots] = 0


def _set_attrs(s: dict[str, np.ndarray], rng: np.random.Generator, slots: slice, shape: np.ndarray,
               texture: np.ndarray, colour: np.ndarray) -> None:
    """Same (shape, texture, colour) ids per scene in every slot of ``slots``; colours re-jittered."""
    k = slots.stop - slots.start
    s["shape"][:, slots] = shape[:, None]
    s["texture"][:, slots] = texture[:, None]
    s["rgb"][:, slots] = _colours(rng, np.repeat(colour[:, None], k, 1))


# --------------------------------------------------------------------------------------------
# Samplers: labels -> scenes, one per task.
# --------------------------------------------------------------------------------------------


def _sample_objects(rng: np.random.Generator, triples: np.ndarray, layout: np.ndarray, clutter: bool) -> Scenes:
    """Scenes of one object (layout 0) or two identical objects (layout 1) with given triples."""
    n, c = len(triples), 2 if clutter else 0
    s = _empty(rng, n, c + 2)
    if clutter:
        _clutter(s, rng, slice(0, c))
    obj = slice(c, c + 2)
    _set_attrs(s, rng, obj, triples[:, 0], triples[:, 1], triples[:, 2])
    pair = layout == 1
    _place(s, rng, obj, np.where(pair, 2, 0), grid=2, r_lo=0.32, r_hi=0.46)  # pairs: 2 of 4 quadrants
    _single(s, rng, c, ~pair, 0.5, 0.75)
    return Scenes(**s)


def sample_upstream(rng: np.random.Generator, labels: np.ndarray) -> Scenes:
    """synth_us: label = triple_index * 2 + layout over the 120 upstream triples."""
    return _sample_objects(rng, US_TRIPLES[labels // 2], labels % 2, clutter=True)


def sample_combo(rng: np.random.Generator, labels: np.ndarray) -> Scenes:
    """synth_combo: label = one of the 24 held-out triples; layout random."""
    return _sample_objects(rng, HELD_OUT_TRIPLES[labels], rng.integers(0, 2, len(labels)), clutter=True)


def _random_triples(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([rng.integers(0, len(SHAPES), n), rng.integers(0, US_TEXTURES, n),
                     rng.integers(0, len(COLOURS), n)], 1)


def sample_shape(rng: np.random.Generator, labels: np.ndarray) -> Scenes:
    """synth_shape: label = shape of one object with random texture, colour and layout."""
    t = _random_triples(rng, len(labels))
    t[:, 0] = labels
    return _sample_objects(rng, t, rng.integers(0, 2, len(labels)), clutter=True)


def sample_texture(rng: np.random.Generator, labels: np.ndarray) -> Scenes:
    """synth_texture: label = texture filling the whole image (DTD-like), 2 of 6 textures novel."""
    n = len(labels)
    s = _empty(rng, n, 1)
    s["active"][:, 0], s["shape"][:, 0], s["texture"][:, 0] = True, FILL, labels
    s["r"][:, 0] = rng.uniform(0.35, 0.7, n)  # texture scale: periods per radius x radius
    s["freq"][:, 0] = rng.uniform(2.0, 3.4, n)
    return Scenes(**s)


def sample_count(rng: np.random.Generator, labels: np.ndarray) -> Scenes:
    """synth_count: label + 1 objects (1..6) with independent random attributes (CLEVR-count-like)."""
    n, k = len(labels), 6
    s = _empty(rng, n, k)
    for j in range(k):
        t = _random_triples(rng, n)
        _set_attrs(s, rng, slice(j, j + 1), t[:, 0], t[:, 1], t[:, 2])
    _place(s, rng, slice(0, k), labels + 1, grid=3, r_lo=0.17, r_hi=0.28)
    return Scenes(**s)


def sample_xpos(rng: np.random.Generator, labels: np.ndarray, bins: int = 8) -> Scenes:
    """synth_xpos: label = bin of the x-centre of one random object (dSprites-location-like)."""
    n = len(labels)
    s = _empty(rng, n, 1)
    t = _random_triples(rng, n)
    _set_attrs(s, rng, slice(0, 1), t[:, 0], t[:, 1], t[:, 2])
    _single(s, rng, 0, np.ones(n, bool), 0.2, 0.3)
    lo, hi = -1 + s["r"][:, 0], 1 - s["r"][:, 0]
    s["cx"][:, 0] = lo + (labels + rng.uniform(0.05, 0.95, n)) / bins * (hi - lo)
    return Scenes(**s)


def sample_orient(rng: np.random.Generator, labels: np.ndarray, bins: int = 8) -> Scenes:
    """synth_orient: label = bin of the angle in [0, pi) of one bar (dSprites-orientation-like)."""
    n = len(labels)
    s = _empty(rng, n, 1)
    t = _random_triples(rng, n)
    _set_attrs(s, rng, slice(0, 1), np.full(n, SHAPES.index("bar")), t[:, 1], t[:, 2])
    _single(s, rng, 0, np.ones(n, bool), 0.5, 0.7)
    s["theta"][:, 0] = (labels + rng.uniform(0.05, 0.95, n)) / bins * np.pi  # bar is symmetric under pi
    return Scenes(**s)


# --------------------------------------------------------------------------------------------
# Rendering: scenes -> images, vectorized over the batch; a loop over slots (<= 6) only.
# --------------------------------------------------------------------------------------------


def _hyp(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u * u + v * v)


# Signed distance (in radii, < 0 inside) of a pixel at (u, v) in the object's frame to each shape.
_SDF = {
    0: lambda u, v: _hyp(u, v) - 0.95,                                   # disk
    1: lambda u, v: torch.maximum(u.abs(), v.abs()) - 0.7,               # square
    2: lambda u, v: torch.maximum(u.abs() * 0.866 + v * 0.5, -v) - 0.5,  # triangle, circumradius 1
    3: lambda u, v: torch.minimum(torch.maximum(u.abs() - 0.95, v.abs() - 0.3),
                                  torch.maximum(u.abs() - 0.3, v.abs() - 0.95)),  # cross
    4: lambda u, v: (_hyp(u, v) - 0.7).abs() - 0.25,                     # ring
    5: lambda u, v: torch.maximum(u.abs() - 0.95, v.abs() - 0.28),       # bar, aspect ~3.4
    FILL: lambda u, v: torch.full_like(u, -1.0),                         # the whole image
}

# Texture waves w(u, v) with u, v in radians of the texture; intensity = clamp(0.5 + 2 w, 0, 1).
_TEX = {
    0: lambda u, v: torch.ones_like(u),                                  # solid
    1: lambda u, v: torch.sin(u),                                        # stripes
    2: lambda u, v: torch.sin(u) * torch.sin(v) * 2.0,                   # checker
    3: lambda u, v: torch.cos(u) + torch.cos(v) - 0.8,                   # dots
    4: lambda u, v: torch.sin(u + 1.6 * torch.sin(0.5 * v)),             # waves
    5: lambda u, v: torch.maximum(torch.cos(u), torch.cos(v)) - 0.75,    # grid lines
}


def _by_id(ids: np.ndarray, u: torch.Tensor, v: torch.Tensor, fns: dict) -> torch.Tensor:
    """fns[ids[i]](u[i], v[i]) for each scene i: each function runs only on the scenes that use it."""
    present = np.unique(ids)
    if len(present) == 1:
        return fns[int(present[0])](u, v)
    out = torch.empty_like(u)
    for i in present:
        m = torch.from_numpy(ids == i)
        out[m] = fns[int(i)](u[m], v[m])
    return out


def _col(a: np.ndarray) -> torch.Tensor:
    """(N,) numpy -> (N, 1, 1) float32 tensor, to broadcast over pixels."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[:, None, None]


def _paint_slot(img: torch.Tensor, sc: Scenes, k: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """Paint slot ``k`` of the scenes that use it onto ``img`` in place (alpha-composited)."""
    rows = np.flatnonzero(sc.active[:, k])
    if len(rows) == 0:
        return
    p = sc.take(rows)
    r, th = _col(p.r[:, k]), _col(p.theta[:, k])
    dx, dy = x - _col(p.cx[:, k]), y - _col(p.cy[:, k])
    c, s = torch.cos(th), torch.sin(th)
    u, v = (dx * c + dy * s) / r, (dy * c - dx * s) / r
    px_per_radius = r * (img.shape[-1] / 2.0)
    alpha = (0.5 - _by_id(p.shape[:, k], u, v, _SDF) * px_per_radius).clamp_(0.0, 1.0)  # 1-px anti-aliasing
    f, ph = _col(p.freq[:, k] * np.pi), _col(p.phase[:, k])
    tex = (0.5 + 2.0 * _by_id(p.texture[:, k], u * f + ph, v * f + ph, _TEX)).clamp_(0.0, 1.0)
    colour = torch.from_numpy(p.rgb[:, k])[:, :, None, None] * (0.25 + 0.75 * tex)[:, None]
    t = torch.from_numpy(rows)
    under = img[t]
    img[t] = under + alpha[:, None] * (colour - under)


def render(scenes: Scenes, img_size: int, noise_bank: torch.Tensor) -> torch.Tensor:
    """Render scenes to float32 images (N, 3, img_size, img_size) in [-1, 1].

    Cost: ~30 elementwise ops per pixel per painted object; shapes and textures are computed
    only for the scenes that use them. ~10k 32 px upstream images/s on one core.
    """
    g = (torch.arange(img_size, dtype=torch.float32) + 0.5) * (2.0 / img_size) - 1.0  # pixel centres
    x, y = g[None, None, :], g[None, :, None]
    bg = torch.from_numpy(scenes.bg)[:, :, None, None]
    img = bg + (x * _col(scenes.grad[:, 0]) + y * _col(scenes.grad[:, 1]))[:, None]
    for k in range(scenes.active.shape[1]):
        _paint_slot(img, scenes, k, x, y)
    img = img + _col(scenes.noise_amp)[:, None] * noise_bank[torch.from_numpy(scenes.noise)]
    return img.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)


# --------------------------------------------------------------------------------------------
# Splits and tasks
# --------------------------------------------------------------------------------------------


def _seed(*parts: object) -> int:
    """A stable 63-bit seed from names and numbers (Python's hash() is salted per process).

    A whole number counts as the Python int it equals: the repr of ``np.int64(0)`` (numpy 2) and
    of ``0.0`` differ from ``0``'s, and each drew another dataset for the same seed.
    """
    parts = tuple(int(p) if isinstance(p, (int, np.integer, float, np.floating)) and not isinstance(p, bool)
                  and float(p).is_integer() else p for p in parts)
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


class SceneSplit(CachedSplit):
    """A split of procedural scenes, rendered when indexed.

    Scenes for all examples are drawn at construction (~250 bytes per upstream example, 85-350 B
    for the other tasks). Images are rendered per batch and quantized to uint8, and cached when the split fits in ``cache_mb``
    (48k 32 px images: 147 MB). Quantizing always (cached or not) keeps images identical either
    way. Labels are balanced: each class has ``n // num_classes`` or one more example.
    """

    def __init__(self, sampler, num_classes: int, n: int, img_size: int, seed: int, cache_mb: float = 1024.0) -> None:
        super().__init__(n, (3, img_size, img_size), cache_mb)
        rng = np.random.default_rng(seed)
        self.labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        self.scenes = sampler(rng, self.labels)
        self.img_size = img_size
        gen = torch.Generator().manual_seed(seed % (2**63))
        self.noise_bank = torch.randn(_NOISE_BANK, 3, img_size, img_size, generator=gen)

    def _produce(self, idx: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            x = render(self.scenes.take(idx), self.img_size, self.noise_bank)
        return x.add_(1.0).mul_(127.5).round_().to(torch.uint8)


def _check_sizes(name: str, **sizes: object) -> None:
    """Refuse a size that is not a whole number >= 0, by name (n_train=-5 failed in torch:
    "Trying to create tensor with negative dimension -5")."""
    for key, v in sizes.items():
        whole = isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
        if isinstance(v, bool) or not whole or v < 0:
            raise ValueError(f"{name}: {key}={v!r}: must be a whole number >= 0")


def _task(name: str, sampler, num_classes: int, description: str, img_size: int, seed: int, n_train: int,
          n_test: int, cache_mb: float) -> Task:
    # cache_mb="512" (a YAML string) failed deep in CachedSplit: "'<=' not supported between ..."
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, (int, float, np.integer, np.floating)) \
            or not cache_mb >= 0:
        raise ValueError(f"{name}: cache_mb={cache_mb!r}: must be a number of MB >= 0 (0: render every batch)")
    # get_task(name, img_size=...) from a user's own code: 0 failed as "float division by zero", -4 and
    # 16.0 (a YAML or Tune float) in torch naming neither, and True rendered 1-px images
    whole = isinstance(img_size, (int, np.integer)) or (isinstance(img_size, float) and img_size.is_integer())
    if isinstance(img_size, bool) or not whole or img_size < 1:
        raise ValueError(f"{name}: img_size={img_size!r}: must be a whole number of pixels >= 1")
    n_train, n_test, img_size = int(n_train), int(n_test), int(img_size)
    return Task(
        name=name, num_classes=num_classes, img_size=img_size, description=description,
        train=SceneSplit(sampler, num_classes, n_train, img_size, _seed(name, "train", seed), cache_mb),
        test=SceneSplit(sampler, num_classes, n_test, img_size, _seed(name, "test", seed), cache_mb),
    )


def sample_upstream_subset(rng: np.random.Generator, labels: np.ndarray, triples: np.ndarray) -> Scenes:
    """synth_us with ``n_triples`` < 120: label = index into ``triples`` * 2 + layout."""
    return _sample_objects(rng, triples[labels // 2], labels % 2, clutter=True)


@register_task("synth_us")
def synth_us(img_size: int = 32, seed: int = 0, n_train: int = 48_000, n_test: int = 2_400,
             cache_mb: float = 1024.0, n_triples: int = 120) -> Task:
    """Upstream: 240 classes = 120 (shape, texture, colour) triples x 2 layouts.

    Args:
        img_size: pixels a side.
        seed: the dataset seed (train and test scenes are drawn from seeds derived from it).
        n_train: training images (200 per class by default); ``data_fraction`` takes a subset.
        n_test: held-out images the US accuracy is measured on (10 per class: +-1% standard error).
        cache_mb: keep rendered images in memory when a split fits (48k at 32 px: 147 MB).
        n_triples: use this many of the 120 triples, evenly spaced (``2 * n_triples`` classes): an
            easier upstream task, e.g. 12 (24-way) for the CPU demo, where tiny models trained for
            seconds spread over a useful range of US accuracy instead of staying near chance.
            Evenly spaced in (shape, texture, colour) order, a few triples do not show every
            attribute value: 12 show every shape and texture, each shape with two textures, and
            five of the six colours (no blue), so ``synth_combo``'s blue triples are then a new
            colour, not only a new combination (docs/data.md).
    """
    _check_sizes("synth_us", n_train=n_train, n_test=n_test, n_triples=n_triples)
    if not 1 <= n_triples <= len(US_TRIPLES):
        raise ValueError(f"synth_us: n_triples={n_triples!r}: must be in [1, {len(US_TRIPLES)}] (the upstream triples "
                         "it keeps)")
    n_triples = int(n_triples)   # 12.0 (a Tune quniform) failed in np.linspace
    if n_triples == len(US_TRIPLES):
        sampler = sample_upstream
    else:
        pick = np.linspace(0, len(US_TRIPLES) - 1, n_triples).round().astype(int)
        sampler = functools.partial(sample_upstream_subset, triples=US_TRIPLES[pick])
    return _task("synth_us", sampler, 2 * n_triples, f"shape x texture x colour x layout ({2 * n_triples}-way)",
                 img_size, seed, n_train, n_test, cache_mb)


def _ds(name: str, sampler, num_classes: int, description: str):
    def factory(img_size: int = 32, seed: int = 0, n_train_per_class: int = 50, n_test: int = 1_200,
                cache_mb: float = 1024.0) -> Task:
        _check_sizes(name, n_train_per_class=n_train_per_class, n_test=n_test)
        return _task(name, sampler, num_classes, description, img_size, seed, int(n_train_per_class) * num_classes,
                     n_test, cache_mb)

    factory.__doc__ = (f"Downstream: {description}. ``n_train_per_class`` train images per class (few-shot draws "
                       f"come from them; >= 25 for 25 shots), ``n_test`` test images.")
    register_task(name)(factory)


# Near to far from the upstream task (docs/data.md):
_ds("synth_combo", sample_combo, len(HELD_OUT_TRIPLES), "held-out (shape, texture, colour) triples (24-way)")
_ds("synth_shape", sample_shape, len(SHAPES), "shape under random texture, colour and layout (6-way)")
_ds("synth_texture", sample_texture, len(TEXTURES), "full-image texture, 2 of 6 novel (6-way)")
_ds("synth_count", sample_count, 6, "number of objects, 1-6 (6-way, CLEVR-count-like)")
_ds("synth_xpos", sample_xpos, 8, "x-position of one object in 8 bins (dSprites-location-like)")
_ds("synth_orient", sample_orient, 8, "orientation of a bar in 8 bins over 180 degrees (dSprites-orientation-like)")

DS_TASKS = ("synth_combo", "synth_shape", "synth_texture", "synth_count", "synth_xpos", "synth_orient")
