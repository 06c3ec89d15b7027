"""Pictures of what the model sees, drawn with OpenCV: camera grid, log-mel window, LiDAR bird's-eye view.

Everything is drawn from the FusedSample, the model's own input, so the page shows exactly what
the prediction was made from. Images are RGB uint8 arrays until `data_url` encodes them.

Objects (`Box3D`, the rig's base frame) are drawn over the pictures: detected ones solid with
their class and score, ground truth dashed in another colour with its class. In the bird's-eye
view a box is its footprint (l x w turned by yaw) with a tick towards its front; in the camera
picture its 8 corners projected through the simulated camera's pinhole (`CameraView`), joined
as a wireframe. Box lines are drawn without anti-aliasing so that their colours stay exact.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.sample import Segment
from fusion.sensors.preprocess_config import IMAGENET_MEAN, IMAGENET_STD, CameraPreprocessConfig, Normalize
from fusion.sensors.preprocessors import from_patches
from fusion.sim.camera import project

VIEW_PX = 320  # side of the camera and bird's-eye views
CAMERA_HALF_FOV_DEG = 30.0  # drawn on the bird's-eye view as the camera's wedge
_POINT_MIN = 60  # dimmest drawn LiDAR return (of 255), so faint points stay visible
PREDICTED_RGB = (255, 196, 0)  # detected objects: solid amber
TRUTH_RGB = (255, 64, 255)  # ground truth: dashed magenta, a colour the LiDAR's turbo palette never takes
NEAR_M = 0.5  # a box reaching nearer than this to the camera's plane is not projected (as the simulator)
_DASH_PX = 8  # a ground-truth outline: a dash and a gap every 8 px
# The corners of `box_corners` joined: bottom face, top face, the four uprights.
_EDGES = [(i, (i + 1) % 4) for i in range(4)] + [(4 + i, 4 + (i + 1) % 4) for i in range(4)]
_EDGES += [(i, i + 4) for i in range(4)]


def camera_image(segment: Segment, config: CameraPreprocessConfig) -> np.ndarray:
    """The camera grid as the model sees it: values [H*W, 3*p*p] -> [H*p, W*p, 3] uint8 RGB, normalisation undone."""
    assert segment.grid is not None and len(segment.grid) == 2, "camera segments are image grids"
    h, w = segment.grid
    rgb = from_patches(segment.values, (h, w), config.patch)  # (H*p, W*p, 3)
    if config.normalize is Normalize.IMAGENET:
        rgb = rgb * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def enlarge(image: np.ndarray, *, size: int = VIEW_PX) -> np.ndarray:
    """`image` scaled to `size` px wide, pixels kept square and blocky (the model's cells stay visible)."""
    h, w = image.shape[:2]
    return cv2.resize(image, (size, max(1, round(size * h / w))), interpolation=cv2.INTER_NEAREST)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """Write `text` on a black band at the top of `image` (in place; returned for chaining)."""
    if text:
        cv2.rectangle(image, (0, 0), (image.shape[1], 30), (0, 0, 0), thickness=-1)
        cv2.putText(image, text, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def annotate(image: np.ndarray, text: str, *, size: int = VIEW_PX) -> np.ndarray:
    """Scale `image` to `size` px wide (pixels kept square and blocky) and write `text` on a band at the top."""
    return caption(enlarge(image, size=size), text)


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


def lidar_bev(segment: Segment | None, *, range_m: float, size: int = VIEW_PX) -> np.ndarray:
    """Bird's-eye view [size, size, 3] uint8 RGB of a LiDAR segment (`draw_bev_boxes` adds objects).

    Args:
        segment: values [N, 2] (intensity in [0, 1], range / range_m), positions [N, 3] in [-1, 1]
            (x, y, z divided by range_m); None draws the empty grid (the LiDAR is missing).
        range_m: the preprocessor's range, which scaled the positions; the view spans +-range_m.
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
    return img


@dataclass(frozen=True)
class CameraView:
    """The simulated camera's geometry: a pinhole at the rig's origin looking along +x
    (`fusion.sim.camera`, 45 degree horizontal field of view), frames `width` x `height` px."""

    width: int
    height: int

    def project(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Rig-frame points [N, 3] (x > 0) -> [N, 2] (u, v) pixels of a picture `size` = (width,
        height) px showing the whole frame (the preprocessor resizes it, aspect and all)."""
        scale = np.asarray([size[0] / self.width, size[1] / self.height])
        return project(points, self.width, self.height) * scale  # (N, 2)


def box_corners(box: Box3D) -> np.ndarray:
    """The 8 corners [8, 3] of `box` in the rig frame: the bottom face (front-left, front-right,
    rear-right, rear-left), then the top face in the same order."""
    half = np.asarray(box.size) / 2  # (l/2, w/2, h/2)
    signs = np.asarray([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1]])  # the bottom face
    local = np.concatenate([signs, signs * [1, 1, -1]]) * half  # (8, 3)
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    turn = np.asarray([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return local @ turn.T + np.asarray(box.center)


def box_text(box: Box3D) -> str:
    """A detection's class and score ("car 82%"); ground truth's class alone."""
    return box.class_name if box.score is None else f"{box.class_name} {100 * box.score:.0f}%"


def draw_bev_boxes(img: np.ndarray, boxes: Sequence[Box3D], *, range_m: float, truth: bool) -> int:
    """Draw each box's footprint on a bird's-eye view `img` spanning +-range_m (in place).

    Returns how many were drawn (a box wholly outside the view is not)."""
    colour = TRUTH_RGB if truth else PREDICTED_RGB
    drawn = 0
    for box in boxes:
        corners = _to_pixels(box_corners(box)[:4, :2], range_m, img.shape[1])  # (4, 2)
        if not _inside(corners, img):
            continue
        for i in range(4):
            _line(img, corners[i], corners[(i + 1) % 4], colour, dashed=truth)
        _line(img, corners.mean(axis=0), corners[:2].mean(axis=0), colour, dashed=False)  # its front
        _label(img, box_text(box), corners, colour, below=truth)
        drawn += 1
    return drawn


def draw_camera_boxes(img: np.ndarray, boxes: Sequence[Box3D], *, view: CameraView, truth: bool) -> int:
    """Draw each box as a wireframe on a camera picture `img` of `view`'s frame (in place).

    Returns how many were drawn (a box reaching behind `NEAR_M` or out of the picture is not)."""
    colour = TRUTH_RGB if truth else PREDICTED_RGB
    size = (img.shape[1], img.shape[0])
    drawn = 0
    for box in boxes:
        corners = box_corners(box)
        if corners[:, 0].min() < NEAR_M:
            continue
        uv = view.project(corners, size)  # (8, 2)
        if not _inside(uv, img):
            continue
        for i, j in _EDGES:
            _line(img, uv[i], uv[j], colour, dashed=truth)
        _label(img, box_text(box), uv, colour, below=truth)
        drawn += 1
    return drawn


def _inside(points: np.ndarray, img: np.ndarray) -> bool:
    """Whether the bounding rectangle of pixel points [N, 2] (col, row) meets the image."""
    (c0, r0), (c1, r1) = points.min(axis=0), points.max(axis=0)
    return bool(c1 >= 0 and r1 >= 0 and c0 < img.shape[1] and r0 < img.shape[0])


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))


def _line(
    img: np.ndarray, a: np.ndarray, b: np.ndarray, colour: tuple[int, int, int], *, dashed: bool
) -> None:
    """A 2 px line from a to b (col, row), or dashes every `_DASH_PX` px (half on, half off)."""
    if not dashed:
        cv2.line(img, _pixel(a), _pixel(b), colour, 2, cv2.LINE_8)
        return
    length = float(np.hypot(*(b - a)))
    # A 2 px line overshoots its ends by about a pixel each: the dash's axis is 2 px shorter.
    for start in np.arange(0.0, length, _DASH_PX):
        end = min(start + max(1.0, _DASH_PX / 2 - 2), length)
        dash = (_pixel(a + (b - a) * start / length), _pixel(a + (b - a) * end / length))
        cv2.line(img, *dash, colour, 2, cv2.LINE_8)


def _label(
    img: np.ndarray, text: str, points: np.ndarray, colour: tuple[int, int, int], *, below: bool
) -> None:
    """`text` left-aligned over the shape of pixel `points` [N, 2] (under it when `below`),
    outlined in black so it reads on sky, road and the dark bird's-eye view alike."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    (c0, r0), (_, r1) = points.min(axis=0), points.max(axis=0)
    row = r1 + 12 if below else r0 - 4
    at = _pixel(np.asarray([c0, row]))
    cv2.putText(img, text, at, font, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, at, font, scale, colour, 1, cv2.LINE_AA)


def data_url(image: np.ndarray, fmt: str = "jpeg") -> str:
    """An RGB uint8 image as a `data:` URL (JPEG for photos, PNG for sharp lines)."""
    ext = {"jpeg": ".jpg", "png": ".png"}[fmt]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"OpenCV could not encode a {image.shape} image as {fmt}")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.tobytes()).decode("ascii")
