"""The `fusion` command line. Every command has `--help`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from fusion.config import ConfigError, StartError, load_config
from fusion.sample import Modality, parse_modality
from fusion.sensors.base import SourceError


def _parse_shape(text: str) -> tuple[Modality, tuple[int, ...]]:
    """`camera=224x224` or `lidar=4096` -> (modality, shape)."""
    try:
        name, _, dims = text.partition("=")
        shape = tuple(int(d) for d in dims.lower().split("x"))
        if not dims or min(shape) < 1:
            raise ValueError
        return parse_modality(name), shape
    except ValueError as err:
        msg = (
            str(err)
            if "modality" in str(err)
            else f"bad --input {text!r}: expected MODALITY=AxB or MODALITY=N"
        )
        raise argparse.ArgumentTypeError(msg) from None


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = as fast as possible), got {text}")
    return value


def _load_model_config(path: str):
    from fusion.model.config import ModelConfig

    return load_config(ModelConfig, path)


def _shapes(config, overrides):
    from fusion.model.info import example_shapes

    shapes = example_shapes(config)
    for modality, shape in overrides or []:
        if modality not in config.inputs:
            raise ConfigError(
                f"--input {modality.value}: modality not in this model ({', '.join(m.value for m in config.modalities)})"
            )
        shapes[modality] = shape
    return shapes


def cmd_model_info(args: argparse.Namespace) -> int:
    from fusion.model import build_model
    from fusion.model.info import count_flops, count_parameters, layout_lines

    config = _load_model_config(args.config)
    shapes = _shapes(config, args.input)
    model = build_model(config)
    params = count_parameters(model)
    described = ", ".join(f"{m.value} {'x'.join(map(str, s))}" for m, s in shapes.items())
    plain = count_flops(config, shapes, fast=False)
    fast = count_flops(config, shapes, fast=True)
    print(f"model: {config.name}")
    print(f"parameters: {params} ({params / 1e6:.1f}M)")
    print(f"input: {described}")
    print(f"flops_per_sample: {plain} ({plain / 1e9:.1f} GFLOPs; multiplies and adds counted apart)")
    print(f"flops_executed: {fast} ({fast / 1e9:.1f} GFLOPs with cached constant K/V and shared-K/V reuse)")
    print("layout:")
    for line in layout_lines(model, shapes):
        print(f"  {line}")
    return 0


def cmd_model_smoke(args: argparse.Namespace) -> int:
    import torch

    from fusion.model import build_model
    from fusion.model.info import example_inputs

    config = _load_model_config(args.config)
    shapes = _shapes(config, args.input)
    torch.manual_seed(args.seed)
    model = build_model(config).eval()
    inputs = example_inputs(config, shapes, batch=args.batch)
    with torch.inference_mode():
        model(inputs)  # warm-up: builds grid encodings and constant K/V caches
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = model(inputs)
            times.append(time.perf_counter() - t0)
        # The same batch with each modality missing in turn: the model degrades, it does not fail.
        dropped = {m: model({k: v for k, v in inputs.items() if k != m}) for m in inputs if len(inputs) > 1}
    probs = out.logits.softmax(-1)[0]
    names = config.class_names or [str(i) for i in range(config.num_classes)]
    top = probs.topk(min(3, len(names)))
    median = sorted(times)[len(times) // 2]
    print(f"model: {config.name} (random weights: a smoke run, not a prediction)")
    print(
        f"batch: {args.batch}  forward median: {median * 1e3:.1f} ms  ({args.batch / median:.1f} samples/s)"
    )
    print(
        "sample 0 top classes: "
        + ", ".join(
            f"{names[i]}={p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        )
    )
    if out.position is not None:
        print(f"sample 0 position: {[round(v, 3) for v in out.position[0].tolist()]}")
    for m, o in dropped.items():
        shift = (o.logits.softmax(-1)[0] - probs).abs().sum().item()
        print(f"without {m.value}: runs, class distribution moves by L1 {shift:.4f}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from fusion.rigtools import inspect_lines

    lines, ok = inspect_lines(args.paths)
    for line in lines:
        print(line, file=sys.stderr if ": error: " in line else sys.stdout)
    return 0 if ok else 1


def _rig_from(path: str, rig_id: str | None):
    from pipelines.config import load_pipeline_config

    config = load_pipeline_config(path)
    rigs = {r.id: r for r in config.rigs}
    if rig_id is None:
        return config.rigs[0]
    if rig_id not in rigs:
        raise ConfigError(f"--rig {rig_id!r}: not in {path} (rigs: {', '.join(rigs)})")
    return rigs[rig_id]


def cmd_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusion.recording import MANIFEST, RecordingWriter
    from fusion.rigtools import build_sources, open_all, record

    rig = _rig_from(args.config, args.rig)
    sources = build_sources({sid: (s.modality, s.source) for sid, s in rig.sensors.items()}, rig=rig.id)
    out = Path(args.out)
    if (out / MANIFEST).exists():  # checked before any device is opened
        raise FileExistsError(f"{out}: already holds a recording")
    open_all(sources)
    try:
        writer = RecordingWriter(out, format=args.format)
    except BaseException:
        for src in sources.values():
            src.close()
        raise
    counts = record(sources, writer, duration_s=args.duration)
    print(
        f"recorded {sum(counts.values())} frames to {args.out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fusion.rigtools import replay_samples

    sync, preprocess = None, None
    if args.config:
        rig = _rig_from(args.config, args.rig)
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


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.cli import run_pipeline

    return run_pipeline(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo.cli import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion", description="Perceiver sensor fusion.")
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser(
        "model",
        help="inspect and exercise a Perceiver model",
        description="Inspect and exercise a model.",
    )
    msub = model.add_subparsers(dest="model_command", required=True)
    shape_help = "input size per modality, e.g. camera=224x224 or lidar=4096 (repeatable; default: the config's example_shape)"

    info = msub.add_parser(
        "info",
        help="parameters, FLOPs per sample, layer layout",
        description="Print parameter count, FLOPs per sample and the layer layout.",
    )
    info.add_argument("--config", required=True, help="model YAML, e.g. configs/model/paper-imagenet.yaml")
    info.add_argument("--input", action="append", type=_parse_shape, metavar="MOD=SHAPE", help=shape_help)
    info.set_defaults(func=cmd_model_info)

    smoke = msub.add_parser(
        "smoke",
        help="run the model on random inputs and time it",
        description="Run a forward pass on random inputs of the configured shapes.",
    )
    smoke.add_argument("--config", required=True, help="model YAML")
    smoke.add_argument("--input", action="append", type=_parse_shape, metavar="MOD=SHAPE", help=shape_help)
    smoke.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    smoke.add_argument("--repeats", type=int, default=5, help="timed forward passes (default 5)")
    smoke.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    smoke.set_defaults(func=cmd_model_smoke)

    inspect = sub.add_parser(
        "inspect",
        help="describe video, audio, point cloud, KITTI, pcap or recording files",
        description="Print modality, backend, frame count, time span, rate and shapes of each file.",
    )
    inspect.add_argument("paths", nargs="+", help="files or folders (KITTI .bin folder, recording directory)")
    inspect.set_defaults(func=cmd_inspect)

    rec = sub.add_parser(
        "record",
        help="record a rig's sensor streams to Arrow IPC or Parquet",
        description="Read every sensor of a rig (no Ray) and write a recording directory.",
    )
    rec.add_argument("--config", required=True, help="pipeline YAML whose rig to record")
    rec.add_argument("--rig", default=None, help="rig id (default: the first)")
    rec.add_argument("--out", required=True, help="recording directory to create")
    rec.add_argument(
        "--duration", type=_positive, default=None, help="seconds to record (default: until sources end)"
    )
    rec.add_argument("--format", choices=["arrow", "parquet"], default="arrow", help="stream file format")
    rec.set_defaults(func=cmd_record)

    rep = sub.add_parser(
        "replay",
        help="replay a recording through alignment and preprocessing",
        description="Feed a recording's frames through the fuser (no Ray); the same FusedSamples every time.",
    )
    rep.add_argument("--recording", required=True, help="recording directory")
    rep.add_argument(
        "--speed",
        type=_non_negative,
        default=0,
        help="1 = real time, N = N x, 0 = as fast as possible (default)",
    )
    rep.add_argument(
        "--config", default=None, help="pipeline YAML for the rig's sync and preprocess settings"
    )
    rep.add_argument("--rig", default=None, help="rig id in --config (default: the first)")
    rep.add_argument("--out", default=None, help="also write the FusedSamples as a recording directory")
    rep.set_defaults(func=cmd_replay)

    run = sub.add_parser(
        "run",
        help="run the streaming pipeline on Ray",
        description="Run the sensor-fusion pipeline: a local Ray by default, or join a cluster with --address.",
    )
    run.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/pipeline/sim-local.yaml")
    run.add_argument(
        "--address", default=None, help="Ray cluster address to join (default: start a local Ray)"
    )
    run.add_argument("--duration", type=_positive, default=None, help="stop after this many seconds")
    run.add_argument("--output", default=None, help="'-' (JSON lines to stdout), PATH.jsonl or PATH.parquet")
    run.add_argument(
        "--speed",
        type=_positive,
        default=None,
        help="replay pacing: 1 = real time, N = N x (default: config)",
    )
    run.add_argument("--quiet", action="store_true", help="no live status line")
    run.set_defaults(func=cmd_run)

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
        type=_positive,
        default=3.0,
        help="seconds a device has to give its first frame before the simulated world stands in (default 3)",
    )
    demo.set_defaults(func=cmd_demo)
    from fusion.cli_train import add_commands

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, SourceError, StartError) as err:
        print(f"fusion: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
