"""What the run does when an actor, or the node under it, is lost: `Recovery`.

An actor that dies is restarted by Ray; recovery resubmits what a dead inference actor held and
reopens a sensor's source, where the mode says it resumes (`SensorProgress.restart`). A node that
dies takes its actors with it: those whose resources another live node offers restart there, but
a rig pinned to that node (`rigs[].resources`) has nowhere to go. Then waiting is pointless:
after `flow.wait_for_nodes_s` for the node (or another like it) to come back, the run ends with
`NodeLost`, naming the node, and the runner flushes its summary.

Recovery keeps its decisions over the run's books (`RunState`) and makes its calls through an
`ActorPort`: it imports no Ray, and is tested with a fake port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from fusion.errors import RunEnded
from fusion.flow.messages import Call, CollectCall, InferCall, PushCall, ReadCall, WatchCall
from fusion.flow.recovery import TooManyRestarts
from fusion.flow.resources import Demand, shortfalls
from fusion.sample import FusedSample
from pipelines.port import ActorLost, ActorPort, ActorUnavailable, NodeView, Ref, info_process
from pipelines.run_state import RunState, SensorHandle

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

    def __init__(self, port: ActorPort) -> None:
        self.port = port
        self.started = {node_id: node.address for node_id, node in port.alive_nodes().items()}

    def lost(self, alive: Mapping[str, NodeView] | None = None) -> list[str]:
        """'10.0.0.2 (node 4f2a...)' for each node of the start not in `alive` (None: asked now)."""
        now = self.port.alive_nodes() if alive is None else alive
        return [f"{ip} (node {node_id})" for node_id, ip in self.started.items() if node_id not in now]

    def check(self, state: RunState, rig_id: str) -> None:
        """Raise NodeLost when a node has died and rig `rig_id` can no longer be placed."""
        alive = self.port.alive_nodes()  # one look at the cluster serves both questions
        lost = self.lost(alive)
        if not lost:
            return
        resources = state.rig_resources(rig_id)
        need = [Demand(what=f"rig {rig_id}", count=1, bundle=resources, keys={n: n for n in resources})]
        if resources and shortfalls(need, [node.resources for node in alive.values()]):
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

    def __init__(self, state: RunState, port: ActorPort) -> None:
        self.state, self.port = state, port
        self.known = [info_process(h.info) for h in state.pool]
        self.asking: dict[int, Ref] = {}  # slot -> its pending `info` call
        self.count = 0

    def lost(self, slot: int) -> None:
        if slot not in self.asking:
            self.asking[slot] = self.port.info(self.state.pool[slot])

    def poll(self, timeout: float = 0.0) -> int:
        """Take the answers that are in (waiting up to `timeout` for each); the count so far."""
        for slot, ref in list(self.asking.items()):
            if not self.port.ready([ref], timeout):
                continue
            del self.asking[slot]
            try:
                process = info_process(self.port.result(ref))
            except ActorLost:  # asked while it was restarting: ask again
                self.lost(slot)
                continue
            if process != self.known[slot]:
                self.known[slot] = process
                self.count += 1
        return self.count


class Recovery:
    """Resubmits, restarts or ends the run when a call's actor is lost.

    Args:
        state: the run's books (samples are requeued there, restarts counted).
        port: the actor calls it makes (restarting a sensor, asking a fuser, the live nodes).
    """

    def __init__(self, state: RunState, port: ActorPort) -> None:
        self.state, self.port = state, port
        self.nodes = NodeWatch(port)
        self.restarts = RestartCounter(state, port)

    def recover(self, call: Call, err: Exception) -> SensorHandle | None:
        """A call failed because its actor died: resubmit its samples, restart its sensor (the
        sensor is returned: the driver resumes it), or end the run (a lost fuser)."""
        match call:
            case InferCall(slot=slot, batch=batch):
                self.inference_lost(slot)
                self.resubmit(batch, type(err).__name__)
            case ReadCall(sensor=key) | WatchCall(sensor=key):
                sensor = self.state.sensor(key)
                self.restart_sensor(sensor, err)
                return sensor
            case PushCall(rig=rid) | CollectCall(rig=rid):
                self.fuser_lost(rid, err)
        return None

    def inference_lost(self, slot: int) -> None:
        """pool[slot] died with a call in flight: that call is over; count the restart."""
        self.state.inference.answered(slot)
        self.restarts.lost(slot)

    def resubmit(self, samples: Sequence[FusedSample], how: str) -> None:
        """`samples` a dead inference actor held wait again, first in line in their rig."""
        log.warning("inference actor lost (%s); resubmitting %d sample(s)", how, len(samples))
        self.state.stats.resubmitted += len(samples)
        for rid in dict.fromkeys(s.rig for s in samples):
            self.state.rig(rid).pending.requeue([s for s in samples if s.rig == rid])

    def fuser_lost(self, rid: str, err: Exception) -> None:
        """A fuser's alignment state dies with it: the run cannot go on without that rig. Ends it
        with NodeLost when the fuser's node died (Ray takes some seconds to declare it: until
        then, or until the restarted fuser answers on a live node, it looks)."""
        deadline = time.monotonic() + VERDICT_WAIT_S
        while time.monotonic() < deadline:
            try:
                self.nodes.check(self.state, rid)
            except NodeLost:
                self._wait_for_node(rid, None)  # raises unless it comes back in time
            try:
                self.port.result(self.port.fuser_stats(self.state.rig(rid)), timeout=CHECK_EVERY_S)
                break  # restarted on a live node: the fuser crashed, not its node
            except (ActorUnavailable, TimeoutError):
                time.sleep(0.2)
            except ActorLost:
                break
        raise RuntimeError(f"rig {rid}: fuser actor lost; its alignment state is gone") from err

    def restart_sensor(self, s: SensorHandle, err: Exception) -> None:
        """Its actor died or its stream stopped: Ray restarts the actor; reopen its source where
        the mode says (`SensorProgress.restart`), waiting while its node, or one like it, is
        alive. Raises TooManyRestarts past `flow.max_restarts`. The caller resumes its reads."""
        self.state.stats.sensor_restarts += 1
        live = not self.state.lossless
        try:
            resume_from = s.restart(live=live, max_restarts=self.state.config.flow.max_restarts)
        except TooManyRestarts as too_many:
            raise too_many from err
        log.warning(
            "sensor %s/%s lost (%s); %s",
            s.rig,
            s.sensor_id,
            type(err).__name__,
            "streaming again" if live else f"resuming after frame {resume_from}",
        )
        self._wait_for_node(s.rig, lambda: self.port.start_sensor(s, resume_from))

    def _wait_for_node(self, rid: str, call: Callable[[], Ref] | None) -> None:
        """Make `call()` (a call to a restarting actor of rig `rid`) until it answers; None: only
        check the node. Ends the run (NodeLost) when the rig cannot be placed for longer than
        `flow.wait_for_nodes_s`, and gives up on the actor after RESTART_WAIT_S."""
        deadline = time.monotonic() + RESTART_WAIT_S
        unplaceable_since: float | None = None
        ref = call() if call is not None else None
        while True:
            try:
                self.nodes.check(self.state, rid)
                unplaceable_since = None
            except NodeLost:
                unplaceable_since = unplaceable_since or time.monotonic()
                if time.monotonic() - unplaceable_since >= self.state.config.flow.wait_for_nodes_s:
                    raise
                if ref is None:
                    time.sleep(CHECK_EVERY_S)
                    continue
            if ref is None or call is None:
                return
            try:
                self.port.result(ref, timeout=CHECK_EVERY_S)
                return
            except TimeoutError:  # still queued at the restarting actor
                pass
            except ActorUnavailable:  # Ray is still restarting it: ask again
                time.sleep(0.2)
                ref = call()
            if time.monotonic() > deadline:
                raise TimeoutError(f"rig {rid}: an actor did not come back within {RESTART_WAIT_S:.0f} s")
