"""Ray Tune copied the driver's AWS keys into every trial actor's runtime_env (session 57, a
walkthrough of docs/cluster.md): served in clear text by Ray's State API and dashboard, written to
each node's runtime_env_agent.log (0644, "AWS_SECRET_ACCESS_KEY":"testing-secret"), and overriding
the node's own keys, which docs/cluster.md says every node uses. A sweep now keeps them out."""

from __future__ import annotations

import pytest


def test_a_sweeps_trial_actors_carry_no_credentials_of_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.tune.execution import class_cache

    from meta_study.tune.runner import TUNE_PROPAGATED_CREDENTIALS, keep_credentials_out_of_trials

    for name in TUNE_PROPAGATED_CREDENTIALS:
        monkeypatch.setenv(name, f"driver-{name.lower()}")
    monkeypatch.setenv("PL_DISABLE_FORK", "1")
    saved = set(class_cache.ENV_VARS_TO_PROPAGATE)
    try:
        keep_credentials_out_of_trials()

        class Trial:   # what Tune wraps each trial's trainable as: an actor class of its cache
            pass

        env = class_cache._ActorClassCache().get(Trial)._default_options["runtime_env"]["env_vars"]
        assert not set(env) & set(TUNE_PROPAGATED_CREDENTIALS), env
        assert not any("driver-" in str(v) for v in env.values()), env
        # the rest of Tune's propagation is untouched
        assert env.get("PL_DISABLE_FORK") == "1", env
        assert saved - class_cache.ENV_VARS_TO_PROPAGATE == set(TUNE_PROPAGATED_CREDENTIALS) & saved
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE.clear()
        class_cache.ENV_VARS_TO_PROPAGATE.update(saved)


def test_run_sweep_keeps_them_out_before_any_trial_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_sweep empties the set first: the sweep itself (here refused at once) runs without them."""
    from ray.tune.execution import class_cache

    from meta_study.tune import runner

    seen: list[set[str]] = []

    def refused(*_: object) -> None:
        seen.append(set(class_cache.ENV_VARS_TO_PROPAGATE))
        raise RuntimeError("refused before any trial")

    saved = set(class_cache.ENV_VARS_TO_PROPAGATE)
    class_cache.ENV_VARS_TO_PROPAGATE.update(runner.TUNE_PROPAGATED_CREDENTIALS)   # as Ray ships it
    monkeypatch.setattr(runner, "_run_sweep", refused)
    try:
        with pytest.raises(RuntimeError, match="refused before any trial"):
            runner.run_sweep(None)   # type: ignore[arg-type]
        assert seen and not seen[0] & set(runner.TUNE_PROPAGATED_CREDENTIALS), seen
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE.clear()
        class_cache.ENV_VARS_TO_PROPAGATE.update(saved)


@pytest.mark.slow(60)
def test_local_up_makes_its_state_directory_its_users_only(tmp_path):
    """Every driver that connects makes the Ray temp dir inside the state directory 0777 again, and
    its session logs are 0644: the state directory local-up.sh makes is 0700 (it was 0755). One the
    user made keeps its mode."""
    import os
    import stat
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_cluster import run_script

    made = tmp_path / "made"
    made.mkdir(mode=0o755)
    made.chmod(0o755)
    states = (tmp_path / "meta-study-local", made)
    try:
        for state in states:
            up = run_script("local-up.sh", state)
            assert up.returncode == 0, up.stderr[-2000:]
            run_script("local-down.sh", state, timeout=120)
        assert stat.S_IMODE(states[0].stat().st_mode) == 0o700, oct(states[0].stat().st_mode)
        assert stat.S_IMODE(made.stat().st_mode) == 0o755, oct(made.stat().st_mode)
    finally:
        for state in states:
            run_script("local-down.sh", state, timeout=120)
            if (state / "ray").is_symlink():   # the short stand-in under /tmp for a deep state dir
                subprocess.run(["rm", "-rf", os.path.realpath(state / "ray")], check=False)
