"""Derive us_ds.csv from the lm-evaluation-harness XCOPA JSONs in raw/, with English COPA from the
common-sense JSONs beside them as US (XCOPA has no English set; run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lm_eval import derive  # noqa: E402  (examples/data/lm_eval.py, shared by the lm_eval_* tables)

derive(us="copa", suffix="_xcopa_0-shot.json", table="lm_eval_xcopa", us_suffix="_common_sense_reasoning_0-shot.json")
