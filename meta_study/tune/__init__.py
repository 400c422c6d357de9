"""Sweeps on Ray Tune with MLflow tracking (imports ray: use it only where Ray is wanted).

- :mod:`.trial`: the trainable (one meta-study point per trial), single-process or a Ray Train
  TorchTrainer per trial.
- :mod:`.tracking`: the driver-side MLflow callback (parent run per sweep, child run per trial).
- :mod:`.writer`: the process that sends the callback's MLflow operations (no Ray), made of
  :mod:`._rest` (the REST client), :mod:`._shards` (writer threads, spool, replay) and
  :mod:`._child` (the child process's loop).
- :mod:`.runner`: arguments shared by ``sweeps/*.py``, per-trial resources, the Tuner, resume.
- :mod:`.sizing`: a trial's resources from its model's size (``sweeps/zoo.py``, ``scaling.py``).
- :mod:`.preflight`: checks before a sweep starts (secrets, resume and names, storage on every node).
- :mod:`.state`: the sweep's state in its storage path (record, run map, spool, writer heartbeat).
- :mod:`.finalize`: the end of a sweep (early-stopped trials evaluated, leftover runs settled).
- :mod:`.provenance`: git commit, code version, researcher, full checkpoint URIs.
- :mod:`.submit`: ``python -m meta_study.tune.submit``, ``ray job submit`` with that provenance.
"""
