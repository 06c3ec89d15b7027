"""Microphone sources, log-mel preprocessor and probe against audio written by libsndfile's encoders."""

from __future__ import annotations

import re
import struct
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import librosa
import numpy as np
import pytest
import sounddevice
import soundfile as sf
import yaml

from fusion.config import parse_config
from fusion.errors import ConfigError, SourceError
from fusion.sample import Frame, Modality
from fusion.sensors import EndOfStream
from fusion.sensors.audio import MicrophoneDeviceSource, MicrophoneFileSource, probe_audio
from fusion.sensors.audio_config import MicrophoneDeviceConfig, MicrophoneFileConfig
from fusion.sensors.preprocess_config import MicrophonePreprocessConfig
from fusion.sensors.preprocessors import MicrophonePreprocessor

SR = 16000
CHUNK = 800  # 0.05 s at 16 kHz
REPO = Path(__file__).resolve().parents[2]


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(np.float32)


def read_all(path: Path, **config: object) -> tuple[list[Frame], MicrophoneFileSource]:
    with MicrophoneFileSource(MicrophoneFileConfig(path=str(path), **config)) as src:
        frames = list(src)
        with pytest.raises(EndOfStream):
            src.read()
    return frames, src


def peak_hz(audio: np.ndarray, rate: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [(".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS")],
)
def test_file_is_resampled_chunked_and_stamped_exactly(
    tmp_path: Path, suffix: str, fmt: str, subtype: str
) -> None:
    path = tmp_path / f"a440{suffix}"
    sf.write(path, tone(440, 22050, 1.5), 22050, format=fmt, subtype=subtype)
    frames, src = read_all(path)

    expected_len = round(1.5 * SR)
    audio = np.concatenate([f.data for f in frames])
    assert abs(len(audio) - expected_len) <= 1, "duration changed by resampling"
    assert [f.timestamp for f in frames] == [k * CHUNK / SR for k in range(len(frames))]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert {len(f.data) for f in frames[:-1]} == {CHUNK} and 0 < len(frames[-1].data) <= CHUNK
    assert all(f.sample_rate == SR and f.data.dtype == np.float32 for f in frames)
    assert np.abs(audio).max() <= 1.0
    assert peak_hz(audio, SR) == pytest.approx(440, abs=10)
    assert src.stats.frames == len(frames) and not src.stats.errors


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left = tone(300, SR, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), SR, subtype="FLOAT")
    frames, _ = read_all(path)
    np.testing.assert_allclose(np.concatenate([f.data for f in frames]), 0.75 * left, atol=1e-6)


def test_chunk_length_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, tone(440, SR, 0.5), SR, subtype="FLOAT")
    frames, _ = read_all(path, chunk_s=0.1)
    assert len(frames) == 5 and {len(f.data) for f in frames} == {1600}
    assert [f.timestamp for f in frames] == [k * 1600 / SR for k in range(5)]


def write_lying_wav(path: Path, samples: np.ndarray) -> None:
    """A valid 16-bit WAV whose RIFF and data sizes then claim three times the audio there is."""
    sf.write(path, samples, SR, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    size = struct.unpack("<I", data[at + 4 : at + 8])[0]
    data[at + 4 : at + 8] = struct.pack("<I", 3 * size)
    data[4:8] = struct.pack("<I", len(data) - 8 + 2 * size)
    path.write_bytes(bytes(data))


def test_wav_with_lying_header_delivers_the_audio_and_counts_it(tmp_path: Path) -> None:
    samples = tone(440, SR, 0.5)
    path = tmp_path / "lying.wav"
    write_lying_wav(path, samples)
    frames, src = read_all(path)
    np.testing.assert_allclose(np.concatenate([f.data for f in frames]), samples, atol=1 / 32768)
    assert src.stats.errors == {"truncated": 1}
    assert probe_audio(path).details["truncated"].startswith(f"header declares {3 * len(samples)} samples")


def test_cut_wav_and_cut_flac_deliver_what_is_readable(tmp_path: Path) -> None:
    samples = tone(440, SR, 1.0)
    for name in ("cut.wav", "cut.flac"):
        path = tmp_path / name
        sf.write(path, samples, SR, subtype="PCM_16")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        frames, src = read_all(path)
        audio = np.concatenate([f.data for f in frames])
        assert 0 < len(audio) < len(samples), name
        np.testing.assert_allclose(audio, samples[: len(audio)], atol=1 / 32768, err_msg=name)
        assert src.stats.errors == {"truncated": 1}, name


def test_cut_ogg_fails_at_open_naming_the_path(tmp_path: Path) -> None:
    # libsndfile checks the whole Ogg stream when it opens one: half a Vorbis file is refused
    # there, so nothing of it can be delivered.
    path = tmp_path / "cut.ogg"
    sf.write(path, tone(440, SR, 1.0), SR, format="OGG", subtype="VORBIS")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        SourceError, match=rf"{re.escape(str(path))} is not a readable audio file: .*malformed"
    ):
        MicrophoneFileSource(MicrophoneFileConfig(path=str(path))).open()


def test_nonfinite_chunk_is_skipped_and_counted(tmp_path: Path) -> None:
    samples = tone(440, SR, 0.5)
    samples[3 * CHUNK + 17] = np.nan
    samples[7 * CHUNK] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, samples, SR, subtype="FLOAT")
    frames, src = read_all(path)
    kept = [k for k in range(10) if k not in (3, 7)]
    assert [f.index for f in frames] == kept
    assert [f.timestamp for f in frames] == [k * CHUNK / SR for k in kept]
    np.testing.assert_array_equal(frames[3].data, samples[4 * CHUNK : 5 * CHUNK])
    assert src.stats.errors == {"nonfinite": 2}


def test_not_audio_or_missing_fails_at_open_naming_the_path(tmp_path: Path) -> None:
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(
        SourceError, match=rf"{re.escape(str(garbage))} is not a readable audio file: .*not recognised"
    ):
        MicrophoneFileSource(MicrophoneFileConfig(path=str(garbage))).open()
    missing = tmp_path / "missing.flac"
    with pytest.raises(SourceError, match=re.escape(f"not found: {missing}")):
        MicrophoneFileSource(MicrophoneFileConfig(path=str(missing))).open()
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        probe_audio(garbage)


def test_probe_reports_the_header(tmp_path: Path) -> None:
    path = tmp_path / "st.flac"
    sf.write(path, np.zeros((33075, 2), np.float32), 22050, subtype="PCM_24")
    report = probe_audio(path)
    assert report.modality is Modality.MICROPHONE and report.backend == "file"
    assert (report.frames, report.start, report.end) == (33075, 0.0, 33074 / 22050)  # last sample time
    assert report.rate == 22050
    assert report.shapes == "22050 Hz stereo, 1.50 s"
    assert report.details == {"channels": 2, "samplerate": 22050, "format": "FLAC", "subtype": "PCM_24"}


def test_config_rejects_a_chunk_shorter_than_a_sample() -> None:
    with pytest.raises(ConfigError, match="chunk_s"):
        parse_config(MicrophoneFileConfig, {"backend": "file", "path": "a.wav", "chunk_s": 1e-6})


class FakeInputStream:
    """sounddevice.InputStream stand-in: PortAudio's callback thread, fed with a real WAV file.

    Blocks arrive in real time with ADC times on a stream clock 1000 s ahead of time.monotonic(),
    as PortAudio's clock is unrelated to Python's. Each stream dies after `die_after` blocks.
    """

    def __init__(self, audio: np.ndarray, *, die_after: int, overflow_at: int = -1) -> None:
        self.audio, self.die_after, self.overflow_at = audio, die_after, overflow_at
        self.served = 0  # blocks over all streams
        self.opened: list[dict] = []
        self.first_block_time: float | None = None

    def __call__(self, **kwargs: object) -> FakeInputStream.Stream:
        self.opened.append(kwargs)
        return FakeInputStream.Stream(self, kwargs)

    class Stream:
        def __init__(self, feed: FakeInputStream, kwargs: dict) -> None:
            self.feed, self.kwargs = feed, kwargs
            self.latency = 0.01
            self.active = False
            self._thread = threading.Thread(target=self._run, daemon=True)

        def start(self) -> None:
            self.active = True
            self._thread.start()

        def _run(self) -> None:
            feed, block = self.feed, int(self.kwargs["blocksize"])
            rate, callback = float(self.kwargs["samplerate"]), self.kwargs["callback"]
            for _ in range(feed.die_after):
                start = feed.served * block
                chunk = feed.audio[start : start + block]
                if not self.active or len(chunk) < block:
                    break
                if feed.first_block_time is None:
                    feed.first_block_time = time.monotonic()
                adc = feed.first_block_time + start / rate
                time.sleep(max(0.0, adc + block / rate - time.monotonic()))  # wait until captured
                status = sounddevice.CallbackFlags()
                status.input_overflow = feed.served == feed.overflow_at
                info = SimpleNamespace(inputBufferAdcTime=adc + 1000, currentTime=time.monotonic() + 1000)
                callback(chunk[:, None].copy(), block, info, status)
                feed.served += 1
            self.active = False

        def close(self, ignore_errors: bool = False) -> None:
            self.active = False


def test_device_delivers_stamped_blocks_and_reconnects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "room.wav"
    sf.write(path, tone(440, SR, 0.6), SR, subtype="FLOAT")
    audio, _ = sf.read(path, dtype="float32")
    feed = FakeInputStream(audio, die_after=5, overflow_at=2)
    monkeypatch.setattr(sounddevice, "InputStream", feed)

    with MicrophoneDeviceSource(MicrophoneDeviceConfig(device="USB mic", chunk_s=0.05)) as src:
        frames = [src.read(timeout=5) for _ in range(8)]

    # The first stream dies after 5 blocks; the source opens a new one and the signal goes on.
    assert len(feed.opened) >= 2 and src.stats.reconnects >= 1
    assert src.stats.errors["device_lost"] >= 1
    assert feed.opened[0]["device"] == "USB mic" and feed.opened[0]["samplerate"] == SR
    np.testing.assert_array_equal(np.concatenate([f.data for f in frames]), audio[: 8 * CHUNK])
    # Stamps are the ADC times of each block's first sample, carried over to time.monotonic().
    assert feed.first_block_time is not None
    stamps = np.array([f.timestamp for f in frames])
    np.testing.assert_allclose(stamps, feed.first_block_time + np.arange(8) * CHUNK / SR, atol=2e-3)
    assert all(f.sample_rate == SR for f in frames)
    assert src.stats.dropped["input_overflow"] == 1


def test_missing_device_fails_naming_it() -> None:
    # Real PortAudio: there is no input device 99 here (nor on most machines).
    with pytest.raises(SourceError, match="input device 99"):
        MicrophoneDeviceSource(MicrophoneDeviceConfig(device=99)).open()


def test_portaudio_errors_become_source_errors_naming_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: object) -> None:
        raise sounddevice.PortAudioError("Error opening InputStream: Device unavailable")

    monkeypatch.setattr(sounddevice, "InputStream", refuse)
    with pytest.raises(SourceError, match=r"'USB mic'.*Device unavailable"):
        MicrophoneDeviceSource(MicrophoneDeviceConfig(device="USB mic")).open()

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as when libportaudio is not installed
    with pytest.raises(SourceError, match=r"'USB mic'.*PortAudio is not available"):
        MicrophoneDeviceSource(MicrophoneDeviceConfig(device="USB mic")).open()


def mic_frame(audio: np.ndarray, rate: float = SR, sensor_id: str = "mic0") -> Frame:
    return Frame(
        modality=Modality.MICROPHONE,
        sensor_id=sensor_id,
        timestamp=0.0,
        wall_time=0.0,
        data=audio.astype(np.float32),
        sample_rate=rate,
    )


def test_default_grid_is_the_models_32_by_32() -> None:
    model = yaml.safe_load((REPO / "configs/model/sensor-small.yaml").read_text())
    seg = MicrophonePreprocessor()(mic_frame(tone(1000, SR, 1.0)))
    assert list(seg.grid or ()) == model["inputs"]["microphone"]["example_shape"] == [32, 32]
    assert seg.values.shape == (32 * 32, 1) and seg.values.dtype == np.float32
    assert seg.values.min() >= -1.0 and seg.values.max() <= 1.1


def test_tone_peaks_in_the_mel_band_centred_nearest_it() -> None:
    cfg = MicrophonePreprocessConfig()
    seg = MicrophonePreprocessor(cfg)(mic_frame(tone(1000, SR, 1.0)))
    grid = seg.values.reshape(32, 32)  # (time, mel)
    centres = librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmin=cfg.fmin, fmax=SR / 2)[1:-1]
    nearest = int(np.abs(centres - 1000).argmin())
    assert set(grid.argmax(axis=1)) == {nearest}


def test_short_window_is_padded_with_silence_at_the_start() -> None:
    cfg = MicrophonePreprocessConfig()
    audio = tone(1000, SR, 0.25)  # the newest quarter second only
    grid = MicrophonePreprocessor(cfg)(mic_frame(audio)).values.reshape(32, 32)
    pad = cfg.span_samples - len(audio)
    silent = [t for t in range(32) if t * cfg.hop_length + cfg.n_fft <= pad]
    heard = [t for t in range(32) if t * cfg.hop_length >= pad]
    assert silent and heard
    assert (grid[silent] == grid.min()).all()
    assert (grid[heard].max(axis=1) > grid.min() + 0.5).all()


def test_long_window_keeps_the_newest_samples() -> None:
    pre = MicrophonePreprocessor()
    audio = np.random.default_rng(2).uniform(-0.5, 0.5, 2 * SR)
    newest = audio[-pre.config.span_samples :]
    np.testing.assert_array_equal(pre(mic_frame(audio)).values, pre(mic_frame(newest)).values)


def test_sample_rate_mismatch_names_the_sensor() -> None:
    with pytest.raises(ValueError, match=r"'desk-mic'.*44100.*16000"):
        MicrophonePreprocessor()(mic_frame(np.zeros(44100), rate=44100, sensor_id="desk-mic"))


def test_preprocess_config_frames_and_validation() -> None:
    cfg = MicrophonePreprocessConfig(frames=10)
    assert MicrophonePreprocessor(cfg)(mic_frame(np.zeros(SR))).grid == (10, 32)
    with pytest.raises(ConfigError, match="fmax"):
        parse_config(MicrophonePreprocessConfig, {"fmax": 9000.0})
