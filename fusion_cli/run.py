"""`fusion run`: start the pipeline, show a live status line, stop cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fusion_cli.common import install, positive, stop_handler


def run_pipeline(args: argparse.Namespace) -> int:
    from pipelines.config import load_pipeline_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_pipeline_config(args.config)  # every key, before Ray is even imported

    from fusion.model_spec import resolve_model
    from fusion.sinks import open_sink
    from pipelines.runner import PipelineRunner

    updates = {}
    if args.duration is not None:
        updates["duration_s"] = args.duration
    if args.output is not None:
        updates["output"] = args.output
    if args.speed is not None:
        updates["speed"] = args.speed
    config = config.model_copy(update=updates)
    model = resolve_model(config.model)  # once per run: the sink's class names, the actors' weights
    sink = open_sink(config.output, class_names=model.class_names)
    runner = PipelineRunner(config, sink, model=model, address=args.address, status=not args.quiet)
    runner.start()
    # After start: ray.init installs its own SIGTERM handler, which would skip the clean stop.
    install(stop_handler(runner.stop, who="fusion", doing="stopping, flushing outputs"))
    summary = runner.run()
    print("\n" + json.dumps({"summary": summary}, default=str), file=sys.stderr)
    if summary.get("ended"):  # a node lost with actors nothing else can run: the run ended early
        print(f"fusion: error: {summary['ended']}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `run` on the `fusion` parser's subcommands."""
    run = sub.add_parser(
        "run",
        help="run the streaming pipeline on Ray",
        description="Run the sensor-fusion pipeline: a local Ray by default, or join a cluster with --address.",
    )
    run.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/pipeline/sim-local.yaml")
    run.add_argument(
        "--address", default=None, help="Ray cluster address to join (default: start a local Ray)"
    )
    run.add_argument("--duration", type=positive, default=None, help="stop after this many seconds")
    run.add_argument(
        "--output",
        default=None,
        help="'-' (JSON lines to stdout), PATH.jsonl, PATH.parquet or PATH.mcap (ROS 2 messages, "
        "fusion_msgs/msg/Prediction, on the sensors' clock: open it beside the recording in Foxglove)",
    )
    run.add_argument(
        "--speed",
        type=positive,
        default=None,
        help="replay pacing: 1 = real time, N = N x (default: config)",
    )
    run.add_argument("--quiet", action="store_true", help="no live status line")
    run.set_defaults(func=run_pipeline)
