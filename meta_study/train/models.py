"""Model presets and a uniform view of timm models: head, blocks, pre-logits, per-block features.

``create_model(name, num_classes=..., img_size=...)`` builds a registered preset or any timm
model by name, always from scratch (``pretrained=False``: nothing is downloaded). Presets span
the paper's range (ViT Ti/S/B/L, Mixer S/B/L, ResNet 18/50/101, BiT ResNet-v2) plus ``*_cpu``
presets whose training step takes milliseconds on one CPU core. Patch size is a knob of the ViT
and Mixer presets: ``create_model("vit_b", patch_size=32, ...)`` is ViT-B/32.

Parameter counts depend on ``img_size`` and ``num_classes`` (ViT position embeddings, Mixer token
MLPs, the head), so :class:`ModelInfo` records the count of the model actually built.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import timm
import torch
from timm.models import build_model_with_cfg
from timm.models.mlp_mixer import MlpMixer
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..schema import ARCH_FAMILIES

#: Models with more parameters than this use the paper's "large model" learning rate.
LARGE_MODEL_PARAMS = 150_000_000


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a built model.

    Attributes:
        name: the preset or timm name it was created from (the ``model_name`` param).
        timm_name: the timm architecture it is built from, e.g. ``vit_base_patch16_224``.
        arch_family: ``vit``, ``mixer``, ``resnet`` or ``other`` (schema.ARCH_FAMILIES).
        param_count: number of parameters, head included.
        num_blocks: number of residual blocks; representation layers are 0..num_blocks-1.
        block_names: module path of each block in forward order, e.g. ``blocks.3`` or ``layer2.1``.
        head_name: module path of the classifier, e.g. ``head`` or ``fc``.
        feature_dim: width of the pre-logit representation.
        img_size: input side in pixels.
        num_classes: outputs of the head.
        default_lr: the paper's Adam learning rate for this size: 8e-4, or 4e-4 above 150M params.
    """

    name: str
    timm_name: str
    arch_family: str
    param_count: int
    num_blocks: int
    block_names: tuple[str, ...]
    head_name: str
    feature_dim: int
    img_size: int
    num_classes: int
    default_lr: float


@dataclass(frozen=True)
class Preset:
    """A registered preset: ``build(num_classes=, img_size=, in_chans=, **overrides)`` makes the model."""

    name: str
    arch_family: str
    timm_name: str
    build: Callable[..., nn.Module]
    img_size: int
    doc: str


_PRESETS: dict[str, Preset] = {}


Builder = Callable[..., nn.Module]


def register_preset(*, family: str, timm_name: str, img_size: int = 224) -> Callable[[Builder], Builder]:
    """Register the decorated builder as a preset named after the function.

    Args:
        family: ``vit``, ``mixer``, ``resnet`` or ``other``.
        timm_name: the timm architecture the preset is (a variant of).
        img_size: the preset's usual input size (224 for the paper's models, 32 for ``*_cpu``).
    """

    if family not in ARCH_FAMILIES:
        # logged as the trials' arch_family, which ingest quarantines outside these: every row
        # of a sweep over the preset was refused after its training ("unknown arch_family")
        raise ValueError(f"register_preset(family={family!r}): must be one of {', '.join(ARCH_FAMILIES)} "
                         "(schema.ARCH_FAMILIES; 'other' for any other architecture)")

    def deco(fn: Builder) -> Builder:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _PRESETS[fn.__name__] = Preset(fn.__name__, family, timm_name, fn, img_size, doc)
        return fn

    return deco


def list_presets(pattern: str = "*") -> list[str]:
    """Registered preset names matching a glob ``pattern``, sorted."""
    return sorted(n for n in _PRESETS if fnmatch.fnmatchcase(n, pattern))


def get_preset(name: str) -> Preset:
    """The preset registered as ``name``."""
    return _PRESETS[name]


# --------------------------------------------------------------------------------------------
# Presets. Builders merge the preset's defaults with caller overrides (overrides win).
# --------------------------------------------------------------------------------------------


def _vit(variant: str, defaults: dict[str, Any], kw: dict[str, Any]) -> nn.Module:
    return build_model_with_cfg(VisionTransformer, variant, pretrained=False, **{**defaults, **kw})


def _mixer(variant: str, defaults: dict[str, Any], kw: dict[str, Any]) -> nn.Module:
    return build_model_with_cfg(MlpMixer, variant, pretrained=False, **{**defaults, **kw})


def _resnet(variant: str, defaults: dict[str, Any], kw: dict[str, Any], cifar_stem: bool = False) -> nn.Module:
    kw = {k: v for k, v in kw.items() if k != "img_size"}  # convnets take any size
    model = build_model_with_cfg(ResNet, variant, pretrained=False, **{**defaults, **kw})
    if cifar_stem:
        model.maxpool = nn.Identity()  # stride 2 instead of 4 before stage 1: keeps 16x16 maps at 32 px
    return model


def _bit(variant: str, kw: dict[str, Any]) -> nn.Module:
    kw = {k: v for k, v in kw.items() if k != "img_size"}
    return timm.create_model(variant, pretrained=False, **kw)


@register_preset(family="vit", timm_name="vit_tiny_patch16_224")
def vit_ti(**kw: Any) -> nn.Module:
    """ViT-Ti/16: width 192, depth 12, 3 heads (5.7M params at 224 px)."""
    return _vit("vit_tiny_patch16_224", dict(patch_size=16, embed_dim=192, depth=12, num_heads=3), kw)


@register_preset(family="vit", timm_name="vit_small_patch16_224")
def vit_s(**kw: Any) -> nn.Module:
    """ViT-S/16: width 384, depth 12, 6 heads (22M params at 224 px)."""
    return _vit("vit_small_patch16_224", dict(patch_size=16, embed_dim=384, depth=12, num_heads=6), kw)


@register_preset(family="vit", timm_name="vit_base_patch16_224")
def vit_b(**kw: Any) -> nn.Module:
    """ViT-B/16: width 768, depth 12, 12 heads (86M params at 224 px)."""
    return _vit("vit_base_patch16_224", dict(patch_size=16, embed_dim=768, depth=12, num_heads=12), kw)


@register_preset(family="vit", timm_name="vit_large_patch16_224")
def vit_l(**kw: Any) -> nn.Module:
    """ViT-L/16: width 1024, depth 24, 16 heads (304M params at 224 px)."""
    return _vit("vit_large_patch16_224", dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16), kw)


@register_preset(family="mixer", timm_name="mixer_s16_224")
def mixer_s(**kw: Any) -> nn.Module:
    """Mixer-S/16: width 512, 8 blocks (18M params at 224 px)."""
    return _mixer("mixer_s16_224", dict(patch_size=16, embed_dim=512, num_blocks=8), kw)


@register_preset(family="mixer", timm_name="mixer_b16_224")
def mixer_b(**kw: Any) -> nn.Module:
    """Mixer-B/16: width 768, 12 blocks (60M params at 224 px)."""
    return _mixer("mixer_b16_224", dict(patch_size=16, embed_dim=768, num_blocks=12), kw)


@register_preset(family="mixer", timm_name="mixer_l16_224")
def mixer_l(**kw: Any) -> nn.Module:
    """Mixer-L/16: width 1024, 24 blocks (208M params at 224 px)."""
    return _mixer("mixer_l16_224", dict(patch_size=16, embed_dim=1024, num_blocks=24), kw)


@register_preset(family="resnet", timm_name="resnet18")
def resnet_18(**kw: Any) -> nn.Module:
    """ResNet-18 (v1.5, BatchNorm): 4 stages of 2 basic blocks (11.7M params)."""
    return _resnet("resnet18", dict(block=BasicBlock, layers=(2, 2, 2, 2)), kw)


@register_preset(family="resnet", timm_name="resnet50")
def resnet_50(**kw: Any) -> nn.Module:
    """ResNet-50 (v1.5, BatchNorm): bottleneck blocks (3, 4, 6, 3) (25.6M params)."""
    return _resnet("resnet50", dict(block=Bottleneck, layers=(3, 4, 6, 3)), kw)


@register_preset(family="resnet", timm_name="resnet101")
def resnet_101(**kw: Any) -> nn.Module:
    """ResNet-101 (v1.5, BatchNorm): bottleneck blocks (3, 4, 23, 3) (44.5M params)."""
    return _resnet("resnet101", dict(block=Bottleneck, layers=(3, 4, 23, 3)), kw)


@register_preset(family="resnet", timm_name="resnetv2_50x1_bit")
def bit_50x1(**kw: Any) -> nn.Module:
    """BiT-M-style ResNet-v2-50x1: pre-activation, GroupNorm + weight standardization (25.5M params)."""
    return _bit("resnetv2_50x1_bit", kw)


@register_preset(family="resnet", timm_name="resnetv2_101x1_bit")
def bit_101x1(**kw: Any) -> nn.Module:
    """BiT-M-style ResNet-v2-101x1: pre-activation, GroupNorm + weight standardization (44.5M params)."""
    return _bit("resnetv2_101x1_bit", kw)


# CPU presets: a training step on a 32 px batch of 64 takes milliseconds.
@register_preset(family="vit", timm_name="vit_tiny_patch16_224", img_size=32)
def vit_tiny_cpu(**kw: Any) -> nn.Module:
    """ViT width 64, depth 2, 4 heads, patch 4 (~0.1M params at 32 px)."""
    return _vit("vit_tiny_patch16_224", dict(patch_size=4, embed_dim=64, depth=2, num_heads=4), kw)


@register_preset(family="vit", timm_name="vit_tiny_patch16_224", img_size=32)
def vit_small_cpu(**kw: Any) -> nn.Module:
    """ViT width 128, depth 4, 4 heads, patch 4 (~0.8M params at 32 px): the next size step."""
    return _vit("vit_tiny_patch16_224", dict(patch_size=4, embed_dim=128, depth=4, num_heads=4), kw)


@register_preset(family="vit", timm_name="vit_tiny_patch16_224", img_size=32)
def vit_medium_cpu(**kw: Any) -> nn.Module:
    """ViT width 192, depth 6, 6 heads, patch 4 (~2.7M params at 32 px)."""
    return _vit("vit_tiny_patch16_224", dict(patch_size=4, embed_dim=192, depth=6, num_heads=6), kw)


@register_preset(family="mixer", timm_name="mixer_s16_224", img_size=32)
def mixer_tiny_cpu(**kw: Any) -> nn.Module:
    """Mixer width 64, 2 blocks, patch 4 (~0.1M params at 32 px)."""
    return _mixer("mixer_s16_224", dict(patch_size=4, embed_dim=64, num_blocks=2), kw)


@register_preset(family="mixer", timm_name="mixer_s16_224", img_size=32)
def mixer_small_cpu(**kw: Any) -> nn.Module:
    """Mixer width 128, 4 blocks, patch 4 (~0.4M params at 32 px)."""
    return _mixer("mixer_s16_224", dict(patch_size=4, embed_dim=128, num_blocks=4), kw)


@register_preset(family="resnet", timm_name="resnet18", img_size=32)
def resnet_tiny_cpu(**kw: Any) -> nn.Module:
    """ResNet with one basic block per stage, widths 16-128 after a 64-wide stem, no stem max-pool (~0.3M params)."""
    # stem_width is used by timm's deep stems only: this stem is its 7x7 conv, 64 wide (the preset's
    # parameter count and results are of that model, so it stays)
    defaults = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16)
    return _resnet("resnet18", defaults, kw, cifar_stem=True)


@register_preset(family="resnet", timm_name="resnet18", img_size=32)
def resnet_small_cpu(**kw: Any) -> nn.Module:
    """ResNet with two basic blocks per stage, widths 32-256 after a 64-wide stem, no stem max-pool (~2.8M params)."""
    # the 7x7 stem is 64 wide: stem_width is used by timm's deep stems only (see resnet_tiny_cpu)
    defaults = dict(block=BasicBlock, layers=(2, 2, 2, 2), channels=(32, 64, 128, 256), stem_width=32)
    return _resnet("resnet18", defaults, kw, cifar_stem=True)


# --------------------------------------------------------------------------------------------
# Building and inspecting models
# --------------------------------------------------------------------------------------------


def arch_family(model: nn.Module) -> str:
    """``vit``, ``mixer``, ``resnet`` or ``other``, from the model's class."""
    if isinstance(model, VisionTransformer):
        return "vit"
    if isinstance(model, MlpMixer):
        return "mixer"
    if isinstance(model, (ResNet, ResNetV2)):
        return "resnet"
    return "other"


def block_names(model: nn.Module) -> tuple[str, ...]:
    """Module paths of the residual blocks, in forward order (empty if the layout is unknown).

    ViT / Mixer: ``blocks.i``; ResNet: ``layer{s}.{i}``; ResNet-v2 and other staged timm
    models: ``stages.{s}.blocks.{i}`` (or ``stages.{s}`` when a stage has no ``blocks``); Swin
    (v1, v2): ``layers.{s}.blocks.{i}``; any other timm model: its ``feature_info`` stages.
    """
    if isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)):
        return _called(model, [f"blocks.{i}" for i in range(len(model.blocks))])
    if isinstance(model, ResNet):
        return tuple(f"layer{s}.{i}" for s in range(1, 5) for i in range(len(getattr(model, f"layer{s}"))))
    for attr in ("stages", "layers"):
        stages = getattr(model, attr, None)
        if isinstance(stages, (nn.Sequential, nn.ModuleList)):
            out: list[str] = []
            for s, stage in enumerate(stages):
                blocks = getattr(stage, "blocks", None)
                out += ([f"{attr}.{s}.blocks.{i}" for i in range(len(blocks))] if blocks is not None
                        else [f"{attr}.{s}"])
            return tuple(out)
    return _feature_modules(model)


def _called(model: nn.Module, names: Sequence[str]) -> tuple[str, ...]:
    """``names`` with each ``nn.ModuleList`` among them (never called itself: a hook on it never
    fires) replaced by its children, in order: Twins' ``blocks.i`` are lists of blocks."""
    out: list[str] = []
    for n in names:
        m = model.get_submodule(n)
        out += _called(model, [f"{n}.{i}" for i in range(len(m))]) if isinstance(m, nn.ModuleList) else [n]
    return tuple(out)


def _feature_modules(model: nn.Module) -> tuple[str, ...]:
    """timm's ``feature_info`` modules (stage outputs, in forward order) of a model whose blocks
    are named otherwise (DenseNet, DLA, DPN, DeepSeek-ViT): a layer-wise probe of it measured
    nothing. Containers that are never called themselves (``nn.ModuleList``: no output to hook)
    are left out, and each module is named once."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)):
        return ()
    modules = dict(model.named_modules())
    names = [d.get("module") for d in info if isinstance(d, dict)]
    # "" is the model itself (TResNet's first stage): hooked, its output was the logits, after
    # every block (its forward_features never called it: a layer-wise probe failed after pre-training)
    return tuple(dict.fromkeys(n for n in names if n and n in modules and not isinstance(modules[n], nn.ModuleList)))


def distilled_heads(timm_name: str) -> bool:
    """Whether a timm model has a second, distillation classifier (DeiT ``*_distilled``, LeViT,
    EfficientFormer: 70 of timm 1.0's models): the head weight decay, head norms and margins here
    assume one head, so such a model is refused, not trained with half its head unaccounted for.
    From timm's config of the name: nothing is built."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    return cfg is not None and isinstance(cfg.classifier, (tuple, list))


def head_module(model: nn.Module) -> tuple[str, nn.Module]:
    """(module path, module) of the classifier, from timm's ``get_classifier()``."""
    head = model.get_classifier()
    if isinstance(head, (tuple, list)):
        raise ValueError(f"{type(model).__name__}: two classifier heads (a distillation head); models with one "
                         "are supported (e.g. deit_tiny_patch16_224 instead of deit_tiny_distilled_patch16_224)")
    for name, mod in model.named_modules():
        if mod is head:
            return name, mod
    raise ValueError(f"{type(model).__name__}: classifier not found among its modules")


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters: weight and bias of a linear head; of an MLP head (CAFormer's
    fc1, norm, fc2), all of its layers'."""
    return list(head_module(model)[1].parameters())


def default_lr(param_count: int) -> float:
    """The paper's upstream Adam learning rate: 8e-4, or 4e-4 for large models (> 150M params)."""
    return 4e-4 if param_count > LARGE_MODEL_PARAMS else 8e-4


def _build_timm(name: str, num_classes: int, img_size: int, in_chans: int, **overrides: Any) -> nn.Module:
    kw = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **overrides)
    try:
        return timm.create_model(name, img_size=img_size, **kw)
    except TypeError as e:  # convnets take no img_size
        if "img_size" not in str(e):
            raise
        return timm.create_model(name, **kw)


def create_model(name: str, *, num_classes: int, img_size: int, in_chans: int = 3,
                 **overrides: Any) -> tuple[nn.Module, ModelInfo]:
    """Build a preset or any timm model from scratch and describe it.

    Args:
        name: a preset (``list_presets()``) or a timm model name (``timm.list_models()``), a
            pretrained tag allowed (``resnet18.a1_in1k``: the architecture, built from scratch);
            not a Hugging Face Hub name (``hf-hub:...``: its architecture is on the Hub).
        num_classes: head outputs (the upstream task's number of classes).
        img_size: input side in pixels (ignored by convnets, which take any size); a multiple of
            the patch size of a patch-embedding model (ViT, Mixer), else ValueError.
        in_chans: input channels.
        **overrides: timm constructor arguments, e.g. ``patch_size=32``, ``drop_path_rate=0.1``.

    Returns:
        (model, info). The model is in train mode on the CPU; seed torch first for a reproducible init.
    """
    if not isinstance(name, str):   # an AttributeError from deep inside timm
        raise TypeError(f"model name {name!r}: must be a preset or timm model name (a string)")
    if "pretrained" in overrides:   # models here are built from scratch: nothing is downloaded
        raise ValueError(f"model {name!r}: model_kwargs pretrained={overrides['pretrained']!r}: models are always "
                         "built from scratch (the meta-study pre-trains them); remove it")
    if name in _PRESETS:
        p = _PRESETS[name]
        with _naming_overrides(name, overrides, img_size):
            model = p.build(num_classes=num_classes, img_size=img_size, in_chans=in_chans, **overrides)
        timm_name, family = p.timm_name, p.arch_family
    else:
        if name.startswith(("hf-hub:", "hf_hub:")):   # its architecture is in a config on the Hub
            arch = name.split(":", 1)[1].rsplit("/", 1)[-1]
            hint = f" (timm's name of it: {arch!r})" if timm.is_model(arch) else ""
            raise KeyError(f"model {name!r}: Hugging Face Hub names are not supported (models are built from scratch, "
                           f"offline); give the timm model name{hint}")
        if not timm.is_model(name):
            raise KeyError(f"unknown model {name!r}: not a preset ({', '.join(list_presets())}) nor a timm model")
        if distilled_heads(name):
            raise ValueError(f"model {name!r}: two classifier heads (a distillation head); models with one are "
                             "supported (e.g. deit_tiny_patch16_224 instead of deit_tiny_distilled_patch16_224)")
        with _naming_overrides(name, overrides, img_size):
            model = _build_timm(name, num_classes, img_size, in_chans, **overrides)
        timm_name, family = name, arch_family(model)
    check_patch_grid(model, name, img_size)
    return model, describe(model, name=name, timm_name=timm_name, family=family, img_size=img_size)


@contextmanager
def _naming_overrides(name: str, overrides: dict[str, Any], img_size: int) -> Iterator[None]:
    """Re-raise a failure to build with ``model_kwargs`` as one ValueError naming the model and
    them: model_kwargs={"patch_size": 0} failed as "integer division or modulo by zero", {"depth":
    -1} as "number of steps must be non-negative", from deep inside timm, naming neither. Without
    model_kwargs, naming the model and img_size: a timm model that cannot be built that small
    failed as "Trying to create tensor with negative dimension -1" (maxvit_tiny_tf_224 at 16 px) or
    "img_size (1, 1) should be divided by patch_size (2, 2)" (twins_svt_small at 16 px)."""
    try:
        yield
    except (MemoryError, OSError):   # the machine's failure, not the config's
        raise
    except Exception as e:  # noqa: BLE001 - any failure of timm's constructor on this config
        # torch's first line only: its argument errors go on for lines ("but expected one of:\n * (Tensor
        # start, ...)", drop_path_rate="x"), and the message is one line
        first = (str(e).strip().splitlines() or [""])[0]
        given = f"model_kwargs {overrides!r} (img_size={img_size})" if overrides else f"img_size={img_size}"
        raise ValueError(f"model {name!r}: {given}: timm could not build it ({type(e).__name__}: {first})") from e


def check_patch_grid(model: nn.Module, name: str, img_size: int) -> None:
    """Refuse an ``img_size`` its patch embedding does not cut into whole patches (ViT, Mixer and
    other timm ``PatchEmbed`` models without dynamic padding). timm built such a model: at 30 px in
    patches of 4 it saw 28 px of every image (the last 2 rows and columns were never seen), and at
    8 px in patches of 16 it failed in its first forward, after the trial's setup."""
    from timm.layers import PatchEmbed

    for m in model.modules():
        if not isinstance(m, PatchEmbed) or getattr(m, "dynamic_img_pad", False):
            continue
        # the embedding's own input size where it has one (a later stage's embedding sees a map)
        sizes = tuple(m.img_size) if getattr(m, "img_size", None) is not None else (img_size, img_size)
        for size, p in dict.fromkeys(zip((int(s) for s in sizes), (int(x) for x in m.patch_size))):
            if size != img_size:   # not the input's embedding: its sizes follow from the stages
                continue
            if img_size < p:
                raise ValueError(f"model {name!r}: img_size={img_size} is smaller than its patch size {p}; "
                                 f"take img_size >= {p} (a multiple of {p}) or a smaller patch_size")
            if img_size % p:
                lo, hi = img_size - img_size % p, img_size - img_size % p + p
                raise ValueError(f"model {name!r}: img_size={img_size} is not a multiple of its patch size {p} (the "
                                 f"last {img_size % p} pixel rows and columns would never be seen); take img_size "
                                 f"{lo} or {hi}, or another patch_size")
        return   # the first patch embedding is the input's


def describe(model: nn.Module, *, name: str, timm_name: str, family: str, img_size: int) -> ModelInfo:
    """The :class:`ModelInfo` of a built model."""
    n = sum(p.numel() for p in model.parameters())
    blocks = block_names(model)
    return ModelInfo(
        name=name, timm_name=timm_name, arch_family=family, param_count=n, num_blocks=len(blocks),
        block_names=blocks, head_name=head_module(model)[0],
        feature_dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        img_size=img_size, num_classes=int(model.num_classes), default_lr=default_lr(n),
    )


# --------------------------------------------------------------------------------------------
# Representations
# --------------------------------------------------------------------------------------------


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, and each of its modules back in the mode it was
    in after, also when the block raises. A probe left it in eval mode: an ``on_report`` that
    extracted features mid-training let the rest of the run train with dropout off and BatchNorm's
    statistics frozen."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:   # per module: a BatchNorm frozen on purpose stays frozen
            m.training = training


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The representation the head sees: (B, feature_dim)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _pool(t: torch.Tensor, prefix_tokens: int, channels_last: bool = False) -> torch.Tensor:
    """A block output as one vector per image: spatial mean of (B, C, H, W) maps, or of
    (B, H, W, C) maps (the layout whose H and W are equal; where C equals them too,
    ``channels_last``: the model's timm ``output_fmt``, e.g. Swin, MambaOut; pooled as NCHW they
    gave one value per row of pixels, not per channel), token mean of (B, N, D) sequences without
    class/register tokens (which only become meaningful at the end)."""
    if t.ndim == 4:
        # the map is square (square images): its two equal sides tell the layout; the model's
        # output_fmt only where all three are equal. Blocks of GCViT, Swin-v2-CR and VOLO output
        # (B, H, W, C) under a model without output_fmt: pooled as NCHW, a "feature" per pixel row.
        if t.shape[1] == t.shape[2] != t.shape[3]:
            channels_last = True
        elif t.shape[2] == t.shape[3] != t.shape[1]:
            channels_last = False
        return t.mean(dim=(1, 2) if channels_last else (2, 3))
    if t.ndim == 3:
        return t[:, prefix_tokens:].mean(dim=1)
    return t.flatten(1)


def _block_tensor(o: Any, batch: int | None) -> torch.Tensor | None:
    """A block's output tensor: the output itself, or of a tuple (MViT-v2's (x, size), TNT's
    (pixel, patch) embeddings) the first tensor whose first dimension is the batch (TNT's first
    element is per pixel, B x 196 rows: taken first, it gave 196 "images" per image)."""
    if isinstance(o, torch.Tensor):
        return o
    if isinstance(o, (tuple, list)):
        tensors = [t for t in o if isinstance(t, torch.Tensor) and t.ndim >= 2]
        return next((t for t in tensors if batch is None or t.shape[0] == batch), None)
    return None


#: timm model classes whose blocks output (B, H, W, C) maps without saying so (no ``output_fmt``).
NHWC_BLOCK_MODELS = frozenset({"GlobalContextVit", "SwinTransformerV2Cr", "VOLO"})


@contextmanager
def block_taps(model: nn.Module, info: ModelInfo, batch: int | None = None) -> Iterator[list[torch.Tensor]]:
    """Collect the pooled output of every block during forwards inside the context.

    Yields a list that each forward appends ``num_blocks`` (B, D_l) tensors to, in block order
    (``batch``: B, which picks a tuple output's tensor; see :func:`_block_tensor`). Hooks cost one
    mean per block; they are removed on exit.
    """
    out: list[torch.Tensor] = []
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    # where a map's C, H and W are equal (GCViT's first stage at 256 px), only the model can tell
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC" or type(model).__name__ in NHWC_BLOCK_MODELS

    def tap(m: nn.Module, i: Any, o: Any) -> None:
        t = _block_tensor(o, batch)
        if t is None:
            raise ValueError(f"{info.name}: block {type(m).__name__} returned no tensor of the batch's "
                             f"{batch} images; layer-wise probes cannot read it")
        out.append(_pool(t, prefix, nhwc))

    hooks = [model.get_submodule(n).register_forward_hook(tap) for n in info.block_names]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def representations(model: nn.Module, info: ModelInfo, x: torch.Tensor, layers: bool = False,
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Pre-logits and, with ``layers=True``, the pooled output of each block, from one forward.

    Returns:
        (pre_logits (B, feature_dim), [block_0 (B, D_0), ..., block_{L-1}]); the list is empty
        without ``layers``.
    """
    if not layers:
        return pre_logits(model, x), []
    with block_taps(model, info, batch=x.shape[0]) as taps:
        z = pre_logits(model, x)
    if len(taps) != info.num_blocks:   # a block called twice, or never: layer indices would be wrong
        raise ValueError(f"{info.name}: {len(taps)} block outputs in one forward for its {info.num_blocks} blocks; "
                         "layer-wise probes need each block called once")
    return z, list(taps)
