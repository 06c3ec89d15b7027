"""LiDAR file sources (PCD / PLY via open3d, KITTI .bin) and the LiDAR preprocessor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from fusion.config import parse_config
from fusion.errors import ConfigError, SourceError
from fusion.model.multimodal import collate
from fusion.sample import Frame, Modality
from fusion.sensors import EndOfStream, make_source, parse_source
from fusion.sensors.pointclouds import KittiSource, PointCloudFileSource, probe_kitti, probe_point_cloud
from fusion.sensors.pointclouds_config import KittiConfig, PointCloudFileConfig
from fusion.sensors.preprocess_config import LidarPreprocessConfig, LidarSampling
from fusion.sensors.preprocessors import LidarPreprocessor, voxel_down_sample


def cloud(n: int, seed: int = 0) -> np.ndarray:
    """[n, 4] float32 points within a 20 m box, intensity 0..255."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([-20, -20, -2], [20, 20, 4], size=(n, 3))
    return np.concatenate([xyz, rng.integers(0, 256, size=(n, 1))], axis=1).astype(np.float32)


def write_o3d(path: Path, points: np.ndarray, *, intensity: bool = True) -> None:
    """Write with open3d's tensor API, which stores `intensity` as a PCD field / PLY property."""
    pc = o3d.t.geometry.PointCloud(o3d.core.Tensor(points[:, :3]))
    if intensity:
        pc.point.intensity = o3d.core.Tensor(points[:, 3:4])
    assert o3d.t.io.write_point_cloud(str(path), pc)


def frame(points: np.ndarray, *, index: int = 0) -> Frame:
    return Frame(
        modality=Modality.LIDAR, sensor_id="roof", timestamp=0.0, wall_time=0.0, data=points, index=index
    )


# --------------------------------------------------------------------------- PCD / PLY


@pytest.mark.parametrize("suffix", [".pcd", ".ply"])
def test_single_file_round_trips_points_and_intensity(tmp_path: Path, suffix: str) -> None:
    points = cloud(500)
    path = tmp_path / f"scan{suffix}"
    write_o3d(path, points)
    with PointCloudFileSource(PointCloudFileConfig(path=str(path), sensor_id="roof")) as source:
        first = source.read()
        with pytest.raises(EndOfStream):
            source.read()
    assert first.modality is Modality.LIDAR and first.sensor_id == "roof"
    assert (first.index, first.timestamp) == (0, 0.0)
    np.testing.assert_array_equal(first.data, points)


def test_file_without_intensity_reads_as_zero_intensity(tmp_path: Path) -> None:
    points = cloud(100)
    path = tmp_path / "plain.ply"
    legacy = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[:, :3].astype(np.float64)))
    assert o3d.io.write_point_cloud(str(path), legacy)
    with PointCloudFileSource(PointCloudFileConfig(path=str(path))) as source:
        data = source.read().data
    np.testing.assert_allclose(data[:, :3], points[:, :3], atol=1e-6)
    assert (data[:, 3] == 0).all()


def test_folder_sequence_skips_a_garbage_file_and_stamps_by_rate(tmp_path: Path) -> None:
    clouds = [cloud(50 + k, seed=k) for k in range(4)]
    for k, points in enumerate(clouds):
        write_o3d(tmp_path / f"{k:03d}.pcd", points)
    (tmp_path / "002.pcd").write_bytes(np.random.default_rng(9).bytes(3000))
    (tmp_path / "notes.txt").write_text("not a point cloud")
    with PointCloudFileSource(PointCloudFileConfig(path=str(tmp_path), rate_hz=4.0)) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3]
    assert [f.timestamp for f in frames] == [0.0, 0.25, 0.75]
    for f in frames:
        np.testing.assert_array_equal(f.data, clouds[f.index])
    assert source.stats.errors["decode_error"] == 1
    assert source.stats.frames == 3


def test_glob_selects_files_in_name_order(tmp_path: Path) -> None:
    for k in (2, 0, 1):
        write_o3d(tmp_path / f"scan_{k}.ply", cloud(10, seed=k))
    write_o3d(tmp_path / "other.ply", cloud(10, seed=7))
    with PointCloudFileSource(PointCloudFileConfig(path=str(tmp_path / "scan_*.ply"))) as source:
        frames = list(source)
    assert len(frames) == 3
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(f.data, cloud(10, seed=k))


def test_nonfinite_points_dropped_and_all_nan_file_skipped(tmp_path: Path) -> None:
    points = cloud(100)
    points[[3, 50], 0] = np.nan
    points[7, 2] = np.inf
    write_o3d(tmp_path / "a.pcd", points)
    write_o3d(tmp_path / "b.pcd", np.full((5, 4), np.nan, dtype=np.float32))
    write_o3d(tmp_path / "c.pcd", cloud(20, seed=3))
    with PointCloudFileSource(PointCloudFileConfig(path=str(tmp_path))) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 2]
    np.testing.assert_array_equal(frames[0].data, np.delete(points, [3, 7, 50], axis=0))
    assert source.stats.errors["nonfinite_points"] == 2  # once per sweep: a.pcd and b.pcd
    assert source.stats.errors["empty_sweep"] == 1


def test_single_garbage_file_fails_at_open_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.ply"
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    with pytest.raises(SourceError, match=r"broken\.ply"):
        PointCloudFileSource(PointCloudFileConfig(path=str(path))).open()


@pytest.mark.parametrize("name", ["missing.pcd", "missing_dir", "missing_*.pcd"])
def test_missing_path_fails_at_open_naming_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(SourceError, match="missing"):
        PointCloudFileSource(PointCloudFileConfig(path=str(tmp_path / name))).open()


def test_probe_point_cloud(tmp_path: Path) -> None:
    points = cloud(300)
    write_o3d(tmp_path / "a.pcd", points)
    report = probe_point_cloud(tmp_path / "a.pcd")
    assert report.frames == 1 and report.backend == "pointcloud"
    assert report.details["points"] == 300 and report.details["has_intensity"] is True
    np.testing.assert_allclose(report.details["bounds_min"], points[:, :3].min(axis=0))
    np.testing.assert_allclose(report.details["bounds_max"], points[:, :3].max(axis=0))
    write_o3d(tmp_path / "b.ply", points, intensity=False)
    assert probe_point_cloud(tmp_path / "b.ply").details["has_intensity"] is False
    (tmp_path / "c.pcd").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match=r"c\.pcd"):
        probe_point_cloud(tmp_path / "c.pcd")


# --------------------------------------------------------------------------- KITTI


def write_kitti(folder: Path, counts: list[int]) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    clouds = []
    for k, n in enumerate(counts):
        points = cloud(n, seed=k)
        points[:, 3] /= 255.0  # KITTI reflectance is in [0, 1]
        points.astype("<f4").tofile(folder / f"{k:06d}.bin")
        clouds.append(points)
    return clouds


def test_kitti_folder_skips_bad_size_and_honours_times_txt(tmp_path: Path) -> None:
    folder = tmp_path / "sequences" / "00" / "velodyne"
    clouds = write_kitti(folder, [120, 80, 100, 90])
    with (folder / "000002.bin").open("ab") as f:
        f.write(b"\x00" * 6)  # no longer a whole number of 16-byte points
    times = [0.0, 0.103781, 0.207205, 0.311157]
    (folder.parent / "times.txt").write_text("".join(f"{t:e}\n" for t in times))  # odometry layout
    with KittiSource(KittiConfig(path=str(folder))) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 3]
    assert [f.timestamp for f in frames] == [times[0], times[1], times[3]]
    for f in frames:
        np.testing.assert_array_equal(f.data, clouds[f.index])
    assert source.stats.errors == {"bad_size": 1}


def test_kitti_without_times_uses_rate_and_drops_nan_points(tmp_path: Path) -> None:
    clouds = write_kitti(tmp_path, [30, 40])
    with_nan = clouds[1].copy()
    with_nan[5] = np.nan
    with_nan.tofile(tmp_path / "000001.bin")
    with KittiSource(KittiConfig(path=str(tmp_path), rate_hz=5.0)) as source:
        frames = list(source)
    assert [f.timestamp for f in frames] == [0.0, 0.2]
    np.testing.assert_array_equal(frames[1].data, np.delete(clouds[1], 5, axis=0))
    assert source.stats.errors == {"nonfinite_points": 1}


def test_kitti_open_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nowhere"):
        KittiSource(KittiConfig(path=str(tmp_path / "nowhere"))).open()
    with pytest.raises(SourceError, match=r"no \.bin files"):
        KittiSource(KittiConfig(path=str(tmp_path))).open()
    write_kitti(tmp_path, [10, 10, 10])
    (tmp_path / "times.txt").write_text("0.0\n0.1\n")
    with pytest.raises(SourceError, match=r"times\.txt: 2 timestamps for 3"):
        KittiSource(KittiConfig(path=str(tmp_path))).open()


def test_make_source_builds_lidar_backends_by_name(tmp_path: Path) -> None:
    write_kitti(tmp_path, [10])
    source = make_source(
        Modality.LIDAR,
        parse_source(Modality.LIDAR, {"backend": "kitti", "path": str(tmp_path), "rate_hz": 20}),
    )
    assert isinstance(source, KittiSource) and source.config.rate_hz == 20.0
    with pytest.raises(ConfigError, match="rate"):
        make_source(
            Modality.LIDAR,
            parse_source(Modality.LIDAR, {"backend": "kitti", "path": str(tmp_path), "rate": 20}),
        )


def test_probe_kitti(tmp_path: Path) -> None:
    write_kitti(tmp_path, [100, 50, 75])
    (tmp_path / "000003.bin").write_bytes(b"\x00" * 17)
    (tmp_path / "times.txt").write_text("0.0\n0.1\n0.2\n0.3\n")
    report = probe_kitti(tmp_path)
    assert report.frames == 3 and report.backend == "kitti"
    assert (report.start, report.end) == (0.0, 0.2)
    d = report.details
    assert (d["points_min"], d["points_mean"], d["points_max"], d["bad_size_files"]) == (50, 75.0, 100, 1)


# --------------------------------------------------------------------------- preprocessing


def preprocess(points: np.ndarray, **cfg) -> tuple[np.ndarray, np.ndarray]:
    seg = LidarPreprocessor(LidarPreprocessConfig(**cfg))(frame(points))
    assert seg.positions is not None
    assert seg.values.dtype == np.float32 and seg.positions.dtype == np.float32
    return seg.values, seg.positions


def test_crop_removes_points_outside_the_box_and_normalizes() -> None:
    inside = np.array([[30, 0, 0, 255], [0, -50, 5, 0], [-10, 10, -3, 51], [0, 0, 1, 255]], np.float32)
    outside = np.array([[51, 0, 0, 1], [0, -60, 0, 1], [0, 0, -3.5, 1], [0, 0, 5.5, 1]], np.float32)
    values, positions = preprocess(np.concatenate([inside, outside]), voxel_size=0.0)
    assert len(values) == 4  # under the budget: kept in input order
    np.testing.assert_allclose(values[:, 0], [1.0, 0.0, 0.2, 1.0], atol=1e-6)
    np.testing.assert_allclose(values[:, 1], [0.6, 1.0, np.sqrt(209) / 50, 0.02], atol=1e-6)
    np.testing.assert_allclose(
        positions, [[0.6, 0, -0.25], [0, -1, 1], [-0.2, 0.2, -1], [0, 0, 0]], atol=1e-6
    )


def test_nan_points_are_dropped() -> None:
    points = cloud(200)
    points[::10, 1] = np.nan
    values, positions = preprocess(points, voxel_size=0.0)
    assert len(values) == 180
    assert np.isfinite(values).all() and np.isfinite(positions).all()


def test_no_points_within_range_raises_naming_the_sensor() -> None:
    far = np.array([[100, 100, 0, 1], [np.nan, 0, 0, 1]], np.float32)
    with pytest.raises(ValueError, match=r"lidar/roof: no points within range"):
        preprocess(far)


def test_voxel_down_sample_averages_points_and_intensity_per_voxel() -> None:
    points = np.array([[0.01, 0.01, 0.01, 10], [0.03, 0.05, 0.07, 30], [1.0, 1.0, 1.0, 7]], np.float32)
    out = voxel_down_sample(points, 0.2)
    np.testing.assert_allclose(out, [[0.02, 0.03, 0.04, 20], [1.0, 1.0, 1.0, 7]], atol=1e-6)
    dense = np.random.default_rng(0).uniform(0, 2, size=(10_000, 4)).astype(np.float32)
    assert len(voxel_down_sample(dense, 0.5)) == 64  # a 2 m cube in 0.5 m voxels anchored at 0
    values, _ = preprocess(dense, voxel_size=0.5, max_points=5000)
    assert len(values) == 64
    values, _ = preprocess(dense, voxel_size=0.0, max_points=20_000)
    assert len(values) == 10_000


def test_point_budget_caps_the_output_and_positions_stay_in_range() -> None:
    for sampling in LidarSampling:
        values, positions = preprocess(cloud(5000), voxel_size=0.0, max_points=300, sampling=sampling.value)
        assert values.shape == (300, 2) and positions.shape == (300, 3)
        assert np.abs(positions).max() <= 1.0 and values.min() >= 0 and values.max() <= 1


def min_pairwise_distance(positions: np.ndarray) -> float:
    d = np.linalg.norm(positions[:, None] - positions[None, :], axis=-1)
    return float(d[np.triu_indices(len(positions), k=1)].min())


def test_farthest_sampling_spreads_points_over_a_clustered_cloud() -> None:
    rng = np.random.default_rng(3)
    cluster = rng.normal([5, 5, 0], 0.3, size=(4900, 3))
    spread = rng.uniform([-40, -40, -2], [40, 40, 4], size=(100, 3))
    points = np.concatenate([np.concatenate([cluster, spread]), np.full((5000, 1), 100)], 1).astype(
        np.float32
    )
    settings = {"voxel_size": 0.0, "max_points": 64, "range_m": 50.0}
    _, far = preprocess(points, sampling="farthest", **settings)
    _, rand = preprocess(points, sampling="random", **settings)
    assert min_pairwise_distance(far) > 5 * min_pairwise_distance(rand)
    near_cluster = lambda p: (np.abs(p[:, :2] * 50 - 5) < 2).all(axis=1).sum()  # noqa: E731
    assert near_cluster(far) < 8 < near_cluster(rand)


def test_sampling_is_deterministic_per_seed_and_frame() -> None:
    points = cloud(4000)
    for sampling in LidarSampling:
        cfg = LidarPreprocessConfig(max_points=256, sampling=sampling)
        runs = [LidarPreprocessor(cfg)(frame(points)) for _ in range(2)]
        np.testing.assert_array_equal(runs[0].values, runs[1].values)
        np.testing.assert_array_equal(runs[0].positions, runs[1].positions)
        other = LidarPreprocessor(cfg.model_copy(update={"seed": 1}))(frame(points))
        assert not np.array_equal(other.positions, runs[0].positions)


def test_intensity_scale_auto_keeps_unit_reflectance() -> None:
    points = np.array([[1, 0, 0, 0.5], [2, 0, 0, 1.0]], np.float32)
    values, _ = preprocess(points, voxel_size=0.0, intensity_scale=None)
    np.testing.assert_allclose(values[:, 0], [0.5, 1.0])
    values, _ = preprocess(points * np.float32([1, 1, 1, 255]), voxel_size=0.0, intensity_scale=None)
    np.testing.assert_allclose(values[:, 0], [0.5, 1.0])


def test_config_is_validated_and_accepts_yaml_strings() -> None:
    cfg = parse_config(LidarPreprocessConfig, {"sampling": "farthest", "max_points": 512})
    assert cfg.sampling is LidarSampling.FARTHEST
    with pytest.raises(ConfigError, match="z_max"):
        parse_config(LidarPreprocessConfig, {"z_min": 2.0, "z_max": 1.0})
    with pytest.raises(ConfigError, match="sampling"):
        parse_config(LidarPreprocessConfig, {"sampling": "nearest"})


def test_segments_batch_for_the_model() -> None:
    pre = LidarPreprocessor(LidarPreprocessConfig(max_points=128))
    segments = [pre(frame(cloud(n, seed=n), index=n)) for n in (60, 2000)]
    batch = collate([{Modality.LIDAR: s} for s in segments])[Modality.LIDAR]
    assert tuple(batch.values.shape) == (2, 128, 2)
    assert batch.positions is not None and tuple(batch.positions.shape) == (2, 128, 3)
    assert batch.mask is not None and batch.mask.sum(dim=1).tolist() == [60, 128]
