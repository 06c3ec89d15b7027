"""Record, replay and inspect sensor data without Ray: `fusion record | replay | inspect`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from fusion.errors import InputError
from fusion.fuser import Fuser, PreprocessConfig
from fusion.recording import RecordingReader, Replayer
from fusion.sample import Frame, FusedSample, Modality
from fusion.sensors import EndOfStream, Source, SourceConfig, make_source, probe_file
from fusion.sync import SyncConfig
from fusion.training.labels import LABELS_FILE, write_labels


def build_sources(sensors: Mapping[str, tuple[Modality, SourceConfig]], *, rig: str) -> dict[str, Source]:
    """Every sensor of a rig (sensor id -> (modality, validated source config)), built but not
    opened; each is named after its key unless its config names it."""
    return {
        sid: make_source(m, _named(cfg, sid), source=f"rigs[{rig}].sensors.{sid}.source")
        for sid, (m, cfg) in sensors.items()
    }


def _named(config: SourceConfig, sensor_id: str) -> SourceConfig:
    return config if config.sensor_id else config.model_copy(update={"sensor_id": sensor_id})


def open_all(sources: Mapping[str, Source]) -> None:
    """Open every source; a missing file or device fails here, named, and closes the others."""
    opened: list[Source] = []
    try:
        for src in sources.values():
            src.open()
            opened.append(src)
    except BaseException:
        for src in opened:
            src.close()
        raise


class FrameWriter(Protocol):
    """Where `record` writes frames: a `RecordingWriter` (Arrow, Parquet) or an `McapWriter`."""

    def write(self, frame: Frame) -> None: ...
    def close(self) -> None: ...


def record(
    sources: Mapping[str, Source],
    writer: FrameWriter,
    *,
    duration_s: float | None,
    progress: TextIO | None = sys.stderr,
) -> dict[str, int]:
    """Write every frame of every (open) source until they end or `duration_s` (wall clock) passes.

    The sources and the writer are closed however this ends (Ctrl-C included).
    """
    counts = dict.fromkeys(sources, 0)
    live = dict(sources)
    deadline = time.monotonic() + duration_s if duration_s is not None else float("inf")
    last = 0.0
    try:
        while live and time.monotonic() < deadline:
            for sid, src in list(live.items()):
                try:
                    frame = src.read(timeout=0.01)
                except TimeoutError:
                    continue
                except EndOfStream:
                    del live[sid]
                    continue
                writer.write(frame)
                counts[sid] += 1
            if progress and time.monotonic() - last > 0.5:
                last = time.monotonic()
                shown = "  ".join(f"{sid} {n}" for sid, n in counts.items())
                print(f"\rrecording: {shown}", end="", file=progress, flush=True)
    finally:
        for src in sources.values():
            src.close()
        writer.close()
        if progress:
            print(file=progress)
    return counts


class SpanWriter:
    """A FrameWriter in front of another that notes the time span of what went through it."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer
        self.start = float("inf")
        self.end = float("-inf")

    def write(self, frame: Frame) -> None:
        self.writer.write(frame)
        self.start = min(self.start, frame.timestamp)
        self.end = max(self.end, frame.end_time)

    def close(self) -> None:
        self.writer.close()


def write_simulated_truth(sources: Mapping[str, Source], span: SpanWriter, directory: Path) -> Path | None:
    """When every source is simulated in one world on one clock, write that world's ground truth
    over the recorded span as `directory/labels.csv` (see `fusion.sim.truth`); else None."""
    from fusion.sensors.simulated import SimulatedSource
    from fusion.sensors.simulated_config import Clock
    from fusion.sim.truth import ground_truth
    from fusion.sim.world import World

    # Scene time is the frames' time only on the Unix clock; restamped frames get no truth.
    sims = [s for s in sources.values() if isinstance(s, SimulatedSource) and s.config.clock is Clock.UNIX]
    if not sims or len(sims) != len(sources) or span.end < span.start:
        return None
    clocks = {
        (s.config.world.model_dump_json(), s.config.realtime, None if s.config.realtime else s.config.start_s)
        for s in sims
    }
    if len(clocks) != 1:
        return None
    config = sims[0].config
    segments = ground_truth(
        World(config.world),
        start=span.start,
        end=span.end,
        rate_hz=max(s.config.rate_hz for s in sims),
        origin=0.0 if config.realtime else config.start_s,
    )
    return write_labels(directory / LABELS_FILE, segments)


def replay_samples(
    recording: Path,
    *,
    speed: float | None,
    rig: str = "replay",
    sync: SyncConfig | None = None,
    preprocess: PreprocessConfig | None = None,
) -> Iterator[FusedSample]:
    """Frames of a recording through a lossless Fuser: the same FusedSamples on every call, as they form."""
    reader = RecordingReader(recording)
    if not reader.sensors:
        raise InputError(f"{recording}: no sensor streams to replay (a recording of fused samples only?)")
    sensors = {sid: info.modality for sid, info in reader.sensors.items()}
    fuser = Fuser(rig=rig, sensors=sensors, sync=sync, preprocess=preprocess, lossless=True)
    for frame in Replayer(reader, speed=speed):
        yield from fuser.push([frame])
    yield from fuser.finish()


def inspect_lines(paths: Sequence[str]) -> tuple[list[str], bool]:
    """One block per path; (lines, all readable). Unreadable files get one line naming the problem."""
    lines, ok = [], True
    for path in paths:
        try:
            r = probe_file(path)
        except (OSError, ValueError, RuntimeError) as err:
            ok = False
            text = str(err).removeprefix(f"{path}: ")  # messages often start with the path already
            lines.append(f"{path}: error: {text}")
            continue
        lines.append(
            f"{r.path}: {r.modality.value} ({r.backend}), {r.frames} frames, "
            f"{r.start:.3f}-{r.end:.3f} s, {r.rate:.2f}/s, {r.shapes}"
        )
        lines.extend(f"  {k}: {v}" for k, v in r.details.items())
    return lines, ok
