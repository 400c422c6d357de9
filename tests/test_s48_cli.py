"""Review s48 (the command line as a first-time user meets it): every option says in --help what
it does, and a usage error the option parser raises names its command as every other one does."""

from __future__ import annotations

import click
import pytest

from conftest import committed_store, one_error_line, run_cli
from meta_study.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


@pytest.mark.parametrize("path,cmd", list(_commands(cli)), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_visible_option_says_what_it_does(path, cmd):
    # `--loss [lsq|huber|log]` (fit, sensitivity, bootstrap, report, refit) and bootstrap's `--seed`
    # were shown with no words at all: what 'log' fits, or that results depend on the seed, was
    # nowhere in --help
    bare = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.hidden and not p.help]
    assert not bare, f"meta-study {' '.join(path)}: options without help: {bare}"


def test_loss_and_bootstrap_seed_help_in_the_rendered_help():
    fit = run_cli("fit", "--help").stdout
    assert "squared error" in fit.split("--loss", 1)[1].split("--alpha-max", 1)[0]
    boot = run_cli("bootstrap", "--help").stdout
    assert "deterministic" in boot.split("--seed", 1)[1].split("--address", 1)[0]


@pytest.mark.parametrize("args,where,flag", [
    (("fit", "{store}", "--out", "{out}", "--shots"), "meta-study fit: error:", "--shots"),
    (("sensitivity", "{store}", "--serial", "--out"), "meta-study sensitivity: error:", "--out"),
    (("store", "quarantine", "{store}", "--limit"), "meta-study store quarantine: error:", "--limit"),
    (("ingest", "x.csv", "--store"), "meta-study ingest: error:", "--store"),
])
def test_an_option_without_its_value_names_the_command(tmp_path, args, where, flag):
    # click's parser raises "Option '--shots' requires an argument." with no context: the line said
    # "meta-study: error: ..." where every other usage error of a subcommand names it
    committed_store(tmp_path / "st", runs=6, tasks=("a",))
    argv = [a.format(store=tmp_path / "st", out=tmp_path / "out") for a in args]
    line = one_error_line(run_cli(*argv), flag, "requires an argument")
    assert line.startswith(where), line
    assert not (tmp_path / "out").exists()


def test_top_level_and_store_usage_errors_are_unchanged():
    assert one_error_line(run_cli("--bogus"), "--bogus").startswith("meta-study: error:")
    assert one_error_line(run_cli("store", "--bogus"), "--bogus").startswith("meta-study store: error:")
    r = run_cli("store")   # a group without its subcommand: its help, exit 0
    assert r.returncode == 0 and "quarantine" in r.stdout


@pytest.mark.parametrize("kind", ["loop", "long"])
def test_a_demo_workdir_that_cannot_be_looked_at_is_one_line(tmp_path, kind):
    # a symlink loop ended in pathlib's "RuntimeError: Symlink loop" traceback, and a name longer
    # than the filesystem allows in "[Errno 36] File name too long", exit 1 as for a machine's failure
    if kind == "loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        workdir, says = tmp_path / "a", "Too many levels of symbolic links"
    else:
        workdir, says = tmp_path / ("x" * 300), "File name too long"
    r = run_cli("demo", "--synthetic", "--workdir", str(workdir), cwd=tmp_path)
    one_error_line(r, "--workdir", "cannot be created", says)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["a", "b"] if kind == "loop" else [])


@pytest.mark.parametrize("command", [("fit", "{store}", "--no-figures"), ("refit", "--store", "{store}", "--serial")])
def test_an_out_that_is_a_dangling_link_is_named_as_one(tmp_path, command):
    # "--out DIR: cannot write there (File exists)": of a name that `ls` lists and nothing is at
    committed_store(tmp_path / "st", runs=6, tasks=("a",))
    (tmp_path / "out").symlink_to(tmp_path / "gone" / "results")
    argv = [a.format(store=tmp_path / "st") for a in command]
    one_error_line(run_cli(*argv, "--out", str(tmp_path / "out")), f"--out {tmp_path / 'out'}: a symbolic link to",
                   "gone/results, which does not exist")
    assert not (tmp_path / "gone").exists()
