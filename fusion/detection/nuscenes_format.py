"""Boxes as a nuScenes detection submission: JSON written, and read back as written.

The document (https://www.nuscenes.org/object-detection, "Results format")::

    {"meta": {"use_camera": bool, "use_lidar": bool, "use_radar": bool, "use_map": bool,
              "use_external": bool},
     "results": {sample_token: [{"sample_token": str, "translation": [x, y, z],
                                 "size": [w, l, h], "rotation": [qw, qx, qy, qz],
                                 "velocity": [vx, vy], "detection_name": str,
                                 "detection_score": float, "attribute_name": ""}, ...]}}

Note nuScenes' size order, width first. The rotation is the unit quaternion of the yaw about
z; read back, the yaw is the same heading in (-pi, pi]. Ground truth is written with detection_score -1, nuScenes' mark for "no score", and read
back with `score=None`. A box with a track id also carries "tracking_id" (the key of nuScenes'
tracking format); the devkit's detection loader ignores keys it does not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fusion.detection.boxes import Box3D, Samples
from fusion.errors import InputError, MissingFileError, OutputExistsError

NO_SCORE = -1.0  # nuScenes' detection_score of ground truth
_REQUIRED = ("translation", "size", "rotation", "velocity", "detection_name")


@dataclass(frozen=True, kw_only=True)
class SubmissionMeta:
    """The submission's "meta": which inputs the detector used (nuScenes' five flags)."""

    use_camera: bool = True
    use_lidar: bool = True
    use_radar: bool = False
    use_map: bool = False
    use_external: bool = False


def yaw_to_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """The unit quaternion (w, x, y, z) of a rotation by `yaw` radians about z."""
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def quaternion_to_yaw(quaternion: Sequence[float]) -> float:
    """Heading in (-pi, pi] of the x axis rotated by `quaternion` (w, x, y, z), projected on the
    ground plane, as the devkit's `quaternion_yaw`; the quaternion need not be unit."""
    w, x, y, z = (float(q) for q in quaternion)
    norm2 = w * w + x * x + y * y + z * z
    if not norm2 > 0 or not math.isfinite(norm2):
        raise InputError(f"rotation {list(quaternion)} is not a usable quaternion (w, x, y, z)")
    return math.atan2(2 * (w * z + x * y), norm2 - 2 * (y * y + z * z))


def to_submission(samples: Samples, meta: SubmissionMeta | None = None) -> dict[str, Any]:
    """The submission document of `samples` (predictions or ground truth) as plain JSON types."""
    return {
        "meta": asdict(meta or SubmissionMeta()),
        "results": {token: [_record(token, box) for box in boxes] for token, boxes in samples.items()},
    }


def from_submission(
    document: Mapping[str, Any], *, source: str = "submission"
) -> tuple[SubmissionMeta, dict[str, list[Box3D]]]:
    """Meta and boxes of a submission document.

    Args:
        document: the parsed JSON.
        source: what to call the document in errors (a file name).

    Raises:
        InputError: a missing key, a value of the wrong shape, or a box that fails
            `Box3D`'s checks; the message names source, sample token, box index and field.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("results"), Mapping):
        raise InputError(f"{source}: not a nuScenes submission (no 'results' mapping)")
    meta = _meta(document.get("meta", {}), source)
    samples = {}
    for token, records in document["results"].items():
        if not isinstance(records, list):
            raise InputError(f"{source}: results[{token!r}] must be a list of boxes")
        samples[token] = [
            _box(record, f"{source}: results[{token!r}][{i}]") for i, record in enumerate(records)
        ]
    return meta, samples


def write_submission(path: str | Path, samples: Samples, meta: SubmissionMeta | None = None) -> None:
    """Write `samples` as a submission JSON file; an existing file is never overwritten."""
    path = Path(path)
    if path.exists():
        raise OutputExistsError(f"{path}: already exists (a submission goes to a new file)")
    path.write_text(json.dumps(to_submission(samples, meta), allow_nan=False) + "\n")


def read_submission(path: str | Path) -> tuple[SubmissionMeta, dict[str, list[Box3D]]]:
    """Read a submission JSON file (see `from_submission` for the errors)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such submission file")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not JSON ({err})") from None
    return from_submission(document, source=str(path))


def _record(token: str, box: Box3D) -> dict[str, Any]:
    length, width, height = box.size
    record: dict[str, Any] = {
        "sample_token": token,
        "translation": list(box.center),
        "size": [width, length, height],
        "rotation": list(yaw_to_quaternion(box.yaw)),
        "velocity": list(box.velocity),
        "detection_name": box.class_name,
        "detection_score": NO_SCORE if box.score is None else box.score,
        "attribute_name": "",
    }
    if box.track_id is not None:
        record["tracking_id"] = box.track_id
    return record


def _box(record: object, where: str) -> Box3D:
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: a box must be a JSON object, got {record!r}")
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        raise InputError(f"{where}: missing {missing}")
    try:
        x, y, z = _numbers(record, "translation", 3)
        width, length, height = _numbers(record, "size", 3)
        vx, vy = _numbers(record, "velocity", 2)
        score = _numbers(record, "detection_score", 1)[0] if "detection_score" in record else NO_SCORE
        return Box3D(
            class_name=record["detection_name"],
            center=(x, y, z),
            size=(length, width, height),
            yaw=quaternion_to_yaw(_numbers(record, "rotation", 4)),
            velocity=(vx, vy),
            score=None if score == NO_SCORE else score,
            track_id=record.get("tracking_id"),
        )
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def _numbers(record: Mapping[str, Any], key: str, count: int) -> list[float]:
    """record[key] as `count` numbers (one bare number when count is 1)."""
    value = record[key]
    items = [value] if count == 1 and not isinstance(value, list) else value
    if (
        not isinstance(items, list)
        or len(items) != count
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items)
    ):
        raise InputError(f"{key} must be {count} number(s), got {value!r}")
    return [float(v) for v in items]


def _meta(meta: object, source: str) -> SubmissionMeta:
    names = {f.name for f in fields(SubmissionMeta)}
    if not isinstance(meta, Mapping):
        raise InputError(f"{source}: 'meta' must be a mapping of {sorted(names)}")
    flags = {key: value for key, value in meta.items() if key in names}
    wrong = [key for key, value in flags.items() if not isinstance(value, bool)]
    if wrong:
        raise InputError(f"{source}: meta {wrong} must be true or false")
    return SubmissionMeta(**flags)
