"""Review s45 of the sweep's state, the submit wrapper, the writer's REST client and ray_session."""

from __future__ import annotations

import pytest

from meta_study.errors import UserError

SECRET = "s3cretTOKEN"


# ---- a password in an address is never repeated, and never a traceback ---------------------------

def test_job_api_address_with_user_info_and_no_port_is_one_line_without_the_password():
    """``http://user:password@host`` (no port): urllib's InvalidURL ("nonnumeric port:
    'password@host'") is no OSError or ValueError; it escaped as a traceback showing the password."""
    from meta_study.tune.submit import check_job_api

    with pytest.raises(UserError) as e:
        check_job_api("--address", f"http://alice:{SECRET}@127.0.0.1", timeout_s=5)
    assert SECRET not in str(e.value) and "alice" not in str(e.value)
    assert "cannot reach Ray's job API" in str(e.value)


@pytest.mark.parametrize("address", [f"ray://alice:{SECRET}@127.0.0.1", f"alice:{SECRET}@127.0.0.1:1",
                                     f"ray://alice:{SECRET}@127.0.0.1:1", f"alice:{SECRET}@127.0.0.1"])
def test_cluster_address_messages_leave_the_user_info_out(address):
    from meta_study.tune.submit import check_gcs_address

    with pytest.raises(UserError) as e:
        check_gcs_address("RAY_ADDRESS", address, timeout_s=5)
    assert SECRET not in str(e.value), str(e.value)
    assert str(e.value).startswith("RAY_ADDRESS ")


def test_submit_main_with_a_password_in_the_job_api_address_exits_2_in_one_line(tmp_path, monkeypatch, capsys):
    from meta_study.tune import submit

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit, "_walk_upload", lambda wd, ex: (set(), True))   # no Ray walk needed here
    (tmp_path / "x.py").write_text("")      # a script that is not there is refused first
    rc = submit.main(["--address", f"http://alice:{SECRET}@127.0.0.1", "--", "python", "x.py"])
    err = capsys.readouterr().err
    assert rc == 2
    assert SECRET not in err and err.count("\n") == 1, err


def test_ray_session_check_address_without_scheme_leaves_the_user_info_out():
    """``user:password@host:port`` has no scheme, so ``safe_uri`` kept it whole in the line."""
    from meta_study.ray_session import check_address, describe_target, shown_address

    with pytest.raises(UserError) as e:
        check_address(f"alice:{SECRET}@127.0.0.1:1", timeout_s=5)
    assert SECRET not in str(e.value) and "127.0.0.1:1" in str(e.value)
    assert SECRET not in describe_target(f"alice:{SECRET}@127.0.0.1:1")
    assert shown_address("127.0.0.1:6379") == "127.0.0.1:6379"
    assert shown_address("[::1]:6379") == "[::1]:6379"
    assert shown_address(f"ray://alice:{SECRET}@h:10001") == "ray://h:10001"


def test_ray_session_join_failure_masks_the_user_info_ray_repeats(monkeypatch):
    """Ray's own error names the address it was given; the line quoted it whole."""
    from types import SimpleNamespace

    from meta_study import ray_session

    address = f"alice:{SECRET}@127.0.0.1:6379"

    def init(**kw):
        raise ConnectionError(f"Failed to connect to GCS at address {kw['address']} within 5 seconds.")

    monkeypatch.setattr(ray_session, "check_address", lambda *a, **k: None)
    fake = SimpleNamespace(init=init, exceptions=SimpleNamespace())
    with pytest.raises(UserError) as e:
        ray_session._connect(fake, address, {})
    assert SECRET not in str(e.value) and "could not join the Ray cluster there" in str(e.value), str(e.value)


@pytest.mark.parametrize("address, shown", [
    ("127.0.0.1:6379", "127.0.0.1:6379"), ("[::1]:6379", "[::1]:6379"), ("ray://[::1]:10001", "ray://[::1]:10001"),
    (f"ray://alice:{SECRET}@h:10001", "ray://h:10001"), (f"alice:{SECRET}@h:6379", "h:6379"),
    (f"http://alice:{SECRET}@h:8265/", "http://h:8265/"), (f"plugin://h?token={SECRET}", "plugin://h"), ("auto", "auto")])
def test_shown_address(address, shown):
    from meta_study.ray_session import shown_address

    assert shown_address(address) == shown


# ---- the state directory ---------------------------------------------------------------------------

class _FullDiskFs:
    """A local pyarrow filesystem whose renames fail as on a full disk."""

    def __init__(self, fs):
        self._fs = fs

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def move(self, src, dst):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_state_write_leaves_no_temporary_file(tmp_path):
    """A heartbeat that cannot be written (a full disk) left an empty ``.tmp-`` file per beat."""
    import os

    from meta_study.tune.state import StateDir

    sd = StateDir(str(tmp_path / "exp"))
    sd.write_json("writer.json", {"beat": 0})
    fs, root = sd._fs
    sd.__dict__["_fs"] = (_FullDiskFs(fs), root)
    for _ in range(3):
        with pytest.raises(OSError):
            sd.write_json("writer.json", {"beat": 1})
    assert sorted(os.listdir(root)) == ["writer.json"]
    assert sd.read_json("writer.json") == {"beat": 0}
