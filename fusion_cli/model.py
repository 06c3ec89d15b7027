"""`fusion model info | smoke`: a model's size and cost, and a forward pass on random inputs."""

from __future__ import annotations

import argparse
import time

from fusion.config import load_config
from fusion.errors import ConfigError
from fusion_cli.common import parse_shape


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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `model info` and `model smoke` on the `fusion` parser's subcommands."""
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
    info.add_argument("--input", action="append", type=parse_shape, metavar="MOD=SHAPE", help=shape_help)
    info.set_defaults(func=cmd_model_info)

    smoke = msub.add_parser(
        "smoke",
        help="run the model on random inputs and time it",
        description="Run a forward pass on random inputs of the configured shapes.",
    )
    smoke.add_argument("--config", required=True, help="model YAML")
    smoke.add_argument("--input", action="append", type=parse_shape, metavar="MOD=SHAPE", help=shape_help)
    smoke.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    smoke.add_argument("--repeats", type=int, default=5, help="timed forward passes (default 5)")
    smoke.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    smoke.set_defaults(func=cmd_model_smoke)
