"""Session 41: a sweep whose record cannot be written ends the parent run it just created (it
was left RUNNING for good: a live sweep in the MLflow UI that nothing would ever end)."""

from __future__ import annotations

import pytest

from meta_study.mlflow_client import mlflow_client
from meta_study.tune import provenance
from meta_study.tune.runner import SweepSpec, _record_session, fixed_config, grid, parse_options, plan_sweep

SPEC = SweepSpec(name="rec", doc="A sweep whose record fails.\n", space=lambda o: {"seed": grid([0, 1])},
                 base=dict(model_name="vit_s", img_size=32), smoke=dict(model_name="vit_tiny_cpu", epochs=2))


def test_a_record_the_storage_refuses_fails_the_new_parent_run(tmp_path, monkeypatch):
    tracking = f"sqlite:///{tmp_path}/m.db"
    o = parse_options(SPEC, ["--smoke", "--storage-path", str(tmp_path / "ray"), "--tracking-uri", tracking])
    p = plan_sweep(SPEC, o)

    def full_disk(rec):   # noqa: ANN001
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(p.state, "create_record", full_disk)
    tags = {"sweep": p.name, "git_sha": "g", "researcher": o.researcher, "code_version": provenance.code_version([])}
    with pytest.raises(OSError, match="No space left"):
        _record_session(SPEC, p, o, fixed_config(SPEC, o), tags)
    client = mlflow_client(tracking)
    exp = client.get_experiment_by_name(p.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FAILED", [r.info.status for r in runs]
