"""Cameras through OpenCV / FFmpeg: a local device, a network stream, a video file, and the video probe.

Every source delivers [H, W, 3] uint8 RGB frames: OpenCV decodes to BGR, and the conversion
(and the optional resize) happens at capture, once per frame.

Timestamps: live backends (`device`, `stream`) stamp a frame with `time.monotonic()` when the
read returns; the `file` backend uses the container's frame times (`CAP_PROP_POS_MSEC`), falling
back to frame index / fps where the container has none.
"""

from __future__ import annotations

import math
import threading
import time
from abc import abstractmethod
from pathlib import Path

import cv2
import numpy as np

from fusion.errors import InputError, SourceError
from fusion.sample import Frame, Modality
from fusion.sensors.opencv_config import (
    CAMERA_DEVICE,
    CAMERA_FILE,
    CAMERA_STREAM,
    CameraDeviceConfig,
    CameraFileConfig,
    CameraStreamConfig,
)
from fusion.sensors.registry import FileReport, register_probe
from fusion.sensors.source import EndOfStream, LiveSource, Source

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm"})

# A damaged file makes `grab()` fail; a good frame after the failures proves they were bad frames
# in the middle. Past this many failures in a row (about 10 s at 25 fps) with no frame count from
# the container to say more should come, the file is taken to end there.
MAX_DECODE_ERRORS_IN_A_ROW = 250


def _to_rgb(bgr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """[h, w, 3] uint8 BGR -> [H, W, 3] uint8 RGB, resized (INTER_AREA) to `size` = (W, H) if given."""
    if size is not None and (bgr.shape[1], bgr.shape[0]) != size:
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class _OpenCVLiveSource(LiveSource):
    """A live camera read through `cv2.VideoCapture` by the LiveSource capture thread."""

    config: CameraDeviceConfig | CameraStreamConfig

    def __init__(
        self, config: CameraDeviceConfig | CameraStreamConfig, *, modality: Modality | None = None
    ) -> None:
        super().__init__(config, modality=modality)
        self._cap: cv2.VideoCapture | None = None
        # OpenCV must not release a capture while another thread is inside read(); close() runs
        # on the caller's thread, so read and release take turns under this lock.
        self._cap_lock = threading.Lock()
        self._index = 0

    @abstractmethod
    def _describe(self) -> str:
        """The device or stream, for messages."""

    @abstractmethod
    def _open_capture(self) -> cv2.VideoCapture: ...

    def _connect(self) -> None:
        cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.sensor_id!r}: cannot open {self._describe()}")
        with self._cap_lock:
            self._cap = cap

    def _capture(self) -> Frame | None:
        with self._cap_lock:
            if self._cap is None:
                raise SourceError(f"camera {self.sensor_id!r}: {self._describe()} is not connected")
            ok, bgr = self._cap.read()
        stamp = time.monotonic()
        if not ok or bgr is None:
            raise OSError(f"camera {self.sensor_id!r}: reading {self._describe()} failed (disconnected?)")
        try:
            rgb = _to_rgb(bgr, self.config.size)
        except cv2.error as err:
            self.skip("bad_frame", f"{self._describe()} gave a {bgr.shape} {bgr.dtype} image: {err}")
            return None
        frame = Frame(
            modality=Modality.CAMERA,
            sensor_id=self.sensor_id,
            timestamp=stamp,
            wall_time=time.time() - (time.monotonic() - stamp),
            data=rgb,
            index=self._index,
        )
        self._index += 1
        return frame

    def _disconnect(self) -> None:
        with self._cap_lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None


class CameraDeviceSource(_OpenCVLiveSource):
    """A local camera by OpenCV device index; reconnects with back-off when it disappears."""

    backend = CAMERA_DEVICE
    config: CameraDeviceConfig

    def _describe(self) -> str:
        return f"camera device index {self.config.index}"

    def _open_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self.config.index)


class CameraStreamSource(_OpenCVLiveSource):
    """A network stream through FFmpeg; the end of the stream or a network error reconnects."""

    backend = CAMERA_STREAM
    config: CameraStreamConfig

    def _describe(self) -> str:
        return f"stream {self.config.url}"

    def _open_capture(self) -> cv2.VideoCapture:
        ms = int(self.config.timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(self.config.url, cv2.CAP_FFMPEG, params)


def _open_video(path: Path) -> tuple[cv2.VideoCapture, float]:
    """Open a video file; return the capture and its frame rate, or raise SourceError naming the path."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{path}: not a readable video (FFmpeg cannot open the container or codec)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and fps > 0):
        cap.release()
        raise SourceError(f"{path}: the container states no frame rate (got {fps})")
    return cap, fps


class CameraFileSource(Source):
    """Frames of a video file, as fast as they are read (a finite source: `read` never waits).

    Damaged files: a frame that fails to decode is skipped and counted as `decode_error`; the
    frames after it still come. When the file ends before the frame count its container states
    (cut short, or frames that never decode), that is counted once per pass as `truncated`.
    """

    backend = CAMERA_FILE
    config: CameraFileConfig

    def __init__(self, config: CameraFileConfig, *, modality: Modality | None = None) -> None:
        super().__init__(config, modality=modality)
        self._path = Path(config.path)
        self._cap: cv2.VideoCapture | None = None
        self._fps = 0.0
        self._declared = 0  # frames per pass the container states; <= 0 when it does not say
        self._index = 0  # Frame.index: counts delivered and undecodable frames over all passes
        self._offset = 0.0  # media time at which the current pass started (loop)
        self._wall0 = 0.0
        self._ended = False
        self._start_pass()

    def _start_pass(self) -> None:
        self._position = 0  # frames of this pass consumed, good or undecodable
        self._decoded = 0
        self._errors = 0
        self._last_ts = -math.inf
        self._last_position = 0

    def open(self) -> None:
        if not self._path.is_file():
            raise SourceError(f"camera {self.sensor_id!r}: video file not found: {self._path}")
        self._cap, self._fps = _open_video(self._path)
        self._declared = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        # Media time is mapped onto the wall clock of the moment the file was opened.
        self._wall0 = time.time()

    def read(self, timeout: float | None = None) -> Frame:
        """The next decodable frame; raises EndOfStream after the last (never, with `loop`)."""
        while not self._ended:
            frame = self._next_frame()
            if frame is not None:
                return frame
            self._end_pass()
            self._ended = not (self.config.loop and self._decoded)
            if not self._ended:
                self._rewind()
        raise EndOfStream(f"{self._path}: end of video")

    def _next_frame(self) -> Frame | None:
        """Grab and decode the next good frame of this pass, counting bad ones; None at the end."""
        if self._cap is None:
            raise SourceError(f"camera {self.sensor_id!r}: read() on a source that is not open")
        while True:
            failures = 0
            while not self._cap.grab():
                failures += 1
                if failures >= self._failures_allowed():
                    return None
            ok, bgr = self._cap.retrieve()
            bad = failures + (0 if ok else 1)
            for n in range(bad):
                self.skip("decode_error", f"{self._path}: frame {self._position + n} could not be decoded")
            self._position += failures + 1
            self._errors += bad
            if ok:
                return self._make_frame(bgr)

    def _failures_allowed(self) -> int:
        """How many failed grabs in a row may still be bad frames rather than the end of the file."""
        if self._declared > 0:
            return max(1, min(self._declared - self._position, MAX_DECODE_ERRORS_IN_A_ROW))
        return MAX_DECODE_ERRORS_IN_A_ROW

    def _make_frame(self, bgr: np.ndarray) -> Frame:
        ts = self._timestamp()
        self._decoded += 1
        self.stats.frames += 1
        frame = Frame(
            modality=Modality.CAMERA,
            sensor_id=self.sensor_id,
            timestamp=self._offset + ts,
            wall_time=self._wall0 + self._offset + ts,
            data=_to_rgb(bgr, self.config.size),
            index=self._index + self._position - 1,
        )
        self._last_ts, self._last_position = ts, self._position
        return frame

    def _timestamp(self) -> float:
        """Media time of the frame just grabbed, seconds from the start of the pass."""
        assert self._cap is not None
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if math.isfinite(ms) and ms >= 0 and ms / 1000 > self._last_ts:
            return ms / 1000
        # No usable container time: count frames (including undecodable ones) at the stated rate.
        if self._last_ts == -math.inf:
            return (self._position - 1) / self._fps
        return self._last_ts + (self._position - self._last_position) / self._fps

    def _end_pass(self) -> None:
        if self._declared > 0 and self._decoded + self._errors < self._declared:
            self.skip(
                "truncated",
                f"{self._path}: the container states {self._declared} frames, "
                f"the file ends after {self._decoded + self._errors}",
            )

    def _rewind(self) -> None:
        """Reopen the file for the next pass; its timestamps continue after the last frame."""
        assert self._cap is not None
        self._cap.release()
        self._offset += self._last_ts + 1 / self._fps
        self._index += self._position
        self._cap, self._fps = _open_video(self._path)
        self._start_pass()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@register_probe(lambda path: path.suffix.lower() in VIDEO_SUFFIXES)
def probe_video(path: Path) -> FileReport:
    """Describe a video file from its container; frames are counted by decoding only if it has no count."""
    try:
        cap, fps = _open_video(path)
    except SourceError as err:
        raise InputError(str(err)) from None
    try:
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", errors="replace")
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, first = cap.read()
        if not ok or first is None:
            raise InputError(f"{path}: the first frame cannot be decoded (codec {fourcc!r})")
        frames = declared
        if frames <= 0:
            frames = 1
            while cap.grab():
                frames += 1
    finally:
        cap.release()
    height, width = first.shape[:2]
    return FileReport(
        path=str(path),
        modality=Modality.CAMERA,
        backend="file",
        frames=frames,
        start=0.0,
        end=(frames - 1) / fps,
        shapes=f"{height}x{width}x3 uint8",
        details={
            "codec": fourcc.strip("\x00"),
            "fps": fps,
            "frame_count": "container" if declared > 0 else "decoded",
        },
    )
