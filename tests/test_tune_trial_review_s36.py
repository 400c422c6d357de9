"""Review (session 36) of the Tune trial function's config handling and of model creation."""

from __future__ import annotations

import numpy as np
import pytest

from meta_study.train.loop import TrainConfig
from meta_study.train.models import create_model
from meta_study.tune.trial import config_key, model_config


def test_numpy_values_of_a_search_space_are_taken_as_python_numbers() -> None:
    """``tune.grid_search(list(np.arange(32, 129, 32)))`` or a BayesOpt suggestion hands the trial
    numpy scalars: TrainConfig refused ``batch_size=np.int64(64)`` as "must be a number >= 1" (and
    ``lr=np.float32(...)`` alike), so every trial of the sweep errored."""
    raw = {"batch_size": np.int64(64), "lr": np.float32(0.5), "seed": np.int32(3), "epochs": np.float32(2.0),
           "shots": np.array([1, 5]), "diagnostics": np.bool_(False), "model_name": np.str_("vit_tiny_cpu"),
           "model_kwargs": {"drop_path_rate": np.float64(0.1)}, "_optuna_name": np.int64(1)}
    cfg = TrainConfig.from_dict(model_config(raw))
    assert (cfg.batch_size, cfg.lr, cfg.seed, cfg.epochs, cfg.shots) == (64, 0.5, 3, 2.0, (1, 5))
    assert type(cfg.batch_size) is int and type(cfg.lr) is float and cfg.diagnostics is False
    assert type(cfg.model_kwargs["drop_path_rate"]) is float
    plain = {"batch_size": 64, "lr": 0.5, "seed": 3, "epochs": 2.0, "shots": [1, 5], "diagnostics": False,
             "model_name": "vit_tiny_cpu", "model_kwargs": {"drop_path_rate": 0.1}}
    # one configuration, one identity: a resumed sweep finds its finished result either way
    assert config_key(raw) == config_key(plain)


@pytest.mark.parametrize("name,img,msg", [
    ("vit_tiny_cpu", 30, "img_size=30 is not a multiple of its patch size 4 .*take img_size 28 or 32"),
    ("mixer_tiny_cpu", 30, "img_size=30 is not a multiple of its patch size 4"),
    ("vit_tiny_patch16_224", 8, "img_size=8 is smaller than its patch size 16"),
])
def test_an_img_size_not_cut_into_whole_patches_is_refused(name: str, img: int, msg: str) -> None:
    """timm built ViT-Ti/4 at 30 px: it trained on 28 px of every image, the last 2 pixel rows and
    columns never seen, unsaid; at 8 px in patches of 16 it failed in the trial's first forward."""
    with pytest.raises(ValueError, match=msg):
        create_model(name, num_classes=3, img_size=img)


def test_a_patch_size_override_is_checked_too() -> None:
    with pytest.raises(ValueError, match="not a multiple of its patch size 5"):
        create_model("vit_tiny_cpu", num_classes=3, img_size=32, patch_size=5)
    model, info = create_model("vit_tiny_cpu", num_classes=3, img_size=32, patch_size=8)
    assert model.patch_embed.grid_size == (4, 4) and info.img_size == 32


def test_pretrained_in_model_kwargs_is_refused_in_words() -> None:
    """It was a TypeError from timm's internals ("build_model_with_cfg() got multiple values for
    keyword argument 'pretrained'") that named neither model_kwargs nor why."""
    with pytest.raises(ValueError, match="model_kwargs pretrained=True: models are always built from scratch"):
        create_model("vit_tiny_cpu", num_classes=3, img_size=32, pretrained=True)


def test_a_hugging_face_hub_name_says_which_timm_name_to_give() -> None:
    """``hf-hub:timm/resnet18.a1_in1k`` said "not a preset (...16 names...) nor a timm model"."""
    with pytest.raises(KeyError, match="Hub names are not supported.*'resnet18.a1_in1k'"):
        create_model("hf-hub:timm/resnet18.a1_in1k", num_classes=3, img_size=32)
    model, info = create_model("resnet18.a1_in1k", num_classes=3, img_size=32)   # the pretrained tag is kept
    assert (info.name, info.timm_name, info.num_classes) == ("resnet18.a1_in1k", "resnet18.a1_in1k", 3)


@pytest.mark.filterwarnings("ignore:`get_storage` is meant")
def test_the_trial_body_gets_the_config_in_python_numbers() -> None:
    """The trainable's machinery hands its body the normalized config (outside a Tuner: no records)."""
    from meta_study.tune.trial import run_with_machinery

    seen: list[dict] = []
    run_with_machinery({"batch_size": np.int64(8), "_family": "vit"}, lambda cfg, hooks: seen.append(cfg))
    assert seen == [{"batch_size": 8}] and type(seen[0]["batch_size"]) is int


@pytest.mark.parametrize("name", [None, 123])
def test_a_model_name_that_is_no_string_is_refused_in_words(name: object) -> None:
    """It was "AttributeError: 'int' object has no attribute ..." from timm's registry."""
    with pytest.raises(TypeError, match=f"model name {name!r}: must be a preset or timm model name"):
        create_model(name, num_classes=3, img_size=32)  # type: ignore[arg-type]
