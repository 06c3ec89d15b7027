import dataclasses

import numpy as np
import pytest

from fusion.sim.world import (
    CLASSES,
    World,
    WorldConfig,
    frame_rng,
    lidar_rays,
    render_camera,
    scan_lidar,
    synth_audio,
)


def test_state_is_a_pure_function_of_seed_and_time():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    times = [0.0, 1.3, 9.9, 4.0, 0.5]
    assert [a.state(t) for t in times] == [b.state(t) for t in reversed(times)][::-1]
    other = World(WorldConfig(seed=4))
    assert [a.state(4.0 * k).cls for k in range(20)] != [other.state(4.0 * k).cls for k in range(20)]


def test_objects_move_with_their_velocity_within_an_episode():
    w = World(WorldConfig(seed=1))
    ep = next(
        k for k in range(50) if w.state(4.0 * k).cls != 0 and np.hypot(*w.state(4.0 * k).velocity[:2]) > 1
    )
    s0, s1 = w.state(4.0 * ep + 1.0), w.state(4.0 * ep + 2.0)
    np.testing.assert_allclose(np.subtract(s1.position, s0.position)[:2], s0.velocity[:2], atol=1e-9)


@pytest.mark.parametrize("modality", ["camera", "lidar", "microphone"])
def test_every_modality_changes_with_the_class(modality):
    w = World(WorldConfig(seed=0))
    base = w.state(0.0)
    outputs = []
    for cls in (3, 4, 5):  # car, truck, emergency vehicle, at the same place and time
        state = dataclasses.replace(base, cls=cls, position=(12.0, 0.5, -1.7), night=False)
        rng = frame_rng(0, 1, 0)
        if modality == "camera":
            outputs.append(render_camera(state, width=160, height=120, rng=rng).astype(np.int16))
        elif modality == "lidar":
            outputs.append(scan_lidar(state, lidar_rays(16, 360), height=1.7, rng=rng))
        else:
            fixed = World(WorldConfig(seed=0))
            fixed.state = lambda t, s=state: s  # the sound of exactly this state
            outputs.append(synth_audio(fixed, 0, 4000, sample_rate=16000, rng=rng))
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            a, b = outputs[i], outputs[j]
            assert a.shape != b.shape or np.abs(a - b).mean() > 0.5 * (1 if modality == "camera" else 1e-3)


def test_lidar_sees_the_object_at_its_range():
    state = dataclasses.replace(
        World(WorldConfig()).state(0.0), cls=4, position=(15.0, 0.0, -1.7), night=False
    )
    pts = scan_lidar(state, lidar_rays(16, 900), height=1.7, rng=np.random.default_rng(0))
    ahead = pts[(np.abs(pts[:, 1]) < 0.5) & (pts[:, 0] > 0) & (pts[:, 2] > -1.5)]
    assert len(ahead) > 10
    assert abs(ahead[:, 0].min() - (15.0 - CLASSES[4].size[0] / 2)) < 0.1  # the truck's near face


def test_night_darkens_the_camera():
    state = dataclasses.replace(World(WorldConfig()).state(0.0), cls=0)
    day = render_camera(dataclasses.replace(state, night=False), width=64, height=48, rng=frame_rng(0, 1, 0))
    night = render_camera(dataclasses.replace(state, night=True), width=64, height=48, rng=frame_rng(0, 1, 0))
    assert night.mean() < 0.3 * day.mean()
