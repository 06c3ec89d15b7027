"""The pipeline's configuration: one typed tree, each component receiving only its part.

Validated entirely at start-up: unknown keys, wrong types, unknown sensor backends and
impossible combinations fail before any actor starts, naming the key path.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    Field,
    SerializeAsAny,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fusion.config import ModalityKey, StrictModel, load_config
from fusion.errors import InputError
from fusion.fuser import PreprocessConfig, default_sync
from fusion.model_spec import ModelSpec
from fusion.sample import Modality
from fusion.sensors import SourceConfig, source_config_class
from fusion.sync import SyncConfig


class Mode(StrEnum):
    LIVE = "live"  # never block a sensor; drop the oldest work when behind, and count it
    REPLAY = "replay"  # lossless and deterministic


class SensorSpec(StrictModel):
    """One sensor: its modality and its backend's own config, typed by the backend registry."""

    modality: ModalityKey
    # The config class registered for (modality, source.backend): a YAML mapping is validated
    # against it here, so a bad key fails at load naming `...source.KEY`.
    source: SerializeAsAny[SourceConfig]

    @field_validator("source", mode="before")
    @classmethod
    def _typed_source(cls, value: Any, info: ValidationInfo) -> Any:
        modality = info.data.get("modality")
        if modality is None:  # the bad modality is the error; its backend cannot be known
            return SourceConfig.model_construct()
        if isinstance(value, SourceConfig) or not isinstance(value, dict):
            return value  # a non-mapping is reported by the base class
        backend = value.get("backend")
        try:
            config_cls = source_config_class(modality, str(backend))
        except ValueError as err:  # reported on the `backend` key, like any other bad value
            error = PydanticCustomError("unknown_backend", str(err))
            raise ValidationError.from_exception_data(
                "source", [{"type": error, "loc": ("backend",), "input": backend}]
            ) from None
        return _on_the_driver(config_cls.model_validate(value))


# Source fields naming a file or folder. Actors may run on another host, whose working directory
# is not the driver's: a relative path is resolved here, where the user wrote it.
_PATH_FIELDS = ("path", "calibration")


def _on_the_driver(source: SourceConfig) -> SourceConfig:
    """`source` with its relative file paths made absolute against the driver's working directory."""
    update = {
        name: str(Path(value).resolve())
        for name in _PATH_FIELDS
        if isinstance(value := getattr(source, name, None), str)
        and value
        and "://" not in value
        and not Path(value).is_absolute()
    }
    return source.model_copy(update=update) if update else source


class RigConfig(StrictModel):
    """One sensor rig: its sensors, how they are aligned and preprocessed, where they run."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    sensors: dict[str, SensorSpec] = Field(min_length=1)  # sensor id -> spec
    # How the rig's streams are aligned. `modalities` comes from `sensors`; without a `sync`
    # section, LiDAR sweeps are the ticks when there is a LiDAR, otherwise 10 Hz.
    sync: SyncConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    # Ray custom resources the rig's sensor and fuser actors require, to pin them to the host owning
    # the devices (e.g. {"rig0_host": 0.01} with `ray start --resources '{"rig0_host": 1}'`).
    resources: dict[str, float] = Field(default_factory=dict)
    replicas: int = Field(default=1, ge=1)  # N copies (ids rig-0..), simulated seeds offset per copy

    @model_validator(mode="before")
    @classmethod
    def _sync_of_sensors(cls, data: Any) -> Any:
        """The sync section is completed with the rig's modalities (and defaults) before it is
        validated, so its errors name `rigs.N.sync.KEY` like any other key's."""
        if not isinstance(data, dict) or isinstance(data.get("sync"), SyncConfig):
            return data
        sensors = data.get("sensors", {})
        sync = data.get("sync", {})
        if not isinstance(sync, dict):
            return data
        try:
            modalities = [
                spec.modality if isinstance(spec, SensorSpec) else Modality(spec["modality"])
                for spec in sensors.values()
            ]
        except (AttributeError, KeyError, TypeError, ValueError):
            # The sensors' own errors say what is wrong; an unvalidated placeholder keeps a
            # missing `sync` from adding a misleading error of its own.
            return {"sync": SyncConfig.model_construct(), **data}
        return {
            **data,
            "sync": {"modalities": [m.value for m in modalities], **(sync or default_sync(modalities))},
        }

    @model_validator(mode="after")
    def _one_sensor_per_modality(self) -> RigConfig:
        seen: dict[Modality, str] = {}
        for sensor_id, spec in self.sensors.items():
            if spec.modality in seen:
                raise InputError(
                    f"sensors {seen[spec.modality]!r} and {sensor_id!r} are both {spec.modality.value}: "
                    "a rig fuses one sensor per modality"
                )
            seen[spec.modality] = sensor_id
        return self


class InferenceConfig(StrictModel):
    actors: int = Field(default=1, ge=1)
    max_batch_size: int = Field(default=8, ge=1)
    # Live: how long a sample waits for others to batch with. 0: an idle model starts on it at
    # once, and the samples that arrive while it runs form the next batch (replay runs fixed
    # batches of max_batch_size and never waits).
    max_wait_ms: float = Field(default=0.0, ge=0)
    # GPUs per inference actor; None = 1 when the cluster has GPUs, else 0 (CPU).
    num_gpus: float | None = Field(default=None, ge=0)
    num_cpus: float = Field(default=1.0, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Objects scoring under this are left out of the predictions (a prediction's `objects`).
    min_score: float = Field(default=0.3, ge=0, le=1)
    max_restarts: int = Field(default=3, ge=0)
    # Ray custom resources each inference actor requires (e.g. {"gpu_host": 0.01}); actors of
    # the pool are spread over the nodes that have them.
    resources: dict[str, float] = Field(default_factory=dict)


class FlowConfig(StrictModel):
    """Bounds on work in flight at every edge: what keeps memory flat."""

    max_frames_per_read: int = Field(default=8, ge=1)  # frames a sensor actor returns per call
    # Fused samples waiting for inference, per rig. In live mode it bounds latency: at most
    # this many samples' worth of queueing before the oldest is dropped.
    max_pending_samples: int = Field(default=8, ge=1)
    max_in_flight_batches: int = Field(default=4, ge=1)  # per inference actor
    # Live mode: predictions waiting for a slow output sink (written on its own thread) before
    # the oldest is dropped (reason sink_behind). Replay mode writes inline: lossless.
    max_sink_queue: int = Field(default=256, ge=1)
    max_restarts: int = Field(default=3, ge=0)  # sensor and fuser actors
    # Live: a sensor on its fuser's host hands frames over a Unix socket (pipelines/local_link.py)
    # rather than as Ray calls, which cost far more than the frames' bytes; false: Ray calls only.
    local_link: bool = True
    # Ray CPU reservations: sensors mostly wait on devices or clocks, fusers preprocess.
    sensor_num_cpus: float = Field(default=0.05, ge=0)
    fuser_num_cpus: float = Field(default=0.1, ge=0)
    # Start-up: when the cluster lacks resources the actors need, ask its autoscaler for them
    # and wait this long for nodes to join before failing; 0: fail at once.
    wait_for_nodes_s: float = Field(default=0.0, ge=0)


class MetricsConfig(StrictModel):
    """Prometheus export of the local Ray that `fusion run` starts; a cluster's nodes set theirs
    with `ray start --metrics-export-port` (docs/monitoring.md)."""

    # Ray's metrics export port; None: a free one, which Prometheus finds in Ray's service
    # discovery file. Ray's metrics agent binds every interface of the node, not this host.
    port: int | None = Field(default=None, ge=1, le=65535)
    # Where the local Ray's dashboard binds; its head writes the service discovery file.
    dashboard_host: str = "127.0.0.1"
    report_interval_s: float = Field(default=5.0, ge=1)  # processes push to the agent this often


class PipelineConfig(StrictModel):
    mode: Annotated[Mode, Strict(False)] = Mode.LIVE
    speed: float | None = Field(default=None, gt=0)  # replay pacing: 1 = real time, None = fast as possible
    duration_s: float | None = Field(default=None, gt=0)  # stop after this long (wall clock)
    model: ModelSpec = ModelSpec()
    rigs: list[RigConfig] = Field(min_length=1)
    inference: InferenceConfig = InferenceConfig()
    flow: FlowConfig = FlowConfig()
    metrics: MetricsConfig = MetricsConfig()
    output: str = "-"  # '-', PATH.jsonl, PATH.parquet or PATH.mcap

    @model_validator(mode="after")
    def _unique_rig_ids(self) -> PipelineConfig:
        ids = [r for rig in self.rigs for r in rig_ids(rig)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise InputError(f"rig ids must be unique, repeated: {dupes}")
        return self


def rig_ids(rig: RigConfig) -> list[str]:
    return [rig.id] if rig.replicas == 1 else [f"{rig.id}-{k}" for k in range(rig.replicas)]


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    return load_config(PipelineConfig, path)


def expand_rigs(config: PipelineConfig) -> list[tuple[str, RigConfig, int]]:
    """(rig id, rig config, replica index) for every rig, replicas expanded."""
    return [(rid, rig, k) for rig in config.rigs for k, rid in enumerate(rig_ids(rig))]


def replica_source(source: SourceConfig, sensor_id: str, replica: int) -> SourceConfig:
    """A sensor's source as its actor gets it: named after its key in the rig (unless the config
    names it), and for replicas of a simulated rig, watching a different world (seed + replica)."""
    update: dict[str, Any] = {} if source.sensor_id else {"sensor_id": sensor_id}
    world = getattr(source, "world", None)
    if replica and source.backend == "simulated" and world is not None:
        update["world"] = world.model_copy(update={"seed": world.seed + replica})
    return source.model_copy(update=update)
