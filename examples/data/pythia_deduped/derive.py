"""Derive us_ds.csv from the raw zero-shot lm-eval JSONs of the deduplicated Pythia models in raw/ (run from this
folder)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pythia import derive  # noqa: E402  (examples/data/pythia.py, shared with pythia and pythia_5shot)

# raw/<size>-deduped_step<N>.json, the repository's own file names; models pythia-<size>-deduped@step<N>
derive(table="pythia_deduped", sep="-deduped_step", shots=0, protocol=("zeroshot-lm", "zeroshot"), variant="-deduped")
