"""examples/data/pythia/ rebuilds from its raw files (session 56): its ``derive.py`` and pythia_5shot's share
examples/data/pythia.py (which imports ``n_from_stderr`` and the column list from lm_eval.py), and
``derive.py``, run on a copy of the folder with the shared ``canonical.py``, ``lm_eval.py`` and ``pythia.py``
beside it, writes the shipped ``us_ds.csv`` byte for byte and prints its summary. The five-shot table's
rebuild is in test_s56_tables2.py."""

from __future__ import annotations

from pathlib import Path

from tables_rebuild import check_rebuild


def test_pythia_derive_rebuilds_the_shipped_us_ds(tmp_path: Path) -> None:
    check_rebuild(tmp_path, "pythia", "23 files, 23 models, 64 ds_tasks, 1472 rows", shared=("lm_eval.py", "pythia.py"))
