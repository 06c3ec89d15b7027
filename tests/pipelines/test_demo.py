"""`fusion demo` in a real browser: headless Chromium driven over the DevTools protocol.

One demo runs for the whole module, as a subprocess with its own Ray (no Ray in this process, so
the two-core machine runs one cluster at a time). Its camera is a live MJPEG stream served by the
test from OpenCV-encoded frames; its microphone and LiDAR are devices that are not there, so the
simulated world stands in for them. The tests run in file order against that one demo.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import yaml

from fusion.detection.boxes import Box3D
from fusion.fuser import PreprocessConfig
from fusion.sample import FusedSample, Modality, Prediction, Segment
from fusion.sensors import make_source, parse_source
from fusion.sensors.preprocess_config import CameraPreprocessConfig
from fusion.sim.truth import object_list
from fusion.sim.world import World, WorldConfig
from pipelines.demo import render
from pipelines.demo.sources import SensorPlan, resolve_sources
from pipelines.demo.state import DemoState
from pipelines.demo.truth import SimTruth

REPO = Path(__file__).resolve().parents[2]
# The `fusion` command of this checkout (`fusion_cli/__main__.py` calls what the installed script
# calls), so the test does not depend on the installed script having been regenerated.
FUSION = [sys.executable, "-m", "fusion_cli"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-crash-reporter",
    "--window-size=1280,1180",
]
VIEWPORT = (1280, 1180)  # tall enough for the whole page
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed")


# ---- a live camera: an MJPEG stream over HTTP, as IP cameras serve it --------------------------
class MjpegCamera:
    """Serves OpenCV-encoded JPEG frames of a moving disc as multipart/x-mixed-replace at ~20 fps."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                k = 0
                while not camera.stopped.is_set():
                    try:
                        self.wfile.write(camera.part(k))
                    except OSError:
                        return
                    k += 1
                    time.sleep(0.05)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def part(k: int) -> bytes:
        img = np.full((240, 320, 3), (90, 60, 30), np.uint8)
        cv2.rectangle(img, (0, 160), (320, 240), (60, 110, 60), -1)
        cv2.circle(img, (40 + (k * 6) % 240, 120), 28, (40, 170, 240), -1)
        ok, jpg = cv2.imencode(".jpg", img)
        assert ok
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
        return head + jpg.tobytes() + b"\r\n"

    def stop(self) -> None:
        """The camera goes away: open streams end, new connections are refused."""
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


# ---- a minimal DevTools-protocol client ----------------------------------------------------------
class Browser:
    """Headless Chromium with one page, driven over its DevTools websocket."""

    def __init__(self, url: str, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        try:
            wait_for(
                lambda: port_file.exists() and port_file.read_text().strip(), 30, "Chromium's DevTools port"
            )
            port = int(port_file.read_text().split()[0])
            targets = wait_for(lambda: self._pages(port), 30, "Chromium's page target")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.loop = asyncio.new_event_loop()
        self.ws = self.loop.run_until_complete(self._connect(targets[0]["webSocketDebuggerUrl"]))
        self._id = 0
        width, height = VIEWPORT
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    @staticmethod
    def _pages(port: int) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            return [t for t in json.load(r) if t["type"] == "page"]

    async def _connect(self, url: str) -> aiohttp.ClientWebSocketResponse:
        self.session = aiohttp.ClientSession()
        return await self.session.ws_connect(url, max_msg_size=0)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        return self.loop.run_until_complete(asyncio.wait_for(self._call(self._id, method, params), 30))

    async def _call(self, call_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == call_id:  # events in between are not needed
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (what a user does, not element.click())."""
        box = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> np.ndarray:
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def close(self) -> None:
        self.loop.run_until_complete(self.ws.close())
        self.loop.run_until_complete(self.session.close())
        self.loop.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = check()
        except (OSError, RuntimeError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- the page, read back -------------------------------------------------------------------------
PAGE_STATE = """(() => {
  const t = (id) => document.getElementById(id).textContent;
  const std = (id) => {
    const c = document.getElementById(id);
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0, s = 0, s2 = 0;
    for (let i = 0; i < px.length; i += 4) { const v = (px[i] + px[i + 1] + px[i + 2]) / 3; n++; s += v; s2 += v * v; }
    return Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2));
  };
  const exactly = (id, [r, g, b]) => {
    const c = document.getElementById(id);
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) n += px[i] === r && px[i + 1] === g && px[i + 2] === b;
    return n;
  };
  const drawn = (id) => { const d = document.getElementById(id).dataset; return { objects: +d.objects, truth: +d.truth }; };
  const rows = [...document.querySelectorAll('#sensors tbody tr')].map((r) => [r.dataset.sensor, r.children[3].textContent]);
  return {
    connection: t('connection'), status: t('status'), seq: t('seq'), label: t('label'), latency: t('latency'),
    rate: t('rate'), modalities: [...document.querySelectorAll('#modalities .badge')].map((b) => b.textContent),
    sensors: Object.fromEntries(rows), warnings: t('warnings'), bars: document.querySelectorAll('#probs .bar').length,
    metrics: document.getElementById('metrics').href,
    std: { camera: std('camera'), lidar: std('lidar'), spectrogram: std('spectrogram') },
    objects: document.querySelectorAll('#objects tr.object').length,
    truth: document.querySelectorAll('#truth tr.object').length, truth_caption: t('truth-caption'),
    drawn: { camera: drawn('camera'), lidar: drawn('lidar') },
    truth_pixels: exactly('lidar', TRUTH_RGB),
  };
})()""".replace("TRUTH_RGB", json.dumps(render.TRUTH_RGB))


def page(browser: Browser) -> dict[str, Any]:
    return browser.js(PAGE_STATE)


def seq_after(browser: Browser, seq: int, timeout: float = 20) -> dict[str, Any]:
    """The page once it shows a prediction newer than `seq`."""
    return wait_for(
        lambda: (s := page(browser))["seq"].isdigit() and int(s["seq"]) > seq and s,
        timeout,
        f"a sample after {seq}",
    )


# ---- fixtures ------------------------------------------------------------------------------------
def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_config(path: Path, camera_url: str) -> Path:
    cfg = yaml.safe_load((REPO / "configs/pipeline/live.yaml").read_text())
    sensors = cfg["rigs"][0]["sensors"]
    sensors["cam0"]["source"] = {"backend": "stream", "url": camera_url, "width": 320, "height": 240}
    sensors["mic0"]["source"]["device"] = "no-such-microphone"
    sensors["lidar0"]["source"]["port"] = _free_udp_port()  # nothing sends to it
    cfg["inference"]["num_cpus"] = 0.5
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def camera() -> Iterator[MjpegCamera]:
    cam = MjpegCamera()
    yield cam
    if not cam.stopped.is_set():
        cam.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, camera: MjpegCamera) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("demo")
    config = demo_config(tmp / "demo.yaml", camera.url)
    stderr = (tmp / "stderr.txt").open("w")
    cmd = [*FUSION, "demo", "--config", str(config), "--port", "0", "--probe-timeout", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip())
            if match := re.search(r"serving (http://127\.0\.0\.1:(\d+)/)", line):
                break
        else:
            raise AssertionError(
                f"the demo ended before serving: {lines} {(tmp / 'stderr.txt').read_text()[-2000:]}"
            )
        yield {
            "proc": proc,
            "url": match.group(1),
            "port": int(match.group(2)),
            "lines": lines,
            "stderr": tmp / "stderr.txt",
        }
    finally:
        if proc.poll() is None:  # a test failed before the last one stopped it
            proc.send_signal(signal.SIGINT)  # a killed driver would leave its Ray processes behind
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()


@pytest.fixture(scope="module")
def browser(demo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(demo["url"], tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


# ---- the demo, end to end ------------------------------------------------------------------------
def test_start_up_announces_which_sensors_are_simulated(demo: dict[str, Any]) -> None:
    text = "\n".join(demo["lines"])
    assert re.search(r"cam0 \(camera\): live stream \(.*url=http://", text), text
    assert re.search(r"mic0 \(microphone\): .*no-such-microphone.* -> SIMULATED world instead", text), text
    assert re.search(
        r"lidar0 \(lidar\): velodyne .* gave no frame within 1 s -> SIMULATED world instead", text
    ), text


def test_a_second_demo_on_the_same_port_fails_naming_the_port(demo: dict[str, Any]) -> None:
    cmd = [*FUSION, "demo", "--port", str(demo["port"])]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {demo['port']} on 127.0.0.1 is already in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@needs_chromium
def test_page_updates_live_with_every_sensor_drawn(demo: dict[str, Any], browser: Browser) -> None:
    # The first ticks may precede every sensor's first frame: wait for one that has all three.
    everything = ["camera", "lidar", "microphone"]
    first = wait_for(lambda: (s := page(browser))["modalities"] == everything and s, 120, "a full prediction")
    assert first["status"] == "running" and first["bars"] == 7, first
    assert first["connection"] == "connected"
    later = seq_after(browser, int(first["seq"]))
    latencies = {first["latency"], later["latency"]}
    last = later
    for _ in range(3):  # the numbers move with every sample
        last = seq_after(browser, int(last["seq"]))
        latencies.add(last["latency"])
    assert len(latencies) > 1 and all(re.fullmatch(r"\d+ ms", x) for x in latencies), latencies
    assert float(last["rate"]) > 1, last
    assert last["bars"] == 7 and last["label"] not in ("", "-")
    assert last["modalities"] == everything, last
    assert set(last["sensors"].values()) == {"present"}, last
    # Each picture has structure (a blank or flat canvas has a pixel std-dev near 0).
    assert min(last["std"].values()) > 8, last["std"]
    assert "mic0 (microphone)" in last["warnings"] and "SIMULATED" in last["warnings"]
    assert last["metrics"].startswith("http://") and last["metrics"].endswith("/metrics")
    # The LiDAR is simulated, so the truth is known: listed, and drawn dashed on the bird's-eye
    # view (its exact colour); the camera is a live stream, uncalibrated: no boxes on it.
    seen = wait_for(
        lambda: (s := page(browser))["truth"] and s["truth_pixels"] > 20 and s,
        30,
        "objects of the simulated world",
    )
    assert seen["truth_caption"] == "truth (simulated world)", seen
    assert seen["drawn"]["lidar"]["truth"] == seen["truth"], seen
    assert seen["drawn"]["lidar"]["objects"] <= seen["objects"], seen
    assert seen["drawn"]["camera"] == {"objects": 0, "truth": 0}, seen
    shot = browser.screenshot(REPO / "artifacts" / "demo.png")
    assert shot.shape[:2] == VIEWPORT[::-1] and shot.std() > 20


@needs_chromium
def test_switching_a_sensor_off_marks_it_missing_while_predictions_go_on(browser: Browser) -> None:
    start = int(page(browser)["seq"])
    browser.click('button[data-sensor="lidar0"]')
    off = wait_for(
        lambda: (
            (s := page(browser))["sensors"]["lidar0"] == "off" and "lidar missing" in s["modalities"] and s
        ),
        15,
        "LiDAR switched off",
    )
    after = seq_after(browser, int(off["seq"]))
    assert "lidar missing" in after["modalities"] and int(after["seq"]) > start
    assert after["sensors"]["cam0"] == "present"
    browser.click('button[data-sensor="lidar0"]')
    wait_for(
        lambda: (s := page(browser))["sensors"]["lidar0"] == "present" and "lidar" in s["modalities"],
        15,
        "LiDAR back on",
    )


@needs_chromium
def test_a_reloaded_page_gets_the_stream_again(browser: Browser) -> None:
    browser.send("Page.reload", ignoreCache=True)
    shown = wait_for(
        lambda: (s := page(browser))["seq"].isdigit() and s, 20, "the reloaded page's first update"
    )
    seq_after(browser, int(shown["seq"]))


@needs_chromium
def test_a_camera_that_fails_mid_demo_shows_missing_and_the_demo_goes_on(
    demo: dict[str, Any], browser: Browser, camera: MjpegCamera
) -> None:
    camera.stop()
    gone = wait_for(
        lambda: (
            (s := page(browser))["sensors"]["cam0"] == "missing" and "camera missing" in s["modalities"] and s
        ),
        20,
        "the camera marked missing",
    )
    after = seq_after(browser, int(gone["seq"]))
    assert "camera missing" in after["modalities"] and demo["proc"].poll() is None


def test_ctrl_c_stops_the_demo_cleanly(demo: dict[str, Any]) -> None:
    demo["proc"].send_signal(signal.SIGINT)
    assert demo["proc"].wait(timeout=60) == 0
    summary = [
        json.loads(line) for line in demo["stderr"].read_text().splitlines() if line.startswith('{"summary"')
    ]
    assert summary and summary[0]["summary"]["predictions"] > 10, summary


# ---- pieces, without Ray or a browser ------------------------------------------------------------
def _segments(rng: np.random.Generator) -> dict[Modality, Segment]:
    cam = rng.random((64 * 64, 3), dtype=np.float32)
    mic = rng.uniform(-1, 1, (32 * 32, 1)).astype(np.float32)
    pts = rng.uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    lidar = Segment(values=rng.random((500, 2), dtype=np.float32), positions=pts)
    return {
        Modality.CAMERA: Segment(values=cam, grid=(64, 64)),
        Modality.MICROPHONE: Segment(values=mic, grid=(32, 32)),
        Modality.LIDAR: lidar,
    }


def _prediction(seq: int, modalities: list[str]) -> Prediction:
    probs = [0.1, 0.6, 0.3]
    return Prediction(
        rig="r", seq=seq, timestamp=float(seq), label="b", probs=probs, position=[10.0, -5.0, 0.0],
        modalities=modalities, latency_s=0.05 + seq / 1000, model_version="m@random-init",
    )  # fmt: skip


def test_renderings_show_their_data() -> None:
    segs = _segments(np.random.default_rng(0))
    cam = render.camera_image(segs[Modality.CAMERA], CameraPreprocessConfig())
    assert cam.shape == (64, 64, 3) and cam.dtype == np.uint8 and cam.std() > 50
    assert render.annotate(cam, "car 80%").shape == (320, 320, 3)
    patched = Segment(values=np.repeat(segs[Modality.CAMERA].values, 4, axis=1), grid=(64, 64))
    big = render.camera_image(patched, CameraPreprocessConfig(patch=2))  # 2 x 2 pixels per cell
    assert big.shape == (128, 128, 3) and big.std() > 50
    spec = render.spectrogram_image(segs[Modality.MICROPHONE])
    assert spec.shape == (32, 32, 3) and spec.std() > 20
    empty = render.lidar_bev(None, range_m=50.0)
    bev = render.lidar_bev(segs[Modality.LIDAR], range_m=50.0)
    changed = (bev != empty).any(axis=2)
    assert changed.sum() > 500  # the points were drawn...
    # ...and the +-25 m cloud stays inside the middle half of the +-50 m view.
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 70 and rows.max() <= 250 and cols.min() >= 70 and cols.max() <= 250
    assert render.data_url(bev, "png").startswith("data:image/png;base64,")


CAR = Box3D(class_name="car", center=(20.0, 5.0, -0.9), size=(4.0, 2.0, 1.5), yaw=0.0, score=0.8)


def _colour(img: np.ndarray, col: float, row: float, rgb: tuple[int, int, int]) -> bool:
    """Whether a pixel within 1 px of (col, row) has exactly the colour `rgb`."""
    c, r = round(col), round(row)
    return bool((img[r - 1 : r + 2, c - 1 : c + 2] == rgb).all(axis=2).any())


def test_bev_boxes_lie_where_the_geometry_says() -> None:
    # +-50 m over 320 px: 3.2 px/m, the rig at (160, 160), x up, y to the left.
    px = lambda x, y: (160 - 3.2 * y, 160 - 3.2 * x)  # noqa: E731  (col, row) of a point in metres
    bus = Box3D(class_name="bus", center=(20.0, 5.0, 0.0), size=(10.0, 6.0, 3.0), yaw=0.0, score=0.8)
    img = render.lidar_bev(None, range_m=50.0)
    assert render.draw_bev_boxes(img, [bus], range_m=50.0, truth=False) == 1
    for x, y in [(25, 5), (15, 5), (20, 8), (20, 2), (22.5, 5)]:  # the middle of each side, the tick
        assert _colour(img, *px(x, y), render.PREDICTED_RGB), (x, y)
    for x, y in [(17, 6.5), (17.5, 5), (30, 5), (20, -2)]:  # inside, behind the centre, outside
        assert not _colour(img, *px(x, y), render.PREDICTED_RGB), (x, y)
    # Turned a quarter left, the length lies along y and the front faces +y.
    turned = dataclasses.replace(bus, yaw=math.pi / 2)
    img = render.lidar_bev(None, range_m=50.0)
    render.draw_bev_boxes(img, [turned], range_m=50.0, truth=False)
    for x, y in [(23, 5), (17, 5), (20, 10), (20, 0), (20, 7.5)]:
        assert _colour(img, *px(x, y), render.PREDICTED_RGB), (x, y)
    for x, y in [(25, 5), (20, 2.5)]:  # where the unturned side was; no tick towards the rear
        assert not _colour(img, *px(x, y), render.PREDICTED_RGB), (x, y)
    truth = Box3D(class_name="car", center=(-30.0, 0.0, -0.9), size=(10.0, 10.0, 1.5), yaw=0.0)
    img = render.lidar_bev(None, range_m=50.0)
    far = Box3D(class_name="car", center=(80.0, 0.0, -0.9), size=(4.0, 2.0, 1.5), yaw=0.0)
    assert render.draw_bev_boxes(img, [truth, far], range_m=50.0, truth=True) == 1  # `far` is out of view
    side = (img[round(160 + 3.2 * 35), 160 - 16 : 160 + 16] == render.TRUTH_RGB).all(axis=1)
    assert 0.3 < side.mean() < 0.8, side  # the rear side at x = -35 m is dashed
    assert not (img == render.PREDICTED_RGB).all(axis=2).any()


def test_camera_boxes_are_the_projected_corners() -> None:
    view = render.CameraView(width=320, height=240)
    f = 160 / math.tan(math.radians(22.5))  # the simulated camera's focal length, px
    cube = Box3D(class_name="truck", center=(20.0, 0.0, 0.0), size=(2.0, 2.0, 2.0), yaw=0.0, score=0.5)
    for scale in (1, 2):  # the picture at the frame's size, and enlarged twice
        img = np.zeros((240 * scale, 320 * scale, 3), np.uint8)
        assert render.draw_camera_boxes(img, [cube], view=view, truth=False) == 1
        near, far = f / 19, f / 21  # half the cube's side in px at its near and far faces
        for u, v in [(160, 120 - near), (160, 120 + near), (160 - near, 120), (160 + far, 120 - far)]:
            assert _colour(img, u * scale, v * scale, render.PREDICTED_RGB), (scale, u, v)
        assert not _colour(img, 160 * scale, 120 * scale, render.PREDICTED_RGB)  # the middle: no edge
        assert not _colour(img, (160 + near + 6) * scale, 120 * scale, render.PREDICTED_RGB)
    behind = Box3D(class_name="car", center=(-5.0, 0.0, 0.0), size=(2.0, 2.0, 2.0), yaw=0.0)
    aside = Box3D(class_name="car", center=(5.0, 40.0, 0.0), size=(2.0, 2.0, 2.0), yaw=0.0)
    img = np.zeros((240, 320, 3), np.uint8)
    assert render.draw_camera_boxes(img, [behind, aside], view=view, truth=True) == 0
    assert not img.any()


def _sim_plans(world: WorldConfig, camera: str = "simulated") -> list[SensorPlan]:
    sim = {"backend": "simulated", "realtime": True, "clock": "monotonic", "world": world.model_dump()}
    cam = parse_source(Modality.CAMERA, sim if camera == "simulated" else {"backend": "device", "index": 0})
    lidar = parse_source(Modality.LIDAR, sim)
    return [
        SensorPlan("r", "cam", Modality.CAMERA, camera, "", source=cam),  # type: ignore[arg-type]
        SensorPlan("r", "lidar", Modality.LIDAR, "fallback", "simulated world", source=lidar),
    ]


def test_state_gives_the_objects_and_the_truth_at_the_predictions_scene_time() -> None:
    world = WorldConfig(seed=3, max_objects=4)
    truth_of = World(world)
    scene_t = next(t for t in np.arange(1e9, 1e9 + 200, 0.5) if len(object_list(truth_of, t)) >= 2)
    offset = 1.7e9 - 12345.6  # Unix minus monotonic time on the sensors' host
    tick = scene_t - offset  # the tick on the monotonic clock
    segs = _segments(np.random.default_rng(2))
    # The LiDAR reading, as the fuser books it: its stamp and (a snapshot) its wall time.
    sample = FusedSample(
        seq=7, timestamp=tick, segments=segs, rig="r",
        capture_times={Modality.LIDAR: tick - 0.03}, stage_times={"capture.lidar": scene_t - 0.03},
    )  # fmt: skip
    expected = object_list(truth_of, scene_t)
    for camera in ("simulated", "device"):
        state = DemoState(rig="r", plans=_sim_plans(world, camera), preprocess=PreprocessConfig())
        state.on_sample(sample)
        state.on_prediction(
            dataclasses.replace(_prediction(7, ["camera", "lidar"]), timestamp=tick, objects=[CAR])
        )
        payload = state.payload(state.snapshot())
        [car] = payload["prediction"]["objects"]
        assert car == {
            "class": "car", "score": 0.8, "position": [20.0, 5.0, -0.9], "size": [4.0, 2.0, 1.5],
            "yaw": 0.0, "velocity": [0.0, 0.0], "track_id": None,
        }  # fmt: skip
        assert [(o["class"], o["track_id"]) for o in payload["truth"]] == [
            (b.class_name, b.track_id) for b in expected
        ]
        assert payload["truth"][0]["position"] == [round(v, 2) for v in expected[0].center]
        assert payload["drawn"]["lidar"] == {"truth": len(expected), "objects": 1}
        camera_drawn = payload["drawn"]["camera"]
        if camera == "simulated":  # the world keeps objects in the camera's view about mid-episode
            assert camera_drawn["objects"] == 1 and camera_drawn["truth"] >= 1, camera_drawn
        else:  # a webcam has no calibration: no boxes on its picture
            assert camera_drawn == {"truth": 0, "objects": 0}
    # No simulated sensor: no truth, and no boxes on the camera picture.
    webcam = [SensorPlan("r", "cam", Modality.CAMERA, "device", "device 0")]
    state = DemoState(rig="r", plans=webcam, preprocess=PreprocessConfig())
    state.on_sample(sample)
    state.on_prediction(dataclasses.replace(_prediction(7, ["camera"]), objects=[CAR]))
    payload = state.payload(state.snapshot())
    assert payload["truth"] is None and payload["drawn"]["lidar"] == {"truth": 0, "objects": 1}


def test_truth_time_is_the_scene_time_the_simulated_source_rendered() -> None:
    config = {"backend": "simulated", "realtime": True, "clock": "monotonic", "rate_hz": 20.0}
    source = make_source(Modality.LIDAR, parse_source(Modality.LIDAR, config))
    source.open()
    frame = source.read(timeout=2)
    source.close()
    plan = SensorPlan(
        "r", "lidar", Modality.LIDAR, "simulated", "", source=parse_source(Modality.LIDAR, config)
    )
    truth = SimTruth.of([plan])
    assert truth is not None
    # The fuser books a snapshot's wall time (scene time, realtime) beside its stamp.
    sample = FusedSample(
        seq=0, timestamp=frame.timestamp, segments={}, rig="r",
        capture_times={Modality.LIDAR: frame.timestamp}, stage_times={"capture.lidar": frame.wall_time},
    )  # fmt: skip
    assert truth.scene_time(frame.timestamp, sample) == pytest.approx(frame.wall_time, abs=1e-6)
    assert truth.at(frame.timestamp, sample) == object_list(World(WorldConfig()), frame.wall_time)
    # Without the sample: this host's clocks, which are the sensor's here.
    assert truth.scene_time(frame.timestamp, None) == pytest.approx(frame.wall_time, abs=0.05)


def test_state_keeps_the_newest_prediction_and_its_sample_only() -> None:
    plans = [SensorPlan("r", "cam", Modality.CAMERA, "simulated", "simulated world")]
    state = DemoState(rig="r", plans=plans, preprocess=PreprocessConfig())
    segs = _segments(np.random.default_rng(1))
    for seq in range(5):
        state.on_sample(FusedSample(seq=seq, timestamp=float(seq), segments=segs, rig="r"))
    state.on_sample(FusedSample(seq=0, timestamp=0.0, segments=segs, rig="other"))  # another rig: ignored
    state.on_prediction(_prediction(3, ["camera"]))
    state.on_prediction(_prediction(1, ["camera"]))  # finished late: older than what is shown
    snap = state.snapshot()
    assert snap.prediction is not None and snap.prediction.seq == 3
    assert snap.sample is not None and snap.sample.seq == 3
    payload = state.payload(snap)
    assert payload["prediction"]["random_weights"] and payload["sensors"][0]["state"] == "present"
    assert all(payload["images"][k] for k in ("camera", "spectrogram", "lidar"))
    state.on_prediction(_prediction(4, ["lidar"]))  # the camera is gone from the next sample
    state.set_enabled("cam", False)
    assert state.stats(state.snapshot())["sensors"][0]["state"] == "off"
    state.set_enabled("cam", True)
    assert state.stats(state.snapshot())["sensors"][0]["state"] == "missing"
    with pytest.raises(KeyError, match="no sensor 'mic'"):
        state.set_enabled("mic", False)


def test_simulated_sources_run_on_the_monotonic_clock() -> None:
    plain = make_source(
        Modality.LIDAR,
        parse_source(Modality.LIDAR, {"backend": "simulated", "realtime": True, "rate_hz": 20.0}),
    )
    mono = make_source(
        Modality.LIDAR,
        parse_source(
            Modality.LIDAR, {"backend": "simulated", "clock": "monotonic", "realtime": True, "rate_hz": 20.0}
        ),
    )
    plain.open()
    mono.open()
    a, b = plain.read(timeout=1), mono.read(timeout=1)
    assert a.timestamp == a.wall_time  # the plain simulated world stamps with Unix time...
    assert abs(b.timestamp - time.monotonic()) < 0.5  # ...the demo's with the clock live devices use
    assert math.isclose(b.wall_time - b.timestamp, time.time() - time.monotonic(), abs_tol=0.05)
    assert b.data.shape[1] == 4 and len(b.data) > 100


def test_absent_devices_fall_back_to_the_simulated_world() -> None:
    from pipelines.config import PipelineConfig

    config = PipelineConfig.model_validate(
        {
            "rigs": [
                {
                    "id": "r",
                    "sensors": {
                        "mic": {"modality": "microphone", "source": {"backend": "device", "device": "nope"}},
                        "sim": {"modality": "lidar", "source": {"backend": "simulated", "rate_hz": 10.0}},
                    },
                }
            ]
        }
    )
    resolved, plans = resolve_sources(config, probe_s=0.5)
    kinds = {p.sensor_id: (p.kind, p.reason) for p in plans}
    assert kinds["mic"][0] == "fallback" and "nope" in kinds["mic"][1]
    assert kinds["sim"] == ("simulated", "")
    sources = {
        sid: spec.source.model_dump(exclude_unset=True) for sid, spec in resolved.rigs[0].sensors.items()
    }
    assert sources["mic"] == {
        "backend": "simulated",
        "clock": "monotonic",
        "realtime": True,
        "rate_hz": 20.0,
        "sample_rate": 16000,
    }
    assert sources["sim"]["backend"] == "simulated" and sources["sim"]["realtime"] is True
    assert sources["sim"]["clock"] == "monotonic"
    # Typed as the backend's own config, as the runner passes it to the sensor actors.
    assert type(resolved.rigs[0].sensors["mic"].source).__name__ == "SimMicrophoneConfig"


def save_screenshot(url: str, out: Path, profile: Path) -> None:
    """The page at `url`, once it has ten seconds of spectrogram (100 samples at 10 Hz) and shows a
    prediction of every modality beside two or more objects of the simulated world, saved as PNG
    to `out`: how docs/img/demo.png is made (see docs/demo.md)."""
    browser = Browser(url, profile)
    everything = ["camera", "lidar", "microphone"]
    try:
        wait_for(
            lambda: (
                (s := page(browser))["seq"].isdigit()
                and int(s["seq"]) >= 100
                and s["modalities"] == everything
                and s["truth"] > 1
                and s["truth_pixels"] > 20
            ),
            120,
            "a full prediction beside objects of the simulated world",
        )
        browser.screenshot(out)
    finally:
        browser.close()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        save_screenshot(sys.argv[1], Path(sys.argv[2]), Path(profile))
