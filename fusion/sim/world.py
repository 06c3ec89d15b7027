"""A deterministic scene seen by a rig of camera, microphone and LiDAR.

The rig sits at the origin (x forward, y left, z up; sensors 1.7 m above the ground). Time is
cut into episodes of `episode_s` seconds; each episode has one object of one class at a
position and velocity drawn from a seed-derived generator, so any time t maps to the same
state however and in whatever order it is asked. Each class has a signature in every
modality: a shape, size and colour for the camera, a box for the LiDAR, and a sound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from fusion.config import StrictModel


@dataclass(frozen=True)
class ObjectClass:
    """A class and its signature in each modality."""

    name: str
    size: tuple[float, float, float]  # length, width, height in metres (0 = no object)
    color: tuple[int, int, int]  # RGB
    round: bool  # drawn as an ellipse (people, bikes) rather than a box (vehicles)
    tones: tuple[float, ...]  # base frequencies in Hz of its sound (engine harmonics, voice...)
    siren: bool = False  # frequency sweep
    pulse_hz: float = 0.0  # amplitude modulation (footsteps, chain clicks)


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("nothing", (0.0, 0.0, 0.0), (0, 0, 0), False, ()),
    ObjectClass("pedestrian", (0.5, 0.5, 1.75), (200, 80, 60), True, (), pulse_hz=2.0),
    ObjectClass("cyclist", (1.8, 0.6, 1.7), (60, 160, 60), True, (), pulse_hz=6.0),
    ObjectClass("car", (4.5, 1.8, 1.5), (60, 90, 200), False, (90.0, 180.0)),
    ObjectClass("truck", (10.0, 2.5, 3.5), (150, 150, 150), False, (45.0, 90.0, 135.0)),
    ObjectClass("emergency_vehicle", (5.5, 2.0, 2.4), (230, 230, 230), False, (90.0,), siren=True),
    ObjectClass("motorcycle", (2.1, 0.8, 1.4), (40, 40, 40), True, (140.0, 280.0, 420.0)),
)


class WorldConfig(StrictModel):
    """The scene: which classes appear, how far, and how often the object changes."""

    seed: int = 0
    episode_s: float = Field(default=4.0, gt=0)
    min_distance_m: float = Field(default=6.0, gt=0)
    max_distance_m: float = Field(default=35.0, gt=0)
    sensor_height_m: float = 1.7
    night_probability: float = Field(default=0.3, ge=0, le=1)


@dataclass(frozen=True)
class ObjectState:
    """The object at one instant (positions in metres in the rig frame)."""

    episode: int
    cls: int
    position: tuple[float, float, float]  # centre of the object's base: x, y, z (ground = -height)
    velocity: tuple[float, float, float]
    night: bool

    @property
    def spec(self) -> ObjectClass:
        return CLASSES[self.cls]


class World:
    """Answers `state(t)` for any scene time t, the same for every sensor and every call."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config

    def episode(self, t: float) -> int:
        return math.floor(t / self.config.episode_s)

    def state(self, t: float) -> ObjectState:
        ep = self.episode(t)
        rng = np.random.default_rng([self.config.seed, ep, 7])
        cfg = self.config
        cls = int(rng.integers(len(CLASSES)))
        dist = rng.uniform(cfg.min_distance_m, cfg.max_distance_m)
        bearing = rng.uniform(-0.5, 0.5)  # radians, within the camera's field of view
        speed = rng.uniform(0.0, 12.0) * (0.0 if cls == 0 else 1.0)
        heading = rng.uniform(-math.pi, math.pi)
        night = bool(rng.random() < cfg.night_probability)
        dt = t - ep * cfg.episode_s
        vx, vy = speed * math.cos(heading), speed * math.sin(heading)
        x = dist * math.cos(bearing) + vx * (dt - cfg.episode_s / 2)
        y = dist * math.sin(bearing) + vy * (dt - cfg.episode_s / 2)
        return ObjectState(ep, cls, (x, y, -cfg.sensor_height_m), (vx, vy, 0.0), night)


def frame_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Noise for one frame of one stream: independent of the order frames are made in."""
    return np.random.default_rng([seed, stream, index])


def render_camera(state: ObjectState, *, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A pinhole view along +x (60 degree horizontal field of view): [height, width, 3] uint8 RGB."""
    img = np.empty((height, width, 3), np.float32)
    horizon = height // 2
    img[:horizon] = (135, 170, 220)  # sky
    img[horizon:] = (90, 90, 80)  # road
    spec, (x, y, z) = state.spec, state.position
    if spec.size[0] > 0 and x > 0.5:
        f = (width / 2) / math.tan(math.radians(30))
        u = width / 2 - f * y / x
        half_w = f * spec.size[1] / 2 / x
        bottom = horizon - f * z / x
        top = horizon - f * (z + spec.size[2]) / x
        color = tuple(float(c) for c in spec.color)
        if spec.round:
            centre = (round(u), round((top + bottom) / 2))
            axes = (max(1, round(half_w)), max(1, round((bottom - top) / 2)))
            cv2.ellipse(img, centre, axes, 0, 0, 360, color, -1)
        else:
            cv2.rectangle(img, (round(u - half_w), round(top)), (round(u + half_w), round(bottom)), color, -1)
    if state.night:
        img *= 0.15
    img += rng.standard_normal(img.shape, dtype=np.float32) * 6.0
    return np.clip(img, 0, 255).astype(np.uint8)


def lidar_rays(beams: int = 16, azimuth_steps: int = 900) -> np.ndarray:
    """Unit ray directions of a spinning LiDAR (VLP-16 style, -15..15 degrees): [beams*steps, 3]."""
    elev = np.radians(np.linspace(-15.0, 15.0, beams))[:, None]
    azim = np.linspace(-np.pi, np.pi, azimuth_steps, endpoint=False)[None, :]
    d = np.stack(
        [np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev) * np.ones_like(azim)], -1
    )
    return d.reshape(-1, 3)


def scan_lidar(
    state: ObjectState, rays: np.ndarray, *, height: float, rng: np.random.Generator, max_range: float = 100.0
) -> np.ndarray:
    """Ray-cast the object's box and the ground: [N, 4] float32 (x, y, z, intensity 0-255)."""
    n = len(rays)
    hit = np.full(n, np.inf)
    inten = np.zeros(n)
    down = rays[:, 2] < -1e-6
    hit[down] = -height / rays[down, 2]  # ground plane z = -height
    inten[down] = 20.0
    spec = state.spec
    if spec.size[0] > 0:
        x, y, z = state.position
        lo = np.array([x - spec.size[0] / 2, y - spec.size[1] / 2, z])
        hi = np.array([x + spec.size[0] / 2, y + spec.size[1] / 2, z + spec.size[2]])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = lo / rays, hi / rays  # slab method, all rays at once
        t_near = np.nanmax(np.minimum(t1, t2), axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        box = (t_near <= t_far) & (t_near > 0) & (t_near < hit)
        hit[box] = t_near[box]
        inten[box] = 40.0 + sum(spec.color) / 6.0
    keep = (hit < max_range) & (rng.random(n) > 0.05)  # 5 % dropouts
    r = hit[keep] + rng.normal(0.0, 0.02, keep.sum())  # 2 cm range noise
    pts = rays[keep] * r[:, None]
    return np.concatenate([pts, inten[keep, None]], axis=1).astype(np.float32)


def synth_audio(
    world: World, start_sample: int, n: int, *, sample_rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Microphone samples [start_sample, start_sample + n): the object's sound and wind noise.

    Phase is a function of the absolute sample time, so consecutive chunks join seamlessly.
    """
    t = (start_sample + np.arange(n)) / sample_rate
    state = world.state(float(t[0]))
    spec = state.spec
    out = rng.normal(0.0, 0.01, n)
    if spec.size[0] > 0:
        dist = math.hypot(*state.position[:2])
        gain = min(1.0, 5.0 / dist)
        for k, f in enumerate(spec.tones):
            phase = 2 * np.pi * f * t
            if spec.siren:  # f * (1 + 0.3 sin(2 pi 0.5 t)), integrated in closed form
                phase = phase - (0.3 * f / 0.5) * np.cos(2 * np.pi * 0.5 * t)
            out += gain * 0.3 / (k + 1) * np.sin(phase)
        if spec.pulse_hz:
            env = (np.sin(2 * np.pi * spec.pulse_hz * t) > 0.9).astype(np.float64)
            out += gain * 0.4 * env * rng.normal(0.0, 1.0, n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
