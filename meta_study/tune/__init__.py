"""Sweeps on Ray Tune with MLflow tracking (imports ray: use it only where Ray is wanted).

- :mod:`.trial`: the trainable (one meta-study point per trial), single-process or a Ray Train
  TorchTrainer per trial.
- :mod:`.tracking`: the driver-side MLflow callback (parent run per sweep, child run per trial).
- :mod:`.writer`: the process that sends the callback's MLflow operations (no Ray), made of
  :mod:`._rest` (the REST client), :mod:`._shards` (writer threads, spool, replay) and
  :mod:`._child` (the child process's loop).
- :mod:`.runner`: arguments shared by ``sweeps/*.py``, the Tuner, resume, finalization.
"""
