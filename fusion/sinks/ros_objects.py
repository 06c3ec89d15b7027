"""A prediction's objects as the standard ROS 2 messages robotics tools read.

`vision_msgs/msg/Detection3DArray` carries the detections (Foxglove, RViz's vision_msgs plugins
and any ROS 2 node subscribe to it); `visualization_msgs/msg/MarkerArray` draws them (a box
and a "class score" label per object). rosbags' ROS 2 humble store has visualization_msgs but
not vision_msgs, whose definitions (vision_msgs 4.1.1, the ROS 2 Humble release; unchanged
since 3.0.0) are registered by `register_vision_msgs`.

Boxes are in the rig's base frame: the centre is the box's centre, yaw a rotation about z,
size (l, w, h) along the box's own x, y, z. A Detection3D has no velocity field: velocities
stay in the JSON lines and Parquet outputs.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore

from fusion.detection.boxes import Box3D

DETECTION_ARRAY = "vision_msgs/msg/Detection3DArray"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"

_VISION_DEFS = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    DETECTION_ARRAY: "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
}

# Marker namespaces: ids are the object's rank in its prediction, so the k-th box and its
# label keep their ids from message to message; a DELETEALL first clears the previous ones.
BOX_NS, TEXT_NS = "boxes", "labels"
TEXT_HEIGHT_M = 0.5
_BOX_ALPHA = 0.5
# One colour per class, picked by a stable hash of its name (the same in every run and file).
_PALETTE = (
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.74, 0.74, 0.13),
)


def register_vision_msgs(store: Typestore) -> None:
    """Add the vision_msgs detection types to `store` (one that does not have them yet)."""
    for name, text in _VISION_DEFS.items():
        store.register(get_types_from_msg(text, name))


def class_color(class_name: str) -> tuple[float, float, float]:
    """The RGB colour (each in [0, 1]) a class's boxes and labels are drawn in."""
    return _PALETTE[zlib.crc32(class_name.encode()) % len(_PALETTE)]


def detection_array(store: Typestore, hdr: Any, objects: Sequence[Box3D]) -> Any:
    """A Detection3DArray of `objects`: one Detection3D each (its header `hdr`, one hypothesis:
    class_id = the class name, score; bbox = centre pose and size; id = the track id or "")."""
    types = store.types
    detections = []
    for box in objects:
        pose = _pose(store, box.center, box.yaw)
        hypothesis = types["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=types["vision_msgs/msg/ObjectHypothesis"](
                class_id=box.class_name, score=float(box.score or 0.0)
            ),
            pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        )
        bbox = types["vision_msgs/msg/BoundingBox3D"](center=pose, size=_vector(store, box.size))
        detections.append(
            types["vision_msgs/msg/Detection3D"](
                header=hdr, results=[hypothesis], bbox=bbox, id=box.track_id or ""
            )
        )
    return types[DETECTION_ARRAY](header=hdr, detections=detections)


def marker_array(store: Typestore, hdr: Any, objects: Sequence[Box3D]) -> Any:
    """A DELETEALL marker, then per object (rank k) a CUBE (ns `boxes`, id k) and a
    TEXT_VIEW_FACING "class score" above it (ns `labels`, id k)."""
    marker: Any = store.types["visualization_msgs/msg/Marker"]  # its constants: CUBE, DELETEALL, ...
    markers = [_marker(store, hdr, ns="", id=0, type=marker.CUBE, action=marker.DELETEALL)]
    for k, box in enumerate(objects):
        color = (*class_color(box.class_name), _BOX_ALPHA)
        markers.append(
            _marker(
                store,
                hdr,
                ns=BOX_NS,
                id=k,
                type=marker.CUBE,
                pose=_pose(store, box.center, box.yaw),
                scale=box.size,
                color=color,
            )
        )
        x, y, z = box.center
        markers.append(
            _marker(
                store,
                hdr,
                ns=TEXT_NS,
                id=k,
                type=marker.TEXT_VIEW_FACING,
                pose=_pose(store, (x, y, z + box.size[2] / 2 + TEXT_HEIGHT_M), 0.0),
                scale=(0.0, 0.0, TEXT_HEIGHT_M),  # text markers use only z, the letters' height
                color=(*class_color(box.class_name), 1.0),
                text=f"{box.class_name} {box.score or 0.0:.2f}",
            )
        )
    return store.types[MARKER_ARRAY](markers=markers)


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by `yaw` radians about z."""
    return 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)


def _pose(store: Typestore, center: Sequence[float], yaw: float) -> Any:
    types = store.types
    x, y, z, w = yaw_quaternion(yaw)
    return types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](*(float(v) for v in center)),
        orientation=types["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
    )


def _vector(store: Typestore, xyz: Sequence[float]) -> Any:
    return store.types["geometry_msgs/msg/Vector3"](*(float(v) for v in xyz))


def _marker(
    store: Typestore,
    hdr: Any,
    *,
    ns: str,
    id: int,
    type: int,
    action: int = 0,
    pose: Any = None,
    scale: Sequence[float] = (0.0, 0.0, 0.0),
    color: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    text: str = "",
) -> Any:
    """A Marker (action ADD unless given) with every field a box or a text does not use empty."""
    types = store.types
    empty = np.zeros(0, dtype=np.uint8)
    return types["visualization_msgs/msg/Marker"](
        header=hdr,
        ns=ns,
        id=id,
        type=type,
        action=action,
        pose=pose if pose is not None else _pose(store, (0.0, 0.0, 0.0), 0.0),
        scale=_vector(store, scale),
        color=types["std_msgs/msg/ColorRGBA"](*(float(v) for v in color)),
        lifetime=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=0),  # until replaced
        frame_locked=False,
        points=[],
        colors=[],
        texture_resource="",
        texture=types["sensor_msgs/msg/CompressedImage"](header=hdr, format="", data=empty),
        uv_coordinates=[],
        text=text,
        mesh_resource="",
        mesh_file=types["visualization_msgs/msg/MeshFile"](filename="", data=empty),
        mesh_use_embedded_materials=False,
    )
