"""What every LiDAR source shares: dropping non-finite points, and finite sequences of sweeps.

Every source delivers sweeps as `Frame(modality=LIDAR, data=[N, 4] float32)`: x, y, z in
metres in the sensor frame and intensity as the sensor reports it. Every source drops
non-finite points (counted once per sweep, "nonfinite_points") and skips sweeps left with no
points ("empty_sweep").
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fusion.errors import SourceError
from fusion.sample import Frame, Modality
from fusion.sensors.source import EndOfStream, Source, SourceConfig


def finite_sweep(source: Source, points: np.ndarray, where: str) -> np.ndarray | None:
    """`points` [N, >=4] without rows holding NaN / inf, as [M, 4] float32; None when none are left.

    Both cases are counted on `source` ("nonfinite_points" once per sweep, "empty_sweep").
    """
    points = np.asarray(points[:, :4], dtype=np.float32)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        source.skip("nonfinite_points", f"{where}: dropped {int((~finite).sum())} of {len(points)} points")
        points = points[finite]
    if len(points) == 0:
        source.skip("empty_sweep", f"{where}: no points")
        return None
    return np.ascontiguousarray(points)


@dataclass(frozen=True)
class RawSweep:
    """A sweep as a file source read it, before non-finite points are dropped."""

    index: int  # position in the sequence
    timestamp: float  # seconds, the sequence's own time
    points: np.ndarray  # [N, >=4] x, y, z, intensity, ...
    where: str  # file (and sweep) for messages
    wall_time: float | None = None  # Unix seconds when the file records it; None: time of reading


class SweepFileSource(Source):
    """A finite sequence of sweeps read from files: never blocks on a clock.

    Subclasses check their input in `_prepare` (called by `open`, raising SourceError naming
    the path) and yield a `RawSweep` per sweep from `_sweeps`, skipping bad files with
    `self.skip`. Indexes are positions in the sequence, so a skipped file leaves a gap in
    `Frame.index`.
    """

    def __init__(self, config: SourceConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self._iter: Iterator[RawSweep] | None = None

    @abstractmethod
    def _prepare(self) -> None: ...

    @abstractmethod
    def _sweeps(self) -> Iterator[RawSweep]: ...

    def open(self) -> None:
        self._prepare()
        self._iter = self._sweeps()

    def read(self, timeout: float | None = None) -> Frame:
        """The next usable sweep; EndOfStream after the last. `timeout` is unused: files never wait."""
        if self._iter is None:
            raise SourceError(f"{self.modality.value}/{self.sensor_id}: read() before open()")
        for sweep in self._iter:
            points = finite_sweep(self, sweep.points, sweep.where)
            if points is None:
                continue
            self.stats.frames += 1
            return Frame(
                modality=Modality.LIDAR,
                sensor_id=self.sensor_id,
                timestamp=sweep.timestamp,
                wall_time=time.time() if sweep.wall_time is None else sweep.wall_time,
                data=points,
                index=sweep.index,
            )
        raise EndOfStream

    def close(self) -> None:
        self._iter = None
