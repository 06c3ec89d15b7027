"""`RayPort`: the `ActorPort` the runner gives its drivers and recovery, making each call with Ray."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    OwnerDiedError,
    RayActorError,
)

from fusion.flow.reader import SensorNotStarted
from fusion.sample import FusedSample
from pipelines.port import ActorLost, ActorUnavailable, NodeView, OwnerLost, Ref
from pipelines.run_state import InferenceHandle, RigHandle, SensorHandle

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 120.0  # the longest a blocking call waits for an actor to answer


class RayPort:
    """Each `ActorPort` call as the Ray call to the actor behind a handle."""

    def ready(self, refs: Sequence[Ref], timeout: float) -> list[Ref]:
        refs = list(refs)
        first, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if not first or not rest:
            return list(first)
        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
        return list(first) + list(more)

    def result(self, ref: Ref, timeout: float | None = None) -> Any:
        try:
            return ray.get(ref, timeout=timeout)
        except GetTimeoutError as err:
            raise TimeoutError(str(err)) from err
        except ActorUnavailableError as err:
            raise ActorUnavailable(str(err)) from err
        except (RayActorError, ActorDiedError, SensorNotStarted) as err:
            raise ActorLost(f"{type(err).__name__}: {err}") from err
        except OwnerDiedError as err:
            raise OwnerLost(str(err)) from err

    # ---- sensors --------------------------------------------------------------------------
    def start_sensor(self, sensor: SensorHandle, resume_from: int) -> Ref:
        return sensor.actor.start.remote(resume_from=resume_from)

    def take(self, sensor: SensorHandle, max_frames: int, timeout: float) -> tuple[Ref, Ref]:
        taken, frames = sensor.actor.take.remote(max_frames, timeout)
        return taken, frames

    def stream_to(self, sensor: SensorHandle, rig: RigHandle, max_frames: int, max_pushes: int) -> str:
        ref = sensor.actor.stream_to.remote(rig.fuser, max_frames, max_pushes, rig.link)
        return str(ray.get(ref, timeout=CALL_TIMEOUT_S))

    def stream_state(self, sensor: SensorHandle) -> Ref:
        return sensor.actor.stream_state.remote()

    def set_enabled(self, sensor: SensorHandle, enabled: bool) -> None:
        sensor.actor.set_enabled.remote(enabled)

    def stop_streams(self, sensors: Sequence[SensorHandle], timeout: float) -> None:
        try:
            ray.get([s.actor.stop_stream.remote() for s in sensors], timeout=timeout)
        except Exception as err:  # a lost sensor has nothing more to hand over
            log.debug("stop streams: %s", err)

    # ---- fusers ---------------------------------------------------------------------------
    def fuser_links(self, rigs: Sequence[RigHandle]) -> list[tuple[str, str]]:
        links = ray.get([rig.fuser.listen.remote() for rig in rigs], timeout=CALL_TIMEOUT_S)
        return [(str(node), str(path)) for node, path in links]

    def collect(self, rig: RigHandle, wait_s: float) -> Ref:
        return rig.fuser.collect.remote(wait_s)

    def push(self, rig: RigHandle, frames: Sequence[Ref]) -> Ref:
        return rig.fuser.push.remote(*frames)  # references: Ray resolves them in the fuser

    def finish(self, rig: RigHandle) -> Ref:
        return rig.fuser.finish.remote()

    def fuser_stats(self, rig: RigHandle) -> Ref:
        return rig.fuser.stats.remote()

    # ---- inference ------------------------------------------------------------------------
    def infer(self, handle: InferenceHandle, sample: FusedSample) -> Ref:
        return handle.actor.infer.remote(sample)

    def infer_batch(self, handle: InferenceHandle, batch: Sequence[FusedSample]) -> Ref:
        return handle.actor.infer_batch.remote(list(batch))

    def info(self, handle: InferenceHandle) -> Ref:
        return handle.actor.info.remote()

    # ---- the cluster ----------------------------------------------------------------------
    def alive_nodes(self) -> dict[str, NodeView]:
        return {
            n["NodeID"]: NodeView(address=n["NodeManagerAddress"], resources=dict(n["Resources"]))
            for n in ray.nodes()
            if n["Alive"]
        }

    def kill_rig(self, rig: RigHandle) -> None:
        for actor in [rig.fuser, *(s.actor for s in rig.sensors)]:
            ray.kill(actor, no_restart=True)
