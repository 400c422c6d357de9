"""Free what a stopped data-parallel trial leaves reserved, while the sweep runs.

A trial run as a Ray Train ``TorchTrainer`` (``--workers-per-trial`` > 1) reserves its workers'
CPUs/GPUs in a placement group that the Train controller, an actor inside the trial, creates.
When Tune stops such a trial early (ASHA) or it fails, the group outlives the controller until
the driver exits (Ray ties it to the job too, ray-project/ray#54305), and Train's own cleaner
needs the State API, which a Ray of our own (no dashboard) does not run. Unfreed, each such group
holds a trial's resources for the rest of the sweep: on a 2-CPU machine with 2-worker trials the
first early stop left 0 CPUs for every later trial and for the end-of-sweep evaluations, and the
sweep waited forever. :func:`~meta_study.ray_session.free_orphaned_placement_groups` removes the
groups whose creator is dead; this callback calls it from Tune's loop, at most every
``EVERY_S`` seconds (one GCS call each).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback

from ..ray_session import free_orphaned_placement_groups

#: Seconds between two looks at the placement group table from Tune's loop.
EVERY_S = 2.0


class FreeOrphanedGroups(Callback):
    """A Tune callback (a class: Tune pickles the run config's callbacks with the experiment)."""

    def __init__(self) -> None:
        self._last = 0.0
        self.freed: list[str] = []

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < EVERY_S:
            return
        self._last = now
        freed = free_orphaned_placement_groups()
        if freed:
            self.freed.extend(freed)
            print(f"freed {len(freed)} placement group(s) left reserved by stopped data-parallel trials "
                  f"(ray-project/ray#54305)", file=sys.stderr, flush=True)

    def __getstate__(self) -> dict[str, Any]:
        return {"_last": 0.0, "freed": []}
