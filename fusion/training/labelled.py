"""Training data from a labelled recording: `fusion data from-recording`.

The frames, of a fusion recording or of any finite sources a rig config names (ROS bags,
media files), go through a lossless `fusion.fuser.Fuser` with the rig's sync and
preprocessing, the pipeline's own path, so a model is trained on what it will be fed. Each fused
sample takes the rows of the labels file covering its tick time (`fusion.training.labels`):
`objects`, every object's box with its class mapped onto the class list by a `ClassMap` ([] for
`nothing`; None when an object there has no size, so no box); and, as in today's one-label data,
`label` and `target_position`, the class index and x, y, z (None without) of the first of those
rows in start order, then file order (object 0 of a simulated session; the one row of a
one-label file, whose samples keep the label and position they had before object lists).
The shards are those of `fusion data generate` (`fusion.training.data`): the FusedSample schema plus
the `scene` column, of which a recording knows only the object's range (from the position);
the other conditions are null. `fusion train` and `fusion eval` read them unchanged.

Samples whose tick lies in no label segment are skipped and counted (`unlabelled`), also when
the class list has a 'nothing' class: a gap in a labels file is time nobody looked at, not time
known to be empty, so a labeller marks empty time with a segment of its own. Samples with no
usable modality at all are skipped and counted too (`no_input`).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from fusion.detection.boxes import Box3D
from fusion.errors import InputError, OutputExistsError
from fusion.fuser import Fuser, PreprocessConfig
from fusion.recording import RecordingReader
from fusion.sample import Frame, FusedSample, Modality
from fusion.sensors import Source
from fusion.sensors.source import LiveSource
from fusion.sync import SyncConfig
from fusion.training.data import MANIFEST, samples_table
from fusion.training.labels import ClassMap, Labels


@dataclass
class FromRecordingReport:
    samples: int  # written
    skipped: Counter[str]  # reason -> samples left out
    per_class: dict[str, int]
    recording_s: float  # the span of the recording's frames
    seconds: float  # wall time
    input_errors: dict[str, int]  # from the fuser: frames that could not be preprocessed

    @property
    def realtime_factor(self) -> float:
        return self.recording_s / self.seconds if self.seconds > 0 else math.nan


@dataclass
class Frames:
    """A rig's frames in timestamp order, the modality of each sensor, and the span they cover."""

    rig: str
    sensors: dict[str, Modality]
    stream: Iterator[Frame]
    start: float = math.inf
    end: float = -math.inf

    @classmethod
    def of_recording(cls, recording: str | Path) -> Frames:
        reader = RecordingReader(recording)
        if not reader.sensors:
            raise InputError(f"{recording}: no sensor streams (a recording of fused samples only?)")
        sensors = {sid: info.modality for sid, info in reader.sensors.items()}
        return cls(rig=Path(recording).name or "recording", sensors=sensors, stream=reader.frames())

    @classmethod
    def of_sources(cls, rig: str, sources: Mapping[str, Source]) -> Frames:
        """Frames of finite sources (files, bags, recordings), opened and merged by timestamp;
        each is closed when it ends. A live device never ends: refused."""
        live = [sid for sid, src in sources.items() if isinstance(src, LiveSource)]
        if live:
            raise InputError(f"rig {rig}: sensors {live} are live devices; label files or bags, not devices")
        sensors = {sid: src.modality for sid, src in sources.items()}
        streams = [_until_end(src) for _, src in sorted(sources.items())]
        merged = heapq.merge(*streams, key=lambda f: (f.timestamp, f.sensor_id, f.index))
        return cls(rig=rig, sensors=sensors, stream=merged)

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.stream:
            self.start = min(self.start, frame.timestamp)
            self.end = max(self.end, frame.end_time)
            yield frame

    @property
    def span_s(self) -> float:
        return self.end - self.start if self.end >= self.start else 0.0


def _until_end(source: Source) -> Iterator[Frame]:
    with source:  # opened when the merge first asks, closed at its end
        yield from source


def labelled_samples(
    frames: Frames,
    labels: Labels,
    classes: ClassMap,
    *,
    skipped: Counter[str],
    sync: SyncConfig | None = None,
    preprocess: PreprocessConfig | None = None,
    fuser_stats: dict[str, Any] | None = None,
) -> Iterator[FusedSample]:
    """The FusedSamples of `frames` that a label covers, labelled, in tick order.

    `skipped` counts the others by reason; `fuser_stats`, when given, receives the fuser's
    counts at the end. Every label of `labels` must be known to `classes` (checked first).
    """
    unknown = labels.names - classes.known()
    if unknown:
        raise InputError(
            f"{labels.source}: labels {sorted(unknown)} map to none of the classes {classes.classes}"
        )
    fuser = Fuser(rig=frames.rig, sensors=frames.sensors, sync=sync, preprocess=preprocess, lossless=True)

    def ticks() -> Iterator[FusedSample]:
        for frame in frames:
            yield from fuser.push([frame])
        yield from fuser.finish()

    for sample in ticks():
        rows = labels.at(sample.timestamp)
        if not rows:
            skipped["unlabelled"] += 1
        elif not sample.segments:
            skipped["no_input"] += 1
        else:
            # No stage times: the data must not depend on when it was made (as generated data).
            yield dataclasses.replace(
                sample,
                stage_times={},
                label=classes.index(rows[0].label),
                target_position=rows[0].position,
                objects=_mapped(labels.objects(sample.timestamp), classes),
            )
    if fuser_stats is not None:
        fuser_stats.update(fuser.stats().as_json())


def _mapped(objects: list[Box3D] | None, classes: ClassMap) -> list[Box3D] | None:
    """The objects with their class names mapped onto the class list."""
    if objects is None:
        return None
    return [dataclasses.replace(b, class_name=classes.classes[classes.index(b.class_name)]) for b in objects]


def scene_record(sample: FusedSample) -> dict[str, Any]:
    """The `scene` column of a recorded sample: only the range is known (from the label's position)."""
    pos = sample.target_position
    return {"distance_m": math.hypot(pos[0], pos[1]) if pos is not None else math.nan, "snr_db": math.nan}


def from_recording(
    recording: str | Path | Frames,
    labels: Labels,
    classes: ClassMap,
    out: str | Path,
    *,
    split: str = "train",
    shard_size: int = 500,
    sync: SyncConfig | None = None,
    preprocess: PreprocessConfig | None = None,
) -> FromRecordingReport:
    """Write the labelled samples of `recording` (a recording directory, or `Frames` of a rig's
    sources) as `out/<split>/part-NNNNN.parquet` shards."""
    frames = recording if isinstance(recording, Frames) else Frames.of_recording(recording)
    folder = Path(out) / split
    if any(folder.glob("part-*.parquet")):
        raise OutputExistsError(f"{folder}: already holds shards; write to another --out or --split")
    folder.mkdir(parents=True, exist_ok=True)
    skipped: Counter[str] = Counter()
    per_class: Counter[str] = Counter()
    stats: dict[str, Any] = {}
    t0 = time.perf_counter()
    batch: list[FusedSample] = []
    written = shards = 0
    stream = labelled_samples(
        frames, labels, classes, skipped=skipped, sync=sync, preprocess=preprocess, fuser_stats=stats
    )
    for sample in stream:
        assert sample.label is not None  # labelled_samples labels every sample it yields
        per_class[classes.classes[sample.label]] += 1
        batch.append(sample)
        if len(batch) == shard_size:
            _write_shard(folder / f"part-{shards:05d}.parquet", batch)
            written, shards, batch = written + len(batch), shards + 1, []
    if batch:
        _write_shard(folder / f"part-{shards:05d}.parquet", batch)
        written += len(batch)
    report = FromRecordingReport(
        samples=written,
        skipped=skipped,
        per_class={c: per_class[c] for c in classes.classes},
        recording_s=frames.span_s,
        seconds=time.perf_counter() - t0,
        input_errors=stats.get("input_errors", {}),
    )
    source = str(recording) if not isinstance(recording, Frames) else f"rig {frames.rig}"
    _write_manifest(Path(out), split, recording=source, labels=labels, classes=classes, report=report)
    return report


def _write_shard(path: Path, samples: list[FusedSample]) -> None:
    table = samples_table(samples, [scene_record(s) for s in samples])
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _write_manifest(
    out: Path, split: str, *, recording: str, labels: Labels, classes: ClassMap, report: FromRecordingReport
) -> None:
    path = out / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest.setdefault("splits", {})[split] = report.samples
    manifest.setdefault("recordings", {})[split] = {
        "recording": recording,
        "labels": labels.source,
        "classes": classes.classes,
        "class_map": classes.mapping,
        "samples": report.samples,
        "skipped": dict(report.skipped),
        "per_class": report.per_class,
        "input_errors": report.input_errors,
        "recording_s": round(report.recording_s, 3),
        "seconds": round(report.seconds, 2),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
