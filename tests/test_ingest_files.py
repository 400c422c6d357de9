"""File ingest: the real timm results (long and wide), formats, mappings and their errors."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meta_study.errors import UserError
from meta_study.ingest import ingest_sources, load_mapping, open_sources
from meta_study.store import Store
from conftest import MAPPINGS, make_rows, run_cli

TIMM_DS = {"imagenet-real": 1556, "imagenetv2": 1556, "sketch": 1556, "imagenet-a": 1555, "imagenet-r": 1556}


def _ingest(store, *specs, mapping=None):
    m = load_mapping(str(mapping)) if mapping else None
    return ingest_sources(open_sources([str(x) for x in specs], m), store)


def test_timm_long_table(tmp_path, timm_dir):
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, timm_dir / "timm_us_ds.csv", mapping=MAPPINGS / "timm_long.yaml")
    assert (rep.new, rep.quarantined, rep.error) == (7779, 0, None)
    df = s.to_pandas()
    assert df.groupby("ds_task").size().to_dict() == TIMM_DS
    assert df["run_id"].nunique() == 1556 and df["model_name"].nunique() == 1556 - 290
    assert df["us_task"].unique().tolist() == ["imagenet"]
    assert (df["eval_protocol"] == "shift").all() and df["shots"].isna().all()
    eva = df[df["run_id"] == "eva02_large_patch14_448.mim_m38m_ft_in22k_in1k@448"].set_index("ds_task")
    assert eva.loc["imagenet-real", "us_accuracy"] == pytest.approx(0.90056)
    assert eva.loc["imagenet-real", "ds_accuracy"] == pytest.approx(0.91144)
    assert eva.loc["imagenet-real", "param_count"] == 305_080_000
    assert eva.loc["imagenet-real", "arch_family"] == "vit"
    # second ingest: the same file (by sha256), mapping and schema: not even read, nothing written
    (rep2,) = _ingest(s, timm_dir / "timm_us_ds.csv", mapping=MAPPINGS / "timm_long.yaml")
    assert (rep2.new, rep2.updated, rep2.unchanged, rep2.commits) == (0, 0, 0, 0)
    assert rep2.stats == {"unchanged_files": 1} and "not read again" in rep2.line()
    assert s.version == 1


def test_a_changed_file_or_another_writer_of_its_source_is_read_again(tmp_path, timm_dir):
    s = Store(str(tmp_path / "st"))
    src = tmp_path / "timm.csv"
    src.write_bytes((timm_dir / "timm_us_ds.csv").read_bytes())
    mapping = MAPPINGS / "timm_long.yaml"
    _ingest(s, src, mapping=mapping)
    # the same rows in a file that differs by one byte (a trailing newline): read, and unchanged
    src.write_bytes(src.read_bytes() + b"\n")
    (rep,) = _ingest(s, src, mapping=mapping)
    assert (rep.new, rep.updated, rep.unchanged) == (0, 0, 7779)
    # one value edited: read again, that row updated
    text = src.read_text().splitlines()
    head = text[0].split(",")
    first = text[1].split(",")
    col = next(i for i, h in enumerate(head) if h in ("top1", "us_top1", "imagenet_top1", "top1_imagenet"))
    first[col] = str(round(float(first[col]) - 0.5, 3))
    src.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    (rep,) = _ingest(s, src, mapping=mapping)
    assert rep.updated >= 1 and rep.new == 0
    # a mapping file that parses to the same mapping is the same mapping: skipped
    other = tmp_path / "m.yaml"
    other.write_text(mapping.read_text() + "\n# a comment changes nothing\n")
    (rep,) = _ingest(s, src, mapping=other)
    assert rep.stats.get("unchanged_files") == 1
    # another file ingested as the same source replaced its rows: this one is read again
    impostor = tmp_path / "elsewhere" / "timm.csv"
    impostor.parent.mkdir()
    impostor.write_text("\n".join(src.read_text().splitlines()[:50]) + "\n")
    _ingest(s, impostor, mapping=mapping)
    (rep,) = _ingest(s, src, mapping=mapping)
    assert "unchanged_files" not in rep.stats and rep.unchanged > 0


def test_timm_wide_files_joined_on_model_and_img_size(tmp_path, timm_dir):
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, timm_dir, mapping=MAPPINGS / "timm_wide.yaml")
    assert rep.error is None
    # 5 x 1556 downstream rows, minus resnet50.tv_in1k missing from imagenet-a; the one
    # imagenet-a row without an upstream row (resmlp_24_224.fb_dino) is quarantined
    assert (rep.new, rep.quarantined) == (7779, 1)
    assert rep.stats == {"skipped_files": 3}  # the two -clean files and timm_us_ds.csv
    df = s.to_pandas()
    assert df.groupby("ds_task").size().to_dict() == TIMM_DS
    assert df["run_id"].nunique() == 1556
    # 290 names appear at two image sizes: (model, img_size) is the run
    assert (df.groupby("model_name")["run_id"].nunique() == 2).sum() == 290
    q = s.quarantine().to_pandas()
    assert len(q) == 1 and "resmlp_24_224.fb_dino" in q.iloc[0]["reason"] and "missing US metric" in q.iloc[0]["reason"]
    assert json.loads(q.iloc[0]["raw"])["_file"] == "results-imagenet-a.csv"
    # percent -> fraction, millions with thousands separators -> count
    giant = df[df["model_name"] == "eva_giant_patch14_336.clip_ft_in1k"].iloc[0]
    assert giant["param_count"] == 1_013_010_000
    assert 0 < df["us_accuracy"].min() and df["us_accuracy"].max() < 1
    (rep2,) = _ingest(s, timm_dir, mapping=MAPPINGS / "timm_wide.yaml")
    assert (rep2.new, rep2.updated, rep2.quarantined, rep2.commits) == (0, 0, 0, 0)


def test_long_and_wide_agree_on_every_accuracy(tmp_path, timm_dir):
    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    _ingest(a, timm_dir / "timm_us_ds.csv", mapping=MAPPINGS / "timm_long.yaml")
    _ingest(b, timm_dir, mapping=MAPPINGS / "timm_wide.yaml")
    cols = ["run_id", "ds_task", "us_accuracy", "ds_accuracy", "param_count"]
    x = a.to_pandas()[cols].sort_values(["run_id", "ds_task"]).reset_index(drop=True)
    y = b.to_pandas()[cols].sort_values(["run_id", "ds_task"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9)


def _canonical_frame():
    df = make_rows(3, ds_tasks=("a",))
    df["started_at"] = df["started_at"].astype(str)
    df["ended_at"] = df["ended_at"].astype(str)
    df["extra"] = [json.dumps(e) for e in df["extra"]]
    return df


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_canonical_exports_need_no_mapping(tmp_path, fmt):
    df = _canonical_frame()
    df["notes"] = "kept in extra"
    path = tmp_path / f"runs.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, path)
    assert (rep.new, rep.quarantined, rep.error) == (3, 0, None)
    back = s.to_pandas().sort_values("run_id")
    assert back["ds_accuracy"].tolist() == pytest.approx(df["ds_accuracy"].tolist())
    assert dict(back.iloc[0]["extra"]) == {"note": "run 0", "notes": "kept in extra"}


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    df = _canonical_frame().astype(object)
    df.loc[0, "ds_accuracy"] = "NaN"
    df.loc[1, "us_accuracy"] = 87.5
    path = tmp_path / "runs.csv"
    dup = df.iloc[[2]].copy()
    dup["ds_accuracy"] = 0.01  # same key as row 2, other value: a conflict
    pd.concat([df, dup]).to_csv(path, index=False)
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, path)
    assert (rep.new, rep.quarantined) == (0, 4)
    reasons = sorted(s.quarantine().to_pandas()["reason"])
    assert reasons[0].startswith("conflicting duplicate key")
    assert reasons[2] == "ds_accuracy: NaN"
    assert reasons[3].startswith("us_accuracy: 87.5 out of range [0, 1] (a percent")


def test_mapping_units_constants_and_templates(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"name": ["vit_b16", "mixer_b16", "resnet50"], "size": [224, 224, 160],
                  "up_err": [20.0, 25.0, 30.0], "down": [70.0, 60.0, 50.0], "who": ["ann"] * 3}).to_csv(path, index=False)
    mp = tmp_path / "m.yaml"
    mp.write_text("""
source: ann-export
rename: {name: model_name, up_err: us_accuracy, down: ds_accuracy, who: researcher}
units: {us_accuracy: error_percent, ds_accuracy: percent}
run_id: "{name}-{size}"
constants: {us_task: jft, ds_task: pets, eval_protocol: fewshot, shots: 10}
""")
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, path, mapping=mp)
    assert rep.new == 3, rep.line()
    df = s.to_pandas().set_index("run_id")
    assert df.loc["vit_b16-224", "us_accuracy"] == pytest.approx(0.8)
    assert df.loc["resnet50-160", "ds_accuracy"] == pytest.approx(0.5)
    assert df["arch_family"].to_dict() == {"vit_b16-224": "vit", "mixer_b16-224": "mixer", "resnet50-160": "resnet"}
    assert set(df["source"]) == {"ann-export"} and set(df["shots"]) == {10}
    assert dict(df.loc["vit_b16-224", "extra"]) == {"size": "224"}


@pytest.mark.parametrize("text,message", [
    ("rename: {a: nope}", "rename.a: unknown canonical column 'nope'"),
    ("units: {us_accuracy: percnt}", "units.us_accuracy: unknown unit 'percnt'"),
    ("constants: {eval_protocol: kfold}", "unknown protocol 'kfold'"),
    ("colums: {}", "unknown key(s) colums"),
    ("rename: [1, 2", "cannot read mapping"),
    ("- just a list", "a mapping must be a YAML map"),
    ("join: {on: [a], upstream: {file: x, task: t, accuracy: a}, downstream: []}", "join: needs 'key'"),
    ("rename: {a: ingested_at}", "filled by the store"),
    ("arch_family: {vit: '('}", "arch_family.vit: bad regex"),
    ("constants: {us_task: [a, b]}", "constants.us_task: must be a single value"),   # was a ValueError traceback
    ("run_id: '{x.y}'", "run_id: {x.y} in '{x.y}' is not a column name"),          # was a KeyError
    ("run_id: '{}-{0}'", "is not a column name"),
    ("run_id: '{model'", "run_id: bad template"),
])
def test_bad_mappings_name_the_problem(tmp_path, text, message):
    mp = tmp_path / "m.yaml"
    mp.write_text(text)
    with pytest.raises(UserError) as e:
        load_mapping(str(mp))
    assert str(e.value).startswith(str(mp)) and message in str(e.value)


def test_mapping_errors_against_the_file(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"a": [1]}).to_csv(path, index=False)
    mp = tmp_path / "m.yaml"
    mp.write_text("rename: {b: model_name}")
    (rep,) = _ingest(Store(str(tmp_path / "st")), path, mapping=mp)
    assert "renames column(s) b not in the file" in rep.error
    (rep,) = _ingest(Store(str(tmp_path / "st")), path)
    assert "no column for run_id" in rep.error and "--mapping" in rep.error


def test_join_table_must_match_exactly_one_file(tmp_path, timm_dir):
    with pytest.raises(UserError, match="matched no input file"):
        list(open_sources([str(timm_dir / "results-imagenet.csv")], load_mapping(str(MAPPINGS / "timm_wide.yaml")))[0]
             .batches(Store(str(tmp_path / "st")), lambda *a: None))


def test_unreadable_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: invalid JSON"):
        list(open_sources([str(bad)], None)[0].batches(Store(str(tmp_path / "st")), lambda *a: None))
    with pytest.raises(UserError, match="unknown file type"):
        (tmp_path / "x.xlsx").write_text("")
        open_sources([str(tmp_path / "x.xlsx")], None)
    with pytest.raises(UserError, match="no such file"):
        open_sources([str(tmp_path / "missing.csv")], None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no CSV"):
        open_sources([str(tmp_path / "empty")], None)


def test_two_files_with_one_name_are_refused(tmp_path):
    # both would get source 'x' from their file name, and b's rows would replace a's
    rows = _canonical_frame().drop(columns=["source"], errors="ignore")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        rows.to_csv(tmp_path / d / "x.csv", index=False)
    store = str(tmp_path / "st")
    r = run_cli("ingest", str(tmp_path / "a" / "x.csv"), str(tmp_path / "b" / "x.csv"), "--store", store)
    assert r.returncode == 2 and "both would be source 'x'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "st").exists() or len(Store(store).to_pandas()) == 0
    # one file named twice is one source, not a clash
    r = run_cli("ingest", str(tmp_path / "a" / "x.csv"), str(tmp_path / "a" / "x.csv"), "--store", store)
    assert r.returncode == 0, r.stderr


def test_inputs_that_used_to_hang_or_abort_fail_in_one_line(tmp_path):
    import gzip
    import time

    good = tmp_path / "good.csv"
    _canonical_frame().to_csv(good, index=False)
    full = gzip.compress(good.read_bytes() * 50)
    (tmp_path / "cut.csv.gz").write_bytes(full[: len(full) // 2])                  # truncated gzip
    lines = "\n".join(json.dumps(r) for r in _canonical_frame().to_dict("records"))
    z = gzip.compress(((lines + "\n") * 50).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(z[: len(z) // 2])
    (tmp_path / "wide.csv").write_text(",".join(f"c{i}" for i in range(100_000)) + "\n1\n")   # 100k columns
    (tmp_path / "oneline.csv").write_bytes(b"x" * (5 << 20))                                 # no newline
    store = str(tmp_path / "st")
    for bad, needle in (("cut.csv.gz", "truncated compressed file"), ("cut.jsonl.gz", "truncated compressed file"),
                        ("wide.csv", "100,000 columns"), ("oneline.csv", "longer than 1 MB")):
        t0 = time.monotonic()
        r = run_cli("ingest", str(tmp_path / bad), str(good), "--store", store)
        assert time.monotonic() - t0 < 60
        assert r.returncode == 1, (bad, r.returncode, r.stderr)       # the good file after it still went in
        assert needle in r.stderr and bad in r.stderr and "Traceback" not in r.stderr and "Aborted" not in r.stderr
        assert "3 new" in r.stdout or "unchanged since its last ingest" in r.stdout


def test_a_task_name_too_long_for_a_directory_loses_only_its_row(tmp_path):
    df = _canonical_frame()
    df.loc[0, "ds_task"] = "t" * 300
    df.loc[1, "ds_task"] = "__HIVE_DEFAULT_PARTITION__"
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    store = tmp_path / "st"
    r = run_cli("ingest", str(path), "--store", str(store))
    assert r.returncode == 0 and "2 quarantined" in r.stdout, r.stdout + r.stderr
    assert len(pd.read_parquet(store)) == len(df) - 2       # a plain reader still reads the store


def test_a_large_file_is_read_in_pieces_and_committed_once(tmp_path, monkeypatch):
    """Bounded memory: a CSV above the piece size is validated and staged piece by piece, and
    still lands as one commit with exactly the rows, quarantine and line numbers of a whole read."""
    from meta_study.ingest import files

    df = make_rows(900, ds_tasks=("a", "b", "c"), run_prefix="r").drop(columns=["extra"])   # 2,700 rows
    df.loc[1500, "ds_accuracy"] = 7.5                      # a bad row in the third piece
    dup = df.iloc[[10]]                                    # an identical duplicate, in the last piece
    conflict = df.iloc[[20]].assign(ds_accuracy=0.123)     # a conflicting duplicate, in the last piece
    pd.concat([df, dup, conflict]).to_csv(tmp_path / "big.csv", index=False)
    whole = Store(str(tmp_path / "whole"))
    (ref,) = _ingest(whole, tmp_path / "big.csv")
    assert whole.version == 1

    monkeypatch.setattr(files, "CHUNK_ROWS", 500)          # 6 pieces
    pieces = []
    stream = Store.commit_stream

    def counting(self, batches, **kw):
        return stream(self, (pieces.append(b[0].num_rows) or b for b in batches), **kw)
    monkeypatch.setattr(Store, "commit_stream", counting)
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, tmp_path / "big.csv")
    assert s.version == 1 and rep.commits == 1             # one transaction
    assert len(pieces) == 6 and sum(pieces) == 2702 - 1      # validated piece by piece (one row rejected)
    assert (rep.new, rep.quarantined, rep.error) == (ref.new, ref.quarantined, None) == (2698, 3, None)
    cols = ["source", "run_id", "ds_task", "ds_accuracy"]
    pd.testing.assert_frame_equal(s.to_pandas()[cols].sort_values(cols).reset_index(drop=True),
                                  whole.to_pandas()[cols].sort_values(cols).reset_index(drop=True))
    q, qref = s.quarantine().to_pandas(), whole.quarantine().to_pandas()
    assert sorted(q["reason"]) == sorted(qref["reason"])
    assert '"_line": 1502' in q.loc[q["reason"].str.contains("out of range"), "raw"].iloc[0]   # header is line 1
    assert not any((tmp_path / "st" / "_staging").iterdir())

    # a piece that cannot be parsed: nothing of the file is stored, nothing staged is left
    bad = tmp_path / "broken.csv"
    text = (tmp_path / "big.csv").read_text().splitlines()
    text[2000] = text[2000] + ',"unterminated'
    bad.write_text("\n".join(text) + "\n")
    t = Store(str(tmp_path / "t"))
    (rep,) = _ingest(t, bad)
    assert rep.error and "broken.csv" in rep.error and not t.exists()
    assert not (tmp_path / "t" / "_staging").exists() or not any((tmp_path / "t" / "_staging").iterdir())


def test_a_large_file_replaces_its_stale_rows_in_a_second_commit(tmp_path, monkeypatch):
    """A file read in pieces learns its stale rows only at its end: its rows go in first, without
    the file's state; a second commit removes the stale rows and records the state. Killed between
    the two, the next ingest reads the file again and finishes."""
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 500)
    df = make_rows(900, ds_tasks=("a", "b", "c"), shots=(1,)).drop(columns=["extra", "source"])   # 2,700 rows
    path = tmp_path / "big.csv"
    df.to_csv(path, index=False)
    s = Store(str(tmp_path / "st"))
    (rep,) = _ingest(s, path)
    assert (rep.new, rep.commits) == (2700, 1)                      # a new store: one commit, as before
    fixed = df[df["run_id"] != "r7"].copy()                         # r7 left the file: kept (no --drop-missing)
    fixed.loc[fixed["run_id"] == "r5", "shots"] = 10                # r5's key corrected: its 3 old rows are stale
    fixed.to_csv(path, index=False)

    commit = Store.commit

    def killed(self, *a, **kw):
        if (kw.get("info") or {}).get("step") == "stale rows":
            raise KeyboardInterrupt("killed between the two commits")
        return commit(self, *a, **kw)
    monkeypatch.setattr(Store, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        _ingest(s, path)
    assert len(s.to_pandas()) == 2700 + 3                          # the new rows in, the stale ones still there
    monkeypatch.setattr(Store, "commit", commit)

    (rep,) = _ingest(s, path)                                       # read again: its state was not recorded
    assert "unchanged_files" not in rep.stats
    assert (rep.new, rep.deleted, rep.kept_runs, rep.commits) == (0, 3, 1, 1)
    back = s.to_pandas()
    assert len(back) == 2700 and back.loc[back["run_id"] == "r5", "shots"].tolist() == [10, 10, 10]
    assert len(back[back["run_id"] == "r7"]) == 3
    (rep,) = _ingest(s, path)
    assert rep.stats.get("unchanged_files") == 1


def test_drop_missing_with_files_that_share_a_source_is_refused(tmp_path):
    for name in ("a", "b"):
        _canonical_frame().to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "m.yaml").write_text("source: lab\n")
    r = run_cli("ingest", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--mapping", str(tmp_path / "m.yaml"),
                "--drop-missing", "--store", str(tmp_path / "st"))
    assert r.returncode == 2 and "--drop-missing: 2 files share the source 'lab'" in r.stderr, r.stderr


def test_every_shipped_public_table_ingests_as_is(tmp_path):
    """`meta-study ingest examples/data/*/us_ds.csv --store S` with no mapping: each table under its
    own source (every file is named us_ds.csv; each names its source in a column), nothing
    quarantined, meta-study's protocol vocabulary, the table's own protocol kept in extra. Before,
    every one failed (no run_id column, protocols such as natural-shift or icl-lm), and two of them
    together were refused as one source."""
    from conftest import REPO

    files = sorted((REPO / "examples" / "data").glob("*/us_ds.csv"))
    assert len(files) >= 10     # every shipped table (tests/test_s47_docs.py: each listed in the README)
    r = run_cli("ingest", *map(str, files), "--store", str(tmp_path / "s"), "--quiet")
    assert r.returncode == 0, r.stderr
    s = Store(str(tmp_path / "s"))
    df = s.to_pandas()
    assert len(s.quarantine()) == 0
    for f in files:
        raw = pd.read_csv(f)
        got = df[df["source"] == f.parent.name]
        assert len(got) == len(raw) and got["run_id"].nunique() == raw["run_id"].nunique(), f
        assert sorted(got["extra"].map(lambda e: dict(e)["protocol"]).unique()) == sorted(raw["protocol"].unique())
    again = run_cli("ingest", *map(str, files), "--store", str(tmp_path / "s"))     # each keeps its own state
    assert again.returncode == 0 and again.stdout.count("unchanged since its last ingest") == len(files), again.stdout
    # files without a source column of their own still take their name: two named alike are refused
    plain = [tmp_path / d / "us_ds.csv" for d in ("x", "y")]
    for p in plain:
        p.parent.mkdir()
        pd.read_csv(files[0]).drop(columns=["source"]).head(5).to_csv(p, index=False)
    r = run_cli("ingest", str(files[0]), *map(str, plain), "--store", str(tmp_path / "t"))
    assert r.returncode == 2 and f"{plain[0]} and {plain[1]}: both would be source 'us_ds'" in r.stderr, r.stderr
    r = run_cli("ingest", str(files[0]), str(plain[0]), "--store", str(tmp_path / "t"), "--quiet")
    assert r.returncode == 0 and set(Store(str(tmp_path / "t")).to_pandas()["source"]) == {files[0].parent.name, "us_ds"}


def test_a_constant_never_overwrites_the_inputs_own_values(tmp_path):
    """`constants: {eval_protocol: shift}` on a file with its own eval_protocol column replaced
    every value without a word; now refused naming the column (equal values are fine)."""
    df = _canonical_frame()
    path = tmp_path / "runs.csv"
    df.to_csv(path, index=False)
    own = str(df["eval_protocol"].iloc[0])
    other = next(p for p in ("shift", "linear") if p != own)
    for value, ok in ((other, False), (own, True)):
        m = tmp_path / f"m-{value}.yaml"
        m.write_text(f"constants: {{eval_protocol: {value}}}\n")
        r = run_cli("ingest", str(path), "--mapping", str(m), "--store", str(tmp_path / f"s-{value}"))
        if ok:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 2 and f"constants.eval_protocol='{other}' would overwrite the input's own " \
                f"eval_protocol values (3 rows, e.g. '{own}')" in r.stderr, r.stderr
            assert not (tmp_path / f"s-{value}").exists() or len(Store(str(tmp_path / f"s-{value}")).to_pandas()) == 0
