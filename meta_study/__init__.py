"""meta-study: distributed sweeps and scaling-law meta-studies on Ray, MLflow and Parquet.

Importing this package is light: it pulls in neither torch nor ray. Heavy modules
(``meta_study.train``, ``meta_study.tune``, ``meta_study.analysis.parallel``) import them when used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("meta-study")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
