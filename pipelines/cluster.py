"""Connecting a process to Ray: the one place a command starts a local Ray or joins a cluster."""

from __future__ import annotations

import os
import socket
from typing import Any

import ray

from fusion.errors import ConfigError, StartError
from pipelines.config import MetricsConfig


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


def check_port_free(port: int, *, key: str = "metrics.port") -> None:
    """Fail naming the port when it is taken: Ray would otherwise time out starting its node.

    Ray's metrics agent binds every interface of the node, so that is what is tried here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError as err:
            raise ConfigError(
                f"{key}: port {port} is already in use ({err.strerror}); choose another, "
                "or null to let Ray pick a free one (Prometheus finds it through Ray's service discovery file)"
            ) from None


# Objects up to this size travel inside Ray's task messages rather than through the shared-memory
# object store: a camera frame or LiDAR sweep (~230 KB) then reaches its fuser in one message,
# without the store's create/seal/fetch round trips, which cost a live tick 6 ms p50 on 2 cores
# (docs/benchmarks.md). Ray's default is 100 KiB. A cluster's nodes set it with the environment
# variable RAY_max_direct_call_object_size (the images do).
INLINE_OBJECT_BYTES = 2 << 20


def ray_init_options(config: MetricsConfig, address: str | None) -> dict[str, Any]:
    """`ray.init` arguments: for a new local Ray, those that let Prometheus scrape it.

    Joining a cluster (an address, or RAY_ADDRESS) takes nothing: its nodes were started with
    their own `--metrics-export-port`. A local Ray gets the configured export port (checked
    free first) and its dashboard, whose head writes the service discovery file
    (`<session dir>/prom_metrics_service_discovery.json`, linked from /tmp/ray/).
    """
    if address is not None or os.environ.get("RAY_ADDRESS"):
        return {"include_dashboard": False}
    if config.port is not None:
        check_port_free(config.port)
    return {
        "include_dashboard": True,
        "dashboard_host": config.dashboard_host,
        "_metrics_export_port": config.port,
        "_system_config": {
            "metrics_report_interval_ms": int(config.report_interval_s * 1000),
            "max_direct_call_object_size": INLINE_OBJECT_BYTES,
        },
    }
