"""Derive us_ds.csv from the raw Pythia five-shot lm-eval JSONs in raw/ (run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pythia import derive  # noqa: E402  (examples/data/pythia.py, shared with pythia)

# raw/<size>-5shot_step<N>.json, the repository's own file names. In-context examples, not meta-study's
# `fewshot` (a linear probe on k examples per class): `other`
derive(table="pythia_5shot", sep="-5shot_step", shots=5, protocol=("fewshot-lm", "other"))
