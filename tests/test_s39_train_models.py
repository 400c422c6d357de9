"""Review s39 of meta_study.train models / optim / diagnostics / finetune / synth: layer-wise
features of timm families, weight-decay patterns, margins and fine-tuning of non-Linear heads,
one-line config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meta_study.train.data import get_task
from meta_study.train.diagnostics import margins
from meta_study.train.loop import TrainConfig, resolve_runtime
from meta_study.train.models import _pool, block_names, create_model, describe, representations
from meta_study.train.optim import param_groups


def _layer_dims(name: str, img_size: int, **kw: object) -> tuple[tuple[str, ...], list[int]]:
    torch.manual_seed(0)
    model, info = create_model(name, num_classes=5, img_size=img_size, **kw)
    model.eval()
    with torch.no_grad():
        _, layers = representations(model, info, torch.randn(2, 3, img_size, img_size), layers=True)
    return info.block_names, [t.shape[1] for t in layers]


def test_layer_features_of_blocks_that_output_nhwc_maps_are_per_channel() -> None:
    # Swin-v2-CR (and GCViT, VOLO) blocks output (B, H, W, C) under a model without timm's
    # output_fmt: pooled as NCHW, each "feature" was a row of pixels (16, 8, 4, 2 of them), not a
    # channel (24, 48, 96, 192), and the layer-wise probes measured the wrong representation
    _, dims = _layer_dims("swinv2_cr_tiny_224", 64, window_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                          num_heads=(1, 1, 1, 1))
    assert dims == [24, 48, 96, 192]


def test_pool_follows_the_square_sides_and_output_fmt_only_when_ambiguous() -> None:
    nhwc = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 4, 4, 3)
    assert torch.equal(_pool(nhwc, 0), nhwc.mean(dim=(1, 2)))
    nchw = nhwc.permute(0, 3, 1, 2)
    assert torch.equal(_pool(nchw, 0, channels_last=True), nchw.mean(dim=(2, 3)))
    cube = torch.randn(2, 4, 4, 4)   # C == H == W: the model's output_fmt decides
    assert torch.equal(_pool(cube, 0, channels_last=True), cube.mean(dim=(1, 2)))
    assert torch.equal(_pool(cube, 0), cube.mean(dim=(2, 3)))


def test_the_model_itself_is_not_a_block_of_a_feature_info_model() -> None:
    # TResNet's feature_info names its first stage module "" (the whole model): its hook never
    # fired in forward_features + forward_head, so every layer-wise probe failed after the whole
    # pre-training ("4 block outputs in one forward for its 5 blocks"), and the diagnostics' layer0
    # norm was the norm of every parameter
    names, dims = _layer_dims("tresnet_m", 32, layers=[1, 1, 1, 1], width_factor=0.25)
    assert "" not in names and names == ("body.layer1", "body.layer2", "body.layer3", "body.layer4")
    assert len(dims) == 4


def test_weight_decay_skips_timm_no_weight_decay_patterns() -> None:
    # XCiT's no_weight_decay() is {"pos_embed.*", "cls_token"}: a pattern, matched with fnmatch by
    # timm's own optimizer factory; taken as an exact name, its positional encoder's kernel decayed
    import timm

    with torch.device("meta"):
        model = timm.create_model("xcit_nano_12_p16_224", pretrained=False, num_classes=5)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: {names[id(p)] for p in g["params"]}
              for g in param_groups(model, lr=1e-3, wd=0.1, head_lr=1e-3, head_wd=0.1)}
    assert "pos_embed.token_projection.weight" in groups["body_no_wd"]
    assert "cls_token" in groups["body_no_wd"]
    assert "blocks.0.attn.qkv.weight" in groups["body"]


def test_margins_of_a_model_whose_classifier_is_an_mlp_head() -> None:
    # CAFormer's classifier (timm's get_classifier()) is an MlpHead (fc1, norm, fc2), Sequencer's and
    # SAM-ViT's a ClassifierHead: margins read head.weight and failed with an AttributeError after
    # the whole pre-training; the normalized margin uses the final projection's weight
    from timm.models.metaformer import MetaFormer

    task = get_task("synth_shape", img_size=32, n_train_per_class=4, n_test=6)
    torch.manual_seed(0)
    model = MetaFormer(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=task.num_classes, use_mlp_head=True)
    info = describe(model, name="caformer", timm_name="caformer_s18", family="other", img_size=32)
    m = margins(model, info, task, np.arange(12), resolve_runtime(TrainConfig(device="cpu"), "other"))
    assert all(np.isfinite([m.head, m.head_normalized, m.prelogits]))
    # |z_y - z_j| <= 2 ||W_fc2|| ||h_fc2 input||: not bounded by the pre-logits norm for an MLP
    # head, but of the size of a Linear head's normalized margin, not NaN or an error
    assert abs(m.head_normalized) < 10


@pytest.mark.parametrize("bad", ["big", None, float("nan"), -1])
def test_cache_mb_that_is_not_a_size_is_one_line(bad: object) -> None:
    # cache_mb="big" failed deep in CachedSplit ("'<=' not supported between instances of 'int' and 'str'")
    with pytest.raises(ValueError, match=r"synth_shape: cache_mb=.*: must be a number of MB >= 0"):
        get_task("synth_shape", img_size=16, n_train_per_class=2, n_test=6, cache_mb=bad)
    assert len(get_task("synth_shape", img_size=16, n_train_per_class=2, n_test=6, cache_mb=0).train) == 12


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"patch_size": 0}, "ZeroDivisionError"),               # was: "integer division or modulo by zero"
    ({"depth": -1}, "number of steps must be non-negative"),
    ({"no_such_knob": 1}, "unexpected keyword argument 'no_such_knob'"),
])
def test_model_kwargs_timm_cannot_build_are_named_in_one_line(kwargs: dict, says: str) -> None:
    with pytest.raises(ValueError, match=rf"model 'vit_tiny_cpu': model_kwargs .*timm could not build it.*{says}"):
        create_model("vit_tiny_cpu", num_classes=5, img_size=16, **kwargs)
    with pytest.raises(ValueError, match=r"model 'resnet18': model_kwargs \{'patch_size': 4\}"):
        create_model("resnet18", num_classes=5, img_size=16, patch_size=4)


def test_block_names_of_presets_are_unchanged() -> None:
    with torch.device("meta"):
        vit, _ = create_model("vit_tiny_cpu", num_classes=5, img_size=16)
        res, _ = create_model("resnet_tiny_cpu", num_classes=5, img_size=16)
    assert block_names(vit) == ("blocks.0", "blocks.1")
    assert block_names(res) == ("layer1.0", "layer2.0", "layer3.0", "layer4.0")


def test_blocks_of_known_nhwc_models_are_pooled_per_channel_when_c_h_w_are_equal() -> None:
    # Swin-v2-CR with width 16 at 64 px: its first stage's maps are 16 x 16 x 16, where the shape
    # cannot tell the layout; the model class does (it has no output_fmt)
    torch.manual_seed(0)
    model, info = create_model("swinv2_cr_tiny_224", num_classes=5, img_size=64, window_size=4, embed_dim=16,
                               depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    model.eval()
    raw: list[torch.Tensor] = []
    hook = model.get_submodule(info.block_names[0]).register_forward_hook(lambda m, i, o: raw.append(o))
    with torch.no_grad():
        _, layers = representations(model, info, torch.randn(2, 3, 64, 64), layers=True)
    hook.remove()
    assert raw[0].shape == (2, 16, 16, 16)   # (B, H, W, C)
    torch.testing.assert_close(layers[0], raw[0].mean(dim=(1, 2)))


def test_finetune_zero_inits_only_the_final_projection_of_an_mlp_head(monkeypatch: pytest.MonkeyPatch) -> None:
    # BiT's zero-init head, applied to every parameter of CAFormer's MlpHead (fc1, norm, fc2), left
    # every gradient but fc2's bias 0: the "fine-tune" trained one bias and never moved the body
    import sys

    from timm.models.metaformer import MetaFormer

    import meta_study.train.finetune  # noqa: F401  (the module; the package exports the function)

    ft = sys.modules["meta_study.train.finetune"]
    nets: list[torch.nn.Module] = []
    step = ft.train_step
    monkeypatch.setattr(ft, "train_step", lambda net, *a, **k: (nets.append(net), step(net, *a, **k))[1])
    task = get_task("synth_shape", img_size=32, n_train_per_class=4, n_test=6)
    torch.manual_seed(0)
    model = MetaFormer(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=10, use_mlp_head=True)
    ft.finetune(model, task, resolve_runtime(TrainConfig(device="cpu"), "other"), examples=24, steps=3,
                batch_size=8, lr=0.05)
    net = nets[-1]
    head = net.get_classifier()
    assert head.fc1.weight.detach().abs().sum() > 0 and head.norm.weight.detach().abs().sum() > 0
    moved = sum(float((p - q).detach().abs().sum()) for (n, p), q in zip(net.named_parameters(), model.parameters())
                if n.startswith("stages"))
    assert moved > 0   # the body trained


def test_finetune_of_a_linear_head_still_starts_from_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import meta_study.train.finetune  # noqa: F401

    ft = sys.modules["meta_study.train.finetune"]
    heads: list[tuple[torch.Tensor, torch.Tensor]] = []
    step = ft.train_step

    def spy(net: torch.nn.Module, *a: object, **k: object) -> torch.Tensor:
        if not heads:
            h = net.get_classifier()
            heads.append((h.weight.detach().clone(), h.bias.detach().clone()))
        return step(net, *a, **k)

    monkeypatch.setattr(ft, "train_step", spy)
    task = get_task("synth_shape", img_size=16, n_train_per_class=4, n_test=6)
    torch.manual_seed(0)
    model, _ = create_model("vit_tiny_cpu", num_classes=10, img_size=16)
    ft.finetune(model, task, resolve_runtime(TrainConfig(device="cpu"), "vit"), examples=24, steps=1, batch_size=8)
    w, b = heads[0]
    assert w.shape == (6, 64) and not w.any() and not b.any()
