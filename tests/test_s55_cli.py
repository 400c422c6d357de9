"""Session 55: what a new user's first hour found in the CLI's words (a reviewer's walkthrough).

- The line announcing the cluster in ``$RAY_ADDRESS`` told ``report`` users to add ``--address
  local``, an option ``report`` does not have; it names ``RAY_ADDRESS=local`` now, which every
  command takes.
- ``bootstrap`` named one bound where both ends of an interval sat on bounds.
- ``fit`` said "1 model point above it are held out".
- ``store quarantine`` lines of one run differed in nothing shown (its DS task, its line).
"""
from __future__ import annotations

import pandas as pd
from conftest import run_cli
from meta_study.analysis.answers import payoff_summary
from meta_study.cli import _quarantined_where, bootstrap_lines


def _rows(path, n: int = 12, *, ds: str = "a") -> None:  # noqa: ANN001
    lines = ["source,run_id,model_name,us_task,ds_task,eval_protocol,protocol,shots,us_accuracy,ds_accuracy"]
    for i in range(n):
        us = 0.5 + 0.03 * i
        lines.append(f"s,r{i},m{i},up,{ds},fewshot,p,5,{us:.4f},{0.2 + 0.5 * us:.4f}")
    path.write_text("\n".join(lines) + "\n")


def test_the_ray_address_hint_names_what_report_takes(tmp_path):
    """``report`` has no ``--address``: following the old hint ended in "No such option"."""
    _rows(tmp_path / "a.csv")
    assert run_cli("ingest", str(tmp_path / "a.csv"), "--store", str(tmp_path / "st")).returncode == 0
    r = run_cli("report", str(tmp_path / "st"), "--out", str(tmp_path / "rep"), env={"RAY_ADDRESS": "127.0.0.1:9"},
                timeout=120)
    assert r.returncode == 2, r.stderr
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("ray: the cluster at")]
    assert said == ["ray: the cluster at 127.0.0.1:9 (from $RAY_ADDRESS; RAY_ADDRESS=local starts a Ray of its own)"], r.stderr
    assert "--address local" not in r.stderr
    # and what it names is an option report has: none (an environment variable), unlike --address
    assert "No such option" in run_cli("report", str(tmp_path / "st"), "--out", str(tmp_path / "rep"),
                                       "--address", "local").stderr


def _alpha(frontier: str, est: float, lo: float, hi: float) -> dict:
    return {"us_task": "up", "ds_task": "a", "eval_protocol": "fewshot", "shots": 5, "frontier": frontier,
            "param": "alpha", "estimate": est, "lo": lo, "hi": hi, "level": 0.95}


def test_bootstrap_names_every_bound_an_interval_reaches():
    t = pd.DataFrame([_alpha("all", 10.0, 1e-3, 10.0), _alpha("bins", 0.196, 1e-3, 10.0),
                      _alpha("vertices", 1e-3, 1e-3, 10.0)])
    line = bootstrap_lines(t, alpha_max=10.0)[1]
    assert line == ("  up -> a (fewshot, 5-shot): all 10 [0.001, 10] at its bound 10 (interval reaches its bound "
                    "0.001); bins 0.196 [0.001, 10] (interval reaches its bounds 0.001 and 10); vertices 0.001 "
                    "[0.001, 10] at its bound 0.001 (a flat law, alpha not identified) (interval reaches its "
                    "bound 10)"), line


def test_one_held_out_point_is_said_in_the_singular(tmp_path):
    # 6 models: the top 20% by US accuracy is one model, held out
    _rows(tmp_path / "a.csv", n=6)
    assert run_cli("ingest", str(tmp_path / "a.csv"), "--store", str(tmp_path / "st")).returncode == 0
    r = run_cli("fit", str(tmp_path / "st"), "--out", str(tmp_path / "fit"), "--no-figures")
    assert r.returncode == 0, r.stderr
    assert "1 model point above it is held out to check them" in r.stdout, r.stdout
    assert "1 model point above it are held out" not in r.stdout


def test_no_trusted_answer_reads_each_interval_where_there_is_one():
    row = {"us_task": "up", "ds_task": "a", "trusted": False, "payoff_threshold": 0.1}
    text = payoff_summary([row])
    assert text.endswith("read each group's interval, where it has one, and why it is not trusted."), text


def test_a_quarantined_row_says_its_file_line_and_ds_task(tmp_path):
    _rows(tmp_path / "a.csv", n=3)
    lines = (tmp_path / "a.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",-0.5"   # r1's DS accuracy out of range
    lines.append(lines[2].replace(",a,", ",b,"))      # the same run, another DS task, line 5
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    assert run_cli("ingest", str(tmp_path / "a.csv"), "--store", str(tmp_path / "st")).returncode == 0
    out = run_cli("store", "quarantine", str(tmp_path / "st")).stdout.splitlines()
    assert out[0] == "2 quarantined row(s)", out
    assert out[1].startswith("- [s] r1 (a.csv line 3, ds_task a): ds_accuracy: -0.5 out of range"), out
    assert out[2].startswith("- [s] r1 (a.csv line 5, ds_task b): ds_accuracy: -0.5 out of range"), out
    # a raw record that is no JSON object (an old store's, another writer's) adds nothing
    assert _quarantined_where("not json") == _quarantined_where(None) == _quarantined_where("[1]") == ""


def test_a_mapping_typo_is_named_with_the_key_it_is_close_to(tmp_path):
    """``renmae:`` got the list of allowed keys only."""
    from meta_study.errors import UserError
    from meta_study.ingest.mapping import load_mapping

    (tmp_path / "m.yaml").write_text("renmae:\n  a: b\n")
    try:
        load_mapping(str(tmp_path / "m.yaml"))
    except UserError as e:
        said = str(e)
    assert "unknown key(s) renmae ('renmae': did you mean 'rename'?) (allowed: " in said, said
    (tmp_path / "far.yaml").write_text("zzzz: 1\n")   # nothing close: the list alone
    try:
        load_mapping(str(tmp_path / "far.yaml"))
    except UserError as e:
        said = str(e)
    assert "did you mean" not in said and "unknown key(s) zzzz (allowed: " in said, said


def test_a_yaml_syntax_error_says_its_line(tmp_path):
    """"cannot read mapping (while parsing a flow sequence)" named no line of the file."""
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "bad.yaml").write_text("rename: [a: b\n  c\n")
    (tmp_path / "tab.yaml").write_text("rename:\n  a: b\n\tc: d\n")
    for name, said in (("bad.yaml", "bad.yaml: cannot read mapping (while parsing a flow sequence; expected ',' or "
                                    "']', but got '<stream end>', at line 3, column 1)"),
                       ("tab.yaml", "tab.yaml: cannot read mapping (while scanning for the next token; found "
                                    "character '\\t' that cannot start any token, at line 3, column 1)")):
        r = run_cli("ingest", str(tmp_path / "a.csv"), "--mapping", str(tmp_path / name), "--store", str(tmp_path / "st"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and said in r.stderr, r.stderr
