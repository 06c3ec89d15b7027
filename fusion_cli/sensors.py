"""`fusion inspect | record | replay`: sensor files and recordings, without Ray."""

from __future__ import annotations

import argparse
import sys

from fusion.errors import OutputExistsError
from fusion_cli.common import non_negative, pick_rig, positive


def config_rig(path: str, wanted: str | None):
    """The rig `wanted` (default: the first) of a pipeline YAML."""
    from pipelines.config import load_pipeline_config

    return pick_rig(load_pipeline_config(path), wanted, path=path)[1]


def cmd_inspect(args: argparse.Namespace) -> int:
    from fusion.offline import inspect_lines

    lines, ok = inspect_lines(args.paths)
    for line in lines:
        print(line, file=sys.stderr if ": error: " in line else sys.stdout)
    return 0 if ok else 1


def cmd_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusion.offline import (
        FrameWriter,
        SpanWriter,
        build_sources,
        open_all,
        record,
        write_simulated_truth,
    )
    from fusion.recording import MANIFEST, RecordingWriter

    rig = config_rig(args.config, args.rig)
    sources = build_sources({sid: (s.modality, s.source) for sid, s in rig.sensors.items()}, rig=rig.id)
    out = Path(args.out)
    # Checked before any device is opened: rosbags writes a ROS 2 bag only to a new folder.
    if (out / MANIFEST).exists() or (args.format == "mcap" and out.exists()):
        raise OutputExistsError(f"{out}: already holds a recording")
    open_all(sources)
    try:
        writer: FrameWriter
        if args.format == "mcap":
            from fusion.recording.mcap import McapWriter

            writer = McapWriter(out)
        else:
            writer = RecordingWriter(out, format=args.format)
    except BaseException:
        for src in sources.values():
            src.close()
        raise
    span = SpanWriter(writer)
    counts = record(sources, span, duration_s=args.duration)
    print(
        f"recorded {sum(counts.values())} frames to {args.out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    labels = write_simulated_truth(sources, span, out)
    if labels is not None:
        print(f"ground truth of the simulated world: {labels}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusion.offline import replay_samples

    sync, preprocess = None, None
    if args.config:
        rig = config_rig(args.config, args.rig)
        sync, preprocess = rig.sync, rig.preprocess
    speed = None if args.speed == 0 else args.speed
    writer = None
    if args.out:
        from fusion.recording import RecordingWriter

        writer = RecordingWriter(Path(args.out))  # fails now, not after the whole replay
    count = 0
    try:
        for s in replay_samples(Path(args.recording), speed=speed, sync=sync, preprocess=preprocess):
            present = ",".join(m.value for m in s.segments)
            rows = sum(seg.num_rows for seg in s.segments.values())
            print(f"seq {s.seq} t {s.timestamp:.3f} modalities {present or '-'} rows {rows}", flush=True)
            if writer is not None:
                writer.write_sample(s)
            count += 1
    finally:
        if writer is not None:
            writer.close()
    print(f"{count} fused samples", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `inspect`, `record` and `replay` on the `fusion` parser's subcommands."""
    inspect = sub.add_parser(
        "inspect",
        help="describe video, audio, point cloud, KITTI, pcap, ROS bag, MCAP or recording files",
        description="Print modality, backend, frame count, time span, rate and shapes of each file.",
    )
    inspect.add_argument(
        "paths",
        nargs="+",
        help="files or folders (KITTI .bin folder, recording directory, ROS 2 bag folder)",
    )
    inspect.set_defaults(func=cmd_inspect)

    rec = sub.add_parser(
        "record",
        help="record a rig's sensor streams to Arrow IPC, Parquet or MCAP",
        description="Read every sensor of a rig (no Ray) and write a recording directory "
        "(mcap: a ROS 2 bag folder that Foxglove and the rosbag backend open).",
    )
    rec.add_argument("--config", required=True, help="pipeline YAML whose rig to record")
    rec.add_argument("--rig", default=None, help="rig id (default: the first)")
    rec.add_argument("--out", required=True, help="recording directory to create")
    rec.add_argument(
        "--duration", type=positive, default=None, help="seconds to record (default: until sources end)"
    )
    rec.add_argument(
        "--format",
        choices=["arrow", "parquet", "mcap"],
        default="arrow",
        help="arrow / parquet: a recording directory; mcap: ROS 2 messages in an MCAP bag folder",
    )
    rec.set_defaults(func=cmd_record)

    rep = sub.add_parser(
        "replay",
        help="replay a recording through alignment and preprocessing",
        description="Feed a recording's frames through the fuser (no Ray); the same FusedSamples every time.",
    )
    rep.add_argument("--recording", required=True, help="recording directory")
    rep.add_argument(
        "--speed",
        type=non_negative,
        default=0,
        help="1 = real time, N = N x, 0 = as fast as possible (default)",
    )
    rep.add_argument(
        "--config", default=None, help="pipeline YAML for the rig's sync and preprocess settings"
    )
    rep.add_argument("--rig", default=None, help="rig id in --config (default: the first)")
    rep.add_argument("--out", default=None, help="also write the FusedSamples as a recording directory")
    rep.set_defaults(func=cmd_replay)
