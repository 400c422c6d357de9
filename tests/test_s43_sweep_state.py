"""A sweep's bookkeeping under concurrent drivers (meta_study/tune/state.py): what one driver
stored is never replaced by another driver's stale copy."""

from __future__ import annotations

import pytest

from meta_study.tune.state import Session, StateDir, SweepRecord


def _session(started: str, *, resume: bool = True) -> Session:
    return Session(started=started, code="c1", git_sha="abc", researcher="ada", resume=resume)


def _record(*sessions: Session) -> SweepRecord:
    return SweepRecord(sweep="s", experiment="exp", experiment_id="1", parent_run_id="p1",
                       tracking_uri="http://mlflow:5000", sessions=sessions)


def test_a_resume_that_read_the_record_before_another_resume_wrote_keeps_that_resumes_session(tmp_path):
    """The runner reads the record (plan_sweep) before it waits out the previous driver and claims
    the sweep; a driver that resumed meanwhile wrote its session, and the waiting one then
    replaced the record with its stale copy plus its own session: the other session was lost."""
    state = StateDir(str(tmp_path / "sweep"))
    first = _session("2026-12-05T00:00:00+00:00", resume=False)
    state.write_record(_record(first))
    stale = state.read_record()                       # driver B plans, then waits for driver A
    a = _session("2026-12-05T01:00:00+00:00")
    state.write_record(stale.with_session(a))         # driver A resumes and records its session
    b = _session("2026-12-05T01:05:00+00:00")
    written = state.write_record(stale.with_session(b))   # B, after A's session ended
    assert state.read_record().sessions == (first, a, b)
    assert written.sessions == (first, a, b)
    # the ordinary resume: its session appended once; a record rewritten on purpose stays as given
    c = _session("2026-12-05T02:00:00+00:00")
    state.write_record(state.read_record().with_session(c))
    assert state.read_record().sessions == (first, a, b, c)
    state.write_record(_record(first))
    assert state.read_record().sessions == (first,)


def _claims_race(state_of, *, stale: bool) -> None:
    """Driver B (and C) looked for a claim before driver A wrote its own (or, ``stale``, waited
    out the same dead driver's claim as A did), then claims: exactly one of them may go on. The
    claim was written, read back a second later and kept if it was still there: a claim written
    after the other's read-back overwrote it, and both drivers went on."""
    from meta_study.tune.state import DRIVER, DriverClaim, Heartbeat, read_heartbeat

    a_state, b_state = state_of(), state_of()
    if stale:    # a driver killed before its writer beat left its claim: nothing beats it any more
        a_state.write_json(DRIVER, {"owner": "dead:1:x", "beat": 3})
    for st in (a_state, b_state):
        why = Heartbeat(st, every_s=0.1, name=DRIVER).wait_for_previous(30)
        assert why == ("stale" if stale else "none")
    a, b = DriverClaim(a_state), DriverClaim(b_state)
    try:
        assert a.take(settle_s=0.05) is None                  # A goes on
        assert b.take(settle_s=0.05) == a.owner               # B is refused, naming A
        assert (read_heartbeat(a_state, DRIVER) or {}).get("owner") == a.owner   # A's claim stands
    finally:
        a.stop()
        b.stop()
    assert read_heartbeat(a_state, DRIVER) is None


@pytest.mark.parametrize("stale", [False, True], ids=["no-claim", "stale-claim"])
def test_a_claim_written_after_another_drivers_read_back_is_refused_locally(tmp_path, stale):
    _claims_race(lambda: StateDir(str(tmp_path / "sweep")), stale=stale)


@pytest.mark.slow(10)
@pytest.mark.parametrize("stale", [False, True], ids=["no-claim", "stale-claim"])
def test_a_claim_written_after_another_drivers_read_back_is_refused_on_s3(s3env, stale):
    import uuid

    name = f"s3://lab/claims-{uuid.uuid4().hex[:8]}/sweep"
    _claims_race(lambda: StateDir(name), stale=stale)


@pytest.mark.slow(10)
def test_two_resumes_of_an_s3_sweep_at_once_exactly_one_goes_on(s3env, monkeypatch):
    """Through the resume's own check (preflight), on an object store: one goes on, the other is
    refused in one line; and an endpoint without conditional writes still gets a claim (written,
    then read back)."""
    import threading
    import uuid

    from meta_study.errors import UserError
    from meta_study.store._s3 import S3Objects
    from meta_study.tune import preflight
    from meta_study.tune.state import DRIVER, read_heartbeat

    name = f"s3://lab/resume-{uuid.uuid4().hex[:8]}/sweep"
    outcomes: list[str] = []
    go = threading.Barrier(2)

    def resume() -> None:
        st = StateDir(name)
        go.wait()
        try:
            preflight.wait_for_previous_writer(st, "s", max_wait_s=5)
            outcomes.append("went on")
        except UserError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert outcomes.count("went on") == 1 and len(outcomes) == 2, outcomes
    finally:
        claim = preflight._CLAIMS.pop(StateDir(name).uri, None)
        if claim is not None:
            claim.stop()
    assert read_heartbeat(StateDir(name), DRIVER) is None

    def ignored(self, rel):
        raise UserError("the S3 endpoint ignores conditional writes")

    monkeypatch.setattr(S3Objects, "require_conditional_writes", ignored)
    st = StateDir(name)
    try:
        assert preflight.wait_for_previous_writer(st, "s", max_wait_s=5) == "none"
        assert (read_heartbeat(st, DRIVER) or {}).get("owner") == preflight._CLAIMS[st.uri].owner
    finally:
        preflight._CLAIMS.pop(st.uri).stop()


def test_a_resume_that_read_a_stale_record_numbers_its_session_after_the_one_written_meanwhile(tmp_path):
    """Driver B read the record before it waited out driver A, which resumed, recorded session 2
    and tagged the parent run ``session.2.*``. B's session is the third: numbered from its stale
    read it was the second, and its tags overwrote A's on the parent run."""
    from mlflow.tracking import MlflowClient

    from meta_study.tune.runner import SweepOptions, SweepSpec, _Plan, _record_session, grid
    from meta_study.tune.state import Session, StateDir, SweepRecord

    spec = SweepSpec(name="s", doc="A test sweep.\n", space=lambda o: {"seed": grid([0])},
                     base=dict(model_name="vit_s"), smoke=dict(model_name="vit_tiny_cpu", epochs=2))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id
    first = Session(started="2026-12-01T00:00:00+00:00", code="c0", git_sha="g0", researcher="r", resume=False)
    rec = SweepRecord(sweep="s", experiment="e", experiment_id=exp, parent_run_id=parent, tracking_uri=tracking,
                      sessions=(first,))
    exp_dir = str(tmp_path / "ray" / "s")
    state = StateDir(exp_dir)
    state.write_record(rec)
    stale = state.read_record()                    # B's read, before A's resume
    a_session = Session(started="2026-12-02T00:00:00+00:00", code="cA", git_sha="gA", researcher="ada", resume=True)
    state.write_record(stale.with_session(a_session))
    client.set_tag(parent, "session.2.code_version", "cA")
    plan = _Plan(name="s", storage=str(tmp_path / "ray"), exp_dir=exp_dir, tracking=tracking, state=state,
                 record=stale, resume=True, restore_tune=True, experiment="e", code="cB", code_changed=False)
    got = _record_session(spec, plan, SweepOptions(smoke=True), {}, {"git_sha": "gB"})
    assert [s.code for s in got.sessions] == ["c0", "cA", "cB"]
    assert [s.code for s in StateDir(exp_dir).read_record().sessions] == ["c0", "cA", "cB"]
    tags = client.get_run(parent).data.tags
    assert tags["session.2.code_version"] == "cA" and tags["session.3.code_version"] == "cB"
