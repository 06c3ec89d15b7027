"""The typed messages the pipeline's actors and driver exchange, matched with `match`.

They cross process boundaries (as Ray call results, or pickled over a local link), so they are
plain frozen dataclasses of picklable fields. A Ray object reference travels as `Any`: this
package does not import Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fusion.sample import FusedSample, Prediction


# ---- inference actor -> fuser, over the local link ---------------------------------------------
@dataclass(frozen=True)
class Inferred:
    """The prediction of the linked sample `seq`."""

    seq: int
    prediction: Prediction


@dataclass(frozen=True)
class InferFailed:
    """The batch of the linked sample `seq` raised; `why` says how."""

    seq: int
    why: str


LinkReply = Inferred | InferFailed


def check_link_reply(message: object) -> str | None:
    """What is wrong with a message read from an inference actor's link (None: nothing)."""
    if isinstance(message, LinkReply):
        return None
    return f"expected a prediction reply, got {type(message).__name__}"


# ---- fuser -> driver: what `FuserActor.collect` hands over, oldest first (live) ----------------
@dataclass(frozen=True)
class Queued:
    """Fused, found no inference actor with room: the driver dispatches it, or drops it."""

    sample: FusedSample


@dataclass(frozen=True)
class Dispatched:
    """Sent to pool[slot] as a Ray call; `ref` is the reference of its prediction."""

    sample: FusedSample
    slot: int
    ref: Any


@dataclass(frozen=True)
class Linked:
    """Sent to pool[slot] over its local link: the prediction follows in a later collect."""

    sample: FusedSample
    slot: int


@dataclass(frozen=True)
class Predicted:
    """The prediction of a linked sample, answered by pool[slot]."""

    prediction: Prediction
    slot: int


@dataclass(frozen=True)
class Lost:
    """A linked sample whose actor's link broke before it answered: to resubmit."""

    sample: FusedSample
    slot: int


@dataclass(frozen=True)
class Failed:
    """A linked sample whose batch raised on pool[slot]: the run fails naming it."""

    sample: FusedSample
    slot: int
    why: str


Collected = Queued | Dispatched | Linked | Predicted | Lost | Failed


# ---- sensor actor -> driver --------------------------------------------------------------------
@dataclass(frozen=True)
class Taken:
    """What a replay read gave (`SensorActor.take`): how many frames, the newest one's timestamp.
    The frames themselves go to the fuser by reference."""

    count: int
    newest: float


@dataclass(frozen=True)
class StreamState:
    """Live: whether a sensor's stream runs, why it stopped, what it delivered and discarded."""

    streaming: bool
    error: str | None
    ended: bool
    delivered: int
    discarded: int
    newest: float


# ---- inference actor -> driver -----------------------------------------------------------------
@dataclass(frozen=True)
class InferenceInfo:
    """What an inference actor runs, and which process it is (`InferenceActor.info`)."""

    device: str  # "cpu", "cuda:0"
    model_version: str  # "<checkpoint file>@<sha256 prefix>", or "<name>@random-init"
    model: str  # the model config's name
    class_names: tuple[str, ...]
    parameters: int
    torch_threads: int  # Ray sets it from the actor's num_cpus
    node_id: str
    pid: int


# ---- the driver's calls in flight: what a finished Ray reference was for ----------------------
SensorKey = tuple[str, str]  # (rig id, sensor id)


@dataclass(frozen=True)
class ReadCall:
    """Replay: `SensorActor.take` of `sensor`; `frames` is the reference to the frames it read."""

    sensor: SensorKey
    frames: Any


@dataclass(frozen=True)
class PushCall:
    """Replay: `FuserActor.push` or `finish` of `rig`, answered by the samples it fused."""

    rig: str


@dataclass(frozen=True)
class CollectCall:
    """Live: `FuserActor.collect` of `rig`, answered by a list of `Collected`."""

    rig: str


@dataclass(frozen=True)
class WatchCall:
    """Live: `SensorActor.stream_state` of `sensor`, answered by a `StreamState`."""

    sensor: SensorKey


@dataclass(frozen=True)
class InferCall:
    """A prediction call to pool[slot] for `batch` (one sample, or replay's fixed batch)."""

    slot: int
    batch: tuple[FusedSample, ...]


Call = ReadCall | PushCall | CollectCall | WatchCall | InferCall
