"""What the runner does when an actor, or the node under it, is lost.

An actor that dies is restarted by Ray; the runner resubmits what a dead inference actor held
and reopens a sensor's stream (live) or resumes it where it stopped (replay). A node that dies
takes its actors with it: those whose resources another live node offers restart there, but a
rig pinned to that node (`rigs[].resources`) has nowhere to go. Then waiting is pointless:
after `flow.wait_for_nodes_s` for the node (or another like it) to come back, the run ends with
`NodeLost`, naming the node, and the runner flushes its summary.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorUnavailableError

from fusion.errors import RunEnded
from fusion.flow.messages import Call, CollectCall, InferCall, PushCall, ReadCall, WatchCall
from fusion.flow.recovery import TooManyRestarts
from fusion.flow.resources import Demand, shortfalls
from pipelines.preflight import alive_nodes

if TYPE_CHECKING:
    from pipelines.run_state import SensorHandle
    from pipelines.runner import PipelineRunner

log = logging.getLogger(__name__)
RESTART_WAIT_S = 120.0  # the longest a restarting actor on a live node is waited for
CHECK_EVERY_S = 1.0  # how often a wait looks at which nodes are alive
VERDICT_WAIT_S = 60.0  # a lost fuser: how long to look for a dead node before blaming the fuser


class NodeLost(RunEnded):
    """A node died with actors no live node can run; the message names the node and the rig."""

    def __init__(self, message: str, rig: str) -> None:
        super().__init__(message)
        self.rig = rig


class NodeWatch:
    """The nodes alive when the run started, and which of them have died since."""

    def __init__(self) -> None:
        self.started = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}

    def lost(self) -> list[str]:
        """'10.0.0.2 (node 4f2a...)' for each node of the start that is no longer alive."""
        now = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        return [f"{ip} (node {node_id})" for node_id, ip in self.started.items() if node_id not in now]

    def check(self, runner: PipelineRunner, rig_id: str) -> None:
        """Raise NodeLost when a node has died and rig `rig_id` can no longer be placed."""
        lost = self.lost()
        if not lost:
            return
        resources = runner.rig_resources(rig_id)
        need = [Demand(what=f"rig {rig_id}", count=1, bundle=resources, keys={n: n for n in resources})]
        if resources and shortfalls(need, list(alive_nodes().values())):
            names = ", ".join(sorted(resources))
            raise NodeLost(
                f"lost {', '.join(lost)}; rig {rig_id}'s actors need {names}, which no live node has",
                rig_id,
            )


class RestartCounter:
    """Counts inference actor restarts as new processes behind the pool's actors.

    One death fails every call the actor held, some answered before it and some after: counting
    failures would count it many times. A loss asks the actor (once Ray has restarted it) which
    process it is now; a process not seen before is a restart. Never blocks: `poll` takes the
    answers that have come.
    """

    def __init__(self, runner: PipelineRunner) -> None:
        self.pool = runner.pool
        self.known = [(h.info.get("node_id"), h.info.get("pid")) for h in runner.pool]
        self.asking: dict[int, Any] = {}  # slot -> its pending `info` call
        self.count = 0

    def lost(self, slot: int) -> None:
        if slot not in self.asking:
            self.asking[slot] = self.pool[slot].actor.info.remote()

    def poll(self, timeout: float = 0.0) -> int:
        """Take the answers that are in (waiting up to `timeout` for each); the count so far."""
        for slot, ref in list(self.asking.items()):
            ready, _ = ray.wait([ref], timeout=timeout)
            if not ready:
                continue
            del self.asking[slot]
            try:
                info = ray.get(ref)
            except ray.exceptions.RayActorError:  # asked while it was restarting: ask again
                self.lost(slot)
                continue
            process = (info.get("node_id"), info.get("pid"))
            if process != self.known[slot]:
                self.known[slot] = process
                self.count += 1
        return self.count


def recover(runner: PipelineRunner, call: Call, err: Exception) -> None:
    """A call failed because its actor died: resubmit, restart, or end the run."""
    match call:
        case InferCall(slot=slot, batch=batch):
            runner.inference.answered(slot)
            runner.restarts.lost(slot)
            log.warning(
                "inference actor lost (%s); resubmitting %d sample(s)", type(err).__name__, len(batch)
            )
            runner.stats.resubmitted += len(batch)
            runner.rig(batch[0].rig).pending.requeue(batch)
        case ReadCall(sensor=key) | WatchCall(sensor=key):
            restart_sensor(runner, runner.sensor(key), err)
        case PushCall(rig=rid) | CollectCall(rig=rid):
            fuser_lost(runner, rid, err)


def fuser_lost(runner: PipelineRunner, rid: str, err: Exception) -> None:
    """A fuser's alignment state dies with it: the run cannot go on without that rig. Ends it
    with NodeLost when the fuser's node died (Ray takes some seconds to declare it: until then,
    or until the restarted fuser answers on a live node, it looks)."""
    fuser = runner.rig(rid).fuser
    deadline = time.monotonic() + VERDICT_WAIT_S
    while time.monotonic() < deadline:
        try:
            runner.node_watch.check(runner, rid)
        except NodeLost:
            _wait_for_node(runner, rid, None)  # raises unless it comes back in time
        try:
            ray.get(fuser.stats.remote(), timeout=CHECK_EVERY_S)
            break  # restarted on a live node: the fuser crashed, not its node
        except (ActorUnavailableError, ray.exceptions.GetTimeoutError):
            time.sleep(0.2)
        except ray.exceptions.RayActorError:
            break
    raise RuntimeError(f"rig {rid}: fuser actor lost; its alignment state is gone") from err


def restart_sensor(runner: PipelineRunner, s: SensorHandle, err: Exception) -> None:
    """Its actor died or its stream stopped: Ray restarts the actor; reopen its source where the
    mode says (`SensorProgress.restart`), waiting while its node, or one like it, is alive."""
    runner.stats.sensor_restarts += 1
    live = not runner.driver.lossless
    try:
        resume_from = s.restart(live=live, max_restarts=runner.config.flow.max_restarts)
    except TooManyRestarts as too_many:
        raise too_many from err
    log.warning(
        "sensor %s/%s lost (%s); %s",
        s.rig,
        s.sensor_id,
        type(err).__name__,
        "streaming again" if live else f"resuming after frame {resume_from}",
    )
    _wait_for_node(runner, s.rig, lambda: s.actor.start.remote(resume_from=resume_from))
    runner.driver.resume(s)


def _wait_for_node(runner: PipelineRunner, rid: str, call: Any) -> None:
    """Make `call()` (a Ray call to a restarting actor of rig `rid`) until it answers; None: only
    check the node. Ends the run (NodeLost) when the rig cannot be placed for longer than
    `flow.wait_for_nodes_s`, and gives up on the actor after RESTART_WAIT_S."""
    deadline = time.monotonic() + RESTART_WAIT_S
    unplaceable_since: float | None = None
    ref = call() if call is not None else None
    while True:
        try:
            runner.node_watch.check(runner, rid)
            unplaceable_since = None
        except NodeLost:
            unplaceable_since = unplaceable_since or time.monotonic()
            if time.monotonic() - unplaceable_since >= runner.config.flow.wait_for_nodes_s:
                raise
            if ref is None:
                time.sleep(CHECK_EVERY_S)
                continue
        if ref is None:
            return
        try:
            ray.get(ref, timeout=CHECK_EVERY_S)
            return
        except ray.exceptions.GetTimeoutError:  # still queued at the restarting actor
            pass
        except ActorUnavailableError:  # Ray is still restarting it: ask again
            time.sleep(0.2)
            ref = call()
        if time.monotonic() > deadline:
            raise TimeoutError(f"rig {rid}: an actor did not come back within {RESTART_WAIT_S:.0f} s")
