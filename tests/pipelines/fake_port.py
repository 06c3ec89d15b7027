"""A fake `ActorPort` for the drivers' and recovery's tests: every call is recorded and returns a
fresh reference; a test answers references (or makes them raise) by hand. No Ray anywhere."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fusion.flow.dispatch import PendingQueue
from fusion.flow.messages import InferenceInfo
from fusion.flow.replay import PushWindow
from fusion.sample import Modality
from fusion.sinks.base import CallbackSink, OrderedSink
from pipelines.config import PipelineConfig
from pipelines.drivers import MAX_PUSHES
from pipelines.port import NodeView
from pipelines.run_state import InferenceHandle, RigHandle, RunState, SensorHandle

_ids = itertools.count()


@dataclass(frozen=True)
class Ref:
    """What a fake call returns: the call's name and arguments, and a unique id."""

    call: str
    args: tuple
    id: int = field(default_factory=lambda: next(_ids))


class FakePort:
    """Records every call in `calls` (name, args); answers what `answer` / `fail` said."""

    def __init__(self, nodes: dict[str, NodeView] | None = None) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.answers: dict[Ref, Any] = {}
        self.nodes = (
            nodes if nodes is not None else {"n1": NodeView(address="10.0.0.1", resources={"CPU": 2.0})}
        )
        self.stream_how = "socket"

    def _ref(self, call: str, *args: Any) -> Ref:
        self.calls.append((call, args))
        return Ref(call, args)

    def made(self, call: str) -> list[tuple]:
        """The arguments of every call named `call`, in order."""
        return [args for name, args in self.calls if name == call]

    def answer(self, ref: Ref, value: Any) -> None:
        self.answers[ref] = value

    def fail(self, ref: Ref, error: Exception) -> None:
        self.answers[ref] = error

    def ready(self, refs: Sequence[Ref], timeout: float) -> list[Ref]:
        return [r for r in refs if r in self.answers]

    def result(self, ref: Ref, timeout: float | None = None) -> Any:
        if ref not in self.answers:
            raise TimeoutError(f"{ref.call} not answered")
        value = self.answers[ref]
        if isinstance(value, Exception):
            raise value
        return value

    def start_sensor(self, sensor, resume_from):
        return self._ref("start_sensor", sensor.key, resume_from)

    def take(self, sensor, max_frames, timeout):
        return self._ref("take", sensor.key), Ref("frames", (sensor.key,))

    def stream_to(self, sensor, rig, max_frames, max_pushes):
        self.calls.append(("stream_to", (sensor.key, rig.link)))
        return self.stream_how

    def stream_state(self, sensor):
        return self._ref("stream_state", sensor.key)

    def set_enabled(self, sensor, enabled):
        self.calls.append(("set_enabled", (sensor.key, enabled)))

    def stop_streams(self, sensors, timeout):
        self.calls.append(("stop_streams", tuple(s.key for s in sensors)))

    def fuser_links(self, rigs):
        return [("n1", f"/tmp/{rig.id}.sock") for rig in rigs]

    def collect(self, rig, wait_s):
        return self._ref("collect", rig.id, wait_s)

    def push(self, rig, frames):
        return self._ref("push", rig.id, tuple(frames))

    def finish(self, rig):
        return self._ref("finish", rig.id)

    def fuser_stats(self, rig):
        return self._ref("fuser_stats", rig.id)

    def infer(self, handle, sample):
        return self._ref("infer", sample.seq)

    def infer_batch(self, handle, batch):
        return self._ref("infer_batch", tuple(s.seq for s in batch))

    def info(self, handle):
        return self._ref("info", handle.info.pid)

    def alive_nodes(self):
        return dict(self.nodes)

    def kill_rig(self, rig):
        self.calls.append(("kill_rig", (rig.id,)))


def info(pid: int = 1, node: str = "n1") -> InferenceInfo:
    return InferenceInfo(
        device="cpu",
        model_version="m@0",
        model="m",
        class_names=("a",),
        parameters=1,
        torch_threads=1,
        node_id=node,
        pid=pid,
    )


def make_state(
    config: PipelineConfig, *, lossless: bool, got: list | None = None, actors: int = 1
) -> RunState:
    """A RunState holding config's first rig (its sensors by key) and `actors` inference handles."""
    sink = OrderedSink(CallbackSink((got if got is not None else []).append))
    state = RunState(config=config, sink=sink, lossless=lossless)
    rig = config.rigs[0]
    sensors = [
        SensorHandle(rig=rig.id, sensor_id=sid, modality=Modality(spec.modality), actor=object())
        for sid, spec in rig.sensors.items()
    ]
    pending = PendingQueue(capacity=config.flow.max_pending_samples, drop_oldest=not lossless)
    state.rigs.append(
        RigHandle(
            id=rig.id,
            fuser=object(),
            sensors=sensors,
            pending=pending,
            window=PushWindow(max_pushes=MAX_PUSHES),
        )
    )
    state.pool.extend(InferenceHandle(actor=object(), info=info(pid=100 + k)) for k in range(actors))
    return state
