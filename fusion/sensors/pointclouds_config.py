"""The configs of the LiDAR file backends (`pointcloud`: PCD / PLY, `kitti`: KITTI .bin folders): light.

The sources that read them are in `fusion.sensors.pointclouds`, which loads open3d; this module
only declares the backends.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fusion.sample import Modality
from fusion.sensors.registry import register_backend
from fusion.sensors.source import Backend, SourceConfig


class PointCloudFileConfig(SourceConfig):
    backend: Literal["pointcloud"] = "pointcloud"
    path: str  # a .pcd / .ply file, a folder of them (sorted by name), or a glob pattern
    rate_hz: float = Field(default=10.0, gt=0)  # sequence rate: file k is stamped k / rate_hz


class KittiConfig(SourceConfig):
    backend: Literal["kitti"] = "kitti"
    path: str  # folder of KITTI velodyne .bin files, sorted by name
    rate_hz: float = Field(default=10.0, gt=0)  # stamps file k at k / rate_hz when there is no times.txt


POINT_CLOUD_FILE = register_backend(
    Backend(
        "pointcloud",
        {Modality.LIDAR: PointCloudFileConfig},
        "fusion.sensors.pointclouds:PointCloudFileSource",
    )
)
KITTI = register_backend(
    Backend("kitti", {Modality.LIDAR: KittiConfig}, "fusion.sensors.pointclouds:KittiSource")
)
