"""The actor calls the drivers and recovery make, as one small interface: `ActorPort`.

Drivers (`pipelines.drivers`) and recovery (`pipelines.recovery`) keep the run's books in a
`RunState` and reach the actors only through this port, so they import no Ray and are tested
with a fake port (`tests/pipelines/fake_port.py`). The runner gives them `RayPort`
(`pipelines.ray_port`), which makes these calls with Ray.

A call that starts work returns a `Ref`: an opaque reference to its answer, later passed to
`ready` and `result`. Nothing here blocks unless its docstring says for how long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fusion.flow.messages import InferenceInfo
    from fusion.sample import FusedSample
    from pipelines.run_state import InferenceHandle, RigHandle, SensorHandle

Ref = Any  # what a call returns and `result` answers; a Ray ObjectRef under RayPort


class ActorLost(Exception):
    """The actor behind a call died (Ray may be restarting it); the call's work is gone."""


class ActorUnavailable(ActorLost):
    """The actor is restarting and cannot answer yet; asking again later may succeed."""


class OwnerLost(Exception):
    """The answer was owned by an actor that died (a prediction a fuser dispatched itself)."""


@dataclass(frozen=True)
class NodeView:
    """One node of the cluster as the port sees it now."""

    address: str
    resources: dict[str, float] = field(default_factory=dict)


class ActorPort(Protocol):
    """Every actor call the drivers and recovery make. Calls returning a `Ref` never block."""

    # ---- answers --------------------------------------------------------------------------
    def ready(self, refs: Sequence[Ref], timeout: float) -> list[Ref]:
        """The refs already answered; blocks up to `timeout` s for the first one."""

    def result(self, ref: Ref, timeout: float | None = None) -> Any:
        """The answer of `ref`, waiting up to `timeout` s (None: until it comes). Raises
        `ActorUnavailable` / `ActorLost` when its actor is restarting / died, `OwnerLost`,
        `TimeoutError` when it has not come in time; an error raised in the actor as itself."""

    # ---- sensors --------------------------------------------------------------------------
    def start_sensor(self, sensor: SensorHandle, resume_from: int) -> Ref:
        """(Re)open the sensor's source, skipping `resume_from` frames (replay)."""

    def take(self, sensor: SensorHandle, max_frames: int, timeout: float) -> tuple[Ref, Ref]:
        """Replay: read up to `max_frames`; (ref of the `Taken | None`, ref of the frames)."""

    def stream_to(self, sensor: SensorHandle, rig: RigHandle, max_frames: int, max_pushes: int) -> str:
        """Live: the sensor streams to its rig's fuser from now on; how ('socket' or 'ray').
        Blocks until the sensor answers (bounded by the port's call timeout)."""

    def stream_state(self, sensor: SensorHandle) -> Ref:
        """Live: ref of the sensor's `StreamState`."""

    def set_enabled(self, sensor: SensorHandle, enabled: bool) -> None:
        """Live: a switched-off sensor discards its frames; does not wait for the answer."""

    def stop_streams(self, sensors: Sequence[SensorHandle], timeout: float) -> None:
        """Live: every sensor stops handing frames over; blocks up to `timeout` s; a lost
        sensor is skipped (it has nothing more to hand over)."""

    # ---- fusers ---------------------------------------------------------------------------
    def fuser_links(self, rigs: Sequence[RigHandle]) -> list[tuple[str, str]]:
        """Live: each fuser's local link (node id, socket path); blocks until they answer."""

    def collect(self, rig: RigHandle, wait_s: float) -> Ref:
        """Live: ref of what the fuser did since the last collect (a list of `Collected`)."""

    def push(self, rig: RigHandle, frames: Sequence[Ref]) -> Ref:
        """Replay: hand frame references to the fuser; ref of the samples it fused."""

    def finish(self, rig: RigHandle) -> Ref:
        """Replay: the sources have ended; ref of the last samples the fuser fuses."""

    def fuser_stats(self, rig: RigHandle) -> Ref:
        """Ref of the fuser's `stats()` (also a cheap way to ask whether it is alive)."""

    # ---- inference ------------------------------------------------------------------------
    def infer(self, handle: InferenceHandle, sample: FusedSample) -> Ref:
        """Live: ref of one Prediction, dynamically batched at the actor."""

    def infer_batch(self, handle: InferenceHandle, batch: Sequence[FusedSample]) -> Ref:
        """Replay: ref of the Predictions of exactly this batch."""

    def info(self, handle: InferenceHandle) -> Ref:
        """Ref of the actor's `InferenceInfo` (which process it is now)."""

    # ---- the cluster ----------------------------------------------------------------------
    def alive_nodes(self) -> dict[str, NodeView]:
        """Node id -> view, of every node alive now."""

    def kill_rig(self, rig: RigHandle) -> None:
        """Kill the rig's fuser and sensors for good (no restart): nothing waits on them."""


def info_process(info: InferenceInfo) -> tuple[str, int]:
    """(node id, pid): which process answers behind an inference actor."""
    return info.node_id, info.pid
