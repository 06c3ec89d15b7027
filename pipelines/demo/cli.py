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
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from fusion.config import ConfigError
from fusion.sinks import CallbackSink
from pipelines.config import Mode, PipelineConfig, load_pipeline_config, rig_ids

log = logging.getLogger(__name__)
SETUP_HOOK = "pipelines.demo.sources.register"  # every Ray worker learns the demo's sources


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a StartError naming the port when it cannot be had."""
    from fusion.config import StartError

    try:
        return socket.create_server((host, port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise StartError(
                f"port {port} on {host} is already in use (another fusion demo?): "
                "stop that program or pick another port with --port"
            ) from None
        raise StartError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None


def _watched_rig(config: PipelineConfig, wanted: str | None) -> tuple[str, str]:
    """(rig id as the pipeline names it, its config's id): the rig the page shows."""
    ids = [(rid, rig.id) for rig in config.rigs for rid in rig_ids(rig)]
    if wanted is None:
        return ids[0]
    for rid, base in ids:
        if rid == wanted:
            return rid, base
    raise ConfigError(f"--rig {wanted!r}: no such rig (rigs: {', '.join(r for r, _ in ids)})")


def _metrics_url() -> str | None:
    """Ray's Prometheus endpoint on this node (where the pipeline's metrics are exported)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == here and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


def run_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_pipeline_config(args.config)
    if config.mode is not Mode.LIVE:
        raise ConfigError(
            f"{args.config}: mode: {config.mode.value}: the demo shows live sensors; use mode: live"
        )
    rig, base_rig = _watched_rig(config, args.rig)
    sock = bind(args.host, args.port)  # before the slow imports: a taken port is reported at once
    try:
        return _serve_and_run(args, config, rig=rig, base_rig=base_rig, sock=sock)
    finally:
        sock.close()


def _serve_and_run(
    args: argparse.Namespace, config: PipelineConfig, *, rig: str, base_rig: str, sock: socket.socket
) -> int:
    import ray

    from fusion.config import StartError
    from pipelines.demo.server import DemoServer
    from pipelines.demo.sources import resolve_sources
    from pipelines.demo.state import DemoState
    from pipelines.metrics import ray_init_options
    from pipelines.runner import PipelineRunner, PipelineStartError

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
        stop = _stop_handler(runner)
        _install(stop)
        try:
            # As the runner would start it (metrics export included), plus the demo's sources.
            ray.init(
                address=args.address,
                log_to_driver=True,
                configure_logging=False,
                runtime_env={"worker_process_setup_hook": SETUP_HOOK},
                **ray_init_options(config.metrics, args.address),
            )
            _install(stop)  # ray.init put in a SIGTERM handler that exits without cleaning up
            runner.start()
        except PipelineStartError as err:
            raise StartError(str(err)) from None
        state.metrics_url = args.metrics_url or _metrics_url()
        state.set_status("running", class_names=runner.pool[0].info.get("class_names"))
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


def _stop_handler(runner: Any) -> Callable[[int, Any], None]:
    """First Ctrl-C or SIGTERM: stop cleanly (actors closed, Ray shut down); a second one: at once."""
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        print(f"\nfusion demo: {signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
        runner.stop()

    return stop


def _install(handler: Callable[[int, Any], None]) -> None:
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
