"""The simulated camera: a pinhole view of the objects' meshes, drawn with OpenCV.

Image formation, in order: sky and road lit by the scene's illumination; then each object, the
farthest first so that nearer ones cover it (painter's algorithm over objects, by the distance
of their box centres, and within an object over its triangles): its front-facing triangles
filled far to near with Lambert shading under a fixed sun, plus the light its lamps emit
(headlights, tail lights, a flashing light bar), which does not depend on the daylight; motion
blur of the object along its image-plane motion during the exposure; fog by Koschmieder's law,
I = J t + A (1 - t) with transmission t = exp(-3 d / visibility) per pixel depth d (an object's
at its centre's range); then the sensor's analog gain with shot and read noise, and 8-bit
quantization. At night
the camera raises its gain, so a dark scene comes out dim and grainy: the object's contrast
competes with amplified shot noise, which is what makes the camera less reliable there.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from fusion.sim.world import CAMERA_HFOV_DEG, ObjectState, Scene

_SUN = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
_SKY_TOP = np.array([95.0, 140.0, 205.0])
_SKY_HORIZON = np.array([185.0, 200.0, 220.0])
_ROAD = np.array([105.0, 104.0, 100.0])
_SHIFT = 4  # OpenCV fixed-point bits: vertices at 1/16 pixel
_READ_NOISE = 2.5  # DN
_SHOT_NOISE = 0.3  # DN of variance per DN of signal
_MAX_GAIN = 64.0  # 36 dB of analog gain, as low-light automotive sensors have


def focal_px(width: int) -> float:
    return (width / 2) / math.tan(math.radians(CAMERA_HFOV_DEG / 2))


def project(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rig-frame points [N, 3] (x > 0) -> pixel coordinates [N, 2] (u right, v down)."""
    f = focal_px(width)
    x = points[:, 0]
    return np.stack([width / 2 - f * points[:, 1] / x, height / 2 - f * points[:, 2] / x], axis=1)


@functools.lru_cache(maxsize=8)
def _background(width: int, height: int, sensor_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky-and-road albedo [H, W, 3] (0-255 at full light) and per-pixel depth [H, W] (inf: sky)."""
    f = focal_px(width)
    rows = np.arange(height, dtype=np.float64) + 0.5 - height / 2  # pixel centres below the horizon > 0
    depth = np.full(height, np.inf)
    below = rows > 0
    depth[below] = sensor_height * f / rows[below]
    up = np.clip(-rows / (height / 2), 0, 1)[:, None]
    sky = _SKY_HORIZON * (1 - up) + _SKY_TOP * up
    near = np.clip(rows / (height / 2), 0, 1)[:, None]
    road = _ROAD * (0.9 + 0.2 * near)
    color = np.where(below[:, None], road, sky)  # (H, 3)
    img = np.broadcast_to(color[:, None, :], (height, width, 3)).astype(np.float32)
    dep = np.broadcast_to(depth[:, None], (height, width)).astype(np.float32)
    img.flags.writeable = dep.flags.writeable = False
    return img, dep


def _blur_vector(state: ObjectState, width: int, height: int, exposure_s: float) -> tuple[float, float]:
    """How far (pixels, u and v) the object's centre moves across the image during the exposure."""
    p0 = np.asarray(state.center(), float)[None]
    p1 = p0 + np.asarray(state.velocity)[None] * exposure_s
    du, dv = (project(p1, width, height) - project(p0, width, height))[0]
    return float(du), float(dv)


def _draw_object(
    state: ObjectState, width: int, height: int, blur: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]] | None:
    """The lit object, premultiplied (0-255 at full light), the light its lamps emit (0-255 at
    unit gain), and its coverage, in the window of the image it can touch:
    ([h, w, 3], [h, w, 3], [h, w], (left, top)), or None when not in view."""
    model = state.model
    if model is None:
        return None
    verts = state.vertices()  # (V, 3)
    if verts[:, 0].min() < 0.5:  # reaching behind the image plane: not drawn
        return None
    uv = project(verts, width, height)  # (V, 2)
    pad = math.ceil(max(abs(blur[0]), abs(blur[1]))) + 2
    x0, y0 = (max(0, math.floor(c) - pad) for c in uv.min(axis=0))
    x1, y1 = min(width, math.ceil(uv[:, 0].max()) + pad), min(height, math.ceil(uv[:, 1].max()) + pad)
    if x1 <= x0 or y1 <= y0:
        return None
    mesh = model.mesh
    tri = verts[mesh.triangles]  # (T, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    centroid = tri.mean(axis=1)
    front = np.einsum("ij,ij->i", normal, centroid) < 0  # facing the camera at the origin
    order = np.flatnonzero(front)[np.argsort(-np.linalg.norm(centroid[front], axis=1))]
    shade = 0.45 + 0.55 * np.clip(normal @ _SUN, 0, None)  # (T,)
    color = mesh.color * shade[:, None] * 255.0  # (T, 3)
    glow = (mesh.glow_night if state.night else mesh.glow_day) * 255.0  # (T, 3)
    if not model.beacon_on(state.t):
        glow = np.where(mesh.beacon[:, None], 0.0, glow)
    pix = np.round((uv - [x0, y0]) * (1 << _SHIFT)).astype(np.int32)  # (V, 2) in the window
    # Which triangle shows at each pixel (-1: none), filled far to near: a loop over the few
    # hundred triangles of one mesh, never over pixels; the colours are looked up once after.
    # No anti-aliasing here (it would seam shared edges); the preprocessor's area resize
    # averages edges anyway.
    top = np.full((y1 - y0, x1 - x0), -1, np.int32)
    for t in order:
        cv2.fillConvexPoly(top, pix[mesh.triangles[t]], int(t), shift=_SHIFT)
    seen = top >= 0
    obj = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    lamps = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    obj[seen] = color.astype(np.float32)[top[seen]]
    lamps[seen] = glow.astype(np.float32)[top[seen]]  # a dark part in front hides a lamp
    alpha = seen.astype(np.float32)
    return obj, lamps, alpha, (x0, y0)


def _motion_blur(layers: tuple[np.ndarray, ...], blur: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Smear the object's layers along its image-plane motion (du, dv pixels) during the exposure."""
    du, dv = blur
    length = math.hypot(du, dv)
    if length < 1.0:
        return layers
    size = math.ceil(length) | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    cv2.line(
        kernel,
        (round(c - du / 2), round(c - dv / 2)),
        (round(c + du / 2), round(c + dv / 2)),
        1.0,
        1,
        cv2.LINE_AA,
    )
    kernel /= kernel.sum()
    return tuple(cv2.filter2D(layer, -1, kernel) for layer in layers)


@functools.lru_cache(maxsize=4)
def _lit_background(
    width: int, height: int, sensor_height: float, light: float, visibility: float
) -> tuple[np.ndarray, np.ndarray]:
    """The empty scene through the fog [H, W, 3] float32, and the fog's airlight colour [3]."""
    bg, depth = _background(width, height, sensor_height)
    airlight = (_SKY_HORIZON * min(light, 1.0)).astype(np.float32)
    t = np.exp(np.float32(-3.0 / visibility) * depth)[..., None]  # (H, W, 1); 0 for the sky
    img = bg * np.float32(light) * t + airlight * (1 - t)
    img.flags.writeable = False
    return img, airlight


def render_camera(
    state: ObjectState, *, width: int, height: int, rng: np.random.Generator, sensor_height: float = 1.7
) -> np.ndarray:
    """The camera's view of `state`'s object alone (the one-object world): [height, width, 3]
    uint8 RGB; `render_camera_scene` of the scene that holds just that object."""
    return render_camera_scene(
        Scene.of(state), width=width, height=height, rng=rng, sensor_height=sensor_height
    )


def render_camera_scene(
    scene: Scene, *, width: int, height: int, rng: np.random.Generator, sensor_height: float = 1.7
) -> np.ndarray:
    """The camera's view along +x (45 degree horizontal field of view) of every object in
    `scene`, nearer ones over farther ones: [height, width, 3] uint8 RGB.

    `rng` draws the exposure time and the sensor noise: the same rng state gives the same image.
    """
    cond = scene.conditions
    light = cond.illumination
    img, airlight = _lit_background(width, height, sensor_height, light, cond.visibility_m)
    img = img.copy()
    exposure = 1 / 30 if cond.night else rng.uniform(1 / 500, 1 / 60)
    ranges = [math.hypot(*_center(state)) for state in scene.objects]
    for k in sorted(range(len(ranges)), key=lambda k: -ranges[k]):  # far to near
        _composite(img, scene.objects[k], ranges[k], width, height, exposure, light, airlight)
    # The sensor: auto exposure sets an analog gain towards mid-grey, up to 64x, applied to the
    # pixel's charge before the read-out and the 8-bit ADC (as CMOS sensors do). Shot noise
    # (variance proportional to the collected signal) is amplified with the signal; read noise
    # comes after the gain. At night few photons arrive, so the picture is dark and grainy, yet
    # a lit body still shows through the grain, as in street-lit night footage.
    gain = np.float32(min(_MAX_GAIN, 0.9 / max(light, 1e-3)) if cond.night else 1.0 / max(light, 0.8))
    sd = np.sqrt(_READ_NOISE**2 + gain * gain * _SHOT_NOISE * img)
    raw = img * gain + rng.standard_normal(img.shape, dtype=np.float32) * sd
    return np.clip(np.rint(raw), 0, 255).astype(np.uint8)


def _center(state: ObjectState) -> tuple[float, float, float]:
    center = state.center()
    assert center is not None  # a scene holds no 'nothing'
    return center


def _composite(
    img: np.ndarray,
    state: ObjectState,
    distance: float,
    width: int,
    height: int,
    exposure: float,
    light: float,
    airlight: np.ndarray,
) -> None:
    """Draw one object over `img` [H, W, 3] float32 (in place), seen through the fog at `distance`."""
    blur = _blur_vector(state, width, height, exposure)
    drawn = _draw_object(state, width, height, blur)
    if drawn is None:
        return
    obj, lamps, alpha, (x0, y0) = drawn
    obj, lamps, alpha = _motion_blur((obj, lamps, alpha), blur)
    t_obj = np.float32(math.exp(-3.0 / state.conditions.visibility_m * distance))
    a = alpha[..., None]
    win = img[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1]]  # a view: composited in place
    win[...] = win * (1 - a) + (obj * np.float32(light) + lamps) * t_obj + a * (airlight * (1 - t_obj))
