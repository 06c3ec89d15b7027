"""LiDAR sweeps from files: PCD / PLY point clouds (open3d) and KITTI velodyne .bin folders.

- `pointcloud`: one .pcd / .ply file, or a folder or glob of them as a sequence (open3d).
- `kitti`: a folder of KITTI velodyne .bin files (N x 4 float32), with KITTI odometry
  `times.txt` when present.

Both are finite sequences (`fusion.sensors.sweeps.SweepFileSource`); the probes describe the
same files for `fusion inspect`.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open3d as o3d

from fusion.errors import InputError, SourceError
from fusion.sample import Modality
from fusion.sensors.pointclouds_config import KITTI, POINT_CLOUD_FILE, KittiConfig, PointCloudFileConfig
from fusion.sensors.registry import FileReport, register_probe
from fusion.sensors.sweeps import RawSweep, SweepFileSource

POINT_CLOUD_SUFFIXES = (".pcd", ".ply")


def _open3d_cloud(path: Path) -> o3d.t.geometry.PointCloud:
    """open3d's tensor point cloud of a PCD / PLY; ValueError naming the file when it has no points."""
    # open3d prints its own warning for every unreadable file; the caller counts and logs once.
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        cloud = o3d.t.io.read_point_cloud(path)
    if "positions" not in cloud.point or len(cloud.point.positions) == 0:
        raise InputError(f"{path}: open3d read no points (not a valid PCD/PLY file, or an empty one)")
    return cloud


def read_point_cloud(path: Path) -> np.ndarray:
    """Points [N, 4] float32 (x, y, z, intensity; intensity 0 when the file has none) of a PCD / PLY.

    Raises ValueError naming the file when open3d reads no points from it (garbage, a
    truncated header, or an empty cloud).
    """
    cloud = _open3d_cloud(path)
    xyz = cloud.point.positions.numpy().astype(np.float32)
    if "intensity" in cloud.point:
        intensity = cloud.point.intensity.numpy().reshape(len(xyz), -1)[:, :1].astype(np.float32)
    else:
        intensity = np.zeros((len(xyz), 1), dtype=np.float32)
    return np.concatenate([xyz, intensity], axis=1)


def _point_cloud_files(pattern: str) -> list[Path]:
    """The files a `path` setting names, sorted; SourceError naming it when there are none."""
    path = Path(pattern)
    if glob.has_magic(pattern):
        files = [Path(p) for p in glob.glob(pattern) if Path(p).is_file()]
        if not files:
            raise SourceError(f"no files match {pattern!r}")
    elif path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in POINT_CLOUD_SUFFIXES]
        if not files:
            raise SourceError(f"{path}: no .pcd or .ply files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise SourceError(f"point cloud path not found: {path}")
    return sorted(files)  # by path: name order within a folder


class PointCloudFileSource(SweepFileSource):
    """PCD / PLY files through open3d's tensor reader, which keeps the `intensity` field.

    A single file is read at `open()`, so a bad one fails there (SourceError naming it); in a
    sequence a bad file is skipped and counted ("decode_error") and the sequence goes on.
    """

    backend = POINT_CLOUD_FILE
    config: PointCloudFileConfig

    def __init__(self, config: PointCloudFileConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self.files: list[Path] = []
        self._single: np.ndarray | None = None

    def _prepare(self) -> None:
        self.files = _point_cloud_files(self.config.path)
        self._single = None
        if len(self.files) == 1:
            try:
                self._single = read_point_cloud(self.files[0])
            except ValueError as err:
                raise SourceError(str(err)) from None

    def _sweeps(self) -> Iterator[RawSweep]:
        if self._single is not None:
            yield RawSweep(0, 0.0, self._single, str(self.files[0]))
            return
        for index, path in enumerate(self.files):
            try:
                points = read_point_cloud(path)
            except (ValueError, OSError) as err:
                self.skip("decode_error", str(err))
                continue
            yield RawSweep(index, index / self.config.rate_hz, points, str(path))


# --------------------------------------------------------------------------- KITTI .bin folders


_KITTI_ROW_BYTES = 16  # x, y, z, reflectance as float32


def kitti_times(folder: Path, count: int) -> np.ndarray | None:
    """Seconds per sweep from KITTI odometry `times.txt` (in `folder` or its parent), or None.

    KITTI odometry keeps `times.txt` next to the `velodyne/` folder, one float per line.
    A file that does not parse or has fewer lines than there are sweeps raises SourceError.
    """
    for candidate in (folder / "times.txt", folder.parent / "times.txt"):
        if candidate.is_file():
            try:
                times = np.loadtxt(candidate, dtype=np.float64, ndmin=1)
            except ValueError as err:
                raise SourceError(f"{candidate}: not one number per line: {err}") from None
            if times.ndim != 1 or len(times) < count:
                raise SourceError(f"{candidate}: {times.size} timestamps for {count} .bin files")
            return times
    return None


class KittiSource(SweepFileSource):
    """KITTI velodyne scans: each .bin is N x 4 little-endian float32 (x, y, z, reflectance in [0, 1]).

    A file whose size is not a multiple of 16 bytes cannot be N x 4 float32: it is skipped and
    counted ("bad_size"), and the sequence goes on.
    """

    backend = KITTI
    config: KittiConfig

    def __init__(self, config: KittiConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self.files: list[Path] = []
        self._times: np.ndarray | None = None

    def _prepare(self) -> None:
        folder = Path(self.config.path)
        if not folder.is_dir():
            raise SourceError(f"KITTI velodyne folder not found: {folder}")
        self.files = sorted(folder.glob("*.bin"), key=lambda p: p.name)
        if not self.files:
            raise SourceError(f"{folder}: no .bin files in this folder")
        self._times = kitti_times(folder, len(self.files))

    def _sweeps(self) -> Iterator[RawSweep]:
        for index, path in enumerate(self.files):
            try:
                size = path.stat().st_size
                if size % _KITTI_ROW_BYTES:
                    self.skip("bad_size", f"{path}: {size} bytes is not a whole number of 16-byte points")
                    continue
                points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
            except OSError as err:
                self.skip("decode_error", f"{path}: {err}")
                continue
            t = float(self._times[index]) if self._times is not None else index / self.config.rate_hz
            yield RawSweep(index, t, points, str(path))


@register_probe(lambda p: p.is_file() and p.suffix.lower() in POINT_CLOUD_SUFFIXES)
def probe_point_cloud(path: Path) -> FileReport:
    """Point count, bounds and whether a PCD / PLY file carries intensity."""
    cloud = _open3d_cloud(path)
    xyz = cloud.point.positions.numpy()
    finite = xyz[np.isfinite(xyz).all(axis=1)]
    bounds = (finite.min(axis=0).tolist(), finite.max(axis=0).tolist()) if len(finite) else ([], [])
    return FileReport(
        path=str(path),
        modality=Modality.LIDAR,
        backend="pointcloud",
        frames=1,
        start=0.0,
        end=0.0,
        shapes=f"{len(xyz)} x 4 float32",
        details={
            "points": len(xyz),
            "bounds_min": bounds[0],
            "bounds_max": bounds[1],
            "has_intensity": "intensity" in cloud.point,
        },
    )


@register_probe(lambda p: p.is_dir() and any(p.glob("*.bin")))
def probe_kitti(path: Path) -> FileReport:
    """Sweeps, points per sweep and time span of a folder of KITTI .bin files (from file sizes)."""
    files = sorted(path.glob("*.bin"), key=lambda p: p.name)
    sizes = np.array([f.stat().st_size for f in files], dtype=np.int64)
    good = sizes % _KITTI_ROW_BYTES == 0
    points = sizes[good] // _KITTI_ROW_BYTES
    try:
        times = kitti_times(path, len(files))
    except SourceError as err:
        raise InputError(str(err)) from None
    stamps = times[: len(files)][good] if times is not None else np.flatnonzero(good) / 10.0
    return FileReport(
        path=str(path),
        modality=Modality.LIDAR,
        backend="kitti",
        frames=int(good.sum()),
        start=float(stamps[0]) if len(stamps) else 0.0,
        end=float(stamps[-1]) if len(stamps) else 0.0,
        shapes="N x 4 float32",
        details={
            "sweeps": int(good.sum()),
            "bad_size_files": int((~good).sum()),
            "points_min": int(points.min()) if len(points) else 0,
            "points_mean": float(points.mean()) if len(points) else 0.0,
            "points_max": int(points.max()) if len(points) else 0,
            "times": "times.txt" if times is not None else "assumed 10 Hz",
        },
    )
