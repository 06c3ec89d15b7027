"""Pictures of what the model sees, drawn with OpenCV: camera grid, log-mel window, LiDAR bird's-eye view.

Everything is drawn from the FusedSample, the model's own input, so the page shows exactly what
the prediction was made from. Images are RGB uint8 arrays until `data_url` encodes them.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from fusion.errors import InputError
from fusion.sample import Segment
from fusion.sensors.preprocess_config import IMAGENET_MEAN, IMAGENET_STD, CameraPreprocessConfig, Normalize
from fusion.sensors.preprocessors import from_patches

VIEW_PX = 320  # side of the camera and bird's-eye views
CAMERA_HALF_FOV_DEG = 30.0  # drawn on the bird's-eye view as the camera's wedge
_POINT_MIN = 60  # dimmest drawn LiDAR return (of 255), so faint points stay visible


def camera_image(segment: Segment, config: CameraPreprocessConfig) -> np.ndarray:
    """The camera grid as the model sees it: values [H*W, 3*p*p] -> [H*p, W*p, 3] uint8 RGB, normalisation undone."""
    assert segment.grid is not None and len(segment.grid) == 2, "camera segments are image grids"
    h, w = segment.grid
    rgb = from_patches(segment.values, (h, w), config.patch)  # (H*p, W*p, 3)
    if config.normalize is Normalize.IMAGENET:
        rgb = rgb * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def annotate(image: np.ndarray, text: str, *, size: int = VIEW_PX) -> np.ndarray:
    """Scale `image` to `size` px wide (pixels kept square and blocky) and write `text` on a band at the top."""
    h, w = image.shape[:2]
    out = cv2.resize(image, (size, max(1, round(size * h / w))), interpolation=cv2.INTER_NEAREST)
    if text:
        cv2.rectangle(out, (0, 0), (size, 30), (0, 0, 0), thickness=-1)
        cv2.putText(out, text, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def spectrogram_image(segment: Segment) -> np.ndarray:
    """Log-mel values [T*F, 1] in about [-1, 1] -> [F, T, 3] uint8 RGB, time to the right, high mels on top."""
    assert segment.grid is not None and len(segment.grid) == 2, "microphone segments are (T, F) grids"
    t, f = segment.grid
    mel = segment.values.reshape(t, f).T[::-1]  # (F, T), row 0 = highest mel band
    levels = np.clip((mel + 1) * 127.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)


def _to_pixels(xy_m: np.ndarray, range_m: float, size: int) -> np.ndarray:
    """[N, 2] (x forward, y left) metres -> [N, 2] (column, row) pixels, forward up, sensor at the centre."""
    scale = size / (2 * range_m)
    cols = size / 2 - xy_m[:, 1] * scale
    rows = size / 2 - xy_m[:, 0] * scale
    return np.stack([cols, rows], axis=1)


def _grid(range_m: float, size: int) -> np.ndarray:
    """The empty bird's-eye view: range rings every 10 m, the camera's wedge, the sensor."""
    img = np.full((size, size, 3), 16, np.uint8)
    centre = (size // 2, size // 2)
    for ring_m in np.arange(10.0, range_m + 1e-6, 10.0):
        radius = round(ring_m * size / (2 * range_m))
        cv2.circle(img, centre, radius, (48, 56, 64), 1, cv2.LINE_AA)
    half = np.deg2rad(CAMERA_HALF_FOV_DEG)
    ends = range_m * np.array([[np.cos(half), np.sin(half)], [np.cos(half), -np.sin(half)]])
    for col, row in _to_pixels(ends, range_m, size).round().astype(int):
        cv2.line(img, centre, (int(col), int(row)), (70, 70, 40), 1, cv2.LINE_AA)
    cv2.drawMarker(img, centre, (200, 200, 200), cv2.MARKER_TRIANGLE_UP, 10, 2)
    return img


def lidar_bev(
    segment: Segment | None,
    *,
    range_m: float,
    position_m: list[float] | None = None,
    label: str = "",
    size: int = VIEW_PX,
) -> np.ndarray:
    """Bird's-eye view [size, size, 3] uint8 RGB of a LiDAR segment, the predicted position ringed.

    Args:
        segment: values [N, 2] (intensity in [0, 1], range / range_m), positions [N, 3] in [-1, 1]
            (x, y, z divided by range_m); None draws the empty grid (the LiDAR is missing).
        range_m: the preprocessor's range, which scaled the positions; the view spans +-range_m.
        position_m: the predicted object position (x, y, z metres), or None.
    """
    img = _grid(range_m, size)
    if segment is not None and segment.positions is not None and segment.num_rows:
        pix = _to_pixels(segment.positions[:, :2] * range_m, range_m, size).astype(np.int32)
        inside = ((pix >= 0) & (pix < size)).all(axis=1)
        pix = pix[inside]
        brightness = _POINT_MIN + (255 - _POINT_MIN) * np.clip(segment.values[inside, 0], 0, 1)
        points = np.zeros((size, size), np.uint8)
        np.maximum.at(points, (pix[:, 1], pix[:, 0]), brightness.astype(np.uint8))
        dots = cv2.dilate(points, np.ones((2, 2), np.uint8))  # one pixel is too small to see
        colours = cv2.cvtColor(cv2.applyColorMap(dots, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
        hit = dots > 0
        img[hit] = colours[hit]
    if position_m is not None:
        col, row = _to_pixels(np.asarray([position_m[:2]], np.float64), range_m, size)[0].round().astype(int)
        cv2.circle(img, (int(col), int(row)), 9, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.drawMarker(img, (int(col), int(row)), (255, 64, 64), cv2.MARKER_CROSS, 12, 2)
        if label:
            cv2.putText(
                img, label, (int(col) + 12, int(row) - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1
            )
    return img


def data_url(image: np.ndarray, fmt: str = "jpeg") -> str:
    """An RGB uint8 image as a `data:` URL (JPEG for photos, PNG for sharp lines)."""
    ext = {"jpeg": ".jpg", "png": ".png"}[fmt]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.tobytes()).decode("ascii")
