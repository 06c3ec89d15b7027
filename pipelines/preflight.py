"""Checks before any actor starts: sources, model and preprocessing from the config alone, then
what the cluster can give. Each failure names its key or path."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import ray

from fusion.errors import ConfigError, InputError, StartError
from fusion.flow.resources import Demand, avoid_nodes, shortfalls
from fusion.model_spec import ResolvedModel, check_preprocess, resolve_model
from fusion.sensors import make_source
from pipelines.config import PipelineConfig, expand_rigs, replica_source


class PipelineStartError(StartError):
    """An actor could not start (a missing file or device, a bad model); the message says which."""


def validate(config: PipelineConfig, model: ResolvedModel | None = None) -> ResolvedModel:
    """Backends and their keys, the model, and that the rigs feed the model as it was trained
    (the checkpoint records how): checked in the driver, before Ray starts. Returns the model
    (`model`, when the caller resolved it already), resolved once for the whole run."""
    for rid, rig, replica in expand_rigs(config):
        for sensor_id, spec in rig.sensors.items():
            source = replica_source(spec.source, sensor_id, replica)
            make_source(spec.modality, source, source=f"rigs[{rid}].sensors.{sensor_id}.source")
    model = model or resolve_model(config.model)
    rigs = [(rid, rig.preprocess.as_mapping()) for rid, rig, _ in expand_rigs(config)]
    try:
        check_preprocess(model, rigs)
    except InputError as err:
        raise PipelineStartError(str(err)) from None
    return model


def gpus_per_actor(config: PipelineConfig) -> float:
    """The configured GPUs per inference actor; unset: one when the cluster has any."""
    want = config.inference.num_gpus
    if want is not None:
        return want
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def demands(config: PipelineConfig) -> list[Demand]:
    """What every actor of the pipeline asks Ray for, with the config key behind each resource."""
    flow, inf = config.flow, config.inference
    out: list[Demand] = []
    for i, rig in enumerate(config.rigs):
        custom = {name: f"rigs[{i}].resources.{name}" for name in rig.resources}
        for what, count, cpus, cpu_key in (
            (
                f"rig {rig.id}'s sensors",
                len(rig.sensors) * rig.replicas,
                flow.sensor_num_cpus,
                "flow.sensor_num_cpus",
            ),
            (f"rig {rig.id}'s fuser", rig.replicas, flow.fuser_num_cpus, "flow.fuser_num_cpus"),
        ):
            out.append(
                Demand(
                    what=what,
                    count=count,
                    bundle={"CPU": cpus, **rig.resources},
                    keys={"CPU": cpu_key, **custom},
                )
            )
    keys = {"CPU": "inference.num_cpus", "GPU": "inference.num_gpus"}
    keys |= {name: f"inference.resources.{name}" for name in inf.resources}
    bundle = {"CPU": inf.num_cpus, "GPU": gpus_per_actor(config), **inf.resources}
    out.append(Demand(what="the inference actors", count=inf.actors, bundle=bundle, keys=keys))
    return out


def live_line(text: str) -> None:
    """Rewrite the terminal's current line (a wait's progress)."""
    print("\r" + text, end="", file=sys.stderr, flush=True)


def alive_nodes() -> dict[str, dict[str, float]]:
    """Node id -> total resources, of every node alive now."""
    return {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n["Alive"]}


def check_resources(config: PipelineConfig, *, progress: Callable[[str], None] | None = None) -> None:
    """Refuse requests the cluster can never meet (actors would stay pending forever).

    With `flow.wait_for_nodes_s`, first ask the autoscaler for the missing bundles and wait that
    long for nodes to join, showing what is still missing; then fail naming the keys.
    """
    wanted = demands(config)
    problems = shortfalls(wanted, list(alive_nodes().values()))
    wait = config.flow.wait_for_nodes_s
    if problems and wait > 0:
        from ray.autoscaler.sdk import request_resources

        bundles = [dict(d.bundle) for d in wanted for _ in range(d.count)]
        request_resources(bundles=[{k: v for k, v in b.items() if v > 0} for b in bundles])
        deadline = time.monotonic() + wait
        while problems and time.monotonic() < deadline:
            if progress is not None:
                progress(f"waiting up to {deadline - time.monotonic():.0f} s for nodes: {problems[0]}")
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
            problems = shortfalls(wanted, list(alive_nodes().values()))
    if problems:
        raise ConfigError("; ".join(problems))


def inference_placement(config: PipelineConfig) -> list[Any]:
    """One scheduling strategy per inference actor: away from the rigs' pinned sensor hosts.

    Rigs pin their actors with custom resources; a model landing on a sensor host's only CPU
    would starve its sensors. When the inference actors ask for no resources of their own and
    other nodes can hold them, they are spread over those nodes (soft: Ray may still use a
    sensor host if those nodes go away); otherwise Ray spreads them over the cluster.
    """
    inf = config.inference
    pinned = {name for rig in config.rigs for name in rig.resources}
    bundle = {"CPU": inf.num_cpus, "GPU": gpus_per_actor(config)}
    nodes = avoid_nodes(alive_nodes(), pinned, bundle) if pinned and not inf.resources else []
    if not nodes:
        return ["SPREAD"] * inf.actors
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return [
        NodeAffinitySchedulingStrategy(node_id=nodes[i % len(nodes)], soft=True) for i in range(inf.actors)
    ]
