"""The `fusion data generate`, `fusion train` and `fusion eval` commands."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fusion.errors import InputError


def cmd_data_generate(args: argparse.Namespace) -> int:
    from fusion.training.data import generate
    from fusion.training.train import load_train_config

    config = load_train_config(args.config).data
    out = args.out or config.dir
    report = generate(config, out, workers=args.workers, progress=not args.quiet)
    print(
        f"wrote {report.samples} samples to {out} in {report.seconds:.1f} s "
        f"({report.samples_per_s:.1f} samples/s, {report.workers} workers)"
        + (f"; {report.skipped} already present" if report.skipped else "")
    )
    for reason, n in sorted(report.errors.items()):
        print(f"  modality missing in {n} samples: {reason}", file=sys.stderr)
    return 0


def cmd_data_from_recording(args: argparse.Namespace) -> int:
    from fusion.training.labelled import from_recording
    from fusion.training.labels import LABELS_FILE, ClassMap, read_labels

    sync, preprocess, frames = None, None, None
    if args.config:
        from fusion_cli.sensors import config_rig

        rig = config_rig(args.config, args.rig)
        sync, preprocess = rig.sync, rig.preprocess
        if args.recording is None:  # the rig's own sources: ROS bags, media files, recordings
            from fusion.offline import build_sources
            from fusion.training.labelled import Frames

            specs = {sid: (spec.modality, spec.source) for sid, spec in rig.sensors.items()}
            frames = Frames.of_sources(rig.id, build_sources(specs, rig=rig.id))
    if args.recording is None and frames is None:
        raise InputError("give --recording DIR, or --config with a rig whose sources to read (e.g. ROS bags)")
    if args.labels is None and args.recording is None:
        raise InputError("--labels is needed when the frames come from --config's sources")
    labels_path = args.labels or str(Path(args.recording) / LABELS_FILE)
    if args.classes:
        classes = ClassMap([n.strip() for n in args.classes.split(",")], args.map or "")
        labels = read_labels(labels_path, classes=sorted(classes.known()))
    elif args.map:
        raise InputError("--map needs --classes: the class list it maps onto")
    else:
        labels = read_labels(labels_path)
        classes = ClassMap(sorted(labels.names))
    report = from_recording(
        frames if frames is not None else args.recording,
        labels,
        classes,
        args.out,
        split=args.split,
        shard_size=args.shard_size,
        sync=sync,
        preprocess=preprocess,
    )
    shown = ", ".join(f"{k} {v}" for k, v in report.per_class.items())
    print(
        f"wrote {report.samples} samples ({shown}) to {Path(args.out) / args.split} in {report.seconds:.1f} s "
        f"({report.realtime_factor:.1f}x real time over {report.recording_s:.1f} s of recording)"
    )
    for reason, n in sorted(report.skipped.items()):
        print(f"  skipped {n} samples: {reason}", file=sys.stderr)
    for reason, n in sorted(report.input_errors.items()):
        print(f"  modality missing in {n} samples: {reason}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from fusion.training.train import Trainer, load_train_config

    config = load_train_config(args.config)
    if args.init and args.num_workers:
        raise InputError("--init runs in this process only; leave out --num-workers")
    if args.new_head and not args.init:
        raise InputError("--new-head is for fine-tuning: give the checkpoint with --init")
    if args.num_workers:
        from pipelines.train import train_with_ray

        result = train_with_ray(
            config,
            num_workers=args.num_workers,
            data_dir=args.data,
            run_dir=args.run_dir,
            resume=args.resume,
            address=args.address,
        )
    else:
        trainer = Trainer(
            config,
            data_dir=args.data,
            run_dir=args.run_dir,
            init=args.init,
            new_head=args.new_head,
            progress=not args.quiet,
        )
        if trainer.initialized is not None:
            print(trainer.initialized.describe(args.init), file=sys.stderr)
        result = trainer.run(resume=args.resume)
    val = "" if result.val_accuracy is None else f", validation accuracy {100 * result.val_accuracy:.1f}%"
    print(
        f"trained {result.steps} steps: {result.samples} samples in {result.seconds:.0f} s "
        f"({result.samples_per_s:.1f} samples/s){val}"
    )
    if config.export and result.steps:
        print(f"model: {config.export}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fusion.training.checkpoint import checkpoint_version, load_checkpoint
    from fusion.training.data import load_split
    from fusion.training.eval_report import write_report
    from fusion.training.evaluate import evaluate

    model = load_checkpoint(args.checkpoint)
    if model.config.detection is not None:
        return _eval_detector(model, args)
    if args.nuscenes:
        raise InputError(
            f"--nuscenes: {args.checkpoint} is a classifier (no detection head): no boxes to write"
        )
    reports = {}
    for split in (args.split, args.shifted):
        if split is None:
            continue
        data = load_split(args.data, split, limit=args.limit)
        reports[split] = report = evaluate(model, data, batch_size=args.batch_size, progress=not args.quiet)
        for r in report.results:
            print(
                f"{split:8s} {r.subset:28s} accuracy {100 * r.accuracy:5.1f}%  macro-F1 {r.macro_f1:.3f}  "
                f"position median {r.position_median_m:.2f} m  p90 {r.position_p90_m:.2f} m"
            )
    report, shifted = reports[args.split], reports.get(args.shifted)
    for claim, ok in report.targets(shifted=shifted):
        print(f"{'PASS' if ok else 'FAIL'}: {claim}")
    if args.report:
        md = Path(args.report)
        img_dir = Path(args.img_dir) if args.img_dir else md.parent / "img"
        write_report(
            report,
            md,
            img_dir,
            title=args.title or f"Evaluation of {Path(args.checkpoint).stem}",
            checkpoint=checkpoint_version(args.checkpoint),
            data=f"{args.data} ({args.split})",
            image_prefix=md.stem,
            shifted=shifted,
            shifted_data=f"{args.data} ({args.shifted})",
        )
        print(f"report: {md}")
    if args.json:
        body = asdict(report) | ({"shifted": asdict(shifted)} if shifted else {})
        Path(args.json).write_text(json.dumps(body, indent=1))
    return 0


def _eval_detector(model: Any, args: argparse.Namespace) -> int:
    """`fusion eval` of a model with a set-prediction head: the nuScenes detection metric."""
    from fusion.training.checkpoint import checkpoint_version
    from fusion.training.data import load_split
    from fusion.training.detection_eval import evaluate_detection
    from fusion.training.detection_report import write_detection_report

    reports = {}
    for split in (args.split, args.shifted):
        if split is None:
            continue
        data = load_split(args.data, split, limit=args.limit)
        say = (
            None
            if args.quiet
            else (lambda subset, split=split: print(f"{split}: {subset} ...", file=sys.stderr))
        )
        reports[split] = report = evaluate_detection(model, data, batch_size=args.batch_size, progress=say)
        for r in report.results:
            print(f"{split:8s} {r.subset:28s} mAP {r.mean_ap:.3f}  NDS {r.metrics.nd_score:.3f}")
    report, shifted = reports[args.split], reports.get(args.shifted)
    if args.report:
        md = Path(args.report)
        write_detection_report(
            report,
            md,
            Path(args.img_dir) if args.img_dir else md.parent / "img",
            title=args.title or f"Evaluation of {Path(args.checkpoint).stem}",
            checkpoint=checkpoint_version(args.checkpoint),
            data=f"{args.data} ({args.split})",
            shifted=shifted,
            shifted_data=f"{args.data} ({args.shifted})",
        )
        print(f"report: {args.report}")
    if args.json:
        body = report.as_json() | ({"shifted": shifted.as_json()} if shifted else {})
        Path(args.json).write_text(json.dumps(body, indent=1, allow_nan=True))
    if args.nuscenes:
        for path in report.write_nuscenes(args.nuscenes):
            print(f"nuscenes: {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `data generate`, `train` and `eval` on the `fusion` parser's subcommands."""
    data = sub.add_parser("data", help="generate labelled training data", description="Training data.")
    dsub = data.add_subparsers(dest="data_command", required=True)
    gen = dsub.add_parser(
        "generate",
        help="render labelled FusedSamples from the simulated world into Parquet shards",
        description="Render the train / val / test splits of a training config's `data` section "
        "(different seeds per split) into Parquet shards, in parallel across cores. "
        "Shards already present are kept, so an interrupted run can be repeated.",
    )
    gen.add_argument("--config", required=True, help="training YAML, e.g. configs/train/sensor-small.yaml")
    gen.add_argument("--out", default=None, help="output directory (default: the config's data.dir)")
    gen.add_argument(
        "--workers", type=int, default=None, help="processes (default: data.workers or one per core)"
    )
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_data_generate)

    rec = dsub.add_parser(
        "from-recording",
        help="labelled FusedSamples from a recording and a labels CSV, as Parquet shards",
        description="Replay a recording through the rig's fuser (sync and preprocessing of --config) "
        "and label each sample by its tick time from a labels CSV (start,end,label[,x,y,z]); the shards "
        "are those of `fusion data generate`. Samples outside every label segment are skipped and counted.",
    )
    rec.add_argument(
        "--recording",
        default=None,
        help="recording directory (fusion record); default: read the sources of --config's rig "
        "(ROS bags, media files), which then needs --labels",
    )
    rec.add_argument("--labels", default=None, help="labels CSV (default: labels.csv in the recording)")
    rec.add_argument("--out", required=True, help="output data directory")
    rec.add_argument("--split", default="train", help="split to write (default: train)")
    rec.add_argument(
        "--classes",
        default=None,
        help="class list, comma-separated, e.g. none,person,vehicle (default: the labels')",
    )
    rec.add_argument(
        "--map",
        default=None,
        help="label=class pairs, comma-separated, for labels not in --classes (e.g. car=vehicle,pedestrian=person)",
    )
    rec.add_argument(
        "--config",
        default=None,
        help="pipeline YAML whose rig's sync and preprocess (and, without --recording, sources) to use",
    )
    rec.add_argument("--rig", default=None, help="rig id in --config (default: the first)")
    rec.add_argument("--shard-size", type=int, default=500, help="samples per shard (default: 500)")
    rec.set_defaults(func=cmd_data_from_recording)

    train = sub.add_parser(
        "train",
        help="train a model on generated data",
        description="Train with AdamW and a cosine schedule; checkpoints (safetensors) in the run "
        "directory every checkpoint_every steps; the final model is exported to the config's `export`.",
    )
    train.add_argument("--config", required=True, help="training YAML, e.g. configs/train/sensor-small.yaml")
    train.add_argument("--data", default=None, help="data directory (default: the config's data.dir)")
    train.add_argument("--run-dir", default=None, help="checkpoints and log (default: runs/<name>)")
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in the run directory"
    )
    train.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="train with Ray Train (TorchTrainer) on this many CPU workers",
    )
    train.add_argument(
        "--address", default=None, help="with --num-workers: Ray cluster to join (default: local)"
    )
    train.add_argument(
        "--init",
        default=None,
        help="start from this checkpoint's weights (fine-tuning); the config's `classes` are matched "
        "to the checkpoint's by name (another order is mapped; other names are an error, see --new-head)",
    )
    train.add_argument(
        "--new-head",
        action="store_true",
        help="with --init: the class list differs from the checkpoint's (renamed, missing or extra "
        "classes), so train a new class head from scratch and keep the rest",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a held-out split, for every subset of sensors",
        description="A classifier: accuracy, macro-F1, confusion matrix and position error; a detector "
        "(model.detection): the nuScenes detection metric (mAP, AP per class, TP errors). For every "
        "subset of modalities and per condition; optionally a Markdown report with PNG plots.",
    )
    ev.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint")
    ev.add_argument("--data", required=True, help="a directory written by `fusion data generate`")
    ev.add_argument("--split", default="test", help="which split (default: test)")
    ev.add_argument(
        "--shifted",
        default=None,
        metavar="SPLIT",
        help="also evaluate this split, rendered in a shifted world (e.g. shifted), and report both",
    )
    ev.add_argument("--limit", type=int, default=None, help="only the first N samples")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--report", default=None, help="write a Markdown report here (plots beside it in img/)")
    ev.add_argument(
        "--img-dir", default=None, help="where the PNG plots go (default: img/ beside the report)"
    )
    ev.add_argument("--title", default=None, help="the report's title")
    ev.add_argument("--json", default=None, help="also write every number as JSON here")
    ev.add_argument(
        "--nuscenes",
        default=None,
        metavar="DIR",
        help="a detector: write DIR/gt.json and DIR/results-<subset>.json in the nuScenes submission format",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)
