"""The full-size sweeps' ViTs see their 32 px images as an 8x8 grid of patches: the presets' ImageNet
patch of 16 left a 2x2 grid of 4 tokens (head_wd, head_lr and scaling trained ViTs on 4 patches)."""

from __future__ import annotations

import pytest
from conftest import sweep_module

from meta_study.tune.runner import check_fixed_config, fixed_config, parse_options


@pytest.mark.parametrize("name", ["head_wd", "head_lr", "scaling"])
def test_full_size_vits_see_an_8x8_grid(name):
    pytest.importorskip("timm")
    from meta_study.train.models import create_model
    spec = sweep_module(name).SPEC
    options = parse_options(spec, [])
    check_fixed_config(spec, options)
    cfg = fixed_config(spec, options)
    names = spec.space(options).get("model_name", {}).get("grid_search") or [cfg["model_name"]]
    assert cfg["img_size"] == 32 and names
    for model_name in names:
        if model_name in ("vit_b", "vit_l"):     # the same patch rule; building them costs ~1-4 GB and seconds
            continue
        m, _ = create_model(model_name, num_classes=10, img_size=cfg["img_size"], **cfg["model_kwargs"])
        assert tuple(m.patch_embed.grid_size) == (8, 8), (model_name, m.patch_embed.grid_size)
    assert cfg["img_size"] // cfg["model_kwargs"]["patch_size"] == 8


@pytest.mark.parametrize("name", ["head_wd", "head_lr", "scaling"])
def test_a_patch_given_with_the_image_size_wins(name):
    """At 224 px a researcher gives the patch with the size; --set overrides the sweep's patch 4."""
    spec = sweep_module(name).SPEC
    options = parse_options(spec, ["--set", "img_size=224", "--set", "model_kwargs={'patch_size': 16}"])
    check_fixed_config(spec, options)
    cfg = fixed_config(spec, options)
    assert cfg["img_size"] == 224 and cfg["model_kwargs"] == {"patch_size": 16}


def test_smoke_keeps_its_tiny_models_grid():
    """--smoke (16 px, the tiny CPU presets already at patch 4) keeps a 4x4 grid."""
    pytest.importorskip("timm")
    from meta_study.train.models import create_model
    spec = sweep_module("head_wd").SPEC
    options = parse_options(spec, ["--smoke"])
    cfg = fixed_config(spec, options)
    m, _ = create_model(cfg["model_name"], num_classes=10, img_size=cfg["img_size"], **cfg["model_kwargs"])
    assert tuple(m.patch_embed.grid_size) == (4, 4)
