"""A deterministic scene seen by a rig of camera, microphone and LiDAR.

The rig sits at the origin (x forward, y left, z up); its sensors share one pose,
`sensor_height_m` above flat ground, so the ground is the plane z = -sensor_height_m. Time is
cut into episodes of `episode_s` seconds. Each episode draws, from (seed, episode) alone, up to
`max_objects` objects, each of its own class, size, trajectory (a straight line at constant
speed through a point at the episode's middle, kept inside the camera's view and the LiDAR's
range) and speed, and the conditions: day or night, clear, fog or rain, and the background
noise. Any time t therefore maps to the same scene however and in whatever order it is asked,
in any process.

How an episode is drawn, so that `max_objects: 1` is the one-object world of before, byte for
byte, and adding objects never changes the first: object 0 and then the conditions come from
the episode's stream, as they always did; object 0 may be of class 'nothing', and then the
episode is empty (so the empty-episode probability is the 'nothing' weight, whatever
`max_objects`). Otherwise the number of further objects is drawn uniformly from 0 to
`max_objects - 1` from a stream of its own, and object k from its own stream (seed, episode,
k), among the classes other than 'nothing'; a further object whose pass would cross an earlier
one's footprint is tried elsewhere a few times, then left out.

`World.state(t)` is object 0 at t (the one-object view that older callers use); `World.scene(t)`
is every object at t. The renderers live beside this module: `fusion.sim.camera`,
`fusion.sim.lidar`, `fusion.sim.audio`; the object list as ground truth is `fusion.sim.truth`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from pydantic import Field, model_validator

from fusion.config import StrictModel
from fusion.errors import InputError
from fusion.sim.objects import CLASSES, ObjectModel

CAMERA_HFOV_DEG = 45.0  # the camera's horizontal field of view; objects are kept inside it


class Weather(StrEnum):
    CLEAR = "clear"
    FOG = "fog"
    RAIN = "rain"


class Noise(StrEnum):
    """The background the microphone hears besides the object."""

    WIND = "wind"
    RAIN = "rain"
    CROWD = "crowd"  # babble and footsteps: hides a pedestrian
    TRAFFIC = "traffic"  # distant engines: hides a car


class WorldConfig(StrictModel):
    """The scene: which objects appear, where, and under which conditions."""

    seed: int = 0
    episode_s: float = Field(default=4.0, gt=0)
    min_distance_m: float = Field(default=4.0, gt=0)  # object range at the episode's middle
    max_distance_m: float = Field(default=25.0, gt=0)
    max_bearing_deg: float = Field(default=19.0, gt=0, le=CAMERA_HFOV_DEG / 2)
    sensor_height_m: float = Field(default=1.7, gt=0)
    night_probability: float = Field(default=0.25, ge=0, le=1)
    fog_probability: float = Field(default=0.2, ge=0, le=1)
    rain_probability: float = Field(default=0.2, ge=0, le=1)
    # [low, high] ranges drawn uniformly per episode:
    fog_visibility_m: list[float] = Field(default=[20.0, 80.0], min_length=2, max_length=2)  # in fog
    noise_dbfs: list[float] = Field(default=[-55.0, -22.0], min_length=2, max_length=2)  # background RMS
    # Relative frequency of each class (CLASSES order); None: all equally likely. The weight of
    # 'nothing' is the probability of an empty episode.
    class_weights: list[float] | None = None
    # Objects an episode holds at most; 1 is the one-object world the shipped checkpoint saw.
    max_objects: int = Field(default=4, ge=0)

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        if self.max_distance_m <= self.min_distance_m:
            raise InputError(
                f"max_distance_m ({self.max_distance_m}) must exceed min_distance_m ({self.min_distance_m})"
            )
        if self.fog_probability + self.rain_probability > 1:
            raise InputError(
                f"fog_probability + rain_probability = {self.fog_probability + self.rain_probability} exceeds 1"
            )
        for name in ("fog_visibility_m", "noise_dbfs"):
            lo, hi = getattr(self, name)
            if hi < lo:
                raise InputError(f"{name}: [{lo}, {hi}] is not a [low, high] range")
        if self.class_weights is not None and (
            len(self.class_weights) != len(CLASSES)
            or min(self.class_weights) < 0
            or sum(self.class_weights) <= 0
        ):
            raise InputError(
                f"class_weights needs {len(CLASSES)} non-negative weights (one per class), got {self.class_weights}"
            )
        return self


@dataclass(frozen=True)
class Conditions:
    """What the sensors have to cope with during one episode."""

    night: bool
    illumination: float  # scene brightness: about 1 on a sunny day, a few percent at night
    weather: Weather
    visibility_m: float  # meteorological visibility (contrast falls to 5 %); large when clear
    noise: Noise
    noise_dbfs: float  # background noise RMS level


@dataclass(frozen=True)
class Track:
    """One object's straight pass through its episode (rig frame, metres)."""

    track_id: int  # stable within the episode, unique across episodes: episode * max_objects + k
    cls: int
    model: ObjectModel | None  # None for 'nothing' (object 0 of an empty episode)
    center: tuple[float, float]  # x, y (m) at the episode's middle
    velocity: tuple[float, float]  # m/s, along the heading

    @property
    def heading(self) -> float:
        """Yaw (radians) of the object's forward axis."""
        return math.atan2(self.velocity[1], self.velocity[0])


@dataclass(frozen=True)
class Episode:
    """One episode: its objects' passes and the conditions.

    `tracks[0]` is object 0, drawn as in the one-object world ('nothing' when the episode is
    empty); `cls`, `model`, `center`, `velocity` and `heading` are object 0's.
    """

    index: int
    tracks: tuple[Track, ...]
    t_center: float
    conditions: Conditions

    @property
    def objects(self) -> tuple[Track, ...]:
        """The tracks that hold an object (none in an empty episode)."""
        return tuple(tr for tr in self.tracks if tr.model is not None)

    @property
    def cls(self) -> int:
        return self.tracks[0].cls

    @property
    def model(self) -> ObjectModel | None:
        return self.tracks[0].model

    @property
    def center(self) -> tuple[float, float]:
        return self.tracks[0].center

    @property
    def velocity(self) -> tuple[float, float]:
        return self.tracks[0].velocity

    @property
    def heading(self) -> float:
        return self.tracks[0].heading


@dataclass(frozen=True)
class ObjectState:
    """One object at one instant (metres, rig frame)."""

    episode: Episode
    track: Track
    t: float
    position: tuple[float, float, float]  # the object's footprint centre on the ground

    @property
    def track_id(self) -> int:
        return self.track.track_id

    @property
    def cls(self) -> int:
        return self.track.cls

    @property
    def model(self) -> ObjectModel | None:
        return self.track.model

    @property
    def velocity(self) -> tuple[float, float, float]:
        return (*self.track.velocity, 0.0)

    @property
    def heading(self) -> float:
        return self.track.heading

    @property
    def conditions(self) -> Conditions:
        return self.episode.conditions

    @property
    def night(self) -> bool:
        return self.episode.conditions.night

    @property
    def rotation(self) -> np.ndarray:
        """[3, 3] object frame -> rig frame (a yaw)."""
        c, s = math.cos(self.heading), math.sin(self.heading)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def vertices(self) -> np.ndarray:
        """The object's mesh vertices in the rig frame, [V, 3]."""
        assert self.model is not None
        return self.model.mesh.vertices @ self.rotation.T + np.asarray(self.position)

    def center(self) -> tuple[float, float, float] | None:
        """Centre of the object's bounding box in the rig frame: the position label; None for 'nothing'."""
        if self.model is None:
            return None
        lo, hi = self.model.bounds
        c = self.rotation @ ((lo + hi) / 2) + np.asarray(self.position)
        return (float(c[0]), float(c[1]), float(c[2]))


@dataclass(frozen=True)
class Scene:
    """Every object of the world at one instant, and the conditions: what the scene renderers
    (`render_camera_scene`, `scan_lidar_scene`) draw. `objects` are in track order."""

    episode: Episode
    t: float
    objects: tuple[ObjectState, ...]  # no 'nothing': empty in an empty episode

    @classmethod
    def of(cls, state: ObjectState) -> Scene:
        """The scene that holds `state`'s object alone (none for 'nothing'): how the one-object
        renderers draw a state."""
        return cls(episode=state.episode, t=state.t, objects=() if state.model is None else (state,))

    @property
    def conditions(self) -> Conditions:
        return self.episode.conditions

    @property
    def night(self) -> bool:
        return self.episode.conditions.night


class World:
    """Answers `scene(t)` and `state(t)` for any scene time t, the same for every sensor and call."""

    _CACHE = 8  # episodes kept: sensors ask about a few neighbouring episodes at a time

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self._episodes: OrderedDict[int, Episode] = OrderedDict()

    def episode_index(self, t: float) -> int:
        return math.floor(t / self.config.episode_s)

    def episode(self, index: int) -> Episode:
        """Episode `index`, drawn from (seed, index) alone."""
        ep = self._episodes.get(index)
        if ep is None:
            ep = draw_episode(self.config, index)
            self._episodes[index] = ep
            if len(self._episodes) > self._CACHE:
                self._episodes.popitem(last=False)
        return ep

    def state(self, t: float) -> ObjectState:
        """Object 0 at t (class 'nothing' in an empty episode): the one-object world's view."""
        ep = self.episode(self.episode_index(t))
        return self._at(ep, ep.tracks[0], t)

    def scene(self, t: float) -> Scene:
        """Every object at t, in track order."""
        ep = self.episode(self.episode_index(t))
        return Scene(episode=ep, t=t, objects=tuple(self._at(ep, tr, t) for tr in ep.objects))

    def _at(self, ep: Episode, track: Track, t: float) -> ObjectState:
        dt = t - ep.t_center
        x, y = track.center[0] + track.velocity[0] * dt, track.center[1] + track.velocity[1] * dt
        return ObjectState(episode=ep, track=track, t=t, position=(x, y, -self.config.sensor_height_m))


_FURTHER = 24  # tags the streams of objects 1.. and of their count (issue 24), apart from all others
_PLACEMENT_TRIES = 8  # places tried for a further object before it is left out
_GAP_M = 0.5  # the least clearance between two objects' footprints during an episode


def draw_episode(cfg: WorldConfig, index: int) -> Episode:
    """The objects, their trajectories and the conditions of one episode."""
    rng = np.random.default_rng([cfg.seed, index, 7])
    weights = np.ones(len(CLASSES)) if cfg.class_weights is None else np.asarray(cfg.class_weights, float)
    scale = max(cfg.max_objects, 1)
    cls, model = _draw_object(rng, weights)  # object 0, then the conditions, as in the one-object world
    center, velocity = _trajectory(cfg, rng, model)
    conditions = _conditions(cfg, rng)
    if cfg.max_objects == 0:
        cls, model, velocity = 0, None, (0.0, 0.0)
    tracks = [Track(track_id=index * scale, cls=cls, model=model, center=center, velocity=velocity)]
    if model is not None and cfg.max_objects > 1:
        further = int(np.random.default_rng([cfg.seed, index, 8, 0, _FURTHER]).integers(cfg.max_objects))
        others = weights.copy()
        others[0] = 0.0  # object 0 alone decides whether the episode is empty
        for k in range(1, further + 1):
            obj_rng = np.random.default_rng([cfg.seed, index, 7, k, _FURTHER])
            cls, model = _draw_object(obj_rng, others)
            for _ in range(_PLACEMENT_TRIES):  # new passes for the same object: the class mix holds
                center, velocity = _trajectory(cfg, obj_rng, model)
                track = Track(
                    track_id=index * scale + k, cls=cls, model=model, center=center, velocity=velocity
                )
                if not any(_cross(cfg, track, placed) for placed in tracks):
                    tracks.append(track)
                    break
    return Episode(
        index=index, tracks=tuple(tracks), t_center=(index + 0.5) * cfg.episode_s, conditions=conditions
    )


def _draw_object(rng: np.random.Generator, weights: np.ndarray) -> tuple[int, ObjectModel | None]:
    """A class drawn by `weights` and an instance of it (None for 'nothing')."""
    cls = int(rng.choice(len(CLASSES), p=weights / weights.sum()))
    build = CLASSES[cls].build
    return cls, None if build is None else build(rng)


def _footprint(track: Track) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre [2] at the episode's middle, unit axes [2, 2] (rows: along, across), half sizes [2])."""
    assert track.model is not None
    lo, hi = track.model.bounds
    c, s = math.cos(track.heading), math.sin(track.heading)
    axes = np.array([[c, s], [-s, c]])
    mid = (lo[:2] + hi[:2]) / 2
    return np.asarray(track.center) + mid @ axes, axes, (hi[:2] - lo[:2]) / 2


def _cross(cfg: WorldConfig, a: Track, b: Track) -> bool:
    """Whether the footprints of a and b come within `_GAP_M` of each other during the episode.

    Exact for two rectangles moving at constant velocity: by the separating axis theorem they
    overlap at time t iff their centres' separation projected on each of the four edge normals
    is less than the sum of their projected half extents; each projection is linear in t, so
    each axis gives an interval of t, and they meet iff the intervals and the episode overlap.
    """
    ca, axes_a, ha = _footprint(a)
    cb, axes_b, hb = _footprint(b)
    sep0, dsep = cb - ca, np.subtract(b.velocity, a.velocity)
    half = cfg.episode_s / 2
    lo_t, hi_t = -half, half
    for axis in (*axes_a, *axes_b):
        reach = np.abs(axes_a @ axis) @ ha + np.abs(axes_b @ axis) @ hb + _GAP_M
        s0, ds = float(sep0 @ axis), float(dsep @ axis)
        if abs(ds) < 1e-12:
            if abs(s0) >= reach:
                return False
            continue
        t1, t2 = sorted(((-reach - s0) / ds, (reach - s0) / ds))
        lo_t, hi_t = max(lo_t, t1), min(hi_t, t2)
        if lo_t >= hi_t:
            return False
    return True


def _trajectory(
    cfg: WorldConfig, rng: np.random.Generator, model: ObjectModel | None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """A straight pass that stays in view: (centre x, y) and velocity (vx, vy)."""
    max_bearing = math.radians(cfg.max_bearing_deg)
    lo, hi = cfg.min_distance_m, cfg.max_distance_m
    if model is not None:  # a long vehicle keeps its whole body in front of the camera
        lo = min(hi, max(lo, 0.6 * model.size[0]))
    # Uniform in range, as a street scene has as many objects near as far (not uniform in area).
    dist = rng.uniform(lo, hi)
    bearing = rng.uniform(-max_bearing, max_bearing)
    center = (dist * math.cos(bearing), dist * math.sin(bearing))
    if model is None:
        return center, (0.0, 0.0)
    speed = rng.uniform(*model.speed_range)
    half = cfg.episode_s / 2
    # A few headings are tried; a pass that would leave the view is slowed down instead.
    headings = rng.uniform(-math.pi, math.pi, size=8)
    for scale in (1.0, 0.5, 0.25, 0.0):
        for h in headings:
            v = (scale * speed * math.cos(h), scale * speed * math.sin(h))
            ends = [(center[0] + s * v[0] * half, center[1] + s * v[1] * half) for s in (-1, 1)]
            if all(
                0.8 * lo <= math.hypot(*e) <= 1.2 * hi and abs(math.atan2(e[1], e[0])) <= max_bearing
                for e in ends
            ):
                return center, v
    raise AssertionError("a standing object always stays in view")


def _conditions(cfg: WorldConfig, rng: np.random.Generator) -> Conditions:
    night = bool(rng.random() < cfg.night_probability)
    illumination = rng.uniform(0.004, 0.02) if night else rng.uniform(0.6, 1.2)
    u = rng.random()
    weather = (
        Weather.FOG
        if u < cfg.fog_probability
        else Weather.RAIN
        if u < cfg.fog_probability + cfg.rain_probability
        else Weather.CLEAR
    )
    if weather is Weather.FOG:
        visibility = rng.uniform(cfg.fog_visibility_m[0], cfg.fog_visibility_m[1])
    elif weather is Weather.RAIN:
        visibility = rng.uniform(150.0, 400.0)
    else:
        visibility = rng.uniform(2000.0, 20000.0)
    if weather is Weather.RAIN:
        noise = Noise.RAIN
    else:
        noise = (Noise.WIND, Noise.CROWD, Noise.TRAFFIC)[int(rng.integers(3))]
    return Conditions(
        night=night,
        illumination=float(illumination),
        weather=weather,
        visibility_m=float(visibility),
        noise=noise,
        noise_dbfs=float(rng.uniform(cfg.noise_dbfs[0], cfg.noise_dbfs[1])),
    )


def frame_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Noise for one frame of one stream: independent of the order frames are made in."""
    return np.random.default_rng([seed, stream, index])
