import dataclasses
import math

import numpy as np
import pytest

from fusion.config import parse_config
from fusion.errors import ConfigError
from fusion.sim.audio import AudioSynth, synth_audio
from fusion.sim.camera import render_camera
from fusion.sim.lidar import lidar_rays, scan_lidar
from fusion.sim.objects import CLASS_NAMES, CLASSES, Sound
from fusion.sim.world import CAMERA_HFOV_DEG, Conditions, Noise, Weather, World, WorldConfig, frame_rng
from tests.sim.helpers import replaced, serve

CLEAR_DAY = Conditions(
    night=False, illumination=1.0, weather=Weather.CLEAR, visibility_m=1e4, noise=Noise.WIND, noise_dbfs=-60.0
)


def _episode_of(world: World, cls: int, **changes):
    """The first episode of class `cls`, with fields replaced (the world then serves it)."""
    index = next(i for i in range(500) if world.episode(i).cls == cls)
    return serve(world, replaced(world.episode(index), **changes))


def _state(world: World, ep, position=(12.0, 0.5)):
    ep = serve(world, replaced(ep, center=(position[0], position[1])))
    return world.state(ep.t_center)


def test_state_is_a_pure_function_of_seed_and_time():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    times = [0.0, 1.3, 9.9, 4.0, 0.5, 77.7]
    assert [a.state(t).position for t in times] == [b.state(t).position for t in reversed(times)][::-1]
    assert [a.state(t).cls for t in times] == [b.state(t).cls for t in times]
    other = World(WorldConfig(seed=4))
    assert [a.episode(k).cls for k in range(30)] != [other.episode(k).cls for k in range(30)]
    assert {a.episode(k).cls for k in range(100)} == set(range(len(CLASSES)))


def test_objects_move_with_their_velocity_and_stay_in_view():
    cfg = WorldConfig(seed=1)
    w = World(cfg)
    moving = objects = 0
    for k in range(200):
        ep = w.episode(k)
        s0, s1 = w.state(ep.t_center - 1.0), w.state(ep.t_center + 1.0)
        np.testing.assert_allclose(
            np.subtract(s1.position, s0.position)[:2], 2 * np.asarray(ep.velocity), atol=1e-9
        )
        moving += math.hypot(*ep.velocity) > 0.5
        objects += ep.model is not None
        for t in (k * cfg.episode_s, (k + 1) * cfg.episode_s - 1e-6):
            x, y, _ = w.state(t).position
            assert abs(math.degrees(math.atan2(y, x))) <= CAMERA_HFOV_DEG / 2
            assert 0.8 * cfg.min_distance_m <= math.hypot(x, y) <= 1.2 * cfg.max_distance_m
    # Most objects pass by; a few are slowed or stopped so that they stay in view.
    assert moving > 0.75 * objects > 0


def test_bad_world_config_names_the_value():
    with pytest.raises(ConfigError, match=r"max_distance_m \(5.0\) must exceed min_distance_m \(10.0\)"):
        parse_config(WorldConfig, {"min_distance_m": 10.0, "max_distance_m": 5.0})
    with pytest.raises(ConfigError, match="class_weights needs 7"):
        parse_config(WorldConfig, {"class_weights": [1.0, 2.0]})


def test_class_weights_pick_the_classes():
    w = World(WorldConfig(seed=0, class_weights=[0, 0, 0, 1, 0, 0, 0]))
    assert {w.episode(k).cls for k in range(20)} == {CLASS_NAMES.index("car")}


@pytest.mark.parametrize("modality", ["camera", "lidar", "microphone"])
def test_every_modality_changes_with_the_class(modality):
    """Car, truck and emergency vehicle at the same place and time give different readings."""
    outputs = []
    for cls in (3, 4, 5):
        w = World(WorldConfig(seed=0))
        ep = _episode_of(w, cls, conditions=CLEAR_DAY, velocity=(0.0, 0.0))
        state = _state(w, ep)
        if modality == "camera":
            out = render_camera(state, width=160, height=120, rng=frame_rng(0, 1, 0)).astype(np.float32)
        elif modality == "lidar":
            out = scan_lidar(state, lidar_rays(16, 360), height=1.7, rng=frame_rng(0, 2, 0))
        else:
            sr = 16000
            out = synth_audio(w, round(ep.t_center * sr) - sr // 2, sr // 2, sample_rate=sr)
        outputs.append(out)
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = outputs[i], outputs[j]
            assert a.shape != b.shape or np.abs(a - b).mean() > (2.0 if modality == "camera" else 1e-3)


def test_renderers_are_deterministic_per_seed():
    w1, w2 = World(WorldConfig(seed=5)), World(WorldConfig(seed=5))
    s1, s2 = w1.state(13.0), w2.state(13.0)
    for r in (render_camera, lambda s, **kw: scan_lidar(s, lidar_rays(16, 360), height=1.7, rng=kw["rng"])):
        a = r(s1, width=64, height=48, rng=frame_rng(5, 1, 3))
        b = r(s2, width=64, height=48, rng=frame_rng(5, 1, 3))
        c = r(s2, width=64, height=48, rng=frame_rng(5, 1, 4))
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(
        synth_audio(w1, 1000, 4000, sample_rate=16000), synth_audio(w2, 1000, 4000, sample_rate=16000)
    )


def test_lidar_sees_the_truck_at_its_range_and_far_objects_return_fewer_points():
    w = World(WorldConfig(seed=0))
    ep = _episode_of(w, 4, conditions=CLEAR_DAY, velocity=(0.0, 0.0))
    near = scan_lidar(
        _state(w, ep, (15.0, 0.0)), lidar_rays(16, 900), height=1.7, rng=np.random.default_rng(0)
    )
    ahead = near[(np.abs(near[:, 1]) < 0.5) & (near[:, 0] > 0) & (near[:, 2] > -1.2)]
    lo, _ = ep.model.bounds
    # The truck faces +x (velocity 0 -> heading 0): its rear face is the nearest, at 15 m + lo[0].
    assert len(ahead) > 10
    assert abs(ahead[:, 0].min() - (15.0 + lo[0])) < 0.15
    far = scan_lidar(
        _state(w, ep, (40.0, 0.0)), lidar_rays(16, 900), height=1.7, rng=np.random.default_rng(0)
    )
    assert (far[:, 2] > -1.2).sum() < 0.3 * (near[:, 2] > -1.2).sum()


def test_night_and_fog_take_the_object_out_of_the_picture():
    w = World(WorldConfig(seed=0))
    ep = _episode_of(w, 3, conditions=CLEAR_DAY, velocity=(0.0, 0.0))
    empty = _episode_of(World(WorldConfig(seed=0)), 0, conditions=CLEAR_DAY)

    def contrast(conditions):
        w._episodes[ep.index] = dataclasses.replace(ep, conditions=conditions)
        with_car = render_camera(
            _state(w, w._episodes[ep.index], (20.0, 0.0)), width=160, height=120, rng=frame_rng(0, 1, 0)
        )
        w2 = World(WorldConfig(seed=0))
        w2._episodes[empty.index] = dataclasses.replace(empty, conditions=conditions)
        without = render_camera(w2.state(empty.t_center), width=160, height=120, rng=frame_rng(0, 1, 0))
        return np.abs(with_car.astype(float) - without.astype(float)).mean(), with_car.mean()

    day, day_mean = contrast(CLEAR_DAY)
    fog, _ = contrast(dataclasses.replace(CLEAR_DAY, weather=Weather.FOG, visibility_m=15.0))
    night, night_mean = contrast(dataclasses.replace(CLEAR_DAY, night=True, illumination=0.005))
    assert night_mean < 0.5 * day_mean
    # What differs at night is sensor noise in both images, not the car: the same frame rng
    # makes the noise identical, so the car's own contribution shows in the difference.
    assert fog < 0.3 * day
    assert night < 0.5 * day


def _tone_episode(velocity, x0):
    w = World(WorldConfig(seed=0))
    sound = Sound(engine_hz=400.0, engine_level=0.5, harmonics=1, rev_wobble=0.0)
    ep = _episode_of(w, 3, conditions=dataclasses.replace(CLEAR_DAY, noise_dbfs=-90.0), velocity=velocity)
    ep = serve(w, replaced(ep, model=dataclasses.replace(ep.model, sound=sound), center=(x0, 0.0)))
    return w, ep


def _peak_hz(audio, sr):
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spec)]


def test_doppler_and_distance_follow_from_the_trajectory():
    sr = 16000
    pitches, levels = {}, {}
    for name, v in (("approaching", -15.0), ("receding", 15.0), ("still", 0.0)):
        w, ep = _tone_episode((v, 0.0), 20.0)
        a = synth_audio(w, round(ep.t_center * sr) - sr // 4, sr // 2, sample_rate=sr)
        pitches[name] = _peak_hz(a.astype(float), sr)
        levels[name] = np.sqrt(np.mean(a.astype(float) ** 2))
    # f' = f c / (c - v): +-15 m/s at 400 Hz is about +-18 Hz.
    assert pitches["approaching"] > pitches["still"] + 10 > pitches["receding"] + 20
    assert abs(pitches["still"] - 400.0) < 3
    w, ep = _tone_episode((0.0, 0.0), 40.0)
    far = synth_audio(w, round(ep.t_center * sr) - sr // 4, sr // 2, sample_rate=sr).astype(float)
    assert np.sqrt(np.mean(far**2)) == pytest.approx(levels["still"] / 2, rel=0.1)  # 1 / r spreading


def test_audio_is_a_function_of_the_sample_index_however_it_is_chunked():
    w = World(WorldConfig(seed=2))
    whole = AudioSynth(w, sample_rate=16000)(20_000, 40_000)
    synth = AudioSynth(World(WorldConfig(seed=2)), sample_rate=16000)
    chunks = np.concatenate([synth(20_000 + k, 800) for k in range(0, 40_000, 800)])
    assert np.array_equal(whole, chunks)
    assert whole.dtype == np.float32 and np.abs(whole).max() <= 1.0


def _without_lamps(ep):
    """The same episode, its model's lamps dark."""
    mesh = ep.model.mesh
    dark = dataclasses.replace(
        mesh, glow_night=np.zeros_like(mesh.glow_night), glow_day=np.zeros_like(mesh.glow_day)
    )
    return replaced(ep, model=dataclasses.replace(ep.model, mesh=dark))


def test_vehicle_lamps_shine_at_night_whatever_the_daylight():
    """Night takes the body out of the picture but not a car's lamps: they emit their own light."""
    night = dataclasses.replace(CLEAR_DAY, night=True, illumination=0.005)
    w = World(WorldConfig(seed=0))
    ep = _episode_of(w, CLASS_NAMES.index("car"), conditions=night, velocity=(3.0, -3.0))

    def frame(episode):
        w._episodes[ep.index] = episode
        return render_camera(_state(w, episode, (12.0, 0.0)), width=160, height=120, rng=frame_rng(0, 1, 0))

    def saturated(img):
        return int((img.max(axis=2) >= 250).sum())

    # The lamps saturate the night-time gain over a few pixels; without them nothing does.
    assert saturated(frame(ep)) >= 3
    assert saturated(frame(_without_lamps(ep))) <= 1


def test_emergency_light_bar_flashes_and_vans_have_none():
    w = World(WorldConfig(seed=0))
    ep = _episode_of(w, CLASS_NAMES.index("emergency_vehicle"), conditions=CLEAR_DAY, velocity=(0.0, 3.0))
    model = ep.model
    on = next(t for t in np.arange(0, 2, 0.01) if model.beacon_on(ep.t_center + t))
    off = next(t for t in np.arange(on, on + 2, 0.01) if not model.beacon_on(ep.t_center + t))

    def frame(dt):
        state = _state(w, ep, (12.0, 0.0))
        state = dataclasses.replace(state, t=state.t + dt)  # the bar's phase, the same pose
        return render_camera(state, width=160, height=120, rng=frame_rng(0, 1, 0)).astype(float)

    # Same pose, same noise: the two frames differ only where the bar glows blue.
    diff = frame(on) - frame(off)
    assert diff[..., 2].max() > 100
    assert 3 <= (diff[..., 2] > 50).sum() < 200
    assert model.mesh.beacon.any() and 1.0 <= model.beacon_hz <= 4.0
    car = World(WorldConfig(seed=0))
    cars = [car.episode(i).model for i in range(300) if car.episode(i).cls == CLASS_NAMES.index("car")]
    assert cars and not any(m.mesh.beacon.any() or m.beacon_hz for m in cars)
