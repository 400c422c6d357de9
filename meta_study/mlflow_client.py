"""One way to get an MLflow client, with meta-study's defaults.

MLflow 3 sends usage telemetry from a background thread, and that thread sets and unsets an
environment variable while other threads may be iterating ``os.environ`` (``urllib`` does, for
proxies), which fails intermittently with ``KeyError``. A lab's tracking tool should not phone
home unasked either, so telemetry is off unless the user set ``MLFLOW_DISABLE_TELEMETRY`` themselves.
The "View run at ..." lines that ``set_terminated`` prints (one extra request each) are off too.
"""

from __future__ import annotations

import os
from typing import Any


def mlflow_client(tracking_uri: str) -> Any:
    """``MlflowClient(tracking_uri)`` with telemetry off by default (see the module doc)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # set_terminated would print "View run ... at ..." and make an extra get_run call to do so
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def artifact_location(tracking_uri: str, name: str) -> str | None:
    """For a local sqlite tracking store, where an experiment's artifacts go: next to the
    database (MLflow would otherwise use ./mlruns relative to wherever the job runs); None for
    servers, which choose for themselves."""
    import re
    from pathlib import Path

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).resolve().as_uri()
    return None
