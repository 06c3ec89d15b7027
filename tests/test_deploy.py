"""deploy/: the Ray cluster launcher config against Ray's own schema, the KubeRay manifests, and
the Dockerfiles, read statically (no Docker engine or Kubernetes needed)."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does first: merge the provider's defaults, then check Ray's schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# ---- Ray cluster launcher ---------------------------------------------------------------------
def test_cluster_launcher_config_validates_against_rays_schema():
    config = _yaml(DEPLOY / "ray" / "cluster.yaml")
    prepared = _ray_validate(config)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t.get("min_workers", 0) >= 1 for t in gpu), (
        "GPU workers exist when the pipeline starts"
    )
    assert any(t["resources"].get("sensor_host", 0) >= 1 for t in types.values())
    assert all("cuda" in t["docker"]["worker_image"] for t in gpu)
    starts = " ".join(prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"])
    assert starts.count("--metrics-export-port=8080") == 2


def test_the_schema_check_rejects_what_ray_would():
    config = _yaml(DEPLOY / "ray" / "cluster.yaml")
    config["available_node_types"]["gpu_worker"]["gpus"] = 1  # not a node-type key
    with pytest.raises(jsonschema.ValidationError, match="gpus"):
        _ray_validate(config)
    config = _yaml(DEPLOY / "ray" / "cluster.yaml")
    config["available_node_types"]["sensor_host"]["resources"]["sensor_host"] = 0.5  # must be whole
    with pytest.raises(jsonschema.ValidationError):
        _ray_validate(config)


# ---- KubeRay ----------------------------------------------------------------------------------
def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"]["containers"]


def test_raycluster_has_a_gpu_group_a_sensor_group_and_exposes_metrics_everywhere():
    cluster = _yaml(DEPLOY / "kuberay" / "raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        port = int(group["rayStartParams"]["metrics-export-port"])
        for c in _containers(group["template"]):
            assert {"containerPort": port, "name": "metrics"} in c["ports"], c["name"]
            assert c["image"]
    gpu = [
        g
        for g in spec["workerGroupSpecs"]
        if "nvidia.com/gpu" in _containers(g["template"])[0]["resources"]["limits"]
    ]
    assert gpu, "a worker group with nvidia.com/gpu limits"
    for g in gpu:
        assert int(_containers(g["template"])[0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert "cuda" in _containers(g["template"])[0]["image"]
    sensor = [
        g for g in spec["workerGroupSpecs"] if "sensor_host" in g["rayStartParams"].get("resources", "")
    ]
    assert sensor, "a worker group carrying the sensor_host resource"
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_rayjob_runs_fusion_on_that_cluster_with_a_shipped_config():
    cluster = _yaml(DEPLOY / "kuberay" / "raycluster.yaml")
    job = _yaml(DEPLOY / "kuberay" / "rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["fusion", "run"]
    config = argv[argv.index("--config") + 1]
    assert (ROOT / config.removeprefix("/opt/fusion/")).is_file(), config
    assert argv[argv.index("--address") + 1] == "auto"


def test_podmonitor_relabels_like_the_scrape_config():
    monitor = _yaml(DEPLOY / "kuberay" / "podmonitor.yaml")
    cluster = _yaml(DEPLOY / "kuberay" / "raycluster.yaml")
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    scrape = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    camel = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    ours = [{camel.get(k, k): v for k, v in r.items()} for r in endpoint["metricRelabelings"]]
    assert ours == scrape["metric_relabel_configs"]


# ---- Dockerfiles ------------------------------------------------------------------------------
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()
    ]


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if d.startswith("torch==")).removeprefix("torch==")


def _args(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)


def _pins() -> dict[str, str]:
    """name -> version of every `name==version` line in deploy/constraints.txt."""
    lines = (DEPLOY / "constraints.txt").read_text().splitlines()
    return dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))


def _resolved(steps: list[tuple[str, str]], text: str) -> str:
    args = _args(steps)
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


@pytest.mark.parametrize(("name", "index"), [("cpu", "/whl/cpu"), ("cuda", "/whl/cu")])
def test_dockerfile_installs_pinned_torch_and_the_project_and_runs_fusion(name, index):
    path = DEPLOY / "docker" / f"Dockerfile.{name}"
    steps = _instructions(path)
    args = _args(steps)
    runs = [a for op, a in steps if op == "RUN"]
    torch = _resolved(steps, next(r for r in runs if '"torch==' in r))
    assert f'"torch=={_torch_pin()}"' in torch and f"https://download.pytorch.org{index}" in torch, torch
    if name == "cuda":
        assert args["TORCH_CUDA"].startswith("cu")

    def first(op: str, text: str) -> int:
        return next(i for i, (o, a) in enumerate(steps) if o == op and text in a)

    # torch first (the project's install then finds the pin satisfied instead of pulling PyPI's
    # build), then the dependencies at the locked versions in a layer of their own, then the source.
    deps = first("RUN", "-c constraints.txt")
    assert first("RUN", '"torch==') < first("COPY", "deploy/constraints.txt") < deps
    assert deps < first("COPY", ". .") < first("RUN", "pip install --no-deps -e .")
    # The runtime libraries the project's own setup installs (open3d's libusb, PortAudio), and
    # rsync, which the cluster launcher needs to sync files into a node's container.
    apt = next(r for r in runs if "apt-get install" in r)
    for package in ("libusb-1.0-0", "libportaudio2", "rsync"):
        assert package in apt.split(), package
    # A command, not an entrypoint: the launcher's `docker run IMAGE bash` must run bash.
    assert "ENTRYPOINT" not in [op for op, _ in steps]
    cmd = json.loads(next(a for op, a in steps if op == "CMD"))
    assert cmd[:2] == ["fusion", "run"]
    assert (ROOT / cmd[cmd.index("--config") + 1]).is_file()
    ignore = (path.parent / f"{path.name}.dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignore)


def test_both_images_start_from_one_python_the_projects():
    bases = {}
    for name in ("cpu", "cuda"):
        steps = _instructions(DEPLOY / "docker" / f"Dockerfile.{name}")
        bases[name] = _resolved(steps, next(a for op, a in steps if op == "FROM"))
    # Ray refuses to join nodes whose Python differs: one base for the head and the GPU workers.
    assert bases["cpu"] == bases["cuda"], bases
    version = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+", bases["cpu"])
    assert version, bases
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={version.group(1)}", (requires, bases)


def test_ray_is_one_exact_version_everywhere():
    import ray

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("ray[")).split("==")[1]
    cluster = _yaml(DEPLOY / "kuberay" / "raycluster.yaml")
    # pyproject, the lock the images and `make` install with, KubeRay's rayVersion, and what the
    # tests run on: a mismatch anywhere is a cluster whose nodes refuse each other.
    assert pin == _pins()["ray"] == cluster["spec"]["rayVersion"] == ray.__version__
    assert "torch" not in _pins()  # per image, from PyTorch's CPU or CUDA index


def test_every_ray_process_is_given_the_clusters_token():
    launcher = _yaml(DEPLOY / "ray" / "cluster.yaml")
    options = " ".join(launcher["docker"]["run_options"])
    assert "--env RAY_AUTH_MODE=token" in options
    token_path = re.search(r"--env RAY_AUTH_TOKEN_PATH=(\S+)", options)
    assert token_path and token_path.group(1) in launcher["file_mounts"], options
    _ray_validate(launcher)

    def auth(container: dict[str, Any]) -> dict[str, Any]:
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}

    cluster = _yaml(DEPLOY / "kuberay" / "raycluster.yaml")
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    job = _yaml(DEPLOY / "kuberay" / "rayjob.yaml")
    containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
    containers += job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    envs = [auth(c) for c in containers]
    assert all(e["RAY_AUTH_MODE"] == "token" for e in envs), envs
    secrets = {json.dumps(e["RAY_AUTH_TOKEN"], sort_keys=True) for e in envs}
    assert len(secrets) == 1 and "secretKeyRef" in next(iter(secrets)), secrets


def test_the_wheel_carries_the_shipped_configs_and_checkpoint(tmp_path):
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("perceiver_fusion-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert "fusion/_checkpoints/sensor-small.safetensors" in names
    assert "fusion/_configs/model/sensor-small.yaml" in names
    assert {"fusion_cli/main.py", "pipelines/runner.py"} <= names
    # Installed from the wheel (no checkout beside it), the preset and its weights are found.
    probe = "from fusion.training.checkpoint import shipped_checkpoint as s; print(s('sensor-small'))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == str(
        tmp_path / "site" / "fusion" / "_checkpoints" / "sensor-small.safetensors"
    )
