"""The refit job as a script, for Ray jobs and schedulers: the arguments of ``meta-study refit``.

    python analysis/refit.py --store STORE [--source URI ...] [--tracking-uri URI] [--out DIR] [--every 1h]
    ray job submit --working-dir . -- python analysis/refit.py --store s3://lab/meta-study/store \\
        --source http://mlflow.lab:5000 --tracking-uri http://mlflow.lab:5000 --out /mnt/refits --address auto

Inside a Ray job, pass ``--address auto`` so sensitivity and bootstrap use the job's cluster.
Cost: a no-op (nothing changed) takes seconds; a full refit is dominated by bootstrap
(~0.3 us per point-fit x 1000 resamples x 2 frontiers per changed group).
"""

import sys

from meta_study.cli import main

if __name__ == "__main__":
    main(["refit", *sys.argv[1:]])
