"""The sensor's Ray actor: a thin shell around a `fusion.sensors` source.

Its contract is written on it; the source it wraps is tested without Ray. A Ray worker imports
the module of the actor class it hosts, so sensor processes, like fusers
(`pipelines.fuser_actor`), never load torch (seconds of start-up and hundreds of MB each); the
model's actor is in `pipelines.inference_actor`.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import ray

from fusion.clock import Pacer
from fusion.flow.messages import StreamState, Taken
from fusion.flow.reader import SensorNotStarted, SourceReader
from fusion.sample import Frame, Modality
from fusion.sensors import Source, SourceConfig, make_source
from pipelines.local_link import FrameClient, LinkError
from pipelines.metrics.recorders import SourceMetrics

log = logging.getLogger(__name__)


@ray.remote
class SensorActor:
    """One sensor's source.

    `start()` opens the source and must come first. Replay: `read(max_frames, timeout_s)` (or
    `take`, its driver-side split) returns up to `max_frames` frames in capture order: `[]`
    when a live source gave nothing within `timeout_s`, `None` once a finite source has ended;
    it blocks at most `timeout_s`, and sources are paced by `speed`. Live: `stream_to` starts a
    thread that hands every frame to the fuser by itself; `stream_state` says whether it runs.

    On restart (Ray reconstructs the actor after it died) the source is closed and the stream
    stopped: every call but `start` raises `SensorNotStarted` until the driver calls
    `start(resume_from=k)`, which skips the k frames already delivered, so a replay continues
    exactly where it stopped (a live device goes on from now, k = 0).
    """

    def __init__(
        self, *, rig: str, modality: Modality, source: SourceConfig, name: str, speed: float | None
    ) -> None:
        self.name = name
        self.source: Source = make_source(modality, source, source=name)
        self.metrics = SourceMetrics(rig=rig, modality=modality)
        self.reader = SourceReader(self.source, Pacer(speed), name=name)
        # Live: the thread that reads the device and hands frames to the fuser (`stream_to`).
        self._streamer: threading.Thread | None = None
        self._stop_stream = threading.Event()
        self.stream_error: str | None = None
        self.enabled = True  # switched off: frames are read (the device never backs up) and dropped
        self.discarded = 0

    def start(self, resume_from: int = 0) -> int:
        """Open the source (fails naming the file or device); returns frames skipped to resume."""
        return self.reader.start(resume_from)

    def read(self, max_frames: int, timeout_s: float, *, record: bool = True) -> list[Frame] | None:
        """Waits up to `timeout_s` for the first frame, then takes only those already due
        (`fusion.flow.reader.SourceReader.read`). `record: False` leaves the metrics to the
        caller (the stream records after the hand-over)."""
        frames = self.reader.read(max_frames, timeout_s)
        if record:
            self.metrics.record(len(frames or ()), self.source.stats)
        return frames

    @ray.method(num_returns=2)  # type: ignore[misc]  # ray.method is untyped
    def take(self, max_frames: int, timeout_s: float) -> tuple[Taken | None, list[Frame]]:
        """`read` split for the driver: `Taken` (how many frames, the newest one's timestamp), or
        None once the source has ended, and the frames. The driver waits on the first and hands the
        second to the fuser by reference, so frames go from the sensor to its fuser (on a
        cluster, within the rig's node) without passing through the driver."""
        frames = self.read(max_frames, timeout_s)
        if frames is None:
            return None, []
        return Taken(count=len(frames), newest=frames[-1].timestamp if frames else -math.inf), frames

    def stream_to(
        self, fuser: Any, max_frames: int, max_pushes: int, link: tuple[str, str] | None = None
    ) -> str:
        """Live: from now on a thread of this actor reads the device and hands every frame to
        `fuser.push_from` as soon as it is captured: one Ray hop from the device to its fuser,
        with no round trip through the driver per read. At most `max_pushes` hand-overs are in
        flight; past that the thread waits, and the device's own buffer takes the backlog
        (and counts what it overwrites), so a stalled fuser never makes the sensor block.

        `link` is the fuser's (node id, socket path) from `FuserActor.listen`: on the same node
        frames go over that socket (`pipelines.local_link`) instead of as Ray calls, which cost
        far more here than the frames' bytes. Returns how frames travel: "socket" or "ray"."""
        if not self.reader.started:
            raise SensorNotStarted(f"{self.name}: stream_to before start (the actor was restarted)")
        self.stop_stream()
        self._stop_stream.clear()
        self.stream_error = None
        client = None
        if link is not None and link[0] == ray.get_runtime_context().get_node_id():
            try:
                client = FrameClient(link[1])
            except LinkError as err:  # Ray calls still work
                self.stream_error = f"{err}; frames go as Ray calls"
        self._streamer = threading.Thread(
            target=self._stream,
            args=(fuser, client, max_frames, max_pushes),
            name=f"stream-{self.name}",
            daemon=True,
        )
        self._streamer.start()
        return "ray" if client is None else "socket"

    def _stream(self, fuser: Any, client: FrameClient | None, max_frames: int, max_pushes: int) -> None:
        in_flight: list[Any] = []
        try:
            while not self._stop_stream.is_set():
                frames = self.read(max_frames, 0.05, record=False)
                if not frames:
                    self.metrics.record(0, self.source.stats)
                    if frames is None:
                        return  # a finite source ended
                    continue
                if not self.enabled:
                    self.discarded += len(frames)
                    self.source.stats.dropped["sensor_off"] += len(frames)
                elif client is not None:
                    client.send(frames)  # blocks while the fuser is behind: the device buffer overruns
                else:
                    in_flight.append(fuser.push_from.remote(frames))
                    _, in_flight = ray.wait(in_flight, num_returns=len(in_flight), timeout=0)
                    if len(in_flight) >= max_pushes:
                        _, in_flight = ray.wait(in_flight, num_returns=len(in_flight) - max_pushes + 1)
                self.metrics.record(len(frames), self.source.stats)  # after the hand-over, off its path
        except Exception as err:  # reported by `stream_state`; the driver restarts the stream
            self.stream_error = f"{type(err).__name__}: {err}"
        finally:
            if client is not None:
                client.close()

    def stream_state(self) -> StreamState:
        """Live: whether the stream runs, why it stopped, and what this sensor delivered and discarded."""
        return StreamState(
            streaming=self._streamer is not None and self._streamer.is_alive(),
            error=self.stream_error,
            ended=self.reader.ended,
            delivered=self.reader.delivered,
            discarded=self.discarded,
            newest=self.reader.newest,
        )

    def set_enabled(self, enabled: bool) -> None:
        """Live: switched off, the stream still reads the device (it never backs up) and drops
        the frames, counted as `sensor_off`. Returns at once."""
        self.enabled = enabled

    def stop_stream(self) -> None:
        """Live: stop handing frames over; blocks up to 5 s for the stream's thread to end."""
        self._stop_stream.set()
        if self._streamer is not None:
            self._streamer.join(timeout=5.0)
            self._streamer = None

    def close(self) -> None:
        """Stop the stream and close the source (the device or file is released)."""
        self.stop_stream()
        self.source.close()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()
