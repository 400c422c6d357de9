"""A sweep drawn by Optuna without early stopping (the zoo's space): what the resume tests run,
because a restored Optuna search draws a lost trial's configuration again under a new trial id.

    python tests/optuna_sweep.py --smoke --num-samples 3 ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meta_study.tune.runner import SweepSpec, sweep_main  # noqa: E402
from sweeps.zoo import ZooSpace  # noqa: E402

SPEC = SweepSpec(name="optuna_zoo", doc=__doc__, space=lambda options: ZooSpace(options.smoke), search="optuna",
                 smoke_samples=3, base=dict(img_size=32, batch_size=512, eval_every=500), smoke=dict(eval_every=15))

if __name__ == "__main__":
    sweep_main(SPEC)
