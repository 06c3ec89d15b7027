"""The object classes of the simulated world: geometry, colour, LiDAR reflectivity and sound.

Each class draws a random *instance* (`ObjectModel`) from its own ranges: a triangle mesh in
the object frame (x' along the heading, y' to the left, z' up from the ground) with per-triangle
colour, LiDAR reflectivity and porosity, plus the parameters of its sound. Camera and LiDAR see
the same mesh, so shape and size agree across sensors.

The ranges are chosen so that classes collide in one sensor and part in another, as in the
street: an emergency vehicle has the body of a van (45% of the `car` class are vans: a
delivery-heavy street), so its LiDAR scan matches a van's while its siren and livery set it
apart; bicycles and motorcycles have similar outlines in a sparse scan but not the same sound;
car and truck engines overlap in pitch
and, heard from an unknown distance, in loudness; footsteps and freewheel clicks are too quiet
to carry far. The sound levels are amplitudes at 1 m in full-scale units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fusion.sim.mesh import Mesh, box, join, sphere, wheel

# --------------------------------------------------------------------------- sound


@dataclass(frozen=True)
class Sound:
    """What an object sounds like (all optional; amplitudes at 1 m, full-scale units).

    engine_hz: firing frequency; harmonics at k * engine_hz with amplitude k ** -harmonic_decay.
    rev_wobble: relative depth of the slow (0.3 Hz) swing of engine speed.
    roughness: depth of the cycle-to-cycle amplitude wobble (a V-twin's lope).
    siren: (low Hz, high Hz, sweep period s): a wail sweeps in seconds, a yelp in tenths.
    clicks: (rate Hz, decay s, band low Hz, band high Hz): footsteps, freewheel ticks, diesel knock.
    tyre: broadband rolling noise level per (m/s) of speed.
    """

    engine_hz: float = 0.0
    engine_level: float = 0.0
    harmonic_decay: float = 1.0
    harmonics: int = 0
    rev_wobble: float = 0.04
    roughness: float = 0.0
    siren: tuple[float, float, float] | None = None
    siren_level: float = 0.0
    clicks: tuple[float, float, float, float] | None = None
    click_level: float = 0.0
    tyre: float = 0.0


@dataclass(frozen=True)
class ObjectModel:
    """One instance of a class: its mesh and sound, and how fast it goes."""

    mesh: Mesh
    sound: Sound
    speed_range: tuple[float, float]  # m/s
    beacon_hz: float = 0.0  # flashes per second of the mesh's `beacon` lamps
    beacon_phase: float = 0.0  # in [0, 1): where in its cycle the beacon is at t = 0

    def beacon_on(self, t: float) -> bool:
        """Whether the flashing lamps are lit at scene time t (half of each cycle)."""
        return self.beacon_hz > 0 and (t * self.beacon_hz + self.beacon_phase) % 1.0 < 0.5

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corner [3] of the mesh's bounding box (object frame)."""
        v = self.mesh.vertices
        return v.min(axis=0), v.max(axis=0)

    @property
    def size(self) -> tuple[float, float, float]:
        """Length, width, height (m) of the bounding box."""
        lo, hi = self.bounds
        return tuple(float(d) for d in hi - lo)  # type: ignore[return-value]


@dataclass(frozen=True)
class ObjectClass:
    """A class: its name and how to draw a random instance of it (None: no object)."""

    name: str
    build: Callable[[np.random.Generator], ObjectModel] | None = field(default=None, repr=False)


# --------------------------------------------------------------------------- palettes

_CLOTHES = ((180, 40, 40), (40, 60, 150), (30, 30, 30), (200, 200, 190), (60, 120, 60), (200, 150, 40))
_CAR_PAINT = ((235, 235, 235), (20, 20, 22), (160, 162, 165), (150, 25, 25), (30, 50, 120), (90, 90, 95))
_TRUCK_PAINT = ((230, 230, 225), (200, 60, 30), (40, 80, 140), (230, 190, 40), (70, 110, 60))
_LIVERY = ((240, 240, 235), (235, 215, 40))  # emergency vehicles' body colours
_GLASS = (40, 50, 60)
_TYRE = (25, 25, 25)
_SKIN = (200, 160, 130)
# Lamps: (rgb, night level, day level, flashing). Headlights are on at night and dim to running
# lights by day; tail lights only at night; a light bar flashes day and night when on a call.
_HEAD = ((1.0, 0.97, 0.85), 1.0, 0.3, False)
_TAIL = ((1.0, 0.08, 0.05), 0.6, 0.0, False)
_BEACON = ((0.1, 0.25, 1.0), 1.0, 1.0, True)
_LAMP_LENS = (230, 230, 220)


def _corner_lamps(length: float, width: float, z: float, size: float = 0.3) -> list:
    """Head and tail lights at the four corners, wrapping round them: seen from the front, the
    back and the side, as a car's lamps are. They stand 1 cm proud of the body."""
    dx, dy = size, 0.35
    return [
        box((sx * (length / 2 - dx / 2 + 0.01), sy * (width / 2 - dy / 2 + 0.01), z), (dx, dy, 0.14),
            _LAMP_LENS, 0.6, glow=_HEAD if sx > 0 else _TAIL)
        for sx in (-1, 1) for sy in (-1, 1)
    ]  # fmt: skip


def _reflectivity(rng: np.random.Generator, color) -> float:
    """LiDAR reflectivity of a painted panel: follows its brightness (a white van returns as
    strongly as a white ambulance), with some spread for the finish."""
    luminance = (0.3 * color[0] + 0.59 * color[1] + 0.11 * color[2]) / 255
    return float(np.clip(0.08 + 0.6 * luminance + rng.uniform(-0.05, 0.05), 0.03, 1.0))


def _pick(rng: np.random.Generator, palette) -> tuple[int, int, int]:
    base = np.asarray(palette[int(rng.integers(len(palette)))], float)
    return tuple(int(v) for v in np.clip(base * rng.uniform(0.85, 1.15), 0, 255))  # type: ignore[return-value]


def _person(rng: np.random.Generator, base_z: float, height: float, *, seated: bool) -> list:
    """Legs (unless seated), torso and head standing on z' = base_z."""
    head = 0.22
    torso_h = 0.38 * height
    parts = []
    if not seated:
        legs_h = height - torso_h - head
        parts.append(box((0, 0, base_z + legs_h / 2), (0.25, 0.36, legs_h), _pick(rng, _CLOTHES), 0.3))
        base_z += legs_h
    parts.append(box((0, 0, base_z + torso_h / 2), (0.28, 0.46, torso_h), _pick(rng, _CLOTHES), 0.35))
    parts.append(sphere((0, 0, base_z + torso_h + head / 2), head / 2, _SKIN, 0.4))
    return parts


# --------------------------------------------------------------------------- classes


def _pedestrian(rng: np.random.Generator) -> ObjectModel:
    height = rng.uniform(1.55, 1.95)
    steps = rng.uniform(1.6, 2.3)
    return ObjectModel(
        mesh=join(_person(rng, 0.0, height, seated=False)),
        sound=Sound(clicks=(steps, 0.03, 80.0, 1500.0), click_level=0.06),
        speed_range=(0.7, 1.8),
    )


def _two_wheeler(rng, *, length, radius, body, body_color, rider_base, rider_h, porosity, refl):
    parts = [
        wheel((length / 2 - radius, 0, radius), radius, 0.1, _TYRE, 0.15, porosity),
        wheel((-length / 2 + radius, 0, radius), radius, 0.1, _TYRE, 0.15, porosity),
        box(*body, body_color, refl, porosity),
    ]
    parts += _person(rng, rider_base, rider_h, seated=True)
    return parts


def _cyclist(rng: np.random.Generator) -> ObjectModel:
    length = rng.uniform(1.65, 1.85)
    r = 0.34
    body = ((0, 0, 0.62), (length - 2 * r, 0.08, 0.5))  # the frame, thin tubes
    parts = _two_wheeler(
        rng, length=length, radius=r, body=body, body_color=_pick(rng, _TRUCK_PAINT),
        rider_base=0.8, rider_h=rng.uniform(1.6, 1.9), porosity=0.75, refl=0.5,
    )  # fmt: skip
    if rng.random() < 0.5:  # half the cyclists carry a small front lamp, on at night only
        lamp = ((1.0, 1.0, 0.9), 0.5, 0.0, False)
        parts.append(box((length / 2 - 0.45, 0, 1.0), (0.08, 0.08, 0.08), _LAMP_LENS, 0.5, glow=lamp))
    return ObjectModel(
        mesh=join(parts),
        sound=Sound(clicks=(rng.uniform(7.0, 14.0), 0.004, 1500.0, 6000.0), click_level=0.05, tyre=0.004),
        speed_range=(2.5, 6.0),
    )


def _motorcycle(rng: np.random.Generator) -> ObjectModel:
    length = rng.uniform(1.95, 2.2)
    r = 0.31
    body = ((0, 0, 0.62), (length - 0.7, 0.42, 0.55))  # tank, engine, seat
    parts = _two_wheeler(
        rng, length=length, radius=r, body=body, body_color=_pick(rng, _CAR_PAINT),
        rider_base=0.65, rider_h=rng.uniform(1.6, 1.9), porosity=0.1, refl=0.55,
    )  # fmt: skip
    parts += [  # one headlight, one tail light
        box((length / 2 - 0.35, 0, 0.95), (0.2, 0.22, 0.2), _LAMP_LENS, 0.6, glow=_HEAD),
        box((-length / 2 + 0.2, 0, 0.85), (0.12, 0.16, 0.1), _LAMP_LENS, 0.6, glow=_TAIL),
    ]
    return ObjectModel(
        mesh=join(parts),
        sound=Sound(
            engine_hz=rng.uniform(45.0, 110.0),
            engine_level=0.5,
            harmonic_decay=0.6,
            harmonics=14,
            roughness=0.6,
            tyre=0.004,
        ),
        speed_range=(3.0, 10.0),
    )


def _wheels4(length: float, width: float, r: float) -> list:
    x = length / 2 - 0.9
    return [wheel((sx * x, sy * width / 2, r), r, 0.22, _TYRE, 0.1) for sx in (-1, 1) for sy in (-1, 1)]


def _car(rng: np.random.Generator) -> ObjectModel:
    paint = _pick(rng, _CAR_PAINT)
    refl = _reflectivity(rng, paint)
    kind = rng.choice(3, p=[0.35, 0.2, 0.45])  # saloon, SUV, van (a delivery-heavy street)
    if kind == 2:  # a van: one tall box, the shape an ambulance is built on
        length, width, height = rng.uniform(5.0, 6.2), rng.uniform(1.95, 2.15), rng.uniform(2.2, 2.8)
        # Vans come in ambulance colours too (white and yellow are the commonest van paints)...
        paint = _pick(rng, (*_CAR_PAINT, *_LIVERY, *_LIVERY))
        refl = _reflectivity(rng, paint)
        parts = [
            box((0, 0, 0.3 + (height - 0.3) / 2), (length, width, height - 0.3), paint, refl),
            box((length / 2 - 0.9, 0, height - 0.55), (1.2, width + 0.02, 0.5), _GLASS, 0.1),
        ]
        if rng.random() < 0.5:  # ...and many carry a roof rack or box: a lightbar's size to a LiDAR
            rack = (rng.uniform(0.3, 1.6), rng.uniform(1.0, 1.6), rng.uniform(0.12, 0.25))
            rack_color = _pick(rng, ((30, 30, 32), (170, 170, 175), (235, 235, 235)))
            at = (rng.uniform(-0.3, 0.3) * length, 0, height + rack[2] / 2)
            parts.append(box(at, rack, rack_color, _reflectivity(rng, rack_color)))
    else:
        length = rng.uniform(3.9, 4.9) if kind == 0 else rng.uniform(4.3, 4.9)
        width = rng.uniform(1.7, 1.9)
        height = rng.uniform(1.38, 1.55) if kind == 0 else rng.uniform(1.65, 1.9)
        sill = 0.28
        waist = sill + 0.5 * (height - sill)
        parts = [
            box((0, 0, (sill + waist) / 2), (length, width, waist - sill), paint, refl),
            box(
                (-0.1 * length, 0, (waist + height) / 2),
                (0.55 * length, width - 0.1, height - waist),
                _GLASS,
                0.1,
            ),
        ]
    parts += _wheels4(length, width, 0.32)
    parts += _corner_lamps(length, width, 0.95 if kind == 2 else 0.72)
    return ObjectModel(
        mesh=join(parts),
        sound=Sound(
            engine_hz=rng.uniform(30.0, 70.0), engine_level=0.2, harmonic_decay=1.2, harmonics=10, tyre=0.01
        ),
        speed_range=(2.0, 9.0),
    )


def _truck(rng: np.random.Generator) -> ObjectModel:
    cargo_l = rng.uniform(5.5, 8.5)
    height = rng.uniform(3.4, 4.0)
    width = 2.5
    cab_l = 2.2
    length = cargo_l + cab_l + 0.3
    x_cab = length / 2 - cab_l / 2
    x_cargo = -length / 2 + cargo_l / 2
    parts = [
        box(
            (x_cab, 0, 0.45 + 1.35),
            (cab_l, width, 2.7),
            cab := _pick(rng, _TRUCK_PAINT),
            _reflectivity(rng, cab),
        ),
        box((x_cab + 0.6, 0, 2.4), (1.0, width + 0.02, 0.8), _GLASS, 0.1),
        box(
            (x_cargo, 0, 0.9 + (height - 0.9) / 2),
            (cargo_l, width, height - 0.9),
            cargo := _pick(rng, _TRUCK_PAINT),
            _reflectivity(rng, cargo),
        ),
    ]
    parts += [
        wheel((x, y * width / 2, 0.5), 0.5, 0.3, _TYRE, 0.1)
        for x in (x_cab, x_cargo - cargo_l / 3, x_cargo + cargo_l / 3)
        for y in (-1, 1)
    ]
    parts += _corner_lamps(length, width, 1.0)
    return ObjectModel(
        mesh=join(parts),
        sound=Sound(
            engine_hz=rng.uniform(25.0, 55.0),
            engine_level=0.5,
            harmonic_decay=0.7,
            harmonics=14,
            clicks=None,
            tyre=0.015,
        ),
        speed_range=(2.0, 7.0),
    )


def _emergency(rng: np.random.Generator) -> ObjectModel:
    length, width, height = rng.uniform(5.2, 6.2), rng.uniform(1.95, 2.15), rng.uniform(2.3, 2.6)
    livery = _pick(rng, _LIVERY)
    stripe = _pick(rng, ((200, 30, 30), (30, 60, 200), (40, 160, 60)))
    body_refl = _reflectivity(rng, livery)
    parts = [
        box((0, 0, 0.3 + (height - 0.3) / 2), (length, width, height - 0.3), livery, body_refl),
        # The stripe is a painted decal: a colour to the camera, the body's finish to a LiDAR.
        box((0, 0, 1.15), (length + 0.02, width + 0.02, 0.3), stripe, body_refl),
        box((length / 2 - 0.9, 0, height - 0.55), (1.2, width + 0.04, 0.5), _GLASS, 0.1),
        # A tinted lens that glows blue when it flashes: off, a roof rack's size and shade.
        box((length / 2 - 1.2, 0, height + 0.1), (0.3, 1.2, 0.2), (60, 70, 90), 0.6, glow=_BEACON),
    ]
    parts += _wheels4(length, width, 0.34)
    parts += _corner_lamps(length, width, 0.95)
    wail = rng.random() < 0.6
    siren = (
        rng.uniform(550, 750),
        rng.uniform(1300, 1600),
        rng.uniform(3.0, 5.0) if wail else rng.uniform(0.25, 0.4),
    )
    return ObjectModel(
        mesh=join(parts),
        sound=Sound(
            engine_hz=rng.uniform(30.0, 70.0),
            engine_level=0.2,
            harmonic_decay=1.2,
            harmonics=10,
            siren=siren,
            siren_level=1.0,
            tyre=0.01,
        ),
        speed_range=(3.0, 10.0),
        beacon_hz=rng.uniform(1.5, 3.0),
        beacon_phase=rng.random(),
    )


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("nothing"),
    ObjectClass("pedestrian", _pedestrian),
    ObjectClass("cyclist", _cyclist),
    ObjectClass("car", _car),
    ObjectClass("truck", _truck),
    ObjectClass("emergency_vehicle", _emergency),
    ObjectClass("motorcycle", _motorcycle),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
