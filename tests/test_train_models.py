"""Model registry: every preset builds, runs, and exposes its head and blocks; timm names work too."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from meta_study.train import create_model, get_preset, head_parameters, list_presets, representations
from meta_study.train.models import LARGE_MODEL_PARAMS

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust


@pytest.mark.parametrize("name", list_presets())
def test_preset_builds_and_runs(name: str) -> None:
    # Paper-size presets run at 32 px (2x2 patches of 16): enough to check wiring, cheap on CPU.
    img = min(get_preset(name).img_size, 32)
    torch.manual_seed(0)
    model, info = create_model(name, num_classes=7, img_size=img)
    model.eval()
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        logits = model(x)
        z, blocks = representations(model, info, x, layers=True)
    assert logits.shape == (2, 7)
    assert info.param_count == sum(p.numel() for p in model.parameters()) > 0
    assert info.arch_family == get_preset(name).arch_family
    head = head_parameters(model)
    assert head and {id(p) for p in head} <= {id(p) for p in model.parameters()}
    assert head[0].shape[0] == 7  # the head maps to num_classes
    assert info.num_blocks == len(blocks) > 0
    assert z.shape == (2, info.feature_dim)
    assert all(b.shape[0] == 2 and b.ndim == 2 for b in blocks)
    assert info.default_lr == (4e-4 if info.param_count > LARGE_MODEL_PARAMS else 8e-4)


def test_presets_span_the_paper() -> None:
    names = set(list_presets())
    assert {"vit_ti", "vit_s", "vit_b", "vit_l", "mixer_s", "mixer_b", "mixer_l", "resnet_18", "resnet_50",
            "resnet_101", "bit_50x1", "vit_tiny_cpu", "mixer_tiny_cpu", "resnet_tiny_cpu"} <= names
    assert list_presets("vit_*_cpu") == ["vit_medium_cpu", "vit_small_cpu", "vit_tiny_cpu"]


def test_patch_size_is_a_knob() -> None:
    m16, i16 = create_model("vit_tiny_cpu", num_classes=3, img_size=32)
    m8, i8 = create_model("vit_tiny_cpu", num_classes=3, img_size=32, patch_size=8)
    assert m16.patch_embed.patch_size == (4, 4) and m8.patch_embed.patch_size == (8, 8)
    assert i8.param_count != i16.param_count  # fewer position embeddings, bigger patch projection


@pytest.mark.parametrize("name,family,head", [("resnet18", "resnet", "fc"), ("vit_tiny_patch16_224", "vit", "head"),
                                              ("mixer_s16_224", "mixer", "head"),
                                              ("convnext_atto", "other", "head.fc")])
def test_any_timm_model_by_name(name: str, family: str, head: str) -> None:
    model, info = create_model(name, num_classes=5, img_size=32)
    assert (info.arch_family, info.head_name, info.timm_name) == (family, head, name)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_unknown_model_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown model"):
        create_model("no_such_model", num_classes=2, img_size=32)


def test_vit_block_features_drop_the_class_token() -> None:
    model, info = create_model("vit_tiny_cpu", num_classes=3, img_size=16)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        _, blocks = representations(model, info, x, layers=True)
        tokens = model.blocks(model.norm_pre(model._pos_embed(model.patch_embed(x))))
    torch.testing.assert_close(blocks[-1], tokens[:, 1:].mean(1))


def test_imports_stay_light() -> None:
    code = ("import sys, meta_study, meta_study.schema; assert 'torch' not in sys.modules, 'meta_study imports torch'; "
            "import meta_study.train; bad = {'ray', 'mlflow'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("name,kw", [
    ("mambaout_femto", {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}),
    ("swin_tiny_patch4_window7_224", {"embed_dim": 8, "depths": (1, 1), "num_heads": (1, 2), "window_size": 2}),
])
def test_channels_last_blocks_pool_over_pixels_not_channels(name: str, kw: dict) -> None:
    """timm models whose blocks output (B, H, W, C) maps (``output_fmt == "NHWC"``): MambaOut's
    block features were means over (W, C), one value per row of pixels (D = H, not C); Swin's
    blocks (under ``layers``) were not found at all, so its layer-wise probe measured nothing."""
    model, info = create_model(name, num_classes=3, img_size=32, **kw)
    assert getattr(model, "output_fmt", None) == "NHWC" and info.num_blocks == sum(kw["depths"])
    x = torch.randn(2, 3, 32, 32)
    maps: list[torch.Tensor] = []
    hook = model.get_submodule(info.block_names[-1]).register_forward_hook(lambda m, i, o: maps.append(o))
    with torch.no_grad():
        _, blocks = representations(model.eval(), info, x, layers=True)
    hook.remove()
    assert len(blocks) == info.num_blocks and all(b.ndim == 2 and b.shape[0] == 2 for b in blocks)
    channels = maps[-1].shape[-1]
    assert blocks[-1].shape[1] == channels != maps[-1].shape[1]
    torch.testing.assert_close(blocks[-1], maps[-1].mean(dim=(1, 2)))


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "levit_128s"])
def test_a_model_with_a_distillation_head_is_refused_in_words(name: str) -> None:
    """It failed "DistilledVisionTransformer: classifier not found among its modules" (the head
    weight decay, norms and margins assume one head)."""
    with pytest.raises(ValueError, match="two classifier heads"):
        create_model(name, num_classes=3, img_size=32)


@pytest.mark.parametrize("name", ["densenet121", "dla34"])
def test_models_of_other_layouts_probe_their_feature_info_stages(name: str) -> None:
    """DenseNet, DLA, DPN, DeepSeek-ViT and CoaT had no blocks: a layer-wise probe of them gave
    pre-logits rows alone, unsaid. timm's ``feature_info`` stages stand in (each called once)."""
    import timm

    model, info = create_model(name, num_classes=3, img_size=32)
    want = tuple(dict.fromkeys(d["module"] for d in timm.create_model(name, num_classes=3).feature_info))
    assert info.block_names == want and info.num_blocks > 3
    with torch.no_grad():
        _, blocks = representations(model.eval(), info, torch.randn(2, 3, 32, 32), layers=True)
    assert len(blocks) == info.num_blocks and all(b.ndim == 2 and b.shape[0] == 2 for b in blocks)


def test_a_layerwise_trial_of_a_model_without_blocks_is_refused_before_training(monkeypatch) -> None:
    from meta_study.train import models, trial

    monkeypatch.setattr(models, "block_names", lambda model: ())
    with pytest.raises(ValueError, match="layerwise=True, but its blocks cannot be found"):
        trial.run_trial(trial.smoke_config(img_size=16, steps=1, layerwise=True))


@pytest.mark.parametrize("name,kw,blocks", [("tnt_s_patch16_224", {"depth": 2}, 2),
                                             ("twins_svt_small", {"depths": (1, 2, 1, 1)}, 5)])
def test_blocks_returning_tuples_or_nested_in_lists_are_probed_per_image(name: str, kw: dict, blocks: int) -> None:
    """TNT's blocks return (pixel, patch) embeddings: the first, per pixel, gave 196 "images" per
    image; Twins' ``blocks.i`` are lists of blocks, never called themselves: no output at all."""
    model, info = create_model(name, num_classes=3, img_size=32, **kw)
    assert info.num_blocks == blocks
    with torch.no_grad():
        _, out = representations(model.eval(), info, torch.randn(2, 3, 32, 32), layers=True)
    assert len(out) == blocks and all(b.ndim == 2 and b.shape[0] == 2 for b in out)
