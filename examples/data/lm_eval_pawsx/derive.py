"""Derive us_ds.csv from the lm-evaluation-harness PAWS-X JSONs in raw/ (run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lm_eval import derive  # noqa: E402  (examples/data/lm_eval.py, shared by the lm_eval_* tables)

derive(us="pawsx_en", suffix="_pawsx_0-shot.json", table="lm_eval_pawsx")
