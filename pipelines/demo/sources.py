"""Which source each sensor of the demo really uses: its device when it answers, else the simulated world.

`resolve_sources` tries every configured sensor once in the driver (open it, wait up to
`probe_s` for a first frame, close it) and replaces any that fails with a simulated source,
keeping the reason so the demo can announce it. Devices are tried in parallel, so a rig with
no LiDAR on the network costs one probe time, not three.

Live devices stamp frames with the host's monotonic clock; the simulated world in real time
stamps them with Unix time. One rig fuses by timestamp, so in the demo every simulated source
runs with `clock: monotonic`: the same world, restamped onto the monotonic clock, and a
webcam and a simulated LiDAR then land on the same ticks.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from fusion.sample import Modality
from fusion.sensors import (
    EndOfStream,
    SourceConfig,
    SourceError,
    make_source,
    parse_source,
    source_config_class,
)
from pipelines.config import PipelineConfig, RigConfig, SensorSpec

SIMULATED = "simulated"
# What a simulated source runs as in the demo: in real time, on the clock live devices stamp with.
DEMO_SIMULATED = {"backend": SIMULATED, "realtime": True, "clock": "monotonic"}
# Rates of the simulated stand-ins: a webcam's 30 fps, 50 ms audio chunks, a 600 rpm LiDAR.
FALLBACK_RATE_HZ = {Modality.CAMERA: 30.0, Modality.MICROPHONE: 20.0, Modality.LIDAR: 10.0}


@dataclass(frozen=True)
class SensorPlan:
    """What the demo runs for one configured sensor, and why."""

    rig: str
    sensor_id: str
    modality: Modality
    kind: Literal["device", "simulated", "fallback"]  # fallback: simulated in place of a device
    description: str  # the device or file, or the simulated world
    reason: str = ""  # fallback only: why the device was not used
    source: SourceConfig | None = None  # what it runs as (a simulated one names its world)

    def announcement(self) -> str:
        where = f"{self.rig}/{self.sensor_id} ({self.modality.value})"
        if self.kind == "fallback":
            return f"{where}: {self.reason} -> SIMULATED world instead"
        if self.kind == "device":
            return f"{where}: live {self.description}"
        return f"{where}: {self.description}"


def _describe(source: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in source.items() if k not in ("backend", "sensor_id"))
    return f"{source.get('backend')} ({fields})" if fields else str(source.get("backend"))


def probe(modality: Modality, source: dict[str, Any], *, name: str, probe_s: float) -> str | None:
    """None when the source opens and delivers a frame within `probe_s`, else why not."""
    src = make_source(
        modality, parse_source(modality, source, source=name), source=name
    )  # a bad key fails here: the user's to fix
    try:
        src.open()
    except (SourceError, OSError) as err:
        return str(err)
    try:
        src.read(timeout=probe_s)
    except TimeoutError:
        return f"{_describe(source)} gave no frame within {probe_s:g} s"
    except EndOfStream:
        return f"{_describe(source)} holds no frame"
    finally:
        src.close()
    return None


def fallback_source(modality: Modality, source: dict[str, Any]) -> dict[str, Any]:
    """The simulated stand-in for a device: its rate, size and sample rate where the device config gives them."""
    sim: dict[str, Any] = {**DEMO_SIMULATED, "rate_hz": FALLBACK_RATE_HZ[modality]}
    if modality is Modality.CAMERA:
        sim |= {"width": source.get("width") or 320, "height": source.get("height") or 240}
    elif modality is Modality.MICROPHONE:
        sim["sample_rate"] = source.get("sample_rate", 16000)
    elif "rpm" in source:
        sim["rate_hz"] = source["rpm"] / 60
    return sim


def _plan_sensor(
    rid: str, sensor_id: str, spec: SensorSpec, probe_s: float
) -> tuple[SensorPlan, SourceConfig]:
    plan, source = _plan_sensor_source(rid, sensor_id, spec, probe_s)
    typed = source_config_class(spec.modality, source["backend"]).model_validate(source)
    return dataclasses.replace(plan, source=typed), typed


def _plan_sensor_source(
    rid: str, sensor_id: str, spec: SensorSpec, probe_s: float
) -> tuple[SensorPlan, dict[str, Any]]:
    source = spec.source.model_dump(exclude_unset=True)  # the keys the config gives
    if source.get("backend") == SIMULATED:
        plan = SensorPlan(rid, sensor_id, spec.modality, "simulated", "simulated world")
        return plan, {**source, **DEMO_SIMULATED}
    named = {"sensor_id": sensor_id, **source}  # so that messages name the sensor as the rig does
    problem = probe(spec.modality, named, name=f"rigs[{rid}].sensors.{sensor_id}.source", probe_s=probe_s)
    if problem is None:
        return SensorPlan(rid, sensor_id, spec.modality, "device", _describe(source)), source
    plan = SensorPlan(rid, sensor_id, spec.modality, "fallback", "simulated world", reason=problem)
    return plan, fallback_source(spec.modality, source)


def resolve_sources(config: PipelineConfig, *, probe_s: float) -> tuple[PipelineConfig, list[SensorPlan]]:
    """The config with every absent device replaced by the simulated world, and a plan per sensor."""
    jobs = [(rig, sid, spec) for rig in config.rigs for sid, spec in rig.sensors.items()]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        results = list(pool.map(lambda job: _plan_sensor(job[0].id, job[1], job[2], probe_s), jobs))
    sources = {(rig.id, sid): src for (rig, sid, _), (_, src) in zip(jobs, results, strict=True)}
    rigs: list[RigConfig] = []
    for rig in config.rigs:
        sensors = {
            sid: spec.model_copy(update={"source": sources[(rig.id, sid)]})
            for sid, spec in rig.sensors.items()
        }
        rigs.append(rig.model_copy(update={"sensors": sensors}))
    return config.model_copy(update={"rigs": rigs}), [plan for plan, _ in results]
