"""Defects found in a review of meta_study/cli.py and meta_study/tune/preflight.py (stop 44),
each with the test that failed before its fix."""

from __future__ import annotations

import os
import socket
import sys
import types

import pytest

from conftest import run_cli
from meta_study.errors import UserError
from meta_study.tune import preflight
from meta_study.tune.preflight import check_tracking_reachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # nothing listens once it is closed


# ---- a database tracking store that does not answer: one line at once, not MLflow's ~100 s ----


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "mysql+pymysql", "mssql+pymssql"])
def test_a_tracking_database_that_does_not_answer_is_one_line_before_ray_starts(scheme):
    # the sweep's check looked at http(s) servers only: MLflow's engine check then retried the
    # database 10 times (~100 s of "Operation will be retried" warnings; a host that drops packets,
    # ~20 minutes) and the sweep ended in SQLAlchemy's OperationalError traceback
    import re

    port = _closed_port()
    with pytest.raises(UserError, match=rf"^--tracking-uri {re.escape(scheme)}://127\.0\.0\.1:{port}/mlflow: "
                                        r"no database server answers there \(Connection refused\)"):
        check_tracking_reachable(f"{scheme}://127.0.0.1:{port}/mlflow")


def test_a_tracking_database_that_answers_passes_and_sockets_are_left_to_the_driver():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        check_tracking_reachable(f"postgresql+psycopg://127.0.0.1:{srv.getsockname()[1]}/mlflow")
    port = _closed_port()
    # a Unix socket, or a data source name: not a host to connect to
    check_tracking_reachable("postgresql:///mlflow")
    check_tracking_reachable(f"postgresql://127.0.0.1:{port}/mlflow?host=/run/postgresql")
    check_tracking_reachable("mssql+pyodbc://mlflow-dsn")


# ---- a sqlite tracking URI that names a directory or another kind of file ----


def test_a_sqlite_tracking_uri_that_names_a_directory_is_one_line(tmp_path):
    # MLflow retried "unable to open database file" for ~100 s, then the sweep's traceback
    d = tmp_path / "mlflow"
    d.mkdir()
    with pytest.raises(UserError, match=rf"^--tracking-uri sqlite:///{d}: {d} is a directory, not a sqlite database "
                                        rf"file; give the file, e\.g\. sqlite:///{d}/mlflow\.db$"):
        check_tracking_reachable(f"sqlite:///{d}")


def test_a_sqlite_tracking_uri_that_names_another_kind_of_file_is_one_line(tmp_path):
    f = tmp_path / "runs.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=rf"^--tracking-uri sqlite:///{f}: {f} is not a sqlite database"):
        check_tracking_reachable(f"sqlite:///{f}")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)                  # opening it would wait for a writer: refused without opening
    with pytest.raises(UserError, match="is not a regular file"):
        check_tracking_reachable(f"sqlite:///{fifo}")


def test_a_sqlite_tracking_file_to_be_made_or_a_real_one_passes(tmp_path):
    import sqlite3

    check_tracking_reachable(f"sqlite:///{tmp_path}/new/mlflow.db")       # the sweep makes it
    (tmp_path / "empty.db").write_bytes(b"")                               # sqlite takes it as new
    check_tracking_reachable(f"sqlite:///{tmp_path}/empty.db")
    sqlite3.connect(tmp_path / "real.db").execute("create table t (x)").connection.close()
    check_tracking_reachable(f"sqlite:///{tmp_path}/real.db")
    assert sorted(os.listdir(tmp_path)) == ["empty.db", "real.db"]           # nothing made


# ---- the storage probe leaves nothing behind on the storage ----


class _Ref:
    def __init__(self, value):
        self.value = value


def _fake_ray(monkeypatch, nodes, answer):
    """A ``ray`` module whose probe task runs ``answer(node_id, uri, name, token)`` in this process."""
    ray = types.ModuleType("ray")
    ray.nodes = lambda: nodes

    class Remote:
        def __init__(self, node=None):
            self.node = node

        def options(self, scheduling_strategy):
            return Remote(scheduling_strategy.node_id)

        def remote(self, *args):
            return _Ref(answer(self.node, *args))

    ray.remote = lambda **kw: (lambda fn: Remote())
    ray.wait = lambda refs, num_returns, timeout: (list(refs), [])
    ray.get = lambda ref: ref.value
    ray.cancel = lambda ref, force=False: None
    util = types.ModuleType("ray.util")
    strategies = types.ModuleType("ray.util.scheduling_strategies")

    class NodeAffinitySchedulingStrategy:
        def __init__(self, node_id, soft):
            self.node_id = node_id

    strategies.NodeAffinitySchedulingStrategy = NodeAffinitySchedulingStrategy
    util.scheduling_strategies = strategies
    ray.util = util
    for name, module in (("ray", ray), ("ray.util", util), ("ray.util.scheduling_strategies", strategies)):
        monkeypatch.setitem(sys.modules, name, module)


NODES = [{"NodeID": f"{c * 8}", "NodeManagerAddress": f"10.0.0.{i}", "Alive": True, "Resources": {"CPU": 2.0}}
         for i, c in enumerate("ab")]


def test_a_refused_storage_path_leaves_no_directory_the_check_made(tmp_path, monkeypatch):
    # the driver made --storage-path (and its parents) for its probe file; a refusal (another
    # node's disk) removed the probe file but left the directories it had made, empty
    def answer(node, uri, name, token):
        return preflight._probe(uri, name, token) if node == NODES[0]["NodeID"] else \
            "the driver's probe file is not there (another disk)"

    _fake_ray(monkeypatch, NODES, answer)
    storage = tmp_path / "home" / "ada" / "ray"
    with pytest.raises(UserError, match=rf"^--storage-path {storage}: 1 of 2 Ray nodes cannot use it \(node bbbbbbbb "
                                        r"at 10\.0\.0\.1: the driver's probe file is not there"):
        preflight.check_storage_on_nodes(str(storage))
    assert os.listdir(tmp_path) == []
    # a directory that was there stays, and keeps what it held
    storage.mkdir(parents=True)
    (storage / "other-sweep").mkdir()
    with pytest.raises(UserError):
        preflight.check_storage_on_nodes(str(storage))
    assert os.listdir(storage) == ["other-sweep"]


def test_a_storage_path_every_node_uses_is_kept_without_probe_files(tmp_path, monkeypatch):
    _fake_ray(monkeypatch, NODES, lambda node, *args: preflight._probe(*args))
    storage = tmp_path / "shared" / "ray"
    out = preflight.check_storage_on_nodes(str(storage))
    assert [c.error for c in out] == [None, None]
    assert storage.is_dir() and os.listdir(storage) == []      # made for the sweep; no probe left


def test_a_probe_file_whose_write_fails_partway_is_removed(tmp_path, monkeypatch):
    # the driver wrote its probe file outside the try that removes it: a full disk left a part of it
    import pyarrow.fs as pafs

    class FullDisk:
        def __init__(self, path):
            self.f = open(path, "wb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            self.f.flush()
            raise OSError(28, "No space left on device")

    def filesystem(uri):
        fs = pafs.LocalFileSystem()
        wrapped = types.SimpleNamespace(create_dir=fs.create_dir, delete_file=fs.delete_file,
                                        open_output_stream=lambda p: FullDisk(p))
        return wrapped, os.path.abspath(uri)

    monkeypatch.setattr(preflight, "filesystem", filesystem)
    _fake_ray(monkeypatch, NODES, lambda node, *args: None)
    storage = tmp_path / "ray"
    with pytest.raises(OSError, match="No space left on device"):
        preflight.check_storage_on_nodes(str(storage))
    assert os.listdir(tmp_path) == []


def test_a_nodes_own_probe_file_whose_write_fails_is_removed(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    real = preflight.filesystem
    storage = tmp_path / "st"
    storage.mkdir()
    (storage / "probe").write_text("tok")

    def filesystem(uri):
        fs, base = real(uri)

        def open_output_stream(p):
            stream = fs.open_output_stream(p)
            stream.write(b"o")
            stream.close()
            raise OSError(28, "No space left on device")

        return types.SimpleNamespace(open_input_stream=fs.open_input_stream, delete_file=fs.delete_file,
                                     open_output_stream=open_output_stream), base

    assert isinstance(real(str(storage))[0], pafs.LocalFileSystem)
    monkeypatch.setattr(preflight, "filesystem", filesystem)
    assert preflight._probe(str(storage), "probe", "tok") == "OSError: [Errno 28] No space left on device"
    assert os.listdir(storage) == ["probe"]


# ---- --help ----


def test_sensitivity_help_says_largest_sample_as_its_output_does():
    # its output says "at n=..." for the largest sample (it is every fitting point only where
    # --sizes did not stop below them); the help still promised the "full sample"
    r = run_cli("sensitivity", "--help", subprocess_=False)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "smallest and largest sample" in text and "full sample" not in text


# ---- an empty SOURCE (an unset variable) ----


@pytest.mark.parametrize("source", ["", " "])
def test_an_empty_ingest_source_is_named_as_such(tmp_path, source):
    # `meta-study ingest "$MLFLOW_URI" --store S` with the variable unset said
    # "meta-study: error: : no such file or directory"
    from conftest import one_error_line

    r = run_cli("ingest", source, "--store", str(tmp_path / "st"))
    one_error_line(r, f"ingest: SOURCE {source!r}: an empty source; give a file, a directory or a tracking URI")
    assert not (tmp_path / "st").exists()


def test_an_empty_refit_source_is_named_as_such(tmp_path):
    from conftest import committed_store, one_error_line

    committed_store(tmp_path / "st", runs=10)
    r = run_cli("refit", "--store", str(tmp_path / "st"), "--serial", "--out", str(tmp_path / "out"), "--source", "",
                subprocess_=False)
    one_error_line(r, "--source '': an empty source; give a file, a directory or a tracking URI")
    assert not (tmp_path / "out").exists()


# ---- an imagefolder dataset that is a file ----


def test_an_imagefolder_dataset_that_is_a_file_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch):
    # it passed (it exists), and every trial failed on it ("no images in class subdirectories"),
    # retried --max-failures times
    monkeypatch.setattr(preflight, "refuse_builtin_names", lambda datasets: None)   # no torch import: seconds
    archive = tmp_path / "pets.tar"
    archive.write_bytes(b"not a folder")
    with pytest.raises(UserError, match=rf"^--dataset mypets=imagefolder:{archive}: {archive} is not a directory "
                                        r"\(imagefolder: PATH/<class>/\*\.png"):
        preflight.check_dataset_paths({"mypets": f"imagefolder:{archive}"}, on_this_machine=True)
    preflight.check_dataset_paths({"mypets": f"imagefolder:{archive}"}, on_this_machine=False)
    assert f"warning: --dataset mypets=imagefolder:{archive}: {archive} is not a directory on this machine" \
        in capsys.readouterr().err
    (tmp_path / "pets").mkdir()
    preflight.check_dataset_paths({"mypets": f"imagefolder:{tmp_path / 'pets'}"}, on_this_machine=True)
    preflight.check_dataset_paths({"mypets": f"parquet:{archive}"}, on_this_machine=True)   # a file: fine


@pytest.mark.parametrize("kind", ["directory", "other file"])
def test_a_refit_whose_sqlite_tracking_uri_is_no_database_file_is_one_line(tmp_path, kind):
    """The refit's tracking check: ``sqlite:///DIR`` or a sqlite URI naming a text file went through
    MLflow's ~100 s of retries before its one line; the sweep's file check now runs first."""
    from conftest import committed_store, quick_refit_config

    from meta_study.refit import refit

    target = tmp_path / "db"
    if kind == "directory":
        target.mkdir()
    else:
        target.write_text("not a database\n")
    s = committed_store(tmp_path / "st", runs=12)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=rf"^--tracking-uri sqlite:///{target}: {target} is (a directory|not a sqlite "
                                        r"database).*; nothing was refitted$"):
        refit(quick_refit_config(s, out, tracking_uri=f"sqlite:///{target}"), log=lambda m: None)
    assert not out.exists()
