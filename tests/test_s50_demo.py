"""The demo and the scaling sweep (s50 review): the demo's line when it finds no ``examples/``,
``examples/`` found through a non-editable install's record, and scaling trials sized to their model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import sweep_module

from meta_study.tune.runner import SMOKE, PerTrialResources, SweepOptions, trial_requests

GiB = 2**30


def _run_without_examples(tmp_path, monkeypatch) -> list[str]:
    """A ``--synthetic`` demo's lines with no ``examples/`` found, every step but the line stubbed."""
    import meta_study.ingest as ingest
    from meta_study import demo

    monkeypatch.setattr(demo, "refuse_mixed_workdir", lambda *a, **k: True)
    monkeypatch.setattr(demo, "synthetic_step", lambda *a, **k: "simulated")
    monkeypatch.setattr(demo, "log_synthetic", lambda *a, **k: 0)
    monkeypatch.setattr(demo, "examples_dir", lambda: None)
    monkeypatch.setattr(ingest, "open_sources", lambda *a, **k: [SimpleNamespace(source="sqlite:///x/mlflow.db")])
    monkeypatch.setattr(ingest, "ingest_sources", lambda *a, **k: [])
    monkeypatch.setattr(demo, "_refit", lambda *a: SimpleNamespace(status="ok", message="", version_dir=str(tmp_path)))
    monkeypatch.setattr(demo, "held_out_check", lambda p: [])
    monkeypatch.setattr(demo, "_compare_known_laws", lambda p, log: None)
    monkeypatch.setattr(demo, "_ui_url", lambda *a: "http://127.0.0.1:5000")
    lines: list[str] = []
    demo.run_demo(str(tmp_path / "wd"), synthetic=True, log=lines.append)
    return lines


def test_the_demo_without_examples_says_how_to_add_the_timm_results(tmp_path, monkeypatch):
    """It said "(examples/data/timm not found beside this install: only the demo's own models are
    analysed)": nothing on what to do, and 'beside this install' where the working directory was
    looked in too."""
    monkeypatch.chdir(tmp_path)
    lines = _run_without_examples(tmp_path, monkeypatch)
    line = next(x for x in lines if "timm" in x)
    assert "the shipped timm results were not ingested" in line, line
    assert f"in the working directory ({tmp_path})" in line, line
    assert "the report holds the demo's own models only" in line, line
    assert "run the demo from the root of a meta-study checkout" in line, line


def test_the_line_says_what_an_earlier_ingest_left_in_the_store():
    """A --workdir whose store holds the timm rows of an earlier demo (run from a checkout): the
    refit reports them too, and "only the demo's own models are analysed" was false."""
    from meta_study.demo import no_examples_line

    own = {"sqlite:///w/mlflow.db"}

    def store(sources):
        return SimpleNamespace(exists=lambda: sources is not None,
                               to_pandas=lambda columns: pd.DataFrame({"source": sources}))

    assert "the demo's own models only" in no_examples_line(store(None), own)
    assert "the demo's own models only" in no_examples_line(store(["sqlite:///w/mlflow.db"] * 3), own)
    line = no_examples_line(store(["sqlite:///w/mlflow.db", "timm-results", "timm-results"]), own)
    assert "own models only" not in line and "the rows of timm-results that an earlier ingest left" in line, line
    assert "run the demo from" not in line, line     # they are in the report already


def _fake_install(tmp_path, monkeypatch, direct_url: dict | None):
    """A non-editable install: this package a copy in site-packages (no examples/ beside it), the
    working directory another, and ``direct_url`` the install's PEP 610 record."""
    import importlib.metadata

    from meta_study import demo

    site = tmp_path / "site-packages" / "meta_study"
    site.mkdir(parents=True)
    monkeypatch.setattr(demo, "__file__", str(site / "demo.py"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    text = None if direct_url is None else json.dumps(direct_url)
    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: SimpleNamespace(read_text=lambda f: text if f == "direct_url.json" else None))


def _checkout(root: Path) -> Path:
    (root / "examples" / "data" / "timm").mkdir(parents=True)
    (root / "examples" / "mappings").mkdir(parents=True)
    (root / "examples" / "data" / "timm" / "results-imagenet.csv").write_text("model,top1\n")
    (root / "examples" / "mappings" / "timm_wide.yaml").write_text("name: x\n")
    return root


def test_a_non_editable_install_from_a_checkout_finds_its_examples(tmp_path, monkeypatch):
    """``pip install /path/to/clone`` (not ``-e``) copies the package alone: a demo run outside the
    clone ingested no timm results, though the install records where it came from."""
    from meta_study.demo import examples_dir

    clone = _checkout(tmp_path / "my clone")
    _fake_install(tmp_path, monkeypatch, {"url": clone.as_uri(), "dir_info": {}})
    assert examples_dir() == clone / "examples"


@pytest.mark.parametrize("record", [None, {"url": "https://example.org/meta_study-0.1.0.whl", "archive_info": {}},
                                    {"url": "file:///nonexistent/clone", "dir_info": {}}, {"dir_info": {}}])
def test_an_install_without_a_checkout_finds_none(tmp_path, monkeypatch, record):
    from meta_study.demo import examples_dir

    _fake_install(tmp_path, monkeypatch, record)
    assert examples_dir() is None


# --------------------------------------------------------------------------------------------
# sweeps/scaling.py
# --------------------------------------------------------------------------------------------


def _requests(options: SweepOptions) -> dict[str, dict[str, float]]:
    spec = sweep_module("scaling").SPEC
    fixed = {**(SMOKE if options.smoke else {}), **spec.base, **(spec.smoke if options.smoke else {})}
    return dict(trial_requests(spec, options, fixed))


def test_scaling_sizes_each_trial_by_its_model():
    """Every trial asked for one CPU and one GPU whatever its model, and no memory: Ray put a
    ViT-L (~32 GiB of host memory, as the zoo sizes it) on every GPU of a node, and a ViT-Ti held
    a whole A100."""
    pytest.importorskip("torch")                # ViT-L is sized from its parameter count
    got = _requests(SweepOptions(gpus_per_trial=1.0))
    assert got["model_name='vit_ti'"] == {"cpu": 1.0, "gpu": 0.25, "memory": 4 * GiB}, got
    assert got["model_name='vit_s'"] == {"cpu": 1.0, "gpu": 0.5, "memory": 6 * GiB}, got
    assert got["model_name='vit_b'"] == {"cpu": 1.0, "gpu": 1.0, "memory": 12 * GiB}, got
    assert got["model_name='vit_l'"] == {"cpu": 1.0, "gpu": 1.0, "memory": 32.5 * GiB}, got
    # the smoke's tiny CPU models: one CPU each, as before
    smoke = _requests(SweepOptions(smoke=True))
    assert list(smoke.values()) == [{"cpu": 1.0, "gpu": 0.0, "memory": 0.25 * GiB}], smoke


@pytest.mark.slow(20)
@pytest.mark.parametrize("sweep", ["scaling", "zoo"])
def test_scaling_sizing_unpickles_where_sweeps_is_not_importable(tmp_path, sweep):
    """Tune pickles the sizing with the trainable: it must not need ``sweeps/`` (nor a module
    ``zoo``) on the path of the process that loads it. The sizing lives in
    ``meta_study.tune.sizing`` (sweeps/zoo.py's, loaded by path from scaling.py, before), which
    that process imports as any trial imports ``meta_study``."""
    pytest.importorskip("torch")
    import ray.cloudpickle as cloudpickle

    spec = sweep_module(sweep).SPEC
    blob = tmp_path / "sizing.pkl"
    blob.write_bytes(cloudpickle.dumps(PerTrialResources(spec.resources, SweepOptions(gpus_per_trial=1.0))))
    code = ("import sys, ray.cloudpickle as c; f = c.loads(open(sys.argv[1], 'rb').read()); "
            "print(f({'model_name': 'vit_b', 'img_size': 32})['memory'] / 2**30, "
            "'meta_study.tune.sizing' in sys.modules, "
            "[m for m in sys.modules if 'sweeps' in m or m.rpartition('.')[2] in ('zoo', 'scaling')])")
    r = subprocess.run([sys.executable, "-c", code, str(blob)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["12.0", "True", "[]"], r.stdout + r.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# A --workdir whose store no demo made
# --------------------------------------------------------------------------------------------


def _store(wd: Path, sources: list[tuple[str, str | None]]) -> None:
    """WORKDIR/store with three runs of each (source, experiment)."""
    from meta_study.store import Store
    from meta_study.validation import validate

    recs = [{"us_task": "up", "us_accuracy": 0.3 + 0.1 * i, "ds_task": "near", "eval_protocol": "fewshot",
             "shots": 10, "ds_accuracy": 0.2 + 0.1 * i, "source": s, "run_id": f"{s}-{i}",
             **({"experiment": e} if e else {})} for s, e in sources for i in range(3)]
    v = validate(pd.DataFrame(recs))
    assert v.n_rejected == 0
    Store(str(wd / "store")).commit(v.table)


@pytest.mark.parametrize("synthetic", [True, False])
def test_a_workdir_whose_store_no_demo_made_is_refused(tmp_path, synthetic):
    """``demo --workdir .`` in a project whose own store is ./store: the demo ingested its models
    into the user's store, reported them together and took over the refits beside it."""
    from meta_study import demo
    from meta_study.errors import UserError

    wd = tmp_path / "project"
    _store(wd, [("sqlite:////lab/mlflow.db", "head_wd"), (demo.TIMM_SOURCE, None)])
    tracking = f"sqlite:///{wd / 'mlflow.db'}"
    with pytest.raises(UserError, match=r"^--workdir W: .*/project/store is a store that no demo made \(it holds rows "
                                        r"of 'sqlite:////lab/mlflow.db'\); the demo would add its models to them"):
        demo.refuse_mixed_workdir(wd, "W", tracking, synthetic=synthetic)


def test_a_demo_store_with_the_timm_results_or_the_users_additions_goes_on(tmp_path, monkeypatch):
    """What a demo leaves (its runs, the timm results; the timm results alone after an ingest
    stopped between its sources), and rows a user ingested into a demo's store on purpose."""
    from meta_study import demo

    monkeypatch.setattr(demo, "synthetic_logged", lambda uri: True)
    for name, extra in [("timm", []), ("mine", [("my-export", None)])]:
        wd = tmp_path / name
        tracking = f"sqlite:///{wd / 'mlflow.db'}"
        _store(wd, [(tracking, demo.SYNTH_EXPERIMENT), (demo.TIMM_SOURCE, None), *extra])
        (wd / "mlflow.db").touch()
        assert demo.refuse_mixed_workdir(wd, "W", tracking, synthetic=True) is True
    wd = tmp_path / "timm-only"
    _store(wd, [(demo.TIMM_SOURCE, None)])
    assert demo.refuse_mixed_workdir(wd, "W", f"sqlite:///{wd / 'mlflow.db'}", synthetic=True) is False


def test_the_timm_source_is_the_shipped_mappings():
    from meta_study.demo import TIMM_SOURCE, examples_dir
    from meta_study.ingest import load_mapping

    examples = examples_dir()
    if examples is None:
        pytest.skip("no examples/ here")
    assert load_mapping(str(examples / "mappings" / "timm_wide.yaml")).source == TIMM_SOURCE
