"""A Ray cluster on `Hosts`, started as on real machines: `ray start` on each, drivers on the head.

Every host gets the environment docs/deploy.md asks of a hand-started node: frames up to 2 MiB
inline (RAY_max_direct_call_object_size), and token authentication with the cluster's token
copied into the host's own ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.cluster import INLINE_OBJECT_BYTES
from tests.cluster.hosts import Host

RAY = str(Path(sys.executable).parent / "ray")
GCS_PORT = 6379
DASHBOARD_PORT = 8265
NODE_FLAGS = ["--num-cpus=2", "--object-store-memory=200000000", "--disable-usage-stats", "--block"]

# Waits (on the head) until `nodes` nodes are alive and the dashboard answers; prints the nodes.
WAIT_FOR_NODES = """
import json, os, sys, time, urllib.request
import ray
want, dashboard = int(sys.argv[1]), sys.argv[2]
ray.init(address=sys.argv[3], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 120
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want:
        break
    if time.monotonic() > deadline:
        sys.exit(f"{len(alive)} of {want} nodes up after 120 s")
    time.sleep(0.5)
token = open(os.path.expanduser("~/.ray/auth_token")).read().strip()
request = urllib.request.Request(dashboard + "/api/version", headers={"Authorization": "Bearer " + token})
while True:
    try:
        urllib.request.urlopen(request, timeout=5).read()
        break
    except OSError as err:
        if time.monotonic() > deadline:
            sys.exit(f"dashboard at {dashboard} not answering: {err}")
        time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in alive]))
"""


def token_path(host: Host) -> Path:
    return host.home / ".ray" / "auth_token"


# Every actor of the named classes the cluster knows (alive, restarting or dead), from Ray's
# state API: class name -> [{id, node, pid, state, restarts}].
LIST_ACTORS = """
import json, sys
from ray.util.state import list_actors
found = {name: [] for name in sys.argv[2:]}
for a in list_actors(address=sys.argv[1], detail=True, limit=10000):
    if a.class_name in found:
        found[a.class_name].append(
            {"id": a.actor_id, "node": a.node_id, "pid": a.pid, "state": a.state, "restarts": a.num_restarts}
        )
print(json.dumps(found))
"""


def node_env(host: Host) -> dict[str, str]:
    """What every `ray start`, driver and `ray job submit` on `host` is given (docs/deploy.md)."""
    return {
        "RAY_max_direct_call_object_size": str(INLINE_OBJECT_BYTES),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path(host)),  # Ray does not expand ~ in it
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@dataclass
class RayCluster:
    head: Host
    workers: list[tuple[Host, dict[str, float]]]  # each worker host and its custom resources
    head_resources: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)  # node IP -> Ray node id
    logs: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{GCS_PORT}"

    @property
    def dashboard(self) -> str:
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"

    def start(self, logs: Path) -> None:
        """Token first (generated on the head, copied to every host), then the head, then workers."""
        self.logs = logs
        # Written to the head's default path, ~/.ray/auth_token, as the docs' first step does.
        made = self.head.run(
            [RAY, "get-auth-token", "--generate"], env={"RAY_AUTH_MODE": "token"}, timeout=60
        )
        token = token_path(self.head)
        if made.returncode != 0 or not token.exists():
            raise RuntimeError(f"ray get-auth-token --generate failed: {made.stderr.strip()}")
        for host, _ in self.workers:
            token_path(host).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(token, token_path(host))
        self._start_node(
            self.head,
            [
                "--head",
                f"--port={GCS_PORT}",
                "--include-dashboard=true",
                f"--dashboard-host={self.head.ip}",
                f"--dashboard-port={DASHBOARD_PORT}",
            ],
            self.head_resources,
        )
        for host, resources in self.workers:
            self._start_node(host, [f"--address={self.address}"], resources)
        self.wait_for_nodes(1 + len(self.workers))

    def _start_node(self, host: Host, role: list[str], resources: dict[str, float]) -> None:
        assert self.logs is not None
        log = open(self.logs / f"{host.name}-ray-start.log", "a")  # noqa: SIM115  # closed with the host
        host.popen(
            [
                RAY,
                "start",
                *role,
                f"--node-ip-address={host.ip}",
                f"--temp-dir=/tmp/ray-{host.name.rsplit('-', 1)[-1]}",
                f"--resources={json.dumps(resources)}",
                *NODE_FLAGS,
            ],
            env=node_env(host),
            log=log,
        )

    def restart_worker(self, host: Host, resources: dict[str, float]) -> None:
        """The host's node comes back (after a crash): `ray start` again, as its service would."""
        self._start_node(host, [f"--address={self.address}"], resources)

    def wait_for_nodes(self, count: int) -> None:
        done = self.head.run(
            [sys.executable, "-c", WAIT_FOR_NODES, str(count), self.dashboard, self.address],
            env=node_env(self.head),
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster did not come up: {done.stderr.strip()[-2000:]}\n{self.start_logs()}")
        nodes: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
        self.nodes = {n["ip"]: n["id"] for n in nodes}

    def actors(self, *classes: str) -> dict[str, list[dict[str, Any]]]:
        """Every actor of each class: id, node id, pid (as its host numbers it), state, restarts."""
        done = self.head.run(
            [sys.executable, "-c", LIST_ACTORS, self.address, *classes], env=node_env(self.head), timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"listing actors failed: {done.stderr.strip()[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def node_ip(self, node_id: str) -> str:
        return next(ip for ip, nid in self.nodes.items() if nid == node_id)

    def start_logs(self) -> str:
        if self.logs is None:
            return ""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))

    def fusion(self, *args: str, timeout: float = 240, env: dict[str, str] | None = None) -> Run:
        """`python -m fusion_cli ARGS` on the head, as a driver of this cluster."""
        started = time.monotonic()
        done = self.head.run(
            [sys.executable, "-m", "fusion_cli", *args],
            env=env if env is not None else node_env(self.head),
            timeout=timeout,
        )
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@dataclass
class Run:
    """A finished command: exit status, output, and how long it took (reported, never asserted)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def summary(self) -> dict[str, Any]:
        """The run's summary: `fusion run` prints it as the last JSON line on stderr."""
        for line in reversed(self.stderr.splitlines()):
            if line.startswith('{"summary"'):
                return dict(json.loads(line)["summary"])
        raise AssertionError(f"no summary in the output (exit {self.returncode}):\n{self.stderr[-4000:]}")


def predictions(path: Path) -> list[str]:
    """Each prediction's content (not its wall-clock timings), one canonical JSON string each."""
    keys = ("rig", "seq", "timestamp", "label", "probs", "position", "modalities", "model_version")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [json.dumps({k: r.get(k) for k in keys}, sort_keys=True) for r in rows]
