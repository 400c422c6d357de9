"""Where meta-study's Ray comes from: a cluster the user names, or a private one of its own.

Every entry point (the analysis fan-out, sweeps, the demo) starts Ray through :func:`start_or_connect`:

- ``address`` (``auto``, ``host:6379``, ``ray://host:10001``) or ``$RAY_ADDRESS`` (what
  ``ray job submit`` and ``cluster/local-up.sh`` export): connect to that cluster; its CPUs and
  its authentication are its own.
- Otherwise, or with ``address="local"``: start a Ray of our own. Never a plain ``ray.init()``,
  which would join a cluster that ``ray start`` recorded in Ray's temp directory (and then refuse
  ``num_cpus``).

The Ray we start takes only clients that hold a token. Ray 2.60 binds its GCS and raylet gRPC
servers to all interfaces whatever node address it is given (measured with ``ss -ltnp``: GCS,
raylet and workers on ``*``; ``_node_ip_address="127.0.0.1"`` is not honoured for them, and Ray's
change to bind servers to the node IP, PR #59852, was reverted in #60003), so the port is
reachable from the network and the token is what keeps strangers out. Ray's own default token
file (``~/.ray/auth_token``) is created world-readable (0644); ours is a fresh random token per
process, in the environment only (``/proc/<pid>/environ`` is readable by its owner alone), which
Ray's processes inherit. A token the user set (``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``) is
used instead.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Mapping


def _private_token() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)   # 256 bits
    # Ray's C++ config and token loader read the environment once, at import: refresh both so
    # that this driver, not only the processes it starts, uses the token (as Ray's own
    # _enable_token_auth does). Setting RAY_AUTH_MODE also silences Ray's token banner.
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def start_or_connect(address: str | None = None, *, num_cpus: int | None = None,
                     runtime_env: Mapping[str, Any] | None = None, log_to_driver: bool = False) -> Any:
    """Initialize Ray unless it is (see the module doc); returns the ``ray`` module."""
    import ray

    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver}
    if runtime_env:
        kwargs["runtime_env"] = dict(runtime_env)
    if address != "local" and (address or os.environ.get("RAY_ADDRESS")):
        ray.init(address=address, **kwargs)
    else:
        _private_token()
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **kwargs)
    return ray
