"""`fusion run`: start the pipeline, show a live status line, stop cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from pipelines.config import load_pipeline_config


def run_pipeline(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_pipeline_config(args.config)  # every key, before Ray is even imported

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
    sink = open_sink(config.output)
    runner = PipelineRunner(config, sink, address=args.address, status=not args.quiet)

    def stop(signum, _frame):
        print(f"\nfusion: {signal.Signals(signum).name}: stopping, flushing outputs", file=sys.stderr)
        runner.stop()

    from fusion.config import StartError
    from pipelines.runner import PipelineStartError

    try:
        runner.start()
    except PipelineStartError as err:
        raise StartError(str(err)) from None
    # After start: ray.init installs its own SIGTERM handler, which would skip the clean stop.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    summary = runner.run()
    print("\n" + json.dumps({"summary": summary}, default=str), file=sys.stderr)
    return 0
