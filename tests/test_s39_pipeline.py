"""Review s39 of ingest/pipeline.py: each test failed on the code before its fix, but the two marked
"guard", which pin what the data_fraction refusal must leave as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_rows
from meta_study.errors import StoreLockedError
from meta_study.ingest import SourceBatch, SourceOptions, ingest_sources, open_sources
from meta_study.store import Store

HEAD = "run_id,us_task,us_accuracy,ds_task,ds_accuracy,eval_protocol,data_fraction"


def _ingest(path: Path, store: Store):
    (rep,) = ingest_sources(open_sources([str(path)], None, SourceOptions()), store)
    return rep


def test_a_large_file_with_data_fraction_in_percent_is_refused_whole(tmp_path: Path, monkeypatch) -> None:
    """A file read in pieces, its data_fraction in percent (100, 50, ... 20, then 0.5 and 1): validation
    quarantines values <= 1 among percents one piece at a time, so the last piece's 0.5 % and 1 %
    runs were stored as 0.5 and 1.0 (half and full data), exit 0. Refused whole now, and the line
    does not tell the user to set a unit that a mapping refuses for data_fraction."""
    from meta_study.ingest import files

    monkeypatch.setattr(files, "CHUNK_ROWS", 2)          # pieces of 2 rows, for a file above 120 bytes
    f = tmp_path / "big.csv"
    vals = [100, 50, 25, 10, 5, 20, 0.5, 1]
    f.write_text(f"{HEAD}\n" + "".join(f"r{i},up,0.5,a,0.4,linear,{v}\n" for i, v in enumerate(vals)))
    st = Store(str(tmp_path / "st"))
    rep = _ingest(f, st)
    assert not rep.ok and rep.new == 0, rep.line()
    assert not st.exists() or st.read().num_rows == 0
    line = rep.line()
    assert "data_fraction is in percent, not a fraction: 6 of 8 values are in (1, 100]" in line, line
    assert "nothing of this source was stored" in line and "units:" not in line, line
    assert "data_fraction has no unit setting" in line, line


def test_a_data_fraction_of_fractions_with_a_stray_percent_is_stored(tmp_path: Path) -> None:
    """Guard: the refusal is for a column mostly in percent: one stray 10 among fractions is quarantined alone."""
    f = tmp_path / "f.csv"
    f.write_text(f"{HEAD}\n" + "".join(f"r{i},up,0.5,a,0.4,linear,{v}\n" for i, v in enumerate([1, 0.5, 0.25, 10])))
    st = Store(str(tmp_path / "st"))
    rep = _ingest(f, st)
    assert rep.ok and rep.new == 3 and rep.quarantined == 1, rep.line()


class _Rows:
    """A source of one batch of canonical rows (an MLflow page: ``replace_runs`` False), or one
    whose store is locked by another writer."""

    def __init__(self, label: str, rows=None, *, locked: bool = False) -> None:
        self.label, self.rows, self.locked = label, rows, locked

    def batches(self, store: Store, progress):
        if self.locked:
            raise StoreLockedError(f"{store.uri}: locked by another writer")
        yield SourceBatch(rows=self.rows)


def test_a_page_with_data_fraction_in_percent_is_quarantined_not_refused(tmp_path: Path) -> None:
    """Guard: an MLflow page is no whole input, and a run's params cannot be rewritten: data_fraction has
    no unit to set, so a refused page would block the source for good. Its percents are quarantined
    by validation, and the page's other rows stored."""
    rows = make_rows(4, source="m", ds_tasks=("a",)).astype(object)
    rows["data_fraction"] = [50, 25, 1, None]
    st = Store(str(tmp_path / "st"))
    (rep,) = ingest_sources([_Rows("m", rows)], st)
    assert rep.ok and rep.new == 1 and rep.quarantined == 3, rep.line()


def test_a_locked_store_after_stored_sources_says_what_they_stored(tmp_path: Path) -> None:
    """Source 2 met a locked store: the ingest stops with the lock's one line, and the command
    shows no source line; it said nothing of the rows source 1 stored (they stay), as if nothing was."""
    st = Store(str(tmp_path / "st"))
    with pytest.raises(StoreLockedError) as e:
        ingest_sources([_Rows("a", make_rows(2, source="a")), _Rows("b", locked=True)], st)
    assert str(e.value) == (f"{st.uri}: locked by another writer; this ingest stored before it (and keeps): "
                            "a: 4 new, 0 updated, 0 quarantined"), str(e.value)
    assert st.read().num_rows == 4
    # nothing committed before: the error as it was
    with pytest.raises(StoreLockedError, match=r"locked by another writer$"):
        ingest_sources([_Rows("b", locked=True)], Store(str(tmp_path / "st2")))
