"""Hosts for cluster tests: Linux namespaces on this machine, each with its own IP, PIDs and /tmp.

Nothing is faked but the machines. A host is a network namespace with a veth into a bridge
(which lives in a namespace of its own, so the machine's own network is never touched) and an
address in 10.231.0.0/24, plus one PID, mount, UTS and IPC namespace held open by a small init
process. Inside it every command sees its own loopback, hostname, process table, /tmp and
/dev/shm (Ray's object store), as on a separate machine; the repository and the virtualenv are
shared, as an NFS home would be, and so is `Hosts.shared`, the "shared disk" for configs,
recordings and outputs. Commands enter a host with `nsenter`, as `ssh host CMD` would.

Killing a host's init kills every process in its PID namespace (the kernel does it), which is
what `Host.crash` and teardown rely on. A test process that dies without teardown leaves
namespaces behind; `Hosts.__enter__` removes those of any earlier run whose pid is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PREFIX = "fusion-"  # every namespace the harness creates: fusion-<pid>-br, fusion-<pid>-h<k>
SUBNET = "10.231.0"  # /24; host k gets .k+1, the bridge namespace has no address
ROOT = Path("/var/tmp")  # outside /tmp, which each host replaces with its own
INIT = (  # PID 1 of a host: reaps orphans (a real init does) until killed
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.5)\n"
)


class HostsUnavailable(RuntimeError):
    """This machine cannot create namespaces; the message names the command and its stderr."""


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise HostsUnavailable(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@dataclass
class Host:
    """One machine. `run`/`popen` execute a command on it, in the repository, with `env`."""

    name: str  # the network namespace's name, also the hostname
    ip: str
    root: Path  # its private /tmp and HOME live under here
    repo: Path
    init: subprocess.Popen[bytes]
    init_pid: int = 0  # PID 1 of the host, as the machine's root namespace numbers it
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def tmp(self) -> Path:
        """The host's /tmp, seen from outside."""
        return self.root / "tmp"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def argv(self, command: Sequence[str]) -> list[str]:
        enter = ["nsenter", f"--target={self.init_pid}", "--net", "--pid", "--mount", "--uts", "--ipc"]
        # Entering a mount namespace resets the working directory to its root.
        return [*enter, f"--wd={self.repo}", "--", *command]

    def environ(self, env: Mapping[str, str] | None) -> dict[str, str]:
        base = {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "PYTHONPATH": str(self.repo),
            "LANG": "C.UTF-8",
        }
        return {**base, **(env or {})}

    def popen(
        self, command: Sequence[str], *, env: Mapping[str, str] | None = None, log: IO[Any] | None = None
    ) -> subprocess.Popen[Any]:
        """Start `command` on this host; `log` takes its stdout and stderr (else both are piped)."""
        out = log if log is not None else subprocess.PIPE
        proc = subprocess.Popen(
            self.argv(command),
            env=self.environ(env),
            stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(
        self, command: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` on this host to the end; stdout and stderr are captured, never checked."""
        return subprocess.run(
            self.argv(command), env=self.environ(env), capture_output=True, text=True, timeout=timeout
        )

    def python(
        self, code: str, *, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-c", code], env=env, timeout=timeout)

    def pids(self, name: str) -> list[int]:
        """PIDs (as this host numbers them) of the processes called exactly `name` (`raylet`)."""
        done = self.run(["pgrep", "-x", name], timeout=30)
        return [int(p) for p in done.stdout.split()]

    def kill(self, pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill a process of this host by its PID there (what Ray reports for its workers)."""
        done = self.run(["kill", f"-{sig.name.removeprefix('SIG')}", str(pid)], timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: kill {pid}: {done.stderr.strip()}")

    def crash(self) -> None:
        """Power off: every process on the host dies at once (its PID namespace goes with init)."""
        if self.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        self.init.wait(timeout=30)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # an nsenter whose child ignored the namespace's end
                proc.kill()
                proc.wait(timeout=30)
        self.procs.clear()


class Hosts:
    """`count` hosts on one bridge: `with Hosts(3, repo=...) as hosts: hosts[0].run([...])`."""

    def __init__(self, count: int, *, repo: Path) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.count = count
        self.repo = repo
        self.root = ROOT / self.tag
        self.bridge_ns = f"{self.tag}-br"
        self.hosts: list[Host] = []

    @property
    def shared(self) -> Path:
        """A directory every host and the test see at the same path."""
        return self.root / "shared"

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def at(self, ip: str) -> Host:
        return next(h for h in self.hosts if h.ip == ip)

    def __enter__(self) -> Hosts:
        self.check()
        remove_leftovers()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def check() -> None:
        """Raise HostsUnavailable naming what is missing (tools, root, namespaces)."""
        for tool in ("ip", "nsenter", "unshare", "pgrep"):
            if shutil.which(tool) is None:
                raise HostsUnavailable(f"`{tool}` not found on PATH")
        probe = f"{PREFIX}{os.getpid()}-probe"
        _sh("ip", "netns", "add", probe)
        try:
            _sh("ip", "netns", "exec", probe, "unshare", "--pid", "--fork", "--mount-proc", "--uts", "true")
        finally:
            _sh("ip", "netns", "del", probe, check=False)

    def _create(self) -> None:
        self.shared.mkdir(parents=True, exist_ok=True)
        _sh("ip", "netns", "add", self.bridge_ns)
        _sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for k in range(self.count):
            self._add_host(k)

    def _add_host(self, k: int) -> None:
        name, ip = f"{self.tag}-h{k}", f"{SUBNET}.{k + 1}"
        root = self.root / f"h{k}"
        for sub in ("tmp", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        _sh("ip", "netns", "add", name)
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh(
            "ip",
            "-n",
            name,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            f"h{k}",
            "netns",
            self.bridge_ns,
        )
        _sh("ip", "-n", self.bridge_ns, "link", "set", f"h{k}", "master", "br0", "up")
        _sh("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", name, "link", "set", "eth0", "up")
        ready = root / "tmp" / ".up"
        # The host's own /tmp hides the machine's: a checkout or virtualenv that lives under /tmp
        # (a CI clone, say) is bound back in at its own path, as an NFS home would be mounted.
        outer = root / "outer-tmp"
        outer.mkdir(exist_ok=True)
        keep = " ".join(
            f"&& mkdir -p {p} && mount --bind {outer / p.relative_to('/tmp')} {p}" for p in self._under_tmp()
        )
        setup = (
            f"mount --bind /tmp {outer} && mount --bind {root / 'tmp'} /tmp {keep}"
            f" && mount -t tmpfs -o size=1g tmpfs /dev/shm"
            f" && hostname {name} && touch /tmp/.up && exec {sys.executable} -c '{INIT}'"
        )
        init = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                name,
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "--uts",
                "--ipc",
                "--kill-child",
                "sh",
                "-c",
                setup,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        host = Host(name=name, ip=ip, root=root, repo=self.repo, init=init)
        self.hosts.append(host)  # torn down even if it never comes up
        deadline = time.monotonic() + 30
        while not (ready.exists() and _children(init.pid)):
            if init.poll() is not None or time.monotonic() > deadline:
                err = init.stderr.read().decode() if init.stderr else ""
                # Namespaces work (check() passed): a host that fails to start is a failure, not a skip.
                raise RuntimeError(f"host {name} did not come up: {err.strip() or 'timed out'}")
            time.sleep(0.05)
        host.init_pid = _children(init.pid)[0]

    def _under_tmp(self) -> list[Path]:
        """What every host needs from the machine's /tmp: the checkout, the virtualenv, Python."""
        needed = {self.repo.resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent}
        under = sorted(p for p in needed if p.is_relative_to("/tmp"))
        return [p for p in under if not any(p != q and p.is_relative_to(q) for q in under)]

    def close(self) -> None:
        for host in self.hosts:
            host.crash()
        for host in self.hosts:
            _sh("ip", "netns", "del", host.name, check=False)
        _sh("ip", "netns", "del", self.bridge_ns, check=False)
        self.hosts = []
        shutil.rmtree(self.root, ignore_errors=True)


def remove_leftovers() -> None:
    """Namespaces (and their processes) of earlier runs whose test process is gone."""
    names = _sh("ip", "-json", "netns", "list", check=False).stdout.strip()
    for entry in json.loads(names or "[]"):
        name = entry["name"]
        parts = name.split("-")
        if not name.startswith(PREFIX) or len(parts) < 3 or not parts[1].isdigit():
            continue
        if Path(f"/proc/{parts[1]}").exists():
            continue  # a run in progress
        for pid in _sh("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _sh("ip", "netns", "del", name, check=False)
        shutil.rmtree(ROOT / f"{PREFIX}{parts[1]}", ignore_errors=True)
