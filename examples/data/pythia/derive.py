"""Derive us_ds.csv from the raw Pythia zero-shot lm-eval JSONs in raw/ (run from this folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pythia import derive  # noqa: E402  (examples/data/pythia.py, shared with pythia_5shot)

derive(table="pythia", sep="_step", shots=0, protocol=("zeroshot-lm", "zeroshot"))  # raw/<size>_step<N>.json
