"""`fusion inspect | record | replay` as a user runs them: real subprocesses on files written here
by real encoders (OpenCV, libsndfile, open3d, numpy, a libpcap writer). Where a second run only
has to match the first (replay determinism) or time matters (replay pacing), the same code runs
in this process: `fusion_cli.main.main` and `fusion.offline`.

Every subprocess pays the package's start-up (seconds on a busy machine), so one fixture starts
them side by side and the tests read their results.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from fusion.offline import inspect_lines, replay_samples
from fusion.recording import RecordingReader
from fusion.sample import MODALITY_ORDER
from fusion_cli.main import main
from tests.sensors.test_lidar import write_o3d
from tests.sensors.test_velodyne import capture, write_pcap

ROOT = Path(__file__).resolve().parent.parent

# The rig `fusion record` records: 1 s of each simulated sensor at its own rate.
RIG_YAML = """\
mode: replay
rigs:
  - id: sim
    sensors:
      cam0:
        modality: camera
        source: {backend: simulated, rate_hz: 30, width: 64, height: 48, duration_s: 1.0}
      mic0:
        modality: microphone
        source: {backend: simulated, rate_hz: 20, sample_rate: 16000, duration_s: 1.0}
      lidar0:
        modality: lidar
        source: {backend: %(lidar_backend)s, rate_hz: 10, duration_s: 1.0}
"""
RECORDED = {"cam0": 30, "mic0": 20, "lidar0": 10}

VIDEO_FRAMES, VIDEO_FPS, VIDEO_H, VIDEO_W = 12, 10.0, 48, 64
CLOUD_POINTS = 500
KITTI_POINTS = (300, 250, 280)
PCAP_TURNS = 3.15  # three full sweeps; the last 0.15 turn is a fragment even at 1200 rpm

# Unreadable inputs and what `fusion inspect` must say is wrong with each.
BAD_FILES = {
    "junk.avi": "not a readable video",
    "junk.wav": "not a readable audio file",
    "junk.pcd": "open3d read no points",
    "junk.pcap": "not a pcap capture",
    "missing.avi": "no such file or directory",
    "missing_folder": "no such file or directory",
}

# "<path>: <modality> (<backend>), <n> frames, <start>-<end> s, <rate>/s, <shapes>"
HEADER = re.compile(
    r"^(?P<path>.+): (?P<modality>\w+) \((?P<backend>\w+)\), (?P<frames>\d+) frames, "
    r"(?P<start>-?[\d.]+)-(?P<end>-?[\d.]+) s, (?P<rate>[\d.]+)/s, (?P<shapes>.+)$"
)


class Run:
    """A `fusion` subprocess started at once and awaited when its result is first needed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fusion_cli", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @functools.cached_property
    def result(self) -> subprocess.CompletedProcess[str]:
        out, err = self.proc.communicate(timeout=300)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@dataclass
class Described:
    """One file's block of `fusion inspect` output."""

    modality: str
    backend: str
    frames: int
    start: float
    end: float
    rate: float
    shapes: str
    details: dict[str, str]


def parse_inspect(stdout: str) -> dict[str, Described]:
    """Path -> its header line and `  key: value` detail lines."""
    blocks: dict[str, Described] = {}
    current: Described | None = None
    for line in stdout.splitlines():
        if line.startswith("  ") and current is not None:
            key, _, value = line.strip().partition(": ")
            current.details[key] = value
            continue
        m = HEADER.match(line)
        assert m, f"not an inspect header line: {line!r}"
        current = Described(
            modality=m["modality"],
            backend=m["backend"],
            frames=int(m["frames"]),
            start=float(m["start"]),
            end=float(m["end"]),
            rate=float(m["rate"]),
            shapes=m["shapes"],
            details={},
        )
        blocks[m["path"]] = current
    return blocks


# --------------------------------------------------------------------------- inputs written here


def write_avi(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (VIDEO_W, VIDEO_H))
    assert writer.isOpened(), "no MJPG encoder"
    ramp = np.linspace(0, 255, VIDEO_W, dtype=np.uint8)
    for i in range(VIDEO_FRAMES):
        img = np.empty((VIDEO_H, VIDEO_W, 3), np.uint8)
        img[:] = np.roll(ramp, 5 * i)[None, :, None]  # a ramp moving 5 px per frame
        writer.write(img)
    writer.release()
    return path


def write_kitti(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, n in enumerate(KITTI_POINTS):
        xyz = rng.uniform([-30, -30, -2], [30, 30, 3], size=(n, 3))
        reflectance = rng.uniform(0, 1, size=(n, 1))
        np.concatenate([xyz, reflectance], axis=1).astype("<f4").tofile(folder / f"{k:06d}.bin")
    return folder


def write_media(d: Path) -> dict[str, Path]:
    """One good file (or folder) of every kind `fusion inspect` reads, by kind."""
    t = np.arange(16000) / 16000
    sf.write(d / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="FLOAT")
    t2 = np.arange(11025) / 22050
    stereo = np.stack([0.2 * np.sin(2 * np.pi * 300 * t2), 0.2 * np.sin(2 * np.pi * 500 * t2)], axis=1)
    sf.write(d / "stereo.flac", stereo, 22050)
    rng = np.random.default_rng(1)
    cloud = np.concatenate(
        [rng.uniform(-20, 20, size=(CLOUD_POINTS, 3)), rng.integers(0, 256, size=(CLOUD_POINTS, 1))], axis=1
    ).astype(np.float32)
    write_o3d(d / "cloud.pcd", cloud)
    write_o3d(d / "cloud.ply", cloud, intensity=False)
    records, _ = capture(PCAP_TURNS)
    write_pcap(d / "vlp16.pcap", records)
    return {
        "avi": write_avi(d / "clip.avi"),
        "wav": d / "tone.wav",
        "flac": d / "stereo.flac",
        "pcd": d / "cloud.pcd",
        "ply": d / "cloud.ply",
        "kitti": write_kitti(d / "velodyne"),
        "pcap": d / "vlp16.pcap",
    }


def write_bad_files(d: Path) -> dict[Path, str]:
    garbage = np.random.default_rng(7).bytes(5000)
    for name in BAD_FILES:
        if name.startswith("junk"):
            (d / name).write_bytes(garbage)
    return {d / name: problem for name, problem in BAD_FILES.items()}


@dataclass
class Cli:
    """The inputs and the commands run on them."""

    media: dict[str, Path]
    bad_files: dict[Path, str]
    recording: Path
    replay_out: Path
    bad_config_out: Path
    missing_recording: Path
    runs: dict[str, Run]

    def __getitem__(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.runs[name].result


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    d = tmp_path_factory.mktemp("rigtools")
    good, bad = d / "rig.yaml", d / "bad-rig.yaml"
    good.write_text(RIG_YAML % {"lidar_backend": "simulated"})
    bad.write_text(RIG_YAML % {"lidar_backend": "radar9000"})
    c = Cli(
        media=write_media(d),
        bad_files=write_bad_files(d),
        recording=d / "rec",
        replay_out=d / "replayed",
        bad_config_out=d / "never",
        missing_recording=d / "no-such-recording",
        runs={},
    )
    runs = c.runs
    try:
        runs["record"] = Run("record", "--config", str(good), "--out", str(c.recording))
        runs["record_bad"] = Run("record", "--config", str(bad), "--out", str(c.bad_config_out))
        runs["replay_missing"] = Run("replay", "--recording", str(c.missing_recording))
        assert c["record"].returncode == 0, c["record"].stderr
        # These need the recording. Good and bad inputs go to one inspect: a bad one must not stop it.
        runs["inspect"] = Run(
            "inspect", *map(str, c.media.values()), str(c.recording), *map(str, c.bad_files)
        )
        runs["replay_out"] = Run("replay", "--recording", str(c.recording), "--out", str(c.replay_out))
        yield c
    finally:
        for run in runs.values():
            run.stop()


@pytest.fixture(scope="module")
def inspected(cli: Cli) -> dict[str, Described]:
    """The one `fusion inspect` of every good file and folder, by kind."""
    res = cli["inspect"]
    assert res.returncode == 1, res.stdout + res.stderr  # the bad files given with them
    blocks = parse_inspect("\n".join(line for line in res.stdout.splitlines() if ": error: " not in line))
    paths = {**cli.media, "recording": cli.recording}
    assert set(blocks) == set(map(str, paths.values()))
    return {kind: blocks[str(path)] for kind, path in paths.items()}


# --------------------------------------------------------------------------- fusion inspect


def test_inspect_video(inspected: dict[str, Described]) -> None:
    r = inspected["avi"]
    assert (r.modality, r.backend, r.frames) == ("camera", "file", VIDEO_FRAMES)
    assert (r.start, r.end) == (0.0, pytest.approx((VIDEO_FRAMES - 1) / VIDEO_FPS, abs=1e-3))
    assert r.rate == pytest.approx(VIDEO_FPS)
    assert r.shapes == f"{VIDEO_H}x{VIDEO_W}x3 uint8"
    assert r.details["codec"] == "MJPG"


@pytest.mark.parametrize(
    ("kind", "samples", "rate", "shapes", "subtype"),
    [
        ("wav", 16000, 16000, "16000 Hz mono, 1.00 s", "FLOAT"),
        ("flac", 11025, 22050, "22050 Hz stereo, 0.50 s", "PCM_16"),
    ],
)
def test_inspect_audio(
    inspected: dict[str, Described], kind: str, samples: int, rate: int, shapes: str, subtype: str
) -> None:
    r = inspected[kind]
    assert (r.modality, r.backend, r.frames, r.shapes) == ("microphone", "file", samples, shapes)
    assert r.start == 0.0 and r.end == pytest.approx(samples / rate, abs=1e-3)
    assert r.rate == pytest.approx(rate, rel=1e-3)
    assert r.details["samplerate"] == str(rate) and r.details["subtype"] == subtype


def test_inspect_audio_rate_is_exactly_the_sample_rate(inspected: dict[str, Described]) -> None:
    assert inspected["wav"].rate == 16000.0


@pytest.mark.parametrize(("kind", "intensity"), [("pcd", True), ("ply", False)])
def test_inspect_point_cloud(inspected: dict[str, Described], kind: str, intensity: bool) -> None:
    r = inspected[kind]
    assert (r.modality, r.backend, r.frames) == ("lidar", "pointcloud", 1)
    assert (r.start, r.end, r.rate) == (0.0, 0.0, 0.0)
    assert r.shapes == f"{CLOUD_POINTS} x 4 float32"
    assert r.details["points"] == str(CLOUD_POINTS)
    assert r.details["has_intensity"] == str(intensity)
    low, high = ast.literal_eval(r.details["bounds_min"]), ast.literal_eval(r.details["bounds_max"])
    assert all(-20 <= v < 0 for v in low) and all(0 < v <= 20 for v in high)


def test_inspect_kitti_folder(inspected: dict[str, Described]) -> None:
    r = inspected["kitti"]
    assert (r.modality, r.backend, r.frames, r.shapes) == ("lidar", "kitti", 3, "N x 4 float32")
    assert (r.start, r.end, r.rate) == (0.0, 0.2, 10.0)  # no times.txt: 10 Hz assumed
    assert r.details["points_min"] == str(min(KITTI_POINTS))
    assert r.details["points_max"] == str(max(KITTI_POINTS))
    assert r.details["times"] == "assumed 10 Hz"


def test_inspect_velodyne_pcap(inspected: dict[str, Described]) -> None:
    r = inspected["pcap"]
    assert (r.modality, r.backend, r.frames, r.shapes) == ("lidar", "pcap", 3, "N x 4 float32")
    assert r.rate == pytest.approx(10.0, rel=0.05)  # 600 rpm
    assert r.details["model"] == "VLP-16"


def test_inspect_recording_counts_every_sensor(inspected: dict[str, Described]) -> None:
    r = inspected["recording"]
    # A recording is described by its first stream in modality order: the camera.
    assert (r.modality, r.backend, r.frames, r.shapes) == ("camera", "recording", 30, "48x64x3 uint8")
    assert r.start == 0.0 and r.end == pytest.approx(29 / 30, abs=1e-3)
    assert r.rate == pytest.approx(30.0)
    sensors = ast.literal_eval(r.details["sensors"])
    assert {sid: s["frames"] for sid, s in sensors.items()} == RECORDED
    assert {sid: s["modality"] for sid, s in sensors.items()} == {
        "cam0": "camera",
        "mic0": "microphone",
        "lidar0": "lidar",
    }
    assert sensors["lidar0"]["end"] == pytest.approx(0.9)
    assert sensors["mic0"]["end"] == pytest.approx(0.95)


@pytest.mark.parametrize("name", BAD_FILES)
def test_inspect_lines_gives_one_line_naming_an_unreadable_file(cli: Cli, name: str) -> None:
    path = next(p for p in cli.bad_files if p.name == name)
    lines, ok = inspect_lines([str(path)])
    assert not ok
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: error: ") and BAD_FILES[name] in lines[0]


def test_inspect_command_gives_one_line_per_bad_file_and_goes_on(cli: Cli) -> None:
    res = cli["inspect"]
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()  # errors go to stderr, descriptions to stdout
    for path, problem in cli.bad_files.items():
        mine = [line for line in lines if line.startswith(f"{path}:")]
        assert len(mine) == 1 and problem in mine[0], mine
    assert sum(": error: " in line for line in lines) == len(cli.bad_files)


def test_inspect_lines_of_good_files_are_all_ok(cli: Cli) -> None:
    lines, ok = inspect_lines([*map(str, cli.media.values()), str(cli.recording)])
    assert ok, [line for line in lines if ": error: " in line]


# --------------------------------------------------------------------------- fusion record


def test_record_writes_every_frame_of_every_sensor(cli: Cli) -> None:
    res = cli["record"]
    assert res.stdout.strip().splitlines() == [
        f"recorded 60 frames to {cli.recording}: cam0 30, mic0 20, lidar0 10",
        f"ground truth of the simulated world: {cli.recording / 'labels.csv'}",  # all simulated
    ]
    reader = RecordingReader(cli.recording)
    assert {sid: info.frames for sid, info in reader.sensors.items()} == RECORDED
    assert [f.index for f in reader.frames("mic0")] == list(range(20))  # none lost or repeated


def test_record_with_an_unknown_backend_fails_naming_the_key(cli: Cli) -> None:
    res = cli["record_bad"]
    assert res.returncode == 2
    assert "rigs[sim].sensors.lidar0.source.backend" in res.stderr and "radar9000" in res.stderr
    assert "Traceback" not in res.stderr
    assert not cli.bad_config_out.exists()


# --------------------------------------------------------------------------- fusion replay


def test_replay_prints_one_line_per_lidar_tick_the_same_every_time(
    cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    res = cli["replay_out"]
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == RECORDED["lidar0"]  # the default sync ticks on LiDAR sweeps
    for k, line in enumerate(lines):
        m = re.fullmatch(r"seq (\d+) t ([\d.]+) modalities ([a-z,]+) rows (\d+)", line)
        assert m, line
        assert int(m[1]) == k and float(m[2]) == pytest.approx(k / 10)
        # The first tick has no audio before it; every later one has all three modalities.
        assert m[3] == ("camera,lidar" if k == 0 else "camera,lidar,microphone")
    assert "10 fused samples" in res.stderr
    # The same command twice more, in this process (no --out): the same lines each time.
    for _ in range(2):
        assert main(["replay", "--recording", str(cli.recording)]) == 0
        assert capsys.readouterr().out == res.stdout


def test_replay_out_writes_the_samples_it_printed(cli: Cli) -> None:
    res = cli["replay_out"]
    assert res.returncode == 0, res.stderr
    written = list(RecordingReader(cli.replay_out).samples())
    here = list(replay_samples(cli.recording, speed=None))  # the same replay, in this process
    assert [s.seq for s in written] == [s.seq for s in here] == list(range(10))
    for line, w, h in zip(res.stdout.splitlines(), written, here, strict=True):
        assert line.endswith(f"rows {sum(seg.num_rows for seg in w.segments.values())}")
        assert w.timestamp == h.timestamp
        assert [m for m in MODALITY_ORDER if m in w.segments] == [
            m for m in MODALITY_ORDER if m in h.segments
        ]
        for m, seg in w.segments.items():
            np.testing.assert_array_equal(seg.values, h.segments[m].values)
            assert seg.grid == h.segments[m].grid
            if seg.positions is not None:
                np.testing.assert_array_equal(seg.positions, h.segments[m].positions)


def test_inspect_describes_a_recording_of_samples(cli: Cli) -> None:
    assert cli["replay_out"].returncode == 0
    lines, ok = inspect_lines([str(cli.replay_out)])
    assert ok, lines


def test_replay_speed_paces_to_the_recording_clock(cli: Cli) -> None:
    info = RecordingReader(cli.recording).sensors.values()
    span = max(s.end for s in info) - min(s.start for s in info)
    speed = 2.0

    def timed(speed: float | None) -> float:
        t0 = time.perf_counter()
        assert len(list(replay_samples(cli.recording, speed=speed))) == 10
        return time.perf_counter() - t0

    fast = min(timed(None), timed(None))  # the first call may also pay one-time imports
    paced = timed(speed)
    # Pacing sleeps until each frame is due, so span / speed is a floor however busy the machine;
    # the rest only checks that it is well above an unpaced replay and nowhere near real time.
    assert paced >= 0.95 * span / speed
    assert paced - fast >= 0.3 * span / speed
    assert paced < 3 * span / speed + 3 * fast


def test_replay_of_a_missing_recording_fails_naming_it(cli: Cli) -> None:
    res = cli["replay_missing"]
    assert res.returncode == 2
    assert f"{cli.missing_recording}: no such recording directory" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
