"""The simulated LiDAR: a spinning 16-beam scanner ray-cast against the objects' meshes and the ground.

Each object's triangles go into an open3d `RaycastingScene` of its own (Embree's BVH: about
4 ms for a 900-step sweep against a few hundred triangles here, against 30 ms for a numpy slab
test over the same parts as boxes); the ground is the plane z = -height, intersected in closed
form. A beam returns from the nearest surface along it, so an object hidden behind a nearer one
gets no points there.
A return is detected with a probability that falls with range: the received power goes as
reflectivity x cos(incidence) x exp(-2 alpha r) / r^2, so the maximum range is
R0 sqrt(reflectivity cos) (R0 = 120 m for a white wall head-on) shortened by fog. On top: range
noise, random dropouts (more in rain), porous parts (bicycle wheels and frames) that let a ray
through the object, on to whatever lies behind it (another object or the ground), and a few
returns from raindrops close to the sensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from fusion.sim.world import ObjectState, Scene, Weather

_R0 = 120.0  # metres: detection range of a reflectivity-1 target at normal incidence
_GROUND_REFLECTIVITY = 0.25  # asphalt
_DROPOUT = {Weather.CLEAR: 0.02, Weather.FOG: 0.04, Weather.RAIN: 0.12}
_FOG_LIDAR = 0.15  # the pulse outshines the fog: a LiDAR sees several times farther than an eye


def lidar_rays(beams: int = 16, azimuth_steps: int = 900) -> np.ndarray:
    """Unit ray directions of a spinning LiDAR (VLP-16 style, -15..15 degrees): [beams*steps, 3]."""
    elev = np.radians(np.linspace(-15.0, 15.0, beams))[:, None]
    azim = np.linspace(-np.pi, np.pi, azimuth_steps, endpoint=False)[None, :]
    d = np.stack(
        [np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev) * np.ones_like(azim)], -1
    )
    return d.reshape(-1, 3)


@dataclass(frozen=True)
class Sweep:
    """One LiDAR sweep of a scene.

    Attributes:
        points: [N, 4] float32 (x, y, z metres in the sensor frame, intensity 0-255).
        track_ids: [N] int64: the track id of the object each point returned from; -1 for
            the ground and for raindrops.
    """

    points: np.ndarray
    track_ids: np.ndarray


def _cast_object(
    state: ObjectState, rays: np.ndarray, azimuth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rays [N, 3] from the origin (azimuths `azimuth` [N]) that meet the object: (ray index
    [M], range [M], triangle index [M], unit normal [M, 3]). Only the rays within the object's
    azimuth span are cast: a straight edge's azimuth lies between its ends', so the others miss."""
    model = state.model
    assert model is not None
    verts = state.vertices()
    az = np.arctan2(verts[:, 1], verts[:, 0])
    lo, hi = float(az.min()), float(az.max())
    if hi - lo < np.pi:  # else the object is behind (across +-pi) or around the sensor: cast all
        cast = np.flatnonzero((azimuth >= lo - 1e-6) & (azimuth <= hi + 1e-6))
    else:
        cast = np.arange(len(rays))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor.from_numpy(verts.astype(np.float32)),
        o3d.core.Tensor.from_numpy(model.mesh.triangles.astype(np.uint32)),
    )
    sub = rays[cast].astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor.from_numpy(np.concatenate([np.zeros_like(sub), sub], axis=1)))
    t = hit["t_hit"].numpy().astype(np.float64)
    met = np.isfinite(t)
    tri = hit["primitive_ids"].numpy()[met].astype(np.int64)
    return cast[met], t[met], tri, hit["primitive_normals"].numpy()[met].astype(np.float64)


def scan_lidar(
    state: ObjectState, rays: np.ndarray, *, height: float, rng: np.random.Generator, max_range: float = 100.0
) -> np.ndarray:
    """One sweep of `state`'s object alone (the one-object world): [N, 4] float32 (x, y, z
    metres, intensity 0-255), N <= len(rays); the points of `scan_lidar_scene` of the scene that
    holds just that object."""
    return scan_lidar_scene(Scene.of(state), rays, height=height, rng=rng, max_range=max_range).points


def scan_lidar_scene(
    scene: Scene, rays: np.ndarray, *, height: float, rng: np.random.Generator, max_range: float = 100.0
) -> Sweep:
    """One sweep of every object in `scene` and the ground, each beam returning from the nearest
    surface along it; `rays` [R, 3] are unit directions (`lidar_rays`); at most R points plus
    raindrops. `rng` draws porosity, detection and noise: the same rng state gives the same sweep."""
    n = len(rays)
    cond = scene.conditions
    dz = rays[:, 2]
    r = np.full(n, np.inf)
    refl = np.full(n, _GROUND_REFLECTIVITY)
    cos = np.clip(-dz, 0.0, 1.0)  # ground normal is +z
    down = dz < -1e-6
    r[down] = height / -dz[down]
    ids = np.full(n, -1, np.int64)
    if scene.objects:
        _nearest_objects(scene.objects, rays, rng, r, refl, cos, ids)
    alpha = _FOG_LIDAR * 3.0 / cond.visibility_m
    strength = refl * np.maximum(cos, 1e-3)
    with np.errstate(invalid="ignore"):
        reach = _R0 * np.sqrt(strength) * np.exp(-alpha * r)  # (N,) detection range at this return
        p_detect = 1.0 / (1.0 + np.exp((r - reach) / (0.08 * reach + 0.5)))
    p_detect = np.where(np.isfinite(r) & (r < max_range), p_detect, 0.0) * (1 - _DROPOUT[cond.weather])
    keep = rng.random(n) < p_detect
    rng_noise = rng.normal(0.0, 1.0, keep.sum()) * (0.02 + 0.001 * r[keep])
    dist = r[keep] + rng_noise
    inten = 255.0 * np.clip(refl[keep] * (0.3 + 0.7 * cos[keep]) + rng.normal(0, 0.03, keep.sum()), 0, 1)
    pts = np.concatenate([rays[keep] * dist[:, None], inten[:, None]], axis=1)
    ids = ids[keep]
    if cond.weather is Weather.RAIN:
        drops = rng.random(n) < 0.01
        d = rng.uniform(0.8, 6.0, drops.sum())
        wet = np.concatenate([rays[drops] * d[:, None], rng.uniform(0, 20, (drops.sum(), 1))], axis=1)
        pts = np.concatenate([pts, wet])
        ids = np.concatenate([ids, np.full(len(wet), -1, np.int64)])
    return Sweep(points=pts.astype(np.float32), track_ids=ids)


def _nearest_objects(
    objects: tuple[ObjectState, ...],
    rays: np.ndarray,
    rng: np.random.Generator,
    r: np.ndarray,
    refl: np.ndarray,
    cos: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Stop each ray [N] at the nearest object surface in front of the ground, writing r, refl,
    cos and ids in place. A ray through a porous part goes on to the next object behind it (with
    one object: to the ground); each object a ray meets draws its own chance to let it through."""
    n, k_objects = len(rays), len(objects)
    azimuth = np.arctan2(rays[:, 1], rays[:, 0])
    casts = [_cast_object(state, rays, azimuth) for state in objects]
    met = np.zeros(n, bool)
    for index, _, _, _ in casts:
        met[index] = True
    rows = np.flatnonzero(met)  # (M,) the rays that meet any object
    m = len(rows)
    t_all, tri_all = np.full((k_objects, m), np.inf), np.zeros((k_objects, m), np.int64)
    normal_all = np.zeros((k_objects, m, 3))
    for k, (index, t, tri, normal) in enumerate(casts):
        at = np.searchsorted(rows, index)
        t_all[k, at], tri_all[k, at], normal_all[k, at] = t, tri, normal
    order = np.argsort(t_all, axis=0, kind="stable")  # (K, M): the objects along each ray, nearest first
    ground = r[rows]
    stopped = np.zeros(m, bool)
    cols = np.arange(m)
    for rank in range(k_objects):
        u = rng.random(n)[rows]  # drawn for every ray, as the one-object world did
        k_of = order[rank]  # (M,) the rank-th object along each ray
        t, tri, normal = t_all[k_of, cols], tri_all[k_of, cols], normal_all[k_of, cols]
        meets = ~stopped & (t < ground)
        for k, state in enumerate(objects):
            mesh = state.model.mesh  # type: ignore[union-attr]  # a scene holds objects only
            sel = meets & (k_of == k)
            hit = sel & (u >= mesh.porosity[np.where(sel, tri, 0)])  # not through the spokes
            at = rows[hit]
            r[at] = t[hit]
            refl[at] = mesh.reflectivity[tri[hit]]
            cos[at] = np.abs(np.einsum("ij,ij->i", normal[hit], rays[at]))
            ids[at] = state.track_id
            stopped |= hit
