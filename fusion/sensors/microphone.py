"""Microphone sources (live PortAudio device, audio file), the log-mel preprocessor, the audio probe.

Every source delivers mono float32 PCM in [-1, 1] at the configured `sample_rate`, in chunks
of `chunk_s` seconds; `Frame.timestamp` is the capture time of a chunk's first sample.
"""

from __future__ import annotations

import queue
import struct
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import librosa
import numpy as np
import soundfile as sf
import soxr
from pydantic import Field, model_validator

from fusion.config import StrictModel
from fusion.sample import Frame, Modality, Segment
from fusion.sensors.registry import FileReport, register_preprocessor, register_probe, register_source
from fusion.sensors.source import EndOfStream, LiveSource, Source, SourceConfig, SourceError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})

# Log-mel scaling: power_to_db floors at amin = 1e-10 (-100 dB, digital silence) and a full-scale
# tone puts about +20 dB in its mel band, so (dB + 40) / 60 maps that span onto [-1, 1]; louder
# broadband input can exceed 1 slightly.
DB_AMIN = 1e-10
DB_TOP = 80.0
DB_CENTER = -40.0
DB_HALF_RANGE = 60.0


class _AudioConfig(SourceConfig):
    """Fields every microphone backend has."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000  # delivered samples per second
    chunk_s: Annotated[float, Field(gt=0)] = 0.05  # seconds of audio per Frame

    @model_validator(mode="after")
    def _chunk_has_samples(self) -> _AudioConfig:
        if self.chunk_samples < 1:
            raise ValueError(f"chunk_s={self.chunk_s} is less than one sample at {self.sample_rate} Hz")
        return self

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_s * self.sample_rate)


class MicrophoneDeviceConfig(_AudioConfig):
    backend: Literal["device"] = "device"
    device: int | str | None = None  # PortAudio device index or name (substring); None: default input
    channels: Annotated[int, Field(gt=0)] = 1  # channels opened on the device, averaged to mono


class MicrophoneFileConfig(_AudioConfig):
    backend: Literal["file"] = "file"
    path: str  # .wav, .flac or .ogg; resampled to sample_rate when its rate differs


@register_source
class MicrophoneDeviceSource(LiveSource):
    """A live input through PortAudio (`sounddevice.InputStream`); reconnects when the device is lost.

    PortAudio calls `_on_block` on its own thread with one block of `chunk_s`; the block is only
    copied and stamped there, and turned into a Frame on the capture thread.
    """

    modality = Modality.MICROPHONE
    backend = "device"
    config_cls = MicrophoneDeviceConfig
    config: MicrophoneDeviceConfig
    # Audio is consumed as a continuous signal, not newest-only: keep seconds of chunks, not a few.
    queue_size = 64

    def __init__(self, config: MicrophoneDeviceConfig) -> None:
        super().__init__(config)
        self._stream: Any = None  # sounddevice.InputStream while connected
        self._blocks: queue.SimpleQueue[tuple[np.ndarray, float, bool]] = queue.SimpleQueue()
        self._latency = 0.0
        self._index = 0

    def _describe(self) -> str:
        device = self.config.device
        return "the default input device" if device is None else f"input device {device!r}"

    def _connect(self) -> None:
        cfg = self.config
        try:
            # Imported here: without the PortAudio library the import itself fails (OSError), and
            # that must not stop file sources or the rest of the package from working.
            import sounddevice as sd
        except (ImportError, OSError) as err:
            raise SourceError(
                f"microphone {self.sensor_id!r}: cannot open {self._describe()}: PortAudio is not available ({err})"
            ) from None
        self._blocks = queue.SimpleQueue()
        try:
            stream = sd.InputStream(
                device=cfg.device,
                channels=cfg.channels,
                samplerate=cfg.sample_rate,
                blocksize=cfg.chunk_samples,
                dtype="float32",
                callback=self._on_block,
            )
            self._latency = float(stream.latency)
            stream.start()
        except (sd.PortAudioError, ValueError, OSError) as err:
            raise SourceError(
                f"microphone {self.sensor_id!r}: cannot open {self._describe()}: {err}"
            ) from None
        self._stream = stream

    def _on_block(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio callback: stamp the block with the monotonic time of its first sample."""
        now = time.monotonic()
        adc = time_info.inputBufferAdcTime
        if adc > 0:
            # Stream-clock age of the first sample, carried over to the monotonic clock.
            stamp = now - (time_info.currentTime - adc)
        else:  # host APIs without ADC times report 0
            stamp = now - self._latency - frames / self.config.sample_rate
        self._blocks.put((indata.copy(), stamp, bool(status.input_overflow)))

    def _capture(self) -> Frame | None:
        try:
            block, stamp, overflow = self._blocks.get(timeout=0.5)
        except queue.Empty:
            if self._stream is None or not self._stream.active:
                raise OSError(
                    f"microphone {self.sensor_id!r}: {self._describe()} stopped delivering"
                ) from None
            return None
        if overflow:
            # The driver lost samples before this block: the signal has a gap here.
            self.stats.dropped["input_overflow"] += 1
        mono = block.mean(axis=1, dtype=np.float32)  # (frames, channels) -> (frames,)
        if not np.isfinite(mono).all():
            self.skip("nonfinite", f"{self._describe()}: a block at {stamp:.3f} s holds NaN or inf")
            return None
        frame = Frame(
            modality=Modality.MICROPHONE,
            sensor_id=self.sensor_id,
            timestamp=stamp,
            wall_time=time.time() - (time.monotonic() - stamp),
            data=np.clip(mono, -1.0, 1.0),
            sample_rate=float(self.config.sample_rate),
            index=self._index,
        )
        self._index += 1
        return frame

    def _disconnect(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(ignore_errors=True)


def _wav_declared_frames(path: Path) -> int | None:
    """Sample frames a RIFF/WAVE header declares in its data chunk, or None when it does not say.

    libsndfile silently trims a data size larger than the file to what is there; reading the
    header ourselves is how a truncated WAV is noticed.
    """
    with path.open("rb") as fh:
        riff = fh.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        block_align = 0
        while len(header := fh.read(8)) == 8:
            chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"fmt ":
                fmt = fh.read(size + size % 2)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
            elif chunk_id == b"data":
                # Writers that do not know the length in advance leave 0 or 0xFFFFFFFF.
                if block_align == 0 or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                fh.seek(size + size % 2, 1)
    return None


@register_source
class MicrophoneFileSource(Source):
    """An audio file as chunks of `chunk_s`, resampled to `sample_rate` (a finite source: never waits).

    Chunk k starts at exactly k * chunk_samples / sample_rate; the last chunk may be shorter. The
    file is read, mixed to mono and resampled block by block (soxr's streaming resampler, so memory
    stays flat however long the file), and clipped to [-1, 1].

    Bad input: a file that ends before its header says (or whose decoder fails mid-read) delivers
    what could be read and counts `truncated` once; a chunk holding NaN or inf is skipped and
    counted as `nonfinite` (the resampler spreads a bad sample over its filter length, ~20 ms,
    which may reach into the neighbouring chunk).
    """

    modality = Modality.MICROPHONE
    backend = "file"
    config_cls = MicrophoneFileConfig
    config: MicrophoneFileConfig

    def __init__(self, config: MicrophoneFileConfig) -> None:
        super().__init__(config)
        self._path = Path(config.path)
        self._file: sf.SoundFile | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._pending = np.zeros(0, np.float32)  # resampled samples not yet delivered
        self._declared = 0
        self._read_samples = 0  # at the file's own rate
        self._block = 1
        self._chunk_index = 0
        self._done = False
        self._wall0 = 0.0

    def open(self) -> None:
        if not self._path.is_file():
            raise SourceError(f"microphone {self.sensor_id!r}: audio file not found: {self._path}")
        try:
            self._file = sf.SoundFile(self._path)
        except (sf.SoundFileError, RuntimeError) as err:
            raise SourceError(
                f"microphone {self.sensor_id!r}: {self._path} is not a readable audio file: {err}"
            ) from None
        rate = self._file.samplerate
        self._declared = max(self._file.frames, _wav_declared_frames(self._path) or 0)
        self._block = max(1, round(self.config.chunk_s * rate))
        if rate != self.config.sample_rate:
            self._resampler = soxr.ResampleStream(rate, self.config.sample_rate, 1, dtype="float32")
        # Media time is mapped onto the wall clock of the moment the file was opened.
        self._wall0 = time.time()

    def read(self, timeout: float | None = None) -> Frame:
        """The next chunk with finite samples; raises EndOfStream after the last."""
        n, rate = self.config.chunk_samples, self.config.sample_rate
        while True:
            while len(self._pending) < n and not self._done:
                self._fill()
            if not len(self._pending):
                raise EndOfStream(f"{self._path}: end of audio")
            data, self._pending = self._pending[:n], self._pending[n:]
            k = self._chunk_index
            self._chunk_index += 1
            if not np.isfinite(data).all():
                self.skip("nonfinite", f"{self._path}: chunk {k} at {k * n / rate:.3f} s holds NaN or inf")
                continue
            self.stats.frames += 1
            return Frame(
                modality=Modality.MICROPHONE,
                sensor_id=self.sensor_id,
                timestamp=k * n / rate,
                wall_time=self._wall0 + k * n / rate,
                data=np.clip(data, -1.0, 1.0),
                sample_rate=float(rate),
                index=k,
            )

    def _fill(self) -> None:
        """Read one block of the file, mix it to mono, resample, and append it to the pending samples."""
        if self._file is None:
            raise SourceError(f"microphone {self.sensor_id!r}: read() on a source that is not open")
        try:
            block = self._file.read(self._block, dtype="float32", always_2d=True)  # (frames, channels)
        except (sf.SoundFileError, RuntimeError) as err:
            self.skip("truncated", f"{self._path}: reading failed after {self._read_samples} samples: {err}")
            block, self._done = np.zeros((0, 1), np.float32), True
        else:
            self._done = len(block) < self._block
            if self._done and self._read_samples + len(block) < self._declared:
                self.skip(
                    "truncated",
                    f"{self._path}: the header declares {self._declared} samples, "
                    f"the file holds {self._read_samples + len(block)}",
                )
        self._read_samples += len(block)
        mono = block.mean(axis=1, dtype=np.float32)  # (frames,)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=self._done)
        self._pending = np.concatenate([self._pending, mono])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@register_probe(lambda path: path.suffix.lower() in AUDIO_SUFFIXES)
def probe_audio(path: Path) -> FileReport:
    """Describe an audio file from its header; `frames` counts samples at the file's own rate."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise ValueError(f"{path}: not a readable audio file: {err}") from None
    duration = info.frames / info.samplerate
    layout = {1: "mono", 2: "stereo"}.get(info.channels, f"{info.channels} channels")
    details: dict[str, Any] = {
        "channels": info.channels,
        "samplerate": info.samplerate,
        "format": info.format,
        "subtype": info.subtype,
    }
    declared = _wav_declared_frames(path)
    if declared is not None and declared > info.frames:
        details["truncated"] = f"header declares {declared} samples, the file holds {info.frames}"
    return FileReport(
        path=str(path),
        modality=Modality.MICROPHONE,
        backend="file",
        frames=info.frames,
        start=0.0,
        end=max(info.frames - 1, 0) / info.samplerate,  # the last sample's time, so rate = samplerate
        shapes=f"{info.samplerate} Hz {layout}, {duration:.2f} s",
        details=details,
    )


class MicrophonePreprocessConfig(StrictModel):
    sample_rate: Annotated[int, Field(gt=0)] = 16000  # frames must arrive at this rate
    window_s: Annotated[float, Field(gt=0)] = 1.0  # audio per fusion window
    n_fft: Annotated[int, Field(gt=0)] = 512
    # 31 ms. With n_fft 512 and no centre padding, a 1 s window at 16 kHz gives exactly 32 frames
    # (1 + (16000 - 512) // 496), the sensor-small model's microphone grid of 32 x 32.
    hop_length: Annotated[int, Field(gt=0)] = 496
    n_mels: Annotated[int, Field(gt=0)] = 32
    fmin: Annotated[float, Field(ge=0)] = 20.0
    fmax: Annotated[float, Field(gt=0)] | None = None  # None: sample_rate / 2
    frames: Annotated[int, Field(gt=0)] | None = None  # time frames T; None: as many as window_s holds

    @model_validator(mode="after")
    def _consistent(self) -> MicrophonePreprocessConfig:
        nyquist = self.sample_rate / 2
        top = nyquist if self.fmax is None else self.fmax
        if top > nyquist:
            raise ValueError(
                f"fmax={self.fmax} is above the Nyquist frequency {nyquist} of sample_rate={self.sample_rate}"
            )
        if self.fmin >= top:
            raise ValueError(f"fmin={self.fmin} must be below fmax={top}")
        if self.frames is None and self.window_samples < self.n_fft:
            raise ValueError(
                f"window_s={self.window_s} holds {self.window_samples} samples, fewer than n_fft={self.n_fft}"
            )
        return self

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def num_frames(self) -> int:
        """T, the spectrogram frames per window (STFT without centre padding)."""
        if self.frames is not None:
            return self.frames
        return 1 + (self.window_samples - self.n_fft) // self.hop_length

    @property
    def span_samples(self) -> int:
        """The newest samples the T frames cover exactly: n_fft + (T - 1) * hop_length."""
        return self.n_fft + (self.num_frames - 1) * self.hop_length


@register_preprocessor
class MicrophonePreprocessor:
    """Audio window -> log-mel Segment: values [T * F, 1] float32, row-major over (time, mel); grid (T, F).

    The STFT runs without centre padding (`center=False`) so that every frame holds real samples
    of the window and T is exact: the spectrogram covers the newest `span_samples` of the window
    (at the defaults 15888 of 16000). A shorter window is zero-padded at the start (missing audio
    is silence), a longer one loses its oldest samples. Power is converted with
    `librosa.power_to_db(ref=1.0, amin=1e-10, top_db=80)` and scaled by (dB + 40) / 60, so
    -100 dB maps to -1 and +20 dB (about a full-scale tone) to +1.
    """

    modality = Modality.MICROPHONE
    config_cls = MicrophonePreprocessConfig

    def __init__(self, config: MicrophonePreprocessConfig | None = None) -> None:
        self.config = cfg = config or MicrophonePreprocessConfig()
        self._mel_basis = librosa.filters.mel(
            sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
        )  # (F, n_fft // 2 + 1), built once

    @property
    def grid(self) -> tuple[int, int]:
        return (self.config.num_frames, self.config.n_mels)

    def __call__(self, frame: Frame) -> Segment:
        cfg = self.config
        if frame.modality is not Modality.MICROPHONE:
            raise ValueError(
                f"microphone preprocessor got a {frame.modality.value} frame from {frame.sensor_id!r}"
            )
        if frame.sample_rate != cfg.sample_rate:
            raise ValueError(
                f"microphone frame from {frame.sensor_id!r} is at {frame.sample_rate} Hz, "
                f"the preprocessor expects {cfg.sample_rate} Hz"
            )
        audio = self._fit(frame.data)  # (span,)
        spec = librosa.stft(
            audio, n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=False
        )  # (n_fft//2+1, T)
        mel = self._mel_basis @ (np.abs(spec) ** 2)  # (F, T)
        db = librosa.power_to_db(mel, ref=1.0, amin=DB_AMIN, top_db=DB_TOP)  # (F, T)
        values = ((db.T - DB_CENTER) / DB_HALF_RANGE).astype(np.float32)  # (T, F)
        return Segment(values=values.reshape(-1, 1), grid=self.grid)

    def _fit(self, audio: np.ndarray) -> np.ndarray:
        """Exactly `span_samples`: the newest samples, zero-padded at the start when too few."""
        span = self.config.span_samples
        if len(audio) >= span:
            return audio[len(audio) - span :]
        return np.concatenate([np.zeros(span - len(audio), np.float32), audio])
