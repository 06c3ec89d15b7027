"""Connecting a process to Ray: the one place a command starts a local Ray or joins a cluster."""

from __future__ import annotations

import os
from typing import Any

import ray

from fusion.errors import StartError
from pipelines.config import MetricsConfig
from pipelines.metrics import ray_init_options


def start_ray(metrics: MetricsConfig | None, address: str | None, **init: Any) -> bool:
    """Start a local Ray, or join the cluster at `address` (or RAY_ADDRESS).

    `metrics`: the pipeline's export settings, so that Prometheus can scrape a new local Ray
    (`ray_init_options`); the pipeline's commands configure logging themselves, so Ray leaves
    it alone. None for work that exports no pipeline metrics (training), which keeps Ray's own
    logging: Ray Train reports through it. `init`: further `ray.init` arguments (the demo's
    worker setup hook).

    Returns True when it connected, so the caller owns the connection and shuts it down; False,
    doing nothing, when this process is already connected (a test's Ray, or a caller's).
    """
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {}
    if metrics is not None:
        options = {"configure_logging": False, **ray_init_options(metrics, address)}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Ray's own default joins the newest Ray already running on this machine (another
        # user's, another run's): without --address, a run starts its own, as documented.
        address = "local"
    try:
        ray.init(address=address, log_to_driver=True, **options, **init)
    except Exception as err:
        if _auth_refused(err):
            raise StartError(
                f"the Ray cluster at {address} refused this process: it requires token "
                "authentication and no valid token was given. Set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN_PATH=<the cluster's token file> (or RAY_AUTH_TOKEN), as on its "
                "nodes (docs/deploy.md, Token authentication)"
            ) from None
        raise
    return True


def _auth_refused(err: BaseException | None) -> bool:
    """Whether Ray's connection error was, somewhere down its cause chain, a refused token."""
    while err is not None:
        if isinstance(err, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
