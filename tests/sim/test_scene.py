"""The multi-object world: how episodes are drawn, and each sensor's view of several objects."""

import collections
import dataclasses
import math

import numpy as np
import open3d as o3d
import pytest

from fusion.detection.boxes import Box3D
from fusion.sim.audio import SPEED_OF_SOUND, AudioSynth, source_signal
from fusion.sim.camera import render_camera_scene
from fusion.sim.lidar import lidar_rays, scan_lidar_scene
from fusion.sim.objects import CLASS_NAMES, CLASSES, Sound
from fusion.sim.truth import ground_truth, object_list
from fusion.sim.world import (
    CAMERA_HFOV_DEG,
    Conditions,
    Noise,
    Scene,
    Track,
    Weather,
    World,
    WorldConfig,
    frame_rng,
)
from tests.sim.helpers import replaced, serve

CLEAR_DAY = Conditions(
    night=False, illumination=1.0, weather=Weather.CLEAR, visibility_m=1e4, noise=Noise.WIND, noise_dbfs=-90.0
)
BEAMS, STEPS = 16, 900
RAYS = lidar_rays(BEAMS, STEPS)


def _model(name: str, rgb: tuple[float, float, float] | None = None, seed: int = 0):
    """An instance of class `name`, painted all over in `rgb` (0-1) when given."""
    model = CLASSES[CLASS_NAMES.index(name)].build(np.random.default_rng(seed))
    if rgb is None:
        return model
    mesh = dataclasses.replace(model.mesh, color=np.tile(np.float32(rgb), (len(model.mesh.triangles), 1)))
    return dataclasses.replace(model, mesh=mesh)


def _track(track_id: int, name: str, x: float, y: float = 0.0, model=None) -> Track:
    """A standing object of class `name` at (x, y), facing +x."""
    model = model or _model(name)
    return Track(
        track_id=track_id, cls=CLASS_NAMES.index(name), model=model, center=(x, y), velocity=(0.0, 0.0)
    )


def _world_of(*tracks: Track, conditions=CLEAR_DAY) -> tuple[World, float]:
    """A world whose episode 2 holds exactly `tracks`, and the middle of that episode."""
    world = World(WorldConfig(seed=0))
    ep = serve(world, replaced(world.episode(2), conditions=conditions, tracks=tracks))
    return world, ep.t_center


def _part(scene: Scene, *track_ids: int) -> Scene:
    """The scene with only the objects `track_ids`."""
    return dataclasses.replace(scene, objects=tuple(s for s in scene.objects if s.track_id in track_ids))


# --------------------------------------------------------------------------- drawing episodes


def test_scene_is_a_pure_function_of_seed_and_time():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    times = [0.0, 1.3, 9.9, 4.0, 77.7, 0.5, 41.0]

    def summary(world, t):
        return [(s.track_id, s.cls, s.position, s.center(), s.velocity) for s in world.scene(t).objects]

    assert [summary(a, t) for t in times] == [summary(b, t) for t in reversed(times)][::-1]


def test_more_objects_never_change_the_earlier_ones():
    """Object 0 (and the conditions) of a 4-object world are the 1-object world's; object 1 of a
    4-object world is a 2-object world's wherever both hold one."""
    worlds = {m: World(WorldConfig(seed=1, max_objects=m)) for m in (1, 2, 4)}
    both = 0
    for k in range(80):
        eps = {m: w.episode(k) for m, w in worlds.items()}
        assert eps[4].conditions == eps[1].conditions
        for m, rank in ((1, 0), (2, 1)):
            if len(eps[m].tracks) > rank and len(eps[4].tracks) > rank:
                mine, theirs = eps[4].tracks[rank], eps[m].tracks[rank]
                assert (mine.cls, mine.center, mine.velocity) == (theirs.cls, theirs.center, theirs.velocity)
                if mine.model is not None:
                    assert np.array_equal(mine.model.mesh.vertices, theirs.model.mesh.vertices)
                    assert mine.model.sound == theirs.model.sound
                both += rank == 1
        t = eps[1].t_center + 0.7
        assert worlds[4].state(t).position == worlds[1].state(t).position
    assert both > 10


def test_episodes_hold_every_count_from_none_to_max_objects():
    counts = collections.Counter(len(World(WorldConfig(seed=0)).episode(k).objects) for k in range(700))
    assert set(counts) == {0, 1, 2, 3, 4}
    # An episode is empty when object 0 is 'nothing': 1 in 7 with equal class weights, as before.
    assert 0.10 < counts[0] / 700 < 0.19
    assert min(counts[n] for n in range(1, 5)) > 70  # further objects are rarely left out
    one = World(WorldConfig(seed=0, max_objects=1))
    assert {len(one.episode(k).objects) for k in range(100)} == {0, 1}
    none = World(WorldConfig(seed=0, max_objects=0))
    assert all(none.episode(k).objects == () and none.episode(k).cls == 0 for k in range(50))
    assert none.episode(7).conditions == one.episode(7).conditions
    only_nothing = World(WorldConfig(seed=0, class_weights=[1, 0, 0, 0, 0, 0, 0]))
    assert all(not only_nothing.episode(k).objects for k in range(30))


def test_further_objects_follow_the_class_weights_and_never_nothing():
    w = World(WorldConfig(seed=2, class_weights=[1, 0, 0, 1, 0, 0, 0]))
    classes = {tr.cls for k in range(100) for tr in w.episode(k).tracks[1:]}
    assert classes == {CLASS_NAMES.index("car")}


def _corners(state) -> np.ndarray:
    """The footprint's four corners [4, 2] in the rig frame."""
    lo, hi = state.model.bounds
    local = np.array([[x, y, 0.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])])
    return (local @ state.rotation.T + np.asarray(state.position))[:, :2]


def _inside(points: np.ndarray, state) -> np.ndarray:
    """Which ground points [N, 2] lie inside the state's footprint."""
    lo, hi = state.model.bounds
    local = (np.c_[points, np.zeros(len(points))] - np.asarray(state.position)) @ state.rotation
    return np.all((local[:, :2] >= lo[:2]) & (local[:, :2] <= hi[:2]), axis=1)


def test_objects_keep_apart_and_in_view():
    cfg = WorldConfig(seed=4)
    w = World(cfg)
    crowded = 0
    for k in range(150):
        ep = w.episode(k)
        crowded += len(ep.objects) >= 3
        for t in np.linspace(k * cfg.episode_s, (k + 1) * cfg.episode_s - 1e-6, 21):
            objects = w.scene(t).objects
            for s in objects:
                x, y, _ = s.position
                assert abs(math.degrees(math.atan2(y, x))) <= CAMERA_HFOV_DEG / 2
                assert 0.8 * cfg.min_distance_m <= math.hypot(x, y) <= 1.2 * cfg.max_distance_m
            for i, a in enumerate(objects):
                for b in objects[i + 1 :]:
                    assert not _inside(_corners(a), b).any() and not _inside(_corners(b), a).any()
                    assert not _inside(np.asarray([a.position[:2]]), b).any()
    assert crowded > 30


def test_track_ids_are_stable_in_an_episode_and_unique_across_episodes():
    cfg = WorldConfig(seed=0)
    w = World(cfg)
    seen: set[int] = set()
    for k in range(100):
        start = [s.track_id for s in w.scene(k * cfg.episode_s).objects]
        assert start == [s.track_id for s in w.scene((k + 1) * cfg.episode_s - 1e-6).objects]
        assert all(tid // cfg.max_objects == k for tid in start)
        assert not seen & set(start) and len(set(start)) == len(start)
        seen |= set(start)


# --------------------------------------------------------------------------- ground truth


def test_object_list_describes_every_object():
    w = World(WorldConfig(seed=5))
    for k in range(40):
        t = (k + 0.3) * 4.0
        boxes, scene = object_list(w, t), w.scene(t)
        assert len(boxes) == len(scene.objects)
        for box, state in zip(boxes, scene.objects, strict=True):
            assert isinstance(box, Box3D) and box.score is None
            assert box.class_name in CLASS_NAMES[1:]
            assert box.track_id == str(state.track_id)
            assert box.center == state.center()
            assert box.size == state.model.size and min(box.size) > 0
            assert -math.pi <= box.yaw <= math.pi
            assert box.velocity == state.velocity[:2]
            # The box stands on the ground (wheels are polygons: their lowest edge is a little up).
            assert -1.7 <= box.center[2] - box.size[2] / 2 < -1.7 + 0.05
        assert len({b.track_id for b in boxes}) == len(boxes)


def test_object_list_of_the_one_object_world_agrees_with_its_label_segments():
    w = World(WorldConfig(seed=5, max_objects=1))
    segments = ground_truth(w, start=0.0, end=40.0, rate_hz=10.0)
    for seg in segments:
        t = (seg.start + seg.end) / 2
        boxes = object_list(w, t)
        if seg.label == "nothing":
            assert boxes == []
        else:
            (box,) = boxes
            assert box.class_name == seg.label
            assert box.center == pytest.approx(seg.position, abs=0.5)  # the segment's is at its frame


# --------------------------------------------------------------------------- camera


def _camera(scene: Scene) -> np.ndarray:
    return render_camera_scene(scene, width=320, height=240, rng=frame_rng(0, 1, 0))


def test_camera_draws_the_nearer_object_over_the_farther():
    red, blue = (0.8, 0.1, 0.1), (0.1, 0.2, 0.8)
    near = _track(1, "car", 10.0, model=_model("car", red))
    far = _track(2, "truck", 22.0, model=_model("truck", blue))
    world, t = _world_of(far, near)  # track order is not depth order
    scene = world.scene(t)
    both, alone_near, alone_far, empty = (_camera(_part(scene, *ids)) for ids in ((1, 2), (1,), (2,), ()))
    near_px = (alone_near != empty).any(axis=2)
    far_px = (alone_far != empty).any(axis=2)
    overlap, far_shows = near_px & far_px, far_px & ~near_px
    assert overlap.sum() > 300 and far_shows.sum() > 300  # the truck stands above the car
    # Same rng, same noise: where the car is, the picture is the car's; where only the truck
    # is, the truck's; elsewhere the empty road.
    np.testing.assert_array_equal(both[near_px], alone_near[near_px])
    np.testing.assert_array_equal(both[far_shows], alone_far[far_shows])
    np.testing.assert_array_equal(both[~(near_px | far_px)], empty[~(near_px | far_px)])
    rgb = both[overlap].astype(float).mean(axis=0)
    assert rgb[0] > 1.5 * rgb[2]  # red over the overlap: the car's paint, not the truck's
    np.testing.assert_array_equal(_camera(dataclasses.replace(scene, objects=scene.objects[::-1])), both)


# --------------------------------------------------------------------------- LiDAR


def _ray_index(points: np.ndarray) -> np.ndarray:
    """The ray of `lidar_rays(BEAMS, STEPS)` each point [N, 4] returned along."""
    p = points[:, :3].astype(np.float64)
    el = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    az = np.arctan2(p[:, 1], p[:, 0])
    beam = np.rint((el + 15.0) / (30.0 / (BEAMS - 1))).astype(int)
    step = np.rint((az + np.pi) / (2 * np.pi / STEPS)).astype(int) % STEPS
    return beam * STEPS + step


def _rays_meeting(state) -> np.ndarray:
    """Indices of the rays that meet the object's mesh (cast here, independently of the LiDAR)."""
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(
        o3d.core.Tensor.from_numpy(state.vertices().astype(np.float32)),
        o3d.core.Tensor.from_numpy(state.model.mesh.triangles.astype(np.uint32)),
    )
    rays = np.concatenate([np.zeros_like(RAYS), RAYS], axis=1).astype(np.float32)
    return np.flatnonzero(np.isfinite(rc.cast_rays(o3d.core.Tensor.from_numpy(rays))["t_hit"].numpy()))


def _scan(scene: Scene, index: int = 0):
    return scan_lidar_scene(scene, RAYS, height=1.7, rng=frame_rng(0, 2, index))


def test_lidar_returns_the_nearest_surface_and_nothing_from_behind_it():
    near, far = _track(1, "car", 10.0), _track(2, "truck", 18.0)
    world, t = _world_of(near, far)
    scene = world.scene(t)
    car_rays = set(_rays_meeting(scene.objects[0]))
    both, alone = _scan(scene), _scan(_part(scene, 2))
    directions = both.points[:, :3] / np.linalg.norm(both.points[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(directions, RAYS[_ray_index(both.points)], atol=1e-5)  # the helper holds
    truck_both = set(_ray_index(both.points[both.track_ids == 2]))
    truck_alone = set(_ray_index(alone.points[alone.track_ids == 2]))
    assert len(truck_alone & car_rays) > 20  # the car stands in front of part of the truck...
    assert not truck_both & car_rays  # ...and no beam that meets the car returns from the truck
    assert len(truck_both) > 50  # what rises above the car is seen
    on_car = np.isin(_ray_index(both.points), list(car_rays))
    assert set(both.track_ids[on_car]) == {1}


def test_a_hidden_object_gets_no_points_and_no_pixels():
    wall, hidden = _track(1, "truck", 12.0), _track(2, "car", 21.0)
    world, t = _world_of(wall, hidden)
    scene = world.scene(t)
    alone = _scan(_part(scene, 2))
    assert (alone.track_ids == 2).sum() > 15
    both = _scan(scene)
    assert (both.track_ids == 2).sum() == 0 and (both.track_ids == 1).sum() > 100
    np.testing.assert_array_equal(_camera(scene), _camera(_part(scene, 1)))


def test_a_beam_through_the_spokes_goes_on_to_the_object_behind():
    # A bicycle crossing the view (broadside: its wheels face the LiDAR) in front of a car.
    bike = dataclasses.replace(_track(1, "cyclist", 10.0), velocity=(0.0, 1e-6))
    world, t = _world_of(bike, _track(2, "car", 13.5))
    scene = world.scene(t)
    through = set(_rays_meeting(scene.objects[0])) & set(_rays_meeting(scene.objects[1]))
    sweep = _scan(scene)
    ids = sweep.track_ids[np.isin(_ray_index(sweep.points), list(through))]
    assert set(ids) == {1, 2}  # the bicycle, or the truck through its wheels: never the ground
    assert (ids == 2).sum() >= 5


def test_each_lidar_point_carries_the_object_it_came_from():
    w = World(WorldConfig(seed=0))
    k = next(k for k in range(100) if len(w.episode(k).objects) == 4)
    scene = w.scene(w.episode(k).t_center)
    sweep = _scan(scene)
    assert sweep.points.shape == (len(sweep.track_ids), 4) and sweep.points.dtype == np.float32
    for state in scene.objects:
        mine = sweep.points[sweep.track_ids == state.track_id, :3].astype(np.float64)
        lo, hi = state.model.bounds
        local = (mine - np.asarray(state.position)) @ state.rotation  # into the object frame
        assert np.all((local >= lo - 0.25) & (local <= hi + 0.25))  # range noise is a few cm
    ground = sweep.points[sweep.track_ids == -1]
    assert np.abs(ground[:, 2] + 1.7).max() < 0.3  # a clear day: no raindrops
    assert (sweep.track_ids >= 0).sum() > 0


# --------------------------------------------------------------------------- microphone

SR = 16000
_DZ = 0.8 - 1.7  # the sources sound 0.8 m above the ground; the microphone is 1.7 m up
CHIRP = Sound(siren=(100.0, 2500.0, 2.0), siren_level=1.0)  # no noise carriers: deterministic


def _source_at_delay(track_id: int, delay_samples: int) -> Track:
    """A standing chirp whose sound takes exactly `delay_samples` to reach the microphone."""
    r = delay_samples * SPEED_OF_SOUND / SR
    model = dataclasses.replace(_model("emergency_vehicle"), sound=CHIRP)
    return _track(track_id, "emergency_vehicle", math.sqrt(r * r - _DZ * _DZ), model=model)


def test_microphone_hears_the_sum_of_every_source():
    a, b = _source_at_delay(1, 470), _source_at_delay(2, 1400)
    world, t = _world_of(a, b)
    start, n = round((t - 0.5) * SR), SR
    synth = AudioSynth(world, sample_rate=SR)
    sources = synth.sources(start, n)
    mix, noise = synth.scene_components(start, n)
    assert set(sources) == {1, 2}
    np.testing.assert_array_equal(mix, sources[1] + sources[2])
    np.testing.assert_array_equal(synth.components(start, n)[0], sources[1])  # object 0's own view
    for track in (a, b):  # each alone, as object 0 of a world of its own, sounds the same
        solo, _ = AudioSynth(_world_of(track)[0], sample_rate=SR).components(start, n)
        np.testing.assert_allclose(sources[track.track_id], solo, rtol=1e-12, atol=1e-15)
    pcm = synth.scene_audio(start, n)
    assert pcm.dtype == np.float32 and np.abs(pcm - np.clip(mix + noise, -1, 1)).max() < 1e-6


def test_each_source_is_delayed_and_attenuated_by_its_own_distance():
    """Each object is heard as the dry source delayed by r / c and scaled by 1 / r; cross-
    correlating the microphone with the dry source finds one peak per object, at its delay."""
    delays = (470, 1400)
    world, t = _world_of(*(_source_at_delay(k + 1, d) for k, d in enumerate(delays)))
    start, n, lags = round((t - 0.5) * SR), SR, 2000
    synth = AudioSynth(world, sample_rate=SR)
    mix, _ = synth.scene_components(start, n)
    tau = (start - lags + np.arange(n + lags)) / SR  # emission times, `lags` samples earlier
    dry = source_signal(CHIRP, tau, speed=0.0, phase=0.0, rng=np.random.default_rng(0), sample_rate=SR)
    for k, delay in enumerate(delays):
        r = delay * SPEED_OF_SOUND / SR
        np.testing.assert_allclose(
            synth.sources(start, n)[k + 1], dry[lags - delay : lags - delay + n] / r, atol=1e-9
        )
    corr = np.array([mix @ dry[lags - lag : lags - lag + n] for lag in range(lags)])
    first = int(np.argmax(corr))
    masked = corr.copy()
    masked[max(0, first - 50) : first + 50] = -np.inf
    assert (first, int(np.argmax(masked))) == delays  # the nearer is the louder
