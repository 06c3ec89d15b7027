"""Where predictions go: `base` (the Sink contract, JSON lines, Parquet, a callback, ordering and
a background writer), `mcap` (ROS 2 MCAP). `open_sink` picks one from a path."""

from __future__ import annotations

from fusion.errors import InputError
from fusion.sinks.base import JsonlSink, ParquetSink, Sink


def open_sink(spec: str, *, class_names: list[str] | None = None) -> Sink:
    """`-` (JSON lines to stdout), `PATH.jsonl`, `PATH.parquet` or `PATH.mcap` (ROS 2 messages,
    which also carry `class_names`, the names of the probabilities)."""
    if spec == "-" or spec.endswith(".jsonl"):
        return JsonlSink(spec)
    if spec.endswith(".parquet"):
        return ParquetSink(spec)
    if spec.endswith(".mcap"):
        from fusion.sinks.mcap import McapPredictionSink  # rosbags loads only when asked for

        return McapPredictionSink(spec, class_names=class_names)
    raise InputError(f"--output {spec!r}: expected '-', a .jsonl, a .parquet or a .mcap path")
