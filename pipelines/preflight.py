"""Checks before any actor starts: sources, model and preprocessing from the config alone, then
what the cluster can give. Each failure names its key or path."""

from __future__ import annotations

import ray

from fusion.config import ConfigError
from fusion.sensors import make_source
from pipelines.config import PipelineConfig, RigConfig, replica_source, rig_ids
from pipelines.models import check_model, check_preprocess


class PipelineStartError(RuntimeError):
    """An actor could not start (a missing file or device, a bad model); the message says which."""


def expand_rigs(config: PipelineConfig) -> list[tuple[str, RigConfig, int]]:
    """(rig id, rig config, replica index) for every rig, replicas expanded."""
    return [(rid, rig, k) for rig in config.rigs for k, rid in enumerate(rig_ids(rig))]


def validate(config: PipelineConfig) -> None:
    """Backends and their keys, the model, and that the rigs feed the model as it was trained
    (the checkpoint records how): checked in the driver, before Ray starts."""
    for rid, rig, replica in expand_rigs(config):
        for sensor_id, spec in rig.sensors.items():
            source = replica_source(spec.source, sensor_id, replica)
            make_source(spec.modality, source, source=f"rigs[{rid}].sensors.{sensor_id}.source")
    check_model(config.model.model_dump())
    rigs = [(rid, rig.preprocess.as_mapping()) for rid, rig, _ in expand_rigs(config)]
    try:
        check_preprocess(config.model.model_dump(), rigs)
    except ValueError as err:
        raise PipelineStartError(str(err)) from None


def gpus_per_actor(config: PipelineConfig) -> float:
    """The configured GPUs per inference actor; unset: one when the cluster has any."""
    want = config.inference.num_gpus
    if want is not None:
        return want
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def check_resources(config: PipelineConfig) -> None:
    """Requests the cluster can never satisfy would leave actors pending forever: refuse them."""
    total = ray.cluster_resources()
    wanted: list[tuple[str, str, float]] = [
        (f"rigs[{i}].resources.{name}", name, amount)
        for i, rig in enumerate(config.rigs)
        for name, amount in rig.resources.items()
    ]
    wanted += [(f"inference.resources.{n}", n, a) for n, a in config.inference.resources.items()]
    wanted += [
        ("inference.num_gpus", "GPU", gpus_per_actor(config)),
        ("inference.num_cpus", "CPU", config.inference.num_cpus),
    ]
    for key, name, amount in wanted:
        if amount > total.get(name, 0):
            raise ConfigError(f"{key}: {amount} per actor requested, the cluster has {total.get(name, 0)}")
