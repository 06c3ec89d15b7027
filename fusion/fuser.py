"""One rig's fuser: time alignment plus per-modality preprocessing, Frames in, FusedSamples out.

`fuse` turns one tick's frames into a FusedSample; it is the only way frames become a sample,
called by the `Fuser` (the plain class inside the pipeline's FuserActor) and by training-data
generation (`fusion.training.data`), so a model is trained on exactly what the pipeline feeds it. A frame
whose preprocessing fails (a LiDAR sweep with no point in range, audio at the wrong rate) makes
that modality missing for its tick, counted under `input_errors[(modality, reason)]`, and the
sample goes on without it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusion.config import StrictModel, parse_config
from fusion.sample import Frame, FusedSample, Modality, Segment
from fusion.sensors import make_preprocessor
from fusion.sensors.preprocess_config import (
    CameraPreprocessConfig,
    LidarPreprocessConfig,
    MicrophonePreprocessConfig,
    Preprocessor,
)
from fusion.sync import AlignedSet, DropReason, SyncConfig, Synchronizer

log = logging.getLogger(__name__)
# Lossless replay waits for every stream however long it takes: ticks are emitted only once
# all streams have moved past them (or at the end), never because a deadline expired.
_FOREVER_S = 1e9


class PreprocessConfig(StrictModel):
    """A rig's per-modality preprocessing (`rigs[].preprocess`); a modality left out uses its defaults."""

    camera: CameraPreprocessConfig | None = None
    microphone: MicrophonePreprocessConfig | None = None
    lidar: LidarPreprocessConfig | None = None

    def for_modality(self, modality: Modality) -> StrictModel | None:
        config: StrictModel | None = getattr(self, modality.value)
        return config

    def as_mapping(self) -> dict[str, dict[str, Any]]:
        """Every modality given, its settings as plain values (what a checkpoint records)."""
        return {
            m.value: c.model_dump(mode="json") for m in Modality if (c := self.for_modality(m)) is not None
        }


def default_sync(modalities: Sequence[Modality]) -> dict[str, Any]:
    """LiDAR sweeps are the ticks when there is a LiDAR; otherwise 10 Hz."""
    if Modality.LIDAR in modalities:
        return {"reference": "lidar"}
    return {"rate_hz": 10.0}


def rig_sync(modalities: Sequence[Modality], raw: Mapping[str, Any] | None, *, rig: str) -> SyncConfig:
    """A rig's `sync` section validated, aligning `modalities` (None: `default_sync`); errors
    name `rigs[RIG].sync.KEY`. The config loader's one door from a mapping to a SyncConfig."""
    data = {"modalities": [m.value for m in modalities], **(raw or default_sync(modalities))}
    return parse_config(SyncConfig, data, source=f"rigs[{rig}].sync")


def fuse(
    frames: Mapping[Modality, Frame],
    preprocessors: Mapping[Modality, Preprocessor],
    *,
    seq: int,
    timestamp: float,
    rig: str,
    on_error: Callable[[Modality, ValueError], None],
    clock: Callable[[], float] | None = None,
    label: int | None = None,
    target_position: tuple[float, float, float] | None = None,
) -> FusedSample:
    """One tick's frames, each through its modality's preprocessor, as a FusedSample.

    Args:
        frames: modality -> the tick's frame; `capture_times` keep this order.
        preprocessors: one for each modality in `frames`.
        seq, timestamp, rig, label, target_position: copied into the sample.
        on_error: called with the modality and the ValueError when a preprocessor rejects its
            frame; the modality is then absent from the sample.
        clock: the wall clock of the latency trace (`stage_times`: `aligned`, `capture.<m>`,
            `fused`); None records none, so that generated data does not depend on when it was
            made.
    """
    stage_times: dict[str, float] = {}
    if clock is not None:
        stage_times["aligned"] = clock()  # the tick is complete
    segments: dict[Modality, Segment] = {}
    capture_times: dict[Modality, float] = {}
    for m, frame in frames.items():
        if clock is not None:
            # When the reading was complete: for an audio window, its last sample.
            stage_times[f"capture.{m.value}"] = frame.wall_time + (frame.end_time - frame.timestamp)
        try:
            segments[m] = preprocessors[m](frame)
            capture_times[m] = frame.timestamp
        except ValueError as err:
            on_error(m, err)
    if clock is not None:
        stage_times["fused"] = clock()
    return FusedSample(
        seq=seq,
        timestamp=timestamp,
        segments=segments,
        rig=rig,
        capture_times=capture_times,
        stage_times=stage_times,
        label=label,
        target_position=target_position,
    )


@dataclass(frozen=True)
class FuserStats:
    """One rig's alignment so far: samples fused, modalities missing from them, frames that
    could not be preprocessed and frames alignment dropped (by modality and reason).

    Attributes:
        samples: fused samples made.
        incomplete: per modality, samples made without it.
        input_errors: per (modality, stage), frames that could not be used ("preprocess").
        sync_dropped: per (modality, reason), frames alignment dropped.
        received: per modality, frames alignment received.
        inference_transport: live, how the fuser reaches each inference actor ("socket", "ray").
        link_errors: live, malformed messages its sensors' local links refused.
    """

    samples: int = 0
    incomplete: Mapping[Modality, int] = field(default_factory=dict)
    input_errors: Mapping[tuple[Modality, str], int] = field(default_factory=dict)
    sync_dropped: Mapping[tuple[Modality, DropReason], int] = field(default_factory=dict)
    received: Mapping[Modality, int] = field(default_factory=dict)
    inference_transport: tuple[str, ...] = ()
    link_errors: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The JSON form of the run summary: modality names, `modality:reason` keys."""
        out: dict[str, Any] = {
            "samples": self.samples,
            "incomplete": {m.value: n for m, n in self.incomplete.items()},
            "input_errors": {f"{m.value}:{r}": n for (m, r), n in self.input_errors.items()},
            "sync_dropped": {f"{m.value}:{r.value}": n for (m, r), n in self.sync_dropped.items()},
            "received": {m.value: n for m, n in self.received.items()},
        }
        if self.inference_transport:
            out["inference_transport"] = list(self.inference_transport)
        if self.link_errors:
            out["link_errors"] = list(self.link_errors)
        return out


class Fuser:
    """Aligns one rig's frames into ticks and preprocesses each tick into a FusedSample."""

    def __init__(
        self,
        *,
        rig: str,
        sensors: Mapping[str, Modality],
        sync: SyncConfig | None = None,
        preprocess: PreprocessConfig | None = None,
        lossless: bool = False,
    ) -> None:
        """Args:
        rig: the rig's id (stamped on its samples, named in errors).
        sensors: sensor id -> modality, one sensor per modality.
        sync: the rig's alignment (`rig_sync` builds one from a mapping); None: `default_sync`.
        preprocess: per-modality preprocessing; None (or a modality left out): its defaults.
        lossless: replay: no tick is ever given up waiting (live gives up after `max_delay_s`).
        """
        self.rig = rig
        modalities = list(sensors.values())
        if sync is None:
            sync = rig_sync(modalities, None, rig=rig)
        if lossless:
            sync = sync.model_copy(update={"max_delay_s": _FOREVER_S, "buffer_s": 2 * _FOREVER_S})
        self.sync = Synchronizer(sync)
        preprocess = preprocess or PreprocessConfig()
        self.preprocessors: dict[Modality, Preprocessor] = {
            m: make_preprocessor(m, preprocess.for_modality(m), source=f"rigs[{rig}].preprocess.{m.value}")
            for m in modalities
        }
        self.samples = 0
        self.incomplete: Counter[Modality] = Counter()  # samples without this modality
        self.input_errors: Counter[tuple[Modality, str]] = Counter()
        self._logged: set[tuple[Modality, str]] = set()

    def warm_up(self) -> None:
        """Run each preprocessor once on a synthetic reading, so that what they load on first
        use (librosa's lazily imported modules and mel filters, open3d) is loaded now and not
        during the first tick: a live run would otherwise drop its first second or two of ticks
        while the first sample is preprocessed. No state of the fuser changes."""
        rng = np.random.default_rng(0)
        points = np.concatenate([rng.uniform(-10, 10, (2048, 3)), rng.uniform(0, 1, (2048, 1))], axis=1)
        synthetic: dict[Modality, dict[str, Any]] = {
            Modality.CAMERA: {"data": np.zeros((48, 64, 3), np.uint8)},
            Modality.MICROPHONE: {"data": np.zeros(16000, np.float32), "sample_rate": 16000.0},
            Modality.LIDAR: {"data": points.astype(np.float32)},
        }
        for m, preprocess in self.preprocessors.items():
            frame = Frame(modality=m, sensor_id="warm-up", timestamp=0.0, wall_time=0.0, **synthetic[m])
            try:
                preprocess(frame)
            except ValueError as err:  # a config the synthetic reading does not suit: no harm
                log.debug("warm-up of the %s preprocessor: %s", m.value, err)

    def push(self, frames: Sequence[Frame]) -> list[FusedSample]:
        """Take frames (any sensors, any order); return the samples that became ready."""
        for frame in frames:
            self.sync.push(frame)
        return [self._fuse(a) for a in self.sync.poll()]

    def finish(self) -> list[FusedSample]:
        """End of stream: the remaining ticks."""
        return [self._fuse(a) for a in self.sync.flush()]

    def _fuse(self, aligned: AlignedSet) -> FusedSample:
        sample = fuse(
            aligned.frames,
            self.preprocessors,
            seq=aligned.seq,
            timestamp=aligned.tick,
            rig=self.rig,
            on_error=lambda m, err: self._input_error(m, "preprocess", err),
            clock=time.time,
        )
        for m in self.preprocessors:
            if m not in sample.segments:
                self.incomplete[m] += 1
        self.samples += 1
        return sample

    def _input_error(self, m: Modality, reason: str, err: Exception) -> None:
        self.input_errors[(m, reason)] += 1
        if (m, reason) not in self._logged:
            self._logged.add((m, reason))
            log.warning(
                "rig %s: %s frame unusable (%s): %s; counted from now on", self.rig, m.value, reason, err
            )

    def stats(self) -> FuserStats:
        """What the alignment used, dropped (and why) and left incomplete, so far."""
        s = self.sync.stats
        return FuserStats(
            samples=self.samples,
            incomplete=dict(self.incomplete),
            input_errors=dict(self.input_errors),
            sync_dropped=dict(s.dropped),
            received=dict(s.received),
        )
