"""Record, replay and inspect sensor data without Ray: `fusion record | replay | inspect`."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from fusion.fuser import Fuser
from fusion.recording import RecordingReader, RecordingWriter, Replayer
from fusion.sample import FusedSample, Modality
from fusion.sensors import EndOfStream, Source, make_source, probe_file


def open_sources(sensors: Mapping[str, tuple[Modality, dict[str, Any]]], *, rig: str) -> dict[str, Source]:
    """Build and open every sensor of a rig; a bad backend, key, file or device fails here, named."""
    sources = {
        sid: make_source(m, {"sensor_id": sid, **cfg}, source=f"rigs[{rig}].sensors.{sid}.source")
        for sid, (m, cfg) in sensors.items()
    }
    opened: list[Source] = []
    try:
        for src in sources.values():
            src.open()
            opened.append(src)
    except BaseException:
        for src in opened:
            src.close()
        raise
    return sources


def record(
    sources: Mapping[str, Source],
    out: Path,
    *,
    duration_s: float | None,
    fmt: str = "arrow",
    progress: TextIO | None = sys.stderr,
) -> dict[str, int]:
    """Write every frame of every source until they end or `duration_s` (wall clock) passes."""
    counts = dict.fromkeys(sources, 0)
    live = dict(sources)
    deadline = time.monotonic() + duration_s if duration_s else float("inf")
    last = 0.0
    with RecordingWriter(out, format=fmt) as writer:  # type: ignore[arg-type]
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
    for src in sources.values():
        src.close()
    if progress:
        print(file=progress)
    return counts


def replay_samples(
    recording: Path,
    *,
    speed: float | None,
    rig: str = "replay",
    sync: Mapping[str, Any] | None = None,
    preprocess: Mapping[Modality, Mapping[str, Any]] | None = None,
) -> list[FusedSample]:
    """Frames of a recording through a lossless Fuser: the same FusedSamples on every call."""
    reader = RecordingReader(recording)
    sensors = {sid: info.modality for sid, info in reader.sensors.items()}
    fuser = Fuser(rig=rig, sensors=sensors, sync=sync, preprocess=preprocess, lossless=True)
    samples: list[FusedSample] = []
    for frame in Replayer(reader, speed=speed):
        samples.extend(fuser.push([frame]))
    samples.extend(fuser.finish())
    return samples


def inspect_lines(paths: Sequence[str]) -> tuple[list[str], bool]:
    """One block per path; (lines, all readable). Unreadable files get one line naming the problem."""
    lines, ok = [], True
    for path in paths:
        try:
            r = probe_file(path)
        except (OSError, ValueError, RuntimeError) as err:
            ok = False
            lines.append(f"{path}: error: {err}")
            continue
        lines.append(
            f"{r.path}: {r.modality.value} ({r.backend}), {r.frames} frames, "
            f"{r.start:.3f}-{r.end:.3f} s, {r.rate:.2f}/s, {r.shapes}"
        )
        lines.extend(f"  {k}: {v}" for k, v in r.details.items())
    return lines, ok
