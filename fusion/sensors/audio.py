"""Microphones: a live input through PortAudio, an audio file through libsndfile, and the audio probe.

Every source delivers mono float32 PCM in [-1, 1] at the configured `sample_rate`, in chunks
of `chunk_s` seconds; `Frame.timestamp` is the capture time of a chunk's first sample.
"""

from __future__ import annotations

import queue
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from fusion.errors import InputError, SourceError
from fusion.sample import Frame, Modality
from fusion.sensors.audio_config import (
    MICROPHONE_DEVICE,
    MICROPHONE_FILE,
    MicrophoneDeviceConfig,
    MicrophoneFileConfig,
)
from fusion.sensors.registry import FileReport, register_probe
from fusion.sensors.source import EndOfStream, LiveSource, Source

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})


class MicrophoneDeviceSource(LiveSource):
    """A live input through PortAudio (`sounddevice.InputStream`); reconnects when the device is lost.

    PortAudio calls `_on_block` on its own thread with one block of `chunk_s`; the block is only
    copied and stamped there, and turned into a Frame on the capture thread.
    """

    backend = MICROPHONE_DEVICE
    config: MicrophoneDeviceConfig
    # Audio is consumed as a continuous signal, not newest-only: keep seconds of chunks, not a few.
    queue_size = 64

    def __init__(self, config: MicrophoneDeviceConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
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

    backend = MICROPHONE_FILE
    config: MicrophoneFileConfig

    def __init__(self, config: MicrophoneFileConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
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
        raise InputError(f"{path}: not a readable audio file: {err}") from None
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
