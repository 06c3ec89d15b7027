"""Monitoring against real servers: deploy/prometheus checked by promtool, and the Debian
Prometheus server scraping a running pipeline through Ray's metrics export with the project's
own scrape config, alert rules and Grafana dashboard queries."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from fusion.detection.boxes import Box3D
from fusion.errors import ConfigError
from fusion.sample import Prediction
from fusion.sinks.base import CallbackSink
from fusion_cli.main import main as fusion_main
from fusion_cli.monitor import prometheus_config
from pipelines import cluster
from pipelines.config import MetricsConfig, PipelineConfig
from pipelines.metrics import names, recorders, sink
from pipelines.runner import PipelineRunner
from tests.pipelines.conftest import SIM_RIG

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "fusion-dashboard.json"
SETUP_HINT = "install it with scripts/setup-system.sh (Debian package `prometheus`)"
MIC_SECONDS = 5.0  # the test rig's microphone goes silent after this long


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {SETUP_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p.get("targets") for p in panels), "every panel has a query"
    queries = [t["expr"] for p in panels for t in p["targets"]]
    queries += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


_NAME = re.compile(r"\bfusion[_:][A-Za-z0-9_:]*")


def _unknown_names(query: str, known: set[str]) -> set[str]:
    return {n for n in _NAME.findall(query) if n not in known}


# ---- static checks: promtool, the dashboard, the port check ------------------------------------
def test_promtool_accepts_the_scrape_config_and_the_rules():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        done = subprocess.run([_tool("promtool"), *args], cwd=PROM_DIR, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_command_points_at_the_heads_temp_dir(tmp_path, capsys):
    temp = tmp_path / "ray-temp"
    temp.mkdir()
    out = tmp_path / "elsewhere" / "prometheus.yml"
    out.parent.mkdir()
    assert fusion_main(["monitor", "prometheus-config", "--ray-temp-dir", str(temp), "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    files = written["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert files == [str(temp / "prom_metrics_service_discovery.json")]
    assert written["rule_files"] == [str(PROM_DIR / "alerts.yml")]  # absolute: found from anywhere
    # Otherwise the shipped file, unchanged: its relabeling is what the rules and dashboard expect.
    shipped = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert (
        written["scrape_configs"][0]["metric_relabel_configs"]
        == shipped["scrape_configs"][0]["metric_relabel_configs"]
    )
    done = subprocess.run([_tool("promtool"), "check", "config", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    capsys.readouterr()
    assert fusion_main(["monitor", "prometheus-config", "--ray-temp-dir", str(tmp_path / "nope")]) == 2
    assert "--ray-temp-dir" in capsys.readouterr().err


def test_promtool_unit_tests_show_every_alert_firing_and_not_firing():
    done = subprocess.run(
        [_tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=PROM_DIR, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cases = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
    checks = [c for test in cases for c in test.get("alert_rule_test", [])]
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert len(alerts) >= 6
    for name in alerts:
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: needs a firing and a not-firing case, has {outcomes}"


def test_rules_and_dashboard_use_only_metrics_the_code_exports():
    recorded = {r["record"] for r in _rules() if "record" in r}
    known = names.exported_series() | recorded
    assert _unknown_names("rate(fusion_frames_ingestd_total[1m])", known) == {"fusion_frames_ingestd_total"}
    for rule in _rules():
        assert not _unknown_names(rule["expr"], known), rule
    queries = _dashboard_queries()
    for query in queries:
        assert not _unknown_names(query, known), query
    used = {n for q in queries for n in _NAME.findall(q)}
    # Throughput, latency per stage, drops and errors per modality, batch size, queue depth, objects.
    for name in (
        "fusion_predictions_total",
        "fusion_frames_ingested_total",
        "fusion_stage_latency_seconds_bucket",
        "fusion_end_to_end_latency_seconds_bucket",
        "fusion_frames_dropped_total",
        "fusion_input_errors_total",
        "fusion_inference_batch_size_bucket",
        "fusion_queue_depth",
        "fusion_objects_per_prediction_bucket",
        "fusion_detections_total",
    ):
        assert name in used, f"the dashboard shows no {name}"


def test_monitoring_md_lists_every_metric_with_its_kind():
    rows = re.findall(
        r"^\| `(fusion_[a-z_]+)` \| ([a-z]+)", (ROOT / "docs" / "monitoring.md").read_text(), re.M
    )
    assert dict(rows) == {spec.name: spec.kind.value for spec in names.SPECS}


def test_metric_specs_follow_prometheus_conventions():
    for spec in names.SPECS:
        assert spec.name.startswith("fusion_"), spec.name
        assert spec.name.endswith("_total") == (spec.kind is names.Kind.COUNTER), spec.name
        assert not {"sensor", "file", "path", "sensor_id"} & set(spec.labels), spec.name
        if spec.kind is names.Kind.HISTOGRAM and spec.name.endswith("_seconds"):
            assert spec.buckets[0] <= 0.001 and spec.buckets[-1] >= 10, spec.name
    assert len(names.SPEC_BY_NAME) == len(names.SPECS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("camera", "camera"),
        ("rig-0", "rig-0"),
        ("cuda:0", "cuda:0"),
        ("sensor-small@3f2a9c1d04be", "sensor-small@3f2a9c1d04be"),
        ("/data/run 1.mp4", "other"),
        ("x" * 65, "other"),
    ],
)
def test_label_values_outside_code_literals_and_config_ids_become_other(value, expected):
    assert names.label(value) == expected


@pytest.fixture
def recorded(monkeypatch) -> list[tuple[str, str, float, dict[str, str]]]:
    """(call, metric, value, labels) of every record, captured where it would go to Ray."""
    calls: list[tuple[str, str, float, dict[str, str]]] = []
    for call in ("inc", "observe", "set_gauge"):
        monkeypatch.setattr(
            recorders,
            call,
            lambda spec, value=1.0, _c=call, **labels: calls.append((_c, spec.name, value, labels)),
        )
    return calls


def test_counter_export_adds_only_what_grew(recorded):
    export = recorders.CounterExport(names.FRAMES_DROPPED)
    export.update({("sim", "camera", "late"): 3})
    export.update({("sim", "camera", "late"): 5, ("sim", "lidar", "late"): 0})
    export.update({("sim", "camera", "late"): 5})
    labels = {"rig": "sim", "modality": "camera", "reason": "late"}
    assert recorded == [
        ("inc", "fusion_frames_dropped_total", 3, labels),
        ("inc", "fusion_frames_dropped_total", 2, labels),
    ]


def test_instrumented_sink_observes_each_stage_of_a_written_prediction(recorded):
    written: list[Prediction] = []
    instrumented = sink.InstrumentedSink(CallbackSink(written.append), clock=lambda: 100.0)
    stamps = {"capture.camera": 99.0, "capture.lidar": 99.5, "fused": 99.6, "inferred": 99.9}
    p = Prediction(
        rig="sim",
        seq=0,
        timestamp=1.0,
        label="x",
        probs=[1.0],
        position=None,
        modalities=["camera", "lidar"],
        latency_s=0.4,
        model_version="v",
        stage_times=stamps,
    )
    instrumented.write(p)
    assert written == [p]
    got = {(name, labels.get("stage")): value for _, name, value, labels in recorded}
    expected = {
        ("fusion_end_to_end_latency_seconds", None): 0.5,  # from the newest capture
        ("fusion_stage_latency_seconds", "capture_to_fused"): 0.1,
        ("fusion_stage_latency_seconds", "fused_to_inferred"): 0.3,
        ("fusion_stage_latency_seconds", "inferred_to_written"): 0.1,
        ("fusion_predictions_total", None): 1.0,
        ("fusion_objects_per_prediction", None): 0,  # no objects: no detections either
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_instrumented_sink_counts_objects_per_prediction_and_detections_per_class(recorded):
    instrumented = sink.InstrumentedSink(CallbackSink(lambda p: None), clock=lambda: 100.0)
    objects = [
        Box3D(class_name=c, center=(10.0, 0.0, 0.0), size=(4.0, 2.0, 1.5), yaw=0.0, score=0.9)
        for c in ("car", "pedestrian", "car")
    ]
    for seq, found in enumerate((objects, [])):
        instrumented.write(
            Prediction(
                rig="sim",
                seq=seq,
                timestamp=1.0,
                label="car",
                probs=[],
                position=None,
                modalities=["lidar"],
                latency_s=0.1,
                model_version="v",
                objects=found,
            )
        )
    counts = [v for call, name, v, _ in recorded if name == "fusion_objects_per_prediction"]
    assert counts == [3, 0]
    per_class = [(v, labels) for call, name, v, labels in recorded if name == "fusion_detections_total"]
    assert sorted(per_class, key=str) == [(1, {"class": "pedestrian"}), (2, {"class": "car"})]
    assert all(call == "inc" for call, name, _, _ in recorded if name == "fusion_detections_total")


def test_a_metrics_port_in_use_fails_at_start_naming_it():
    if ray.is_initialized():
        ray.shutdown()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"metrics\.port: port {port} is already in use"):
            cluster.ray_init_options(MetricsConfig(port=port), None)
        # Joining a cluster opens no port here: nothing to check.
        assert cluster.ray_init_options(MetricsConfig(port=port), "ray://head:10001") == {
            "include_dashboard": False
        }
        config = PipelineConfig.model_validate({"rigs": [SIM_RIG], "metrics": {"port": port}})
        runner = PipelineRunner(config, CallbackSink(lambda p: None), status=False)
        started = time.monotonic()
        with pytest.raises(ConfigError, match=str(port)):
            runner.start()
        assert time.monotonic() - started < 10, "refused before Ray tried to start"
        assert not ray.is_initialized()


# ---- a real Prometheus scraping a running pipeline ---------------------------------------------
@pytest.fixture(scope="module")
def ray_with_metrics() -> Iterator[tuple[Path, int]]:
    """A local Ray started the way `fusion run` starts it, in its own temp dir.

    Yields (service discovery file, metrics export port). The discovery file lies where Ray puts
    /tmp/ray/prom_metrics_service_discovery.json, relative to its temp dir.
    """
    if ray.is_initialized():
        ray.shutdown()
    temp = Path(tempfile.mkdtemp(prefix="fray"))  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    try:
        ray.init(
            address="local",
            num_cpus=4,
            configure_logging=False,
            _temp_dir=str(temp),
            **cluster.ray_init_options(MetricsConfig(port=port, report_interval_s=1), None),
        )
        discovery = temp / "prom_metrics_service_discovery.json"
        _wait_for(lambda: f":{port}" in _read(discovery), 60, f"Ray listing its metrics agent in {discovery}")
        yield discovery, port
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _test_rules(path: Path) -> None:
    """alerts.yml with the silent-stream alert's window and wait cut to seconds."""
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    silent = next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "FusionInputStreamSilent")
    assert "[1m]" in silent["expr"], silent["expr"]
    silent["expr"] = silent["expr"].replace("[1m]", "[8s]")
    silent["for"] = "2s"
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def prometheus(ray_with_metrics) -> Iterator[str]:
    """deploy/prometheus/prometheus.yml as shipped, but scraping every second, reading the test
    Ray's discovery file and the test's copy of the rules. Yields the server's base URL."""
    discovery, _ = ray_with_metrics
    work = Path(tempfile.mkdtemp(prefix="fusion-prom-"))
    _test_rules(work / "alerts.yml")
    # What `fusion monitor prometheus-config --ray-temp-dir` writes for this Ray's temp dir.
    config = prometheus_config(discovery.parent, rules=work / "alerts.yml", scrape_interval="1s")
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(discovery)]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        [
            _tool("prometheus"),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(
            lambda: proc.poll() is not None or _get(url + "/-/ready") is not None, 30, "Prometheus ready"
        )
        assert proc.poll() is None, (work / "prometheus.log").read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return None
    return json.loads(body) if body.startswith("{") else body


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    reply = _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert reply is not None and reply["status"] == "success", (expr, reply)
    return reply["data"]["result"]


def _value(url: str, expr: str) -> float:
    result = _query(url, expr)
    return float(result[0]["value"][1]) if result else math.nan


def _alerts(url: str, name: str) -> list[dict[str, Any]]:
    reply = _get(f"{url}/api/v1/alerts") or {"data": {"alerts": []}}
    return [a for a in reply["data"]["alerts"] if a["labels"]["alertname"] == name]


def _monitored_config() -> PipelineConfig:
    """Live simulated rig; its microphone ends after MIC_SECONDS while camera and LiDAR go on."""
    rig = copy.deepcopy(SIM_RIG)
    for spec in rig["sensors"].values():
        spec["source"]["realtime"] = True
    rig["sensors"]["mic0"]["source"]["duration_s"] = MIC_SECONDS
    # Its device buffer holds the whole run, so no chunk is lost to a slow start on a busy machine
    # and the count below is exact.
    rig["sensors"]["mic0"]["source"]["buffer_s"] = 2 * MIC_SECONDS
    return PipelineConfig.model_validate(
        {
            "mode": "live",
            "duration_s": 80,  # a cap; the test stops it once it has seen what it needs
            "rigs": [rig],
            "inference": {"actors": 1, "max_batch_size": 4, "max_wait_ms": 10, "num_cpus": 0.5},
        }
    )


@pytest.fixture(scope="module")
def running_pipeline(prometheus) -> Iterator[PipelineRunner]:
    got: list[Prediction] = []
    runner = PipelineRunner(_monitored_config(), CallbackSink(got.append), status=False)
    runner.start()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(runner.run()), daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the pipeline did not stop"
    assert got and result["predictions"] == len(got)


def test_prometheus_scrapes_the_running_pipeline_under_the_projects_names(prometheus, running_pipeline):
    url = prometheus
    camera = 'sum(fusion_frames_ingested_total{rig="sim",modality="camera"})'
    first = _wait_for(lambda: _value(url, camera) > 0 and _value(url, camera), 60, "ingested camera frames")
    # Kill the inference actor now so its restart is exported while the rest is checked.
    ray.kill(running_pipeline.pool[0].actor, no_restart=False)
    _wait_for(lambda: _value(url, camera) > first, 20, "the camera frame counter to increase")

    stages = "count(sum by (stage) (fusion_stage_latency_seconds_count) > 0)"
    _wait_for(lambda: _value(url, stages) == 3, 40, "observations in all three stage latencies")
    assert _value(url, "sum(fusion_end_to_end_latency_seconds_count)") > 0
    p50 = _value(url, "histogram_quantile(0.5, sum by (le) (fusion_end_to_end_latency_seconds_bucket))")
    assert 0 < p50 < 10, p50
    assert _value(url, "sum(fusion_predictions_total)") > 0
    assert _value(url, "sum(fusion_samples_fused_total)") > 0
    info = _query(url, "fusion_model_info")
    assert info and info[0]["metric"]["device"] == "cpu" and float(info[0]["value"][1]) == 1
    assert int(info[0]["metric"]["parameters"]) > 0
    assert info[0]["metric"]["version"] == running_pipeline.pool[0].info.model_version
    # The scrape config renamed Ray's ray_fusion_* series; nothing is left under Ray's prefix.
    assert _query(url, '{__name__=~"ray_fusion_.+"}') == []

    # The microphone ended: its stream goes silent (the alert pends, then fires), the camera's not.
    firing = _wait_for(
        lambda: [a for a in _alerts(url, "FusionInputStreamSilent") if a["state"] in ("pending", "firing")],
        40,
        "FusionInputStreamSilent for the microphone",
    )
    assert {(a["labels"]["rig"], a["labels"]["modality"]) for a in firing} == {("sim", "microphone")}
    # Silent because the source ended, after delivering every chunk of its MIC_SECONDS at 20 Hz.
    assert _value(url, 'sum(fusion_frames_ingested_total{modality="microphone"})') == MIC_SECONDS * 20
    assert _value(url, camera) > first
    assert _value(url, 'sum(fusion_samples_incomplete_total{missing="microphone"})') > 0

    restarts = 'sum(fusion_actor_restarts_total{actor="inference"})'
    _wait_for(lambda: _value(url, restarts) >= 1, 40, "the inference actor's restart to be counted")
    _wait_for(lambda: _alerts(url, "FusionActorRestarted"), 10, "FusionActorRestarted")

    # Every dashboard query is valid PromQL for this Prometheus; the core panels have data. The
    # window is wide and the check retried: on a busy 2-core machine a scrape of Ray's agent can
    # miss its 1 s timeout, which marks every series stale until the next good scrape.
    for query in _dashboard_queries():
        if query.startswith("label_values("):
            continue  # a Grafana template function, not PromQL
        expr = query.replace("$__rate_interval", "30s").replace("$rig", ".*")
        _query(url, expr)  # asserts the query is accepted
        core = (
            "fusion_predictions_total",
            "stage_latency",
            "batch_size",
            "queue_depth",
            "objects_per_prediction",
        )
        if any(n in expr for n in core):
            _wait_for(lambda e=expr: _query(url, e), 20, f"data for dashboard query {expr}")
