"""Triangle meshes of the simulated world's objects, built from boxes, cylinders and spheres.

Coordinates are in the object frame (x' along the heading, y' to the left, z' up from the
ground). Every triangle carries its material: colour, LiDAR reflectivity and porosity, and the
light it emits when it is a lamp. A part is `(vertices, triangles, materials)`; `join` makes a
`Mesh` of parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mesh:
    """Triangles with per-triangle material.

    Attributes:
        vertices: [V, 3] float64 metres.
        triangles: [T, 3] int32 vertex indices, counter-clockwise seen from outside.
        color: [T, 3] float32 RGB albedo in [0, 1].
        reflectivity: [T] float32 LiDAR reflectivity in [0, 1].
        porosity: [T] float32 chance that a LiDAR ray passes through (spokes, frames).
        glow_night, glow_day: [T, 3] float32 light a lamp emits (1 = full scale of the camera
            at unit gain), at night and by day (headlights dim to running lights).
        beacon: [T] bool: the lamp flashes (an emergency vehicle's light bar).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    color: np.ndarray
    reflectivity: np.ndarray
    porosity: np.ndarray
    glow_night: np.ndarray
    glow_day: np.ndarray
    beacon: np.ndarray


def _material(mesh_tris: int, color, reflectivity: float, porosity: float, glow=None):
    """Per-triangle arrays of one part; `glow` = (rgb 0-1, night level, day level, flashing)."""
    rgb, night, day, flashing = glow if glow is not None else ((0.0, 0.0, 0.0), 0.0, 0.0, False)
    return (
        np.tile(np.asarray(color, np.float32) / 255.0, (mesh_tris, 1)),
        np.full(mesh_tris, reflectivity, np.float32),
        np.full(mesh_tris, porosity, np.float32),
        np.tile(np.asarray(rgb, np.float32) * night, (mesh_tris, 1)),
        np.tile(np.asarray(rgb, np.float32) * day, (mesh_tris, 1)),
        np.full(mesh_tris, flashing, bool),
    )


def box(
    center, size, color, reflectivity: float, porosity: float = 0.0, glow=None
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """An axis-aligned box (object frame): 8 vertices, 12 outward triangles."""
    c, h = np.asarray(center, float), np.asarray(size, float) / 2
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    verts = c + signs * h  # index = 4*ix + 2*iy + iz
    tris = np.array(
        [
            [0, 1, 3], [0, 3, 2],  # x-
            [4, 6, 7], [4, 7, 5],  # x+
            [0, 4, 5], [0, 5, 1],  # y-
            [2, 3, 7], [2, 7, 6],  # y+
            [0, 2, 6], [0, 6, 4],  # z-
            [1, 5, 7], [1, 7, 3],  # z+
        ],
        np.int32,
    )  # fmt: skip
    return verts, tris, _material(len(tris), color, reflectivity, porosity, glow)


def wheel(
    center, radius: float, width: float, color, reflectivity: float, porosity: float = 0.0, segments: int = 10
) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A cylinder with its axis along y' (a wheel seen from the side)."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([radius * np.cos(a), np.zeros_like(a), radius * np.sin(a)], 1)
    c, side_offset = np.asarray(center, float), np.array([0.0, width / 2, 0.0])
    verts = np.concatenate(
        [c + side_offset + ring, c - side_offset + ring, [c + side_offset, c - side_offset]]
    )
    i = np.arange(segments)
    j = (i + 1) % segments
    n, cl, cr = segments, 2 * segments, 2 * segments + 1
    side = np.concatenate([np.stack([i, j + n, i + n], 1), np.stack([i, j, j + n], 1)])
    caps = np.concatenate([np.stack([np.full(n, cl), j, i], 1), np.stack([np.full(n, cr), i + n, j + n], 1)])
    tris = np.concatenate([side, caps]).astype(np.int32)
    return verts, tris, _material(len(tris), color, reflectivity, porosity)


def sphere(center, radius: float, color, reflectivity: float, stacks: int = 5, slices: int = 8):
    """A UV sphere (a head)."""
    th = np.linspace(0, np.pi, stacks + 1)[1:-1]  # interior rings
    ph = np.linspace(0, 2 * np.pi, slices, endpoint=False)
    ring = np.stack(
        [
            np.outer(np.sin(th), np.cos(ph)).ravel(),
            np.outer(np.sin(th), np.sin(ph)).ravel(),
            np.repeat(np.cos(th), slices),
        ],
        1,
    )
    verts = np.asarray(center, float) + radius * np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]])
    tris = []
    s = slices
    for k in range(s):  # a handful of rings: building them in Python is cheap and clear
        k1 = (k + 1) % s
        tris.append([0, 1 + k, 1 + k1])
        for r in range(stacks - 2):
            a, b = 1 + r * s, 1 + (r + 1) * s
            tris += [[a + k, b + k1, a + k1], [a + k, b + k, b + k1]]
        last = 1 + (stacks - 2) * s
        tris.append([len(verts) - 1, last + k1, last + k])
    t = np.asarray(tris, np.int32)
    return verts, t, _material(len(t), color, reflectivity, 0.0)


def join(parts: list[tuple[np.ndarray, np.ndarray, tuple]]) -> Mesh:
    """Concatenate parts into one mesh."""
    verts, tris, mats, offset = [], [], [], 0
    for v, t, m in parts:
        verts.append(v)
        tris.append(t + offset)
        mats.append(m)
        offset += len(v)
    return Mesh(
        vertices=np.concatenate(verts),
        triangles=np.concatenate(tris).astype(np.int32),
        color=np.concatenate([m[0] for m in mats]),
        reflectivity=np.concatenate([m[1] for m in mats]),
        porosity=np.concatenate([m[2] for m in mats]),
        glow_night=np.concatenate([m[3] for m in mats]),
        glow_day=np.concatenate([m[4] for m in mats]),
        beacon=np.concatenate([m[5] for m in mats]),
    )
