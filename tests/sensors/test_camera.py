"""Camera sources, preprocessor and probe against videos written by OpenCV's real encoders."""

from __future__ import annotations

import functools
import http.server
import itertools
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fusion.config import parse_config
from fusion.errors import ConfigError, SourceError
from fusion.sample import Frame, Modality
from fusion.sensors import EndOfStream, make_source, parse_source
from fusion.sensors.opencv import CameraDeviceSource, CameraFileSource, CameraStreamSource, probe_video
from fusion.sensors.opencv_config import CameraDeviceConfig, CameraFileConfig, CameraStreamConfig
from fusion.sensors.preprocess_config import CameraPreprocessConfig, Normalize
from fusion.sensors.preprocessors import CameraPreprocessor, from_patches

FPS = 10.0
N_FRAMES = 12
H, W = 48, 64
REPO = Path(__file__).resolve().parents[2]


def make_bgr(i: int) -> np.ndarray:
    """Frame i as OpenCV writes it: left half pure red, right half a grey level that encodes i."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (0, 0, 255)  # BGR red
    img[:, W // 2 :] = 10 + 15 * i
    return img


def index_of(rgb: np.ndarray) -> int:
    """Recover i from a decoded RGB frame of any size (the grey half survives lossy coding)."""
    grey = rgb[:, rgb.shape[1] * 3 // 4 :].mean()
    return round((grey - 10) / 15)


def write_video(path: Path, fourcc: str, n: int = N_FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened(), f"no {fourcc} encoder"
    for i in range(n):
        writer.write(make_bgr(i))
    writer.release()
    return path


@pytest.fixture
def avi(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.avi", "MJPG")


@pytest.fixture
def mp4(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", "mp4v")


def read_all(config: CameraFileConfig) -> tuple[list[Frame], CameraFileSource]:
    with CameraFileSource(config) as src:
        frames = list(src)
        with pytest.raises(EndOfStream):
            src.read()
    return frames, src


@pytest.mark.parametrize("fixture", ["avi", "mp4"])
def test_file_frames_are_rgb_in_order_with_container_times(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(fixture)
    frames, src = read_all(CameraFileConfig(path=str(path)))
    assert [index_of(f.data) for f in frames] == list(range(N_FRAMES))
    assert [f.index for f in frames] == list(range(N_FRAMES))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(N_FRAMES) / FPS, atol=1e-6)
    first = frames[0].data
    assert first.shape == (H, W, 3) and first.dtype == np.uint8
    red = first[:, : W // 2 - 4].reshape(-1, 3).mean(axis=0)  # away from the colour edge
    assert red[0] > 200 and red[1] < 40 and red[2] < 40, f"not RGB: mean of the red half is {red}"
    assert src.stats.frames == N_FRAMES and not src.stats.errors


def test_file_resize_at_capture(avi: Path) -> None:
    frames, _ = read_all(CameraFileConfig(path=str(avi), width=32, height=24))
    assert {f.data.shape for f in frames} == {(24, 32, 3)}
    assert [index_of(f.data) for f in frames] == list(range(N_FRAMES))


def test_resize_needs_width_and_height() -> None:
    with pytest.raises(ConfigError, match="width and height"):
        parse_config(CameraFileConfig, {"backend": "file", "path": "x.avi", "width": 32})


def test_file_loop_keeps_time_running(avi: Path) -> None:
    with CameraFileSource(CameraFileConfig(path=str(avi), loop=True)) as src:
        frames = [src.read() for _ in range(2 * N_FRAMES + 3)]
    assert [index_of(f.data) for f in frames] == [i % N_FRAMES for i in range(2 * N_FRAMES + 3)]
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(2 * N_FRAMES + 3) / FPS, atol=1e-6)
    assert [f.index for f in frames] == list(range(2 * N_FRAMES + 3))


def jpeg_starts(data: bytes) -> list[int]:
    """Offsets of the JPEG images in an MJPEG AVI (SOI markers; entropy data never holds FF D8)."""
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == N_FRAMES
    return starts


def test_corrupt_frame_is_skipped_counted_and_the_stream_goes_on(avi: Path) -> None:
    data = bytearray(avi.read_bytes())
    starts = jpeg_starts(data)
    # Zero frame 5's JPEG up to the next chunk header ('00dc' + size, 8 bytes): no image left in it.
    data[starts[5] : starts[6] - 8] = bytes(starts[6] - 8 - starts[5])
    avi.write_bytes(bytes(data))

    frames, src = read_all(CameraFileConfig(path=str(avi)))
    expected = [i for i in range(N_FRAMES) if i != 5]
    assert [index_of(f.data) for f in frames] == expected
    assert [f.index for f in frames] == expected  # the gap shows where the frame was lost
    np.testing.assert_allclose([f.timestamp for f in frames], np.array(expected) / FPS, atol=1e-6)
    assert src.stats.errors == {"decode_error": 1}


def test_truncated_avi_delivers_what_is_there_then_ends(avi: Path) -> None:
    # The AVI index sits at the end, but FFmpeg reads the frames before the cut without it;
    # after the cut every grab fails, and the shortfall against the header's count is counted once.
    data = avi.read_bytes()
    avi.write_bytes(data[: jpeg_starts(data)[7] - 100])  # cut inside frame 6
    frames, src = read_all(CameraFileConfig(path=str(avi)))
    assert [index_of(f.data) for f in frames][:6] == list(range(6))  # every whole frame comes
    assert len(frames) < N_FRAMES
    assert src.stats.errors == {"truncated": 1}


def test_truncated_mp4_fails_at_open_naming_the_path(mp4: Path) -> None:
    # OpenCV's MP4 muxer writes the index (moov atom) last: half a file has no index at all.
    data = mp4.read_bytes()
    mp4.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=re.escape(str(mp4))):
        CameraFileSource(CameraFileConfig(path=str(mp4))).open()


def test_missing_or_garbage_file_fails_at_open_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=re.escape(f"not found: {missing}")):
        CameraFileSource(CameraFileConfig(path=str(missing))).open()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match=re.escape(str(garbage))):
        CameraFileSource(CameraFileConfig(path=str(garbage))).open()


def test_make_source_builds_the_file_backend(avi: Path) -> None:
    src = make_source(
        Modality.CAMERA,
        parse_source(Modality.CAMERA, {"backend": "file", "path": str(avi), "sensor_id": "front"}),
    )
    assert isinstance(src, CameraFileSource)
    with src:
        assert src.read().sensor_id == "front"


def test_probe_reports_container_facts(avi: Path, mp4: Path) -> None:
    report = probe_video(avi)
    assert report.modality is Modality.CAMERA and report.backend == "file"
    assert report.frames == N_FRAMES
    assert report.end == pytest.approx((N_FRAMES - 1) / FPS)
    assert report.rate == pytest.approx(FPS)
    assert report.shapes == f"{H}x{W}x3 uint8"
    assert report.details["codec"] == "MJPG" and report.details["fps"] == pytest.approx(FPS)
    assert probe_video(mp4).frames == N_FRAMES


def test_probe_rejects_unreadable_file_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF" + bytes(200))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        probe_video(bad)


def test_missing_device_fails_at_open_naming_the_index() -> None:
    # No camera at index 99 here (nor on most machines): the real OpenCV call fails.
    with pytest.raises(SourceError, match="index 99"):
        CameraDeviceSource(CameraDeviceConfig(index=99)).open()


class FakeWebcam:
    """Stands in for the camera behind cv2.VideoCapture(index): real decoded frames, pluggable.

    Like a real device, `read()` blocks until the next frame is exposed; the test exposes
    frames one by one with `expose(n)`.
    """

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.served = 0
        self.plugged = True
        self._exposed = threading.Semaphore(0)

    def expose(self, n: int = 1) -> None:
        self._exposed.release(n)

    def capture(self, index: int, *args: object) -> FakeWebcam.Capture:
        return FakeWebcam.Capture(self, index)

    class Capture:
        def __init__(self, cam: FakeWebcam, index: int) -> None:
            self.cam = cam
            self.opened = cam.plugged and index == 0

        def isOpened(self) -> bool:
            return self.opened

        def read(self) -> tuple[bool, np.ndarray | None]:
            if not (self.opened and self.cam._exposed.acquire(timeout=5) and self.cam.plugged):
                return False, None
            frame = self.cam.frames[self.cam.served % len(self.cam.frames)]
            self.cam.served += 1
            return True, frame.copy()

        def release(self) -> None:
            self.opened = False


def wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


@pytest.fixture
def webcam(mp4: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWebcam:
    cap = cv2.VideoCapture(str(mp4))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    cam = FakeWebcam(frames)
    monkeypatch.setattr(cv2, "VideoCapture", cam.capture)
    return cam


def test_device_delivers_reconnects_and_serves_latest(webcam: FakeWebcam) -> None:
    src = CameraDeviceSource(CameraDeviceConfig(index=0, width=32, height=24))
    before = time.monotonic()
    src.open()
    try:
        webcam.expose(3)
        got = [src.read(timeout=5) for _ in range(3)]
        assert [index_of(f.data) for f in got] == [0, 1, 2]
        assert got[0].data.shape == (24, 32, 3) and got[0].data[0, 0, 0] > 200  # resized, RGB
        stamps = [f.timestamp for f in got]
        assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.monotonic()

        with pytest.raises(TimeoutError):
            src.read(timeout=0.1)

        webcam.expose(4)
        wait_until(lambda: src.stats.frames == 7)
        latest = src.read_latest(max_age=5.0)
        assert latest is not None and index_of(latest.data) == 6
        assert src.stats.dropped["superseded"] == 3
        assert src.read_latest(max_age=5.0) is None

        webcam.plugged = False  # unplugged: the next read fails, reopening fails too
        webcam.expose()
        wait_until(lambda: src.stats.errors["reconnect_failed"] >= 1)
        webcam.plugged = True
        webcam.expose(2)
        again = src.read(timeout=5)
        assert index_of(again.data) == 7  # the stream picks up where the device is
        assert again.index == 7 and again.timestamp > latest.timestamp
        assert src.stats.reconnects >= 1 and src.stats.errors["device_lost"] >= 1
    finally:
        webcam.expose(1000)  # let a blocked read return so close() can release the device
        src.close()


@pytest.fixture
def http_dir(tmp_path: Path):
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class RoomyStreamSource(CameraStreamSource):
    """The stream source with room for every frame the test may fall behind by.

    The served file arrives far faster than real time; with the shipped 8-frame queue a reader
    starved of CPU for a moment loses the oldest frames (counted as queue_full, as designed),
    which is not what this test is about.
    """

    queue_size = 4096


def test_stream_reads_over_http_and_reconnects_at_the_end(avi: Path, http_dir: str) -> None:
    with RoomyStreamSource(CameraStreamConfig(url=f"{http_dir}/{avi.name}")) as src:
        got = [src.read(timeout=5) for _ in range(N_FRAMES + 3)]
    # The served file ends after N_FRAMES; the source reconnects and the stream starts over.
    assert [index_of(f.data) for f in got] == [i % N_FRAMES for i in range(N_FRAMES + 3)]
    assert src.stats.dropped["queue_full"] == 0
    assert src.stats.reconnects >= 1
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(got))


def test_unreachable_stream_fails_at_open_naming_the_url() -> None:
    with pytest.raises(SourceError, match=re.escape("127.0.0.1:9/none.avi")):
        CameraStreamSource(CameraStreamConfig(url="http://127.0.0.1:9/none.avi", timeout_s=2.0)).open()


def camera_frame(image: np.ndarray) -> Frame:
    return Frame(modality=Modality.CAMERA, sensor_id="cam", timestamp=0.0, wall_time=0.0, data=image)


def test_patch_preprocessor_packs_each_block_of_pixels_into_one_row() -> None:
    image = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    seg = CameraPreprocessor(CameraPreprocessConfig(height=60, width=80, patch=2))(camera_frame(image))
    assert seg.grid == (60, 80) and seg.values.shape == (60 * 80, 12)
    full = cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA) / 255  # (120, 160, 3)
    # Row r*80 + c holds pixels (2r..2r+1, 2c..2c+1), row-major, RGB each.
    r, c = 17, 41
    expected = full[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(-1)
    np.testing.assert_allclose(seg.values[r * 80 + c], expected, atol=1 / 255)
    np.testing.assert_allclose(from_patches(seg.values, (60, 80), 2), full, atol=1 / 255)


def test_preprocessor_matches_cv2_resize() -> None:
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    seg = CameraPreprocessor()(camera_frame(image))
    expected = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).reshape(-1, 3) / 255
    assert seg.grid == (64, 64) and seg.values.shape == (64 * 64, 3) and seg.values.dtype == np.float32
    np.testing.assert_allclose(seg.values, expected, atol=1 / 255)


def test_preprocessor_imagenet_normalization_and_grid_from_config() -> None:
    cfg = parse_config(CameraPreprocessConfig, {"height": 8, "width": 16, "normalize": "imagenet"})
    assert cfg.normalize is Normalize.IMAGENET
    image = np.full((8, 16, 3), (255, 128, 0), np.uint8)
    seg = CameraPreprocessor(cfg)(camera_frame(image))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(seg.values[0], (np.array([255, 128, 0]) / 255 - mean) / std, rtol=1e-5)
    assert seg.grid == (8, 16) and seg.values.shape == (128, 3)


def test_the_training_preprocess_makes_what_the_model_takes() -> None:
    model = yaml.safe_load((REPO / "configs/model/sensor-small.yaml").read_text())["inputs"]["camera"]
    train = yaml.safe_load((REPO / "configs/train/sensor-small.yaml").read_text())
    cfg = CameraPreprocessConfig(**train["data"]["preprocess"]["camera"])
    seg = CameraPreprocessor(cfg)(camera_frame(np.zeros((240, 320, 3), np.uint8)))
    assert (
        list(seg.grid) == model["example_shape"] and seg.values.shape[1] == model["channels"] == cfg.channels
    )


def test_preprocessor_rejects_other_modalities() -> None:
    audio = Frame(
        modality=Modality.MICROPHONE,
        sensor_id="mic0",
        timestamp=0.0,
        wall_time=0.0,
        data=np.zeros(16, np.float32),
        sample_rate=16000.0,
    )
    with pytest.raises(ValueError, match="mic0"):
        CameraPreprocessor()(audio)
