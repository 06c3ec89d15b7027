"""`fusion demo`: the live pipeline with a web page showing every sensor and the fused prediction.

Start-up order matters for the user: the port is bound first (a taken port fails in a second,
naming it, not after Ray has started), then devices are tried and the stand-ins announced, then
the page is served (it says "starting" while Ray and the actors come up), then the pipeline runs
until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
import sys
from typing import TYPE_CHECKING

from fusion.errors import ConfigError, StartError
from fusion_cli.common import install, pick_rig, positive, stop_handler

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a StartError naming the port when it cannot be had."""
    try:
        return socket.create_server((host, port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise StartError(
                f"port {port} on {host} is already in use (another fusion demo?): "
                "stop that program or pick another port with --port"
            ) from None
        raise StartError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None


def _metrics_url() -> str | None:
    """Ray's Prometheus endpoint on this node (where the pipeline's metrics are exported)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


def run_demo(args: argparse.Namespace) -> int:
    from pipelines.config import Mode, load_pipeline_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_pipeline_config(args.config)
    if config.mode is not Mode.LIVE:
        raise ConfigError(
            f"{args.config}: mode: {config.mode.value}: the demo shows live sensors; use mode: live"
        )
    rig, base = pick_rig(config, args.rig, path=args.config, replicas=True)
    sock = bind(args.host, args.port)  # before the slow imports: a taken port is reported at once
    try:
        return _serve_and_run(args, config, rig=rig, base_rig=base.id, sock=sock)
    finally:
        sock.close()


def _serve_and_run(
    args: argparse.Namespace, config: PipelineConfig, *, rig: str, base_rig: str, sock: socket.socket
) -> int:
    import ray

    from fusion.sinks.base import CallbackSink
    from pipelines.cluster import start_ray
    from pipelines.demo.server import DemoServer
    from pipelines.demo.sources import resolve_sources
    from pipelines.demo.state import DemoState
    from pipelines.runner import PipelineRunner

    config, plans = resolve_sources(config, probe_s=args.probe_timeout)
    for plan in plans:
        say(plan.announcement())
    for rc in config.rigs:
        reference = rc.sync.reference
        if reference is not None:
            say(
                f"note: rig {rc.id} ticks on its {reference} frames, so switching that sensor off (or losing it) "
                "stops its predictions; sync.rate_hz ticks go on without it"
            )
    preprocess = next(r.preprocess for r in config.rigs if r.id == base_rig)
    state = DemoState(rig=rig, plans=[p for p in plans if p.rig == base_rig], preprocess=preprocess)
    # The page is the output; predictions are not written anywhere else.
    runner = PipelineRunner(
        config, CallbackSink(lambda _: None), address=args.address, status=False, observer=state
    )
    server = DemoServer(
        state=state, sock=sock, toggle=lambda sid, on: runner.set_sensor_enabled(rig, sid, on)
    )
    server.start()
    try:
        host, port = sock.getsockname()[:2]
        say(f"serving http://{host}:{port}/ (rig {rig}; Ctrl-C to stop)")
        stop = stop_handler(runner.stop, who="fusion demo")
        install(stop)
        start_ray(config.metrics, args.address)  # as the runner would start it (metrics export included)
        install(stop)  # ray.init put in a SIGTERM handler that exits without cleaning up
        runner.start()
        state.metrics_url = args.metrics_url or _metrics_url()
        state.set_status("running", class_names=list(runner.pool[0].info.class_names))
        summary = runner.run()
        state.set_status("stopped")
        print(json.dumps({"summary": summary}, default=str), file=sys.stderr)
        return 0
    finally:
        server.stop()
        if ray.is_initialized():
            ray.shutdown()


def say(message: str) -> None:
    print(f"fusion demo: {message}", flush=True)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `demo` on the `fusion` parser's subcommands."""
    demo = sub.add_parser(
        "demo",
        help="live web page of every sensor and the fused prediction",
        description="Run the pipeline on live devices (the simulated world stands in for any that is "
        "absent) and serve a page that shows every sensor and the prediction as they update.",
    )
    demo.add_argument("--config", default="configs/pipeline/live.yaml", help="pipeline YAML (mode: live)")
    demo.add_argument("--port", type=int, default=8000, help="port of the page (default 8000; 0: any free)")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    demo.add_argument("--rig", default=None, help="rig to show (default: the first)")
    demo.add_argument("--address", default=None, help="Ray cluster address to join (default: a local Ray)")
    demo.add_argument("--metrics-url", default=None, help="metrics link on the page (default: Ray's, here)")
    demo.add_argument(
        "--probe-timeout",
        type=positive,
        default=3.0,
        help="seconds a device has to give its first frame before the simulated world stands in (default 3)",
    )
    demo.set_defaults(func=run_demo)
