"""Review s41 of the training engine: checkpoints of configs holding objects, devices torch cannot
use here, models whose outputs are not one row of logits per image."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
from torch import nn

from meta_study.train import TrainConfig, create_model, get_task, pretrain, resolve_runtime, smoke_config
from meta_study.train.loop import config_difference, read_checkpoint

torch.set_num_threads(1)  # 2 threads on a shared 2-core box spin-wait badly; 1 is robust


@pytest.fixture(scope="module")
def us_small():
    return get_task("synth_us", img_size=16, n_train=200, n_test=60)


def _tiny(task, cfg: TrainConfig, **kw):
    torch.manual_seed(cfg.seed)
    model, info = create_model(cfg.model_name, num_classes=task.num_classes, img_size=task.img_size,
                               **cfg.model_kwargs)
    return pretrain(model, info, task, cfg, **kw), model, info


def test_a_checkpoint_of_a_config_holding_a_class_or_a_path_resumes(us_small, tmp_path: Path) -> None:
    # model_kwargs={"act_layer": nn.GELU} (or a task kwarg holding a Path) was saved as the object:
    # torch.load(weights_only=True) refused every checkpoint of the run as "not a readable
    # checkpoint (UnpicklingError ...)", so a preempted trial could neither resume nor be evaluated
    cfg = TrainConfig(steps=4, batch_size=32, eval_every=2, lr=2e-3, model_kwargs={"act_layer": nn.GELU},
                      us_task_kwargs={"root": pathlib.PurePosixPath("/data/x")})
    full, _, _ = _tiny(us_small, cfg, checkpoint_dir=str(tmp_path))
    ck = read_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert ck["config"]["model_kwargs"] == {"act_layer": "torch.nn.modules.activation.GELU"}
    assert ck["config"]["us_task_kwargs"] == {"root": "/data/x"}
    assert config_difference(ck["config"], cfg.resolved(_tiny_info(cfg, us_small))) is None
    res, _, _ = _tiny(us_small, cfg, resume_from=str(tmp_path))   # a finished run: measured again
    assert res.us_accuracy == full.us_accuracy
    # another class is another run, still refused by name
    other = TrainConfig(**{**cfg.__dict__, "model_kwargs": {"act_layer": nn.ReLU}})
    assert "model_kwargs" in config_difference(ck["config"], other.resolved(_tiny_info(other, us_small)))


def _tiny_info(cfg: TrainConfig, task):
    return create_model(cfg.model_name, num_classes=task.num_classes, img_size=task.img_size, **cfg.model_kwargs)[1]


@pytest.mark.parametrize("device", ["meta", "mps", "xpu", "hpu"])
def test_a_device_torch_cannot_use_here_is_one_line(device: str) -> None:
    from meta_study.train.loop import _device_usable

    if device != "meta" and _device_usable(torch.device(device)):
        pytest.skip(f"this machine has {device}")
    # "mps" on Linux failed at the model's first .to(), after the data was built ("PyTorch is not
    # linked with support for mps devices"), and "meta" inside autocast; neither named the setting
    with pytest.raises(ValueError, match=rf"^device='{device}': not a device this machine can train on; use device="):
        resolve_runtime(TrainConfig(device=device), "vit")
    assert resolve_runtime(TrainConfig(device="cpu"), "vit").device.type == "cpu"


def test_a_trial_on_a_device_it_lacks_stops_before_building_the_ds_tasks(monkeypatch) -> None:
    import meta_study.train.trial as trial

    def no_ds(*a, **k):   # the DS data (minutes on disk) is not built for a trial that cannot run
        raise AssertionError("DS tasks built")

    monkeypatch.setattr(trial, "_ds_tasks", no_ds)
    with pytest.raises(ValueError, match=r"^device='meta': not a device"):
        trial.run_trial(smoke_config(device="meta", steps=1, us_task_kwargs={"n_train": 40, "n_test": 20}))


@pytest.mark.parametrize("name", ["vit_tiny_cpu", "mixer_tiny_cpu"])
def test_a_model_that_does_not_pool_its_outputs_is_refused_in_words(us_small, name: str) -> None:
    # model_kwargs {"global_pool": ""}: a ViT's or a Mixer's logits per token (17 or 16 rows an image);
    # cross_entropy failed with "Expected target size [32, 240], got [32]" naming neither
    cfg = TrainConfig(model_name=name, steps=2, batch_size=32, model_kwargs={"global_pool": ""})
    with pytest.raises(ValueError, match=r"^the model's outputs have shape \(32, .*\), not \(batch 32, classes\): "
                                         r"its classifier must pool"):
        _tiny(us_small, cfg)


def test_per_channel_scales_stored_broadcastable_do_not_decay() -> None:
    # "kernels only": ResMLP's norm (Affine: alpha, beta of shape (1, 1, D)) decayed, as did
    # FastViT's layer scale (C, 1, 1) and NFNet's gain (C, 1, 1, 1), where ConvNeXt's layer scale
    # and every LayerNorm, stored 1-D, did not
    from meta_study.train.optim import param_groups

    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    # a one-block ResMLP (timm's resmlp_12_224 is this at width 384, depth 12)
    model = MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=1, embed_dim=32, mlp_ratio=4,
                     block_layer=ResBlock, norm_layer=Affine, stem_norm=False)
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, wd=0.1, head_lr=1e-3, head_wd=0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for g in ("body", "head") for p in groups[g]["params"])
    assert "blocks.0.norm1.alpha" in {names[id(p)] for p in groups["body_no_wd"]["params"]}
    assert not any(n.endswith((".alpha", ".beta", "ls1", "ls2")) for n in decayed), decayed
    assert {"stem.proj.weight", "blocks.0.linear_tokens.weight", "blocks.0.mlp_channels.fc1.weight",
            "head.weight"} <= set(decayed)


def test_a_checkpoint_saved_where_more_gpus_were_visible_restores_the_rng_of_those_here(monkeypatch) -> None:
    # torch.cuda.set_rng_state_all sets device i's state for the i-th saved state: a checkpoint of a
    # process that saw 2 GPUs, resumed in a worker that sees 1 (Ray gives each trial its own),
    # failed with torch's IndexError ("tuple index out of range") instead of resuming
    from meta_study.train import loop

    state = loop._rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    got: list[torch.Tensor] = []

    def set_all(states):   # torch's: for i, s in enumerate(states): default_generators[i].set_state(s)
        for i, s in enumerate(states):
            if i >= torch.cuda.device_count():
                raise IndexError("tuple index out of range")
            got.append(s)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    loop._set_rng_state(state)
    assert len(got) == 1 and torch.equal(got[0], state["cuda"][0])


def test_a_preset_of_a_family_ingest_refuses_is_refused_when_registered() -> None:
    # family="transformer" was taken: every trial of the preset trained, logged it as arch_family,
    # and ingest quarantined every row ("arch_family: unknown arch_family 'transformer'")
    from meta_study.schema import ARCH_FAMILIES
    from meta_study.train.models import list_presets, register_preset

    with pytest.raises(ValueError, match=r"^register_preset\(family='transformer'\): must be one of vit, mixer, "
                                         r"resnet, other"):
        @register_preset(family="transformer", timm_name="vit_tiny_patch16_224")
        def s41_not_registered(**kw):   # pragma: no cover - never built
            raise AssertionError
    assert "s41_not_registered" not in list_presets()
    assert ARCH_FAMILIES == ("vit", "mixer", "resnet", "other")


def test_kernels_of_one_output_or_one_input_channel_still_decay() -> None:
    from meta_study.train.optim import param_groups

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = nn.Linear(8, 1)                      # weight (1, 8): a kernel
            self.dw = nn.Conv2d(4, 4, 1, groups=4)           # weight (4, 1, 1, 1): a kernel
            self.gain = nn.Parameter(torch.ones(4, 1, 1, 1))  # a per-channel scale: not one
            self.head = nn.Linear(8, 3)

        def get_classifier(self) -> nn.Module:
            return self.head

    net = Net()
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(net, lr=1, wd=1, head_lr=1, head_wd=1)}
    assert {id(net.gate.weight), id(net.dw.weight)} <= groups["body"]
    assert id(net.gain) in groups["body_no_wd"] and groups["head"] == {id(net.head.weight)}
