"""The simulated microphone: the objects' sounds, carried to the rig, over a background.

Each object's source signal is a function of emission time tau (engine harmonics with a slow
rev wobble, a siren sweep, impulse trains of footsteps or freewheel clicks, tyre noise). The
microphone at time t hears it as emitted at the retarded time tau = t - r(t) / c, attenuated by
spherical spreading 1 / r: Doppler (the pitch rises while the object approaches), the
propagation delay and the loudness change with range all follow from the trajectory, nothing
is added by hand. Several objects add up, each over its own range. The
background (wind, rain, crowd, distant traffic) has a level drawn per episode, so the
signal-to-noise ratio varies with the class's loudness, the range and the background.

Audio is a pure function of the absolute sample index: the timeline is cut into blocks of one
second whose random parts are drawn from (seed, block), so a training window and the live
microphone's 50 ms chunks hear exactly the same samples. Object 0 and the background draw from
the streams they always did; every further object from a stream of its own, so adding objects
changes neither.

Two views of one `AudioSynth`: `__call__` and `components` hear object 0 alone (the one-object
world, as `World.state` sees it); `scene_audio`, `scene_components` and `sources` hear every
object of the world (as `World.scene` sees it).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fusion.sim.objects import Sound
from fusion.sim.world import Episode, Noise, Track, World

SPEED_OF_SOUND = 343.0  # m/s
_SOURCE_HEIGHT = 0.8  # metres above the ground: engines, tyres, footsteps
_SELF_NOISE = 10 ** (-72 / 20)  # the microphone's own noise floor, RMS full scale
_OBJECT_STREAM, _NOISE_STREAM = 11, 12
_V = TypeVar("_V")
_FURTHER = (24, 1)  # ends the streams of objects after the first: apart from every other stream


def _band_noise(
    rng: np.random.Generator, n: int, sample_rate: float, lo: float, hi: float, tilt: float = 0.0
):
    """Unit-RMS noise [n] with power in [lo, hi] Hz and a spectral slope of f ** -tilt (FFT shaping)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sample_rate)
    shape = ((f >= lo) & (f <= hi)) / np.maximum(f, 1.0) ** (tilt / 2)
    out = np.fft.irfft(spec * shape, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _impulses(tau: np.ndarray, rate: float, decay: float, phase: float) -> np.ndarray:
    """Exponentially decaying envelope of a train of impulses at `rate` Hz, on time axis tau."""
    since = np.mod(tau * rate + phase, 1.0) / rate  # seconds since the last impulse
    return np.exp(-since / decay)


def source_signal(
    sound: Sound, tau: np.ndarray, *, speed: float, phase: float, rng: np.random.Generator, sample_rate: float
) -> np.ndarray:
    """The object's sound at 1 m, [n] float64, at emission times tau [n] (seconds).

    `phase` (fixed per episode) places the impulse train; `rng` draws the noise carriers.
    """
    n = len(tau)
    out = np.zeros(n)
    if sound.harmonics:
        wobble = sound.rev_wobble * sound.engine_hz / (2 * np.pi * 0.3)
        cycle = 2 * np.pi * (sound.engine_hz * tau - wobble * np.cos(2 * np.pi * 0.3 * tau))  # (n,)
        k = np.arange(1, sound.harmonics + 1)
        k = k[k * sound.engine_hz * 1.1 < sample_rate / 2]
        amp = k**-sound.harmonic_decay
        engine = (amp[:, None] * np.sin(k[:, None] * cycle[None] + 0.7 * k[:, None])).sum(0)
        engine *= sound.engine_level * math.sqrt(2) / np.sqrt(np.sum(amp**2))
        if sound.roughness:  # uneven firing: modulated at half the firing rate
            engine *= 1 + sound.roughness * np.sin(cycle / 2)
        out += engine
    if sound.siren is not None:
        lo, hi, period = sound.siren
        sweep = (
            2
            * np.pi
            * ((lo + hi) / 2 * tau - (hi - lo) / 2 * period / (2 * np.pi) * np.sin(2 * np.pi * tau / period))
        )
        tone = np.sin(sweep) + 0.4 * np.sin(2 * sweep) + 0.2 * np.sin(3 * sweep)
        out += sound.siren_level * tone / math.sqrt((1 + 0.16 + 0.04) / 2)
    if sound.clicks is not None:
        rate, decay, lo, hi = sound.clicks
        carrier = _band_noise(rng, n, sample_rate, lo, hi)
        env = _impulses(tau, rate, decay, phase)
        out += sound.click_level * carrier * env / math.sqrt(rate * decay / 2)
    if sound.tyre:
        out += sound.tyre * speed * _band_noise(rng, n, sample_rate, 300.0, 3000.0, tilt=1.0)
    return out


def _background(
    kind: Noise, t: np.ndarray, *, params: np.random.Generator, rng: np.random.Generator, sample_rate: float
) -> np.ndarray:
    """Unit-RMS background noise [n] of one kind: rates and pitches from `params` (fixed per
    episode), noise carriers from `rng`."""
    n = len(t)
    p = params.uniform(0, 2 * np.pi, 4)
    rates = params.uniform(0.0, 1.0, 5)
    if kind is Noise.WIND:  # rumble, mostly below 300 Hz, in gusts
        out = _band_noise(rng, n, sample_rate, 15.0, 600.0, tilt=2.0)
        out *= 0.6 + 0.4 * np.sin(2 * np.pi * (0.2 + 0.6 * rates[0]) * t + p[0])
    elif kind is Noise.RAIN:  # hiss plus drops
        out = _band_noise(rng, n, sample_rate, 800.0, 8000.0)
        drops = (rng.random(n) < 300 / sample_rate) * rng.standard_normal(n) * 8.0
        out += np.convolve(drops, np.exp(-np.arange(32) / 6.0), mode="same")
    elif kind is Noise.CROWD:  # babble at syllable rate, and people walking by
        out = sum(
            _band_noise(rng, n, sample_rate, 200.0, 3000.0, tilt=1.0)
            * np.clip(np.sin(2 * np.pi * (3 + 3 * rates[1 + i]) * t + p[i]), 0, None)
            for i in range(3)
        )
        steps = _impulses(t, 1.5 + 0.9 * rates[4], 0.03, p[3]) * _band_noise(
            rng, n, sample_rate, 80.0, 1500.0
        )
        out = out + 0.8 * steps
    else:  # distant traffic: an engine drone and tyre roar
        f0 = 30.0 + 40.0 * rates[0]
        k = np.arange(1, 7)[:, None]
        out = (np.sin(2 * np.pi * f0 * k * t[None] + p[0] * k) / k).sum(0)
        out = out + 1.5 * _band_noise(rng, n, sample_rate, 40.0, 2000.0, tilt=1.0)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


@dataclass(frozen=True)
class _Block:
    """One second of the timeline as the one-object world hears it, each [sample_rate] float64."""

    first: np.ndarray  # object 0's sound (zero in an empty episode)
    noise: np.ndarray  # background and self-noise


@dataclass(frozen=True)
class _SceneBlock:
    """The same second with every object, each [sample_rate] float64; built only when asked for,
    so that a caller of the one-object view pays for object 0 alone."""

    every: np.ndarray  # every object's sound, summed
    sources: dict[int, np.ndarray]  # track id -> that object's sound (zero outside its episode)


class AudioSynth:
    """The microphone's samples for any range of the timeline, built one-second block at a time."""

    _CACHE = 3

    def __init__(self, world: World, *, sample_rate: int) -> None:
        self.world = world
        self.sample_rate = sample_rate
        self._blocks: OrderedDict[int, _Block] = OrderedDict()
        self._scene_blocks: OrderedDict[int, _SceneBlock] = OrderedDict()

    def components(self, start_sample: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(object 0's sound, background incl. self-noise), each [n] float64, for samples
        [start, start + n): the one-object world."""
        first = self._span(start_sample, n, lambda b: self._block(b).first)
        return first, self._span(start_sample, n, lambda b: self._block(b).noise)

    def __call__(self, start_sample: int, n: int) -> np.ndarray:
        """Microphone samples [start, start + n) of object 0 alone as float32 PCM in [-1, 1]."""
        sig, noise = self.components(start_sample, n)
        return np.clip(sig + noise, -1.0, 1.0).astype(np.float32)

    def scene_components(self, start_sample: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(every object's sound summed, background incl. self-noise), each [n] float64."""
        every = self._span(start_sample, n, lambda b: self._scene_block(b).every)
        return every, self._span(start_sample, n, lambda b: self._block(b).noise)

    def scene_audio(self, start_sample: int, n: int) -> np.ndarray:
        """Microphone samples [start, start + n) of every object as float32 PCM in [-1, 1]."""
        sig, noise = self.scene_components(start_sample, n)
        return np.clip(sig + noise, -1.0, 1.0).astype(np.float32)

    def sources(self, start_sample: int, n: int) -> dict[int, np.ndarray]:
        """Each object's sound as the microphone hears it, track id -> [n] float64, for the
        objects of the episodes that samples [start, start + n) touch; they sum to
        `scene_components(...)[0]`."""
        sr, episode_s = self.sample_rate, self.world.config.episode_s
        t = (start_sample + np.arange(n)) / sr  # as `_render_block` computes it
        out: dict[int, np.ndarray] = {}
        for ep_index in np.unique(np.floor(t / episode_s).astype(np.int64)):
            for track in self.world.episode(int(ep_index)).objects:
                out[track.track_id] = self._span(start_sample, n, self._source_of(track.track_id))
        return out

    def _source_of(self, track_id: int) -> Callable[[int], np.ndarray]:
        silence = np.zeros(self.sample_rate)  # in a block the object is not heard in
        return lambda b: self._scene_block(b).sources.get(track_id, silence)

    def _span(self, start_sample: int, n: int, part: Callable[[int], np.ndarray]) -> np.ndarray:
        """Samples [start, start + n) of one part of the blocks (`part`: block index -> [sr])."""
        sr = self.sample_rate
        first, last = start_sample // sr, (start_sample + n - 1) // sr
        whole = np.concatenate([part(b) for b in range(first, last + 1)])
        lo = start_sample - first * sr
        return whole[lo : lo + n]

    def _block(self, block: int) -> _Block:
        return _cached(self._blocks, block, self._render_block, self._CACHE)

    def _scene_block(self, block: int) -> _SceneBlock:
        return _cached(self._scene_blocks, block, self._render_scene_block, self._CACHE)

    def _times(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(absolute seconds [sr], episode index [sr]) of a block's samples."""
        sr = self.sample_rate
        t = (block * sr + np.arange(sr)) / sr
        return t, np.floor(t / self.world.config.episode_s).astype(np.int64)

    def _render_block(self, block: int) -> _Block:
        sr, world = self.sample_rate, self.world
        seed = world.config.seed
        t, eps = self._times(block)
        first, noise = np.zeros(sr), np.zeros(sr)
        # A block straddles at most a couple of episodes; each renders its own samples.
        for ep_index in np.unique(eps):
            sel = eps == ep_index
            ep = world.episode(int(ep_index))
            rng = np.random.default_rng([seed, _OBJECT_STREAM, block, int(ep_index)])
            params = np.random.default_rng([seed, _NOISE_STREAM, int(ep_index)])
            first[sel] = self._object(ep, ep.tracks[0], t[sel], rng, phase=params.random())
            level = 10 ** (ep.conditions.noise_dbfs / 20)
            noise[sel] = level * _background(
                ep.conditions.noise, t[sel], params=params, rng=rng, sample_rate=sr
            )
        noise += _SELF_NOISE * np.random.default_rng([seed, _NOISE_STREAM, block]).standard_normal(sr)
        return _Block(first=first, noise=noise)

    def _render_scene_block(self, block: int) -> _SceneBlock:
        """Object 0 as `_render_block` heard it; each further object from streams of its own."""
        sr, seed = self.sample_rate, self.world.config.seed
        t, eps = self._times(block)
        first = self._block(block).first
        every = first.copy()
        sources: dict[int, np.ndarray] = {}
        for ep_index in np.unique(eps):
            sel = eps == ep_index
            ep = self.world.episode(int(ep_index))
            for k, track in enumerate(ep.objects):
                heard = np.zeros(sr)
                if k == 0:
                    heard[sel] = first[sel]
                else:
                    own = np.random.default_rng([seed, _OBJECT_STREAM, block, track.track_id, *_FURTHER])
                    phase = np.random.default_rng([seed, _NOISE_STREAM, track.track_id, *_FURTHER]).random()
                    heard[sel] = self._object(ep, track, t[sel], own, phase=phase)
                    every[sel] += heard[sel]
                sources[track.track_id] = heard
        return _SceneBlock(every=every, sources=sources)

    def _object(
        self, ep: Episode, track: Track, t: np.ndarray, rng: np.random.Generator, *, phase: float
    ) -> np.ndarray:
        """One object's sound at the microphone at times t [n]: emitted r / c earlier, over 1 / r."""
        if track.model is None:
            return np.zeros(len(t))
        dt = t - ep.t_center
        x = track.center[0] + track.velocity[0] * dt
        y = track.center[1] + track.velocity[1] * dt
        dz = _SOURCE_HEIGHT - self.world.config.sensor_height_m
        r = np.sqrt(x**2 + y**2 + dz**2)
        tau = t - r / SPEED_OF_SOUND  # retarded time: Doppler and propagation delay
        speed = math.hypot(*track.velocity)
        src = source_signal(
            track.model.sound, tau, speed=speed, phase=phase, rng=rng, sample_rate=self.sample_rate
        )
        return src / np.maximum(r, 1.0)


def _cached(cache: OrderedDict[int, _V], key: int, make: Callable[[int], _V], size: int) -> _V:
    """cache[key], made by make(key) when missing; the oldest entries beyond `size` dropped."""
    value = cache.get(key)
    if value is None:
        value = make(key)
        cache[key] = value
        if len(cache) > size:
            cache.popitem(last=False)
    return value


def synth_audio(world: World, start_sample: int, n: int, *, sample_rate: int) -> np.ndarray:
    """Microphone samples [start_sample, start_sample + n) of `world`'s object 0 alone (the
    one-object world): float32 [n] in [-1, 1]."""
    return AudioSynth(world, sample_rate=sample_rate)(start_sample, n)


def synth_scene_audio(world: World, start_sample: int, n: int, *, sample_rate: int) -> np.ndarray:
    """Microphone samples [start_sample, start_sample + n) of every object of `world`: float32
    [n] in [-1, 1]."""
    return AudioSynth(world, sample_rate=sample_rate).scene_audio(start_sample, n)
