"""Sweeps on Ray Tune with MLflow tracking (imports ray: use it only where Ray is wanted).

- :mod:`.trial`: the trainable (one meta-study point per trial), single-process or a Ray Train
  TorchTrainer per trial.
- :mod:`.tracking`: the driver-side MLflow callback (parent run per sweep, child run per trial).
- :mod:`.runner`: arguments shared by ``sweeps/*.py``, the Tuner, resume, finalization.
"""
