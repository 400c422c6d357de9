"""The docs against the code (session 48): each doc claim added or fixed for today's changes,
pinned to the code it describes (a quoted message appears as the code says it, a constant's value
in the docs is the code's). Cheap: no Ray, no servers, no training.

- tracking.md / sweeps.md / ingest.md: an http(s) or database password holding ``/``, ``?`` or
  ``#`` as typed is refused, never quoted; a sqlite path's ``#`` is part of its source name; a
  stored source name holding a password is refused; a NULL tag reads as ``''``; the PostgreSQL
  statement timeout; a mapping's fingerprint ignores the order of its maps (``params`` and ``tags``
  too); a ``--sources-file`` entry is told its ``mapping:``; JSON Lines are checked early;
- analysis.md: US needed at a law's saturation is 100%; the explorer's search legend; the slope's
  spread of the laws;
- training.md: ``run_trial``'s refusals are ``TrialConfigError``; the warm-up's rounding;
- sweeps.md / cluster.md: ``meta_study_refused.json`` and its line; the characters a sweep name
  on an object store may hold; the submit wrapper refuses a script not in the working dir;
- schema.md / store.md / modules.md: the conflicting-duplicate reason; a ds_n past int64; keys
  refuse floats and bools.
"""
from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest

from meta_study.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _doc(name: str) -> str:
    """A doc's text with its line breaks and runs of spaces as one space (wrapped claims match)."""
    path = REPO / name if "/" in name or name == "README.md" else REPO / "docs" / name
    return " ".join(path.read_text().split())


def _src(rel: str) -> str:
    return (REPO / rel).read_text()


# -- credentials ---------------------------------------------------------------------------------

HIDDEN_WHY = ("(what comes before the '@' reads as user info, a password holding '/', '?' or '#', or a user "
              "name holding '/', written %2F; an '@' of the path is written %40)")


def test_a_password_holding_a_slash_is_refused_as_tracking_md_says() -> None:
    from meta_study.mlflow_client import refuse_credentials

    with pytest.raises(UserError) as e:
        refuse_credentials("http://u:12/34@h:5000")
    msg = str(e.value)
    assert "http://***@h:5000" in msg and HIDDEN_WHY in msg and "12/34" not in msg and "34" not in msg
    doc = _doc("tracking.md")
    for said in ("`http://u:12/34@h:5000`", "`http://***@h:5000`", f"`{HIDDEN_WHY}`", "`%2F`, `%3F`, `%23`"):
        assert said in doc, said
    assert "`http://u:12/34@h:5000`" in _doc("sweeps.md")


def test_sweeps_refuse_such_a_password_before_the_uri_is_parsed() -> None:
    """sweeps.md: "refused the same way, before the URI is parsed, never quoted" (urllib's parse
    error quoted the password's first part: "Port could not be cast to integer value as 'pa'")."""
    from meta_study.tune.preflight import refuse_secrets

    with pytest.raises(UserError) as e:
        refuse_secrets(tracking_uri="http://u:qz/xk@h:5000", storage_path=None)
    assert "credentials in the tracking URI are refused" in str(e.value)
    assert "qz" not in str(e.value) and "xk" not in str(e.value)
    assert "before the URI is parsed, never quoted" in _doc("sweeps.md")


def test_a_database_password_holding_a_slash_is_refused_as_ingest_md_says() -> None:
    from meta_study.mlflow_client import has_credentials

    assert has_credentials("postgresql://u:12/34@h/db")
    assert has_credentials("mlflow-sql:postgresql://u:12/34@h/db")
    assert "one whose password holds `/`, `?` or `#` as typed" in _doc("ingest.md")


# -- MLflow source names -------------------------------------------------------------------------

def test_a_sqlite_paths_hash_is_part_of_its_source_name() -> None:
    from meta_study.ingest.mlflow_runs import fragment_cut_source
    from meta_study.mlflow_client import safe_uri

    one, two = "sqlite:////data/run#1/mlflow.db", "sqlite:////data/run#2/mlflow.db"
    assert safe_uri(one) == one and safe_uri(two) == two and safe_uri(one) != safe_uri(two)
    assert safe_uri("mlflow-sql:" + one) == "mlflow-sql:" + one
    # the name older versions gave both, which a store keeps using
    assert fragment_cut_source(one) == fragment_cut_source(two) == "sqlite:////data/run"
    doc = _doc("ingest.md")
    assert f"`{one}` and `{two}` are two sources" in doc
    assert "(older versions named both `sqlite:////data/run`" in doc


def test_a_stored_source_name_with_a_password_is_refused_as_ingest_md_quotes() -> None:
    from meta_study.ingest.mlflow_runs import refuse_stored_credentials

    refuse_stored_credentials("postgresql://h/db")      # no credentials: nothing to say
    with pytest.raises(UserError) as e:
        refuse_stored_credentials("postgresql://u:12/34@h/db")
    msg = str(e.value)
    assert "12/34" not in msg
    doc = _doc("ingest.md")
    head = ("the store holds this source's runs under a name with its credentials in it (postgresql://***@h/db, "
            "from an older meta-study): ")
    tail = "ingest into a new store (and delete this one), or give --source NAME to store the runs again under that name"
    assert msg.startswith(head) and msg.endswith(tail)
    assert f"`{head}...; {tail}`" in doc
    # the flag the line names exists
    from click.testing import CliRunner

    from meta_study.cli import cli

    res = CliRunner().invoke(cli, ["ingest", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "--source NAME" in res.output


def test_a_null_tag_reads_as_empty_text_as_ingest_md_says() -> None:
    from meta_study.ingest.mlflow_runs import run_record

    run = types.SimpleNamespace(
        info=types.SimpleNamespace(run_id="r", experiment_id=1, status="FINISHED", start_time=1, end_time=2,
                                   user_id="u"),
        data=types.SimpleNamespace(metrics={}, params={}, tags={"a": None, "b": "x"}))
    assert run_record(run).tags == {"a": "", "b": "x"}
    # the SQL reader does the same (its line, as the source has it)
    assert '"" if value is None else value' in _src("meta_study/ingest/mlflow_sql.py")
    assert "A tag whose value is NULL in the database" in _doc("ingest.md")
    assert "reads as `''` on every path" in _doc("ingest.md")


def test_the_postgresql_statement_timeout_is_the_30_minutes_ingest_md_says() -> None:
    from meta_study.ingest.mlflow_sql import STATEMENT_TIMEOUT_S, _short

    assert STATEMENT_TIMEOUT_S == 30 * 60
    doc = _doc("ingest.md")
    assert "longer than 30 minutes" in doc and "`STATEMENT_TIMEOUT_S` in `meta_study/ingest/mlflow_sql.py`" in doc
    line = _short(Exception("canceling statement due to statement timeout"), None)
    assert "PGOPTIONS" in line and f"{STATEMENT_TIMEOUT_S} s" in line
    assert "one line that names `PGOPTIONS`" in doc


# -- file ingest ---------------------------------------------------------------------------------

def test_a_mappings_fingerprint_ignores_the_order_ingest_md_says_it_ignores() -> None:
    from meta_study.ingest.mapping import parse_mapping

    a = parse_mapping({"rename": {"a": "run_id", "b": "us_task"}, "constants": {"seed": 1, "shots": 5},
                       "units": {"us_accuracy": "percent", "ds_accuracy": "percent"},
                       "params": {"p": "lr", "q": "seed"}, "tags": {"t": "researcher", "u": "model_name"},
                       "extra": ["x", "y"]}, "m")
    b = parse_mapping({"extra": ["y", "x"], "tags": {"u": "model_name", "t": "researcher"},
                       "params": {"q": "seed", "p": "lr"}, "units": {"ds_accuracy": "percent", "us_accuracy": "percent"},
                       "constants": {"shots": 5, "seed": 1}, "rename": {"b": "us_task", "a": "run_id"}}, "m")
    assert a.fingerprint() == b.fingerprint()
    # arch_family's first match wins: its order is part of the mapping
    c = parse_mapping({"arch_family": {"vit": "v", "resnet": "r"}}, "m")
    d = parse_mapping({"arch_family": {"resnet": "r", "vit": "v"}}, "m")
    assert c.fingerprint() != d.fingerprint()
    doc = _doc("ingest.md")
    assert ("whatever the order of the entries of its `rename`, `constants`, `units`, `params` and `tags` maps "
            "and its `extra` list") in doc
    assert "not of `arch_family`, whose first match wins" in doc


def test_a_sources_file_entry_is_told_its_mapping_key_as_ingest_md_quotes() -> None:
    from meta_study.ingest.files import ADD_MAPPING, ADD_MAPPING_ENTRY, said_for_entry

    assert said_for_entry(f"x.csv: FAILED: no column for run_id after mapping{ADD_MAPPING}").endswith(ADD_MAPPING_ENTRY)
    doc = _doc("ingest.md")
    assert f"`{ADD_MAPPING_ENTRY.strip()}`" in doc and f"`{ADD_MAPPING.strip()}`" in doc


def test_the_sources_file_lines_ingest_md_quotes_are_the_codes(tmp_path: Path) -> None:
    """The lines for files of a --sources-file entry, as ingest.md quotes them (``/abs`` for the
    absolute paths they give)."""
    from meta_study.ingest.files import ADD_MAPPING_ENTRY, refuse_unfit

    timm = REPO / "examples/data/timm"
    mappings = REPO / "examples/mappings"
    long_, wide = str(timm / "timm_us_ds.csv"), str(timm / "results-imagenet.csv")
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    errors = {}
    for path in (long_, wide, str(other)):
        ok, refused = refuse_unfit([path], None, in_sources_file=True)
        assert ok == [] and len(refused) == 1
        errors[path] = refused[0].error
    doc = _doc("ingest.md")
    said = f"give its entry in the sources file 'mapping: {mappings / 'timm_long.yaml'}' (shipped with meta-study; it fits its columns)"
    assert said in errors[long_]
    assert said.replace(str(REPO), "/abs") in doc
    joined = f"'uri: {timm}' with 'mapping: {mappings / 'timm_wide.yaml'}'"
    assert joined in errors[wide]
    assert f"`{joined.replace(str(REPO), '/abs')}`" in doc
    assert errors[str(other)].endswith(ADD_MAPPING_ENTRY.strip())


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_json_lines_are_checked_early_by_their_objects_keys_as_ingest_md_says(tmp_path: Path) -> None:
    from meta_study.ingest.files import refuse_unfit

    full = dict(run_id="r", us_task="u", us_accuracy=0.5, ds_task="d", ds_accuracy=0.5, eval_protocol="linear")
    bad = _jsonl(tmp_path / "bad.jsonl", [{"model": "m", "top1": 0.5}, {"model": "n", "top1": 0.6}])
    # the first object lacks a column that a later one has: judged by every object's keys, as reading it would
    later = _jsonl(tmp_path / "later.jsonl", [{k: v for k, v in full.items() if k != "eval_protocol"}, full])
    ok, refused = refuse_unfit([bad, later], None)
    assert ok == [later]
    assert [r.paths for r in refused] == [[bad]] and "no column for run_id" in refused[0].error
    assert ("a JSON Lines file's first object, and, when those keys do not fit, every object's, as reading it "
            "would) before anything is read") in _doc("ingest.md")


# -- analysis ------------------------------------------------------------------------------------

def test_us_needed_at_a_laws_saturation_is_100_percent_as_analysis_md_says() -> None:
    from meta_study.analysis import payoff
    from meta_study.analysis.laws import get_law

    p = dict(k=1.0, alpha=10.0, e_ir=0.1)
    sat = get_law("eq1").saturation(p)
    assert payoff.us_needed_many("eq1", [p], sat)[0] == 1.0
    # what the values alone said (the doc's example of the old answer)
    raw = float(payoff.us_needed_from_values(payoff._stack("eq1", [p], "predict"), sat)[0])
    assert f"{100 * raw:.1f}%" == "93.7%"
    doc = _doc("analysis.md")
    assert "A target at a law's saturation is reached only in the limit of 100% US (1.0, \"100%\")" in doc
    assert "(Eq. 1 with `k` 1, `α` 10 and `e_IR` 0.1 at 93.7% US)" in doc
    assert payoff.GRID == 4000 and "evaluates any curve (a law, or the headline) on 4,000 US accuracies" in doc


def test_the_explorers_search_legend_shows_only_while_a_search_marks_models() -> None:
    from meta_study.explorer import LEGEND

    assert "<span id=ex-leg-hit hidden>" in LEGEND and "matches the search" in LEGEND
    assert "document.getElementById('ex-leg-hit').hidden = hits === 0" in _src("meta_study/explorer.py")
    assert "\"matches the search\" only while a search marks models" in _doc("analysis.md")


def test_the_slopes_spread_of_the_laws_is_the_column_and_wording_analysis_md_names() -> None:
    from meta_study.analysis.answers import SPREAD
    from meta_study.analysis.tables import STEP_COLUMNS

    assert {"slope_plus1_lo", "slope_plus1_hi", "slope_plus5_lo", "slope_plus5_hi"} <= set(STEP_COLUMNS)
    doc = _doc("analysis.md")
    assert SPREAD == "(spread of the laws: " and f"0.53 DS pt per US pt {SPREAD}0.05-0.91)" in doc
    assert "`slope_plusK_lo/hi`" in doc and "`slope_plus1/3/5` with `_lo/_hi`" in doc


# -- training ------------------------------------------------------------------------------------

@pytest.mark.slow(15)   # importing torch and timm, under load
def test_run_trial_refuses_a_ds_task_named_twice_as_training_md_quotes() -> None:
    pytest.importorskip("torch")
    import dataclasses

    from meta_study.train import run_trial, smoke_config
    from meta_study.train.loop import TrialConfigError

    assert issubclass(TrialConfigError, ValueError)
    cfg = smoke_config()
    task = cfg.ds_tasks[0]
    with pytest.raises(TrialConfigError) as e:
        run_trial(dataclasses.replace(cfg, ds_tasks=(task, task)))
    assert str(e.value) == f"ds_tasks: {task!r} given 2 times: give each downstream task once"
    with pytest.raises(TrialConfigError, match="img_size=30 is not a multiple of its patch size 4"):
        run_trial(dataclasses.replace(cfg, img_size=30))   # the smoke ViT's patch 4
    doc = _doc("training.md")
    assert "as a `TrialConfigError` (`meta_study.train.loop`; a `ValueError`" in doc
    assert "(`ds_tasks: 'pets' given 2 times: give each downstream task once`" in doc
    assert "(`img_size=30 is not a multiple of its patch size 4`)" in doc


def test_the_warm_up_rounds_half_up_as_training_md_says() -> None:
    pytest.importorskip("torch")
    from meta_study.train.loop import TrainConfig, plan_steps

    assert plan_steps(TrainConfig(steps=10, warmup_fraction=0.05), 1000).warmup_steps == 1   # 0.5: half up
    assert plan_steps(TrainConfig(steps=50, warmup_fraction=0.05), 1000).warmup_steps == 3   # 2.5 (round(): 2)
    assert plan_steps(TrainConfig(steps=4, warmup_fraction=0.05), 1000).warmup_steps == 1   # 0.2: at least 1
    assert plan_steps(TrainConfig(steps=10, warmup_fraction=0.0), 1000).warmup_steps == 0
    assert "(rounded half up, and at least 1 step for a fraction above 0: 5% of 10 steps is 1)" in _doc("training.md")


# -- sweeps and the cluster ----------------------------------------------------------------------

def test_the_refused_trial_record_and_its_line_are_as_sweeps_md_says() -> None:
    src = _src("meta_study/tune/trial.py")
    m = re.search(r'^REFUSED_FILE = "([^"]+)"', src, re.MULTILINE)
    assert m is not None and m.group(1) == "meta_study_refused.json"
    doc = _doc("sweeps.md")
    assert f"`<trial id>/{m.group(1)}`" in doc
    assert "(an earlier attempt of this trial; not run again by this session's " in src
    assert "(`... (an earlier attempt of this trial; not run again by this session's retries: ...)`)" in doc
    assert "f\"retries: {REFUSED_FILE} in its trial directory)\")" in src


def test_a_sweep_name_on_an_object_store_may_hold_what_sweeps_md_lists() -> None:
    from meta_study.tune.preflight import NAME_IN_URI_CHARS

    m = re.search(r"only letters, digits and `([^`]+)`", _doc("sweeps.md"))
    assert m is not None
    letters_digits = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
    assert set(m.group(1).split()) | letters_digits == set(NAME_IN_URI_CHARS)


def test_submit_refuses_a_script_not_in_the_working_dir_as_cluster_md_says() -> None:
    from meta_study.tune.submit import absent_scripts

    assert absent_scripts(["python", "./sweeps/head-wd.py", "--smoke"], str(REPO)) == ["./sweeps/head-wd.py"]
    assert absent_scripts(["python3", "sweeps/head_wd.py", "--smoke"], str(REPO)) == []
    src = _src("meta_study/tune/submit.py")
    assert "the job's command runs {absent[0]}, which is not in {what} {working_dir}" in src
    assert "check the script's path" in src
    doc = _doc("cluster.md")
    assert ("`the job's command runs ./sweeps/head-wd.py, which is not in --working-dir . (...); check the "
            "script's path`") in doc
    assert "or one that is not there (a typo)" in _doc("sweeps.md")


# -- the record, the store, keys -----------------------------------------------------------------

def test_the_conflicting_duplicate_reason_is_as_schema_md_quotes() -> None:
    from meta_study.validation import _conflict_text

    key = dict(us_task="in", ds_task="c", eval_protocol="fewshot", shots=5, representation_layer=None)
    text = _conflict_text([dict(key, ds_accuracy=0.5, seed=1), dict(key, ds_accuracy=0.6, seed=2)],
                          ["ds_accuracy", "seed"])
    src = _src("meta_study/validation.py")
    assert 'f"conflicting duplicate key: {len(idx)} rows share this key{differ}"' in src
    assert f"`conflicting duplicate key: 2 rows share this key{text}`" in _doc("schema.md")


def test_a_ds_n_past_int64_is_a_reason_as_schema_md_says() -> None:
    import pandas as pd

    from meta_study.validation import validate

    f = pd.DataFrame(dict(source=["s"], run_id=["r"], us_task=["in"], ds_task=["c"], eval_protocol=["linear"],
                          us_accuracy=[0.5], ds_accuracy=[0.5]))
    f["extra"] = [{"ds_n": "1e5000"}]
    v = validate(f)
    assert v.rejected.reason.tolist() == ["extra: ds_n '1e5000' is no test-set size (a whole number of examples, at "
                                          "least 1; leave it empty where unknown)"]
    assert "and a count past int64, `1e5000`" in _doc("schema.md")


def test_keys_refuse_floats_and_bools_as_modules_and_store_md_say() -> None:
    from meta_study.keys import key_of
    from meta_study.store._store import _run_pairs

    assert key_of(["7", 7, None]) == "1:7|1:7|-"
    for v in (7.0, True):
        with pytest.raises(TypeError):
            key_of(["s", v])
        with pytest.raises(ValueError, match="delete_runs"):
            _run_pairs("delete_runs", [("s", v)])
    assert "key values are text or integers, a float or a bool is a `TypeError`" in _doc("modules.md")
    assert "a run id `7.0` read through pandas was keyed \"7.0\" and deleted nothing of run \"7\"" in _doc("store.md")


def test_a_default_tracking_uri_is_named_as_the_default_as_sweeps_md_says() -> None:
    src = _src("meta_study/tune/runner.py")
    assert "f\"the default tracking URI {head.removeprefix('--tracking-uri ')} (beside --storage-path \"" in src
    assert "f\"{p.storage}): {rest}\"" in src
    assert "`the default tracking URI ... (beside --storage-path ...): ...`" in _doc("sweeps.md")


def test_the_join_mapping_suggestions_ingest_md_quotes_are_the_codes(tmp_path: Path, monkeypatch) -> None:
    """The long timm table given the wide (join) mapping, and one table of the join given alone: each
    line names the shipped mapping that fits, as ingest.md quotes it (refused before any row is read)."""
    from click.testing import CliRunner

    from meta_study.cli import cli

    monkeypatch.chdir(REPO)
    doc = _doc("ingest.md")
    res = CliRunner().invoke(cli, ["ingest", "examples/data/timm/timm_us_ds.csv", "--mapping",
                                   "examples/mappings/timm_wide.yaml", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    said = "or use --mapping examples/mappings/timm_long.yaml (shipped with meta-study; it fits its columns)"
    assert "matched no input file; " in out and out.endswith(said)
    assert f"`... matched no input file; ...; {said}`" in doc
    res = CliRunner().invoke(cli, ["ingest", "examples/data/timm/results-imagenet.csv", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    said = ("use --mapping examples/mappings/timm_wide.yaml on examples/data/timm (shipped with meta-study; it joins "
            "this file with the tables beside it)")
    assert out.startswith("examples/data/timm/results-imagenet.csv: FAILED: ") and f"; {said}; " in out
    assert f"`results-imagenet.csv: FAILED: ...; {said}`" in doc
