"""Can the cluster ever hold the pipeline's actors? The arithmetic, without Ray.

Every actor asks Ray for a bundle of resources (`{"CPU": 0.05, "rig0_host": 0.01}`). A request
no node can meet, or a sum larger than the whole cluster has, leaves actors pending forever;
`shortfalls` finds both before any actor starts, each named by the config key that asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Ray accounts resources in units of 1/10000: sums of fractions are compared with that slack.
_EPS = 1e-4


@dataclass(frozen=True, kw_only=True)
class Demand:
    """`count` actors, each asking for `bundle`; `keys` names the config key behind each resource."""

    what: str  # e.g. "rig sim's sensors"
    count: int
    bundle: Mapping[str, float]
    keys: Mapping[str, str]  # resource name -> config key path, e.g. "CPU" -> "flow.sensor_num_cpus"

    def key(self, name: str) -> str:
        return self.keys[name]


def shortfalls(demands: Sequence[Demand], nodes: Sequence[Mapping[str, float]]) -> list[str]:
    """One line per unmeetable request; empty when `nodes` (each node's total resources) fit.

    Checks each bundle against every single node (an actor lives on one node) and each
    resource's sum over all actors against the cluster's total. Packing several actors onto
    the nodes is left to Ray: these are the requests that cannot succeed however Ray packs.
    """
    problems: list[str] = []
    named: set[str] = set()
    for d in demands:
        wanted = {name: amount for name, amount in d.bundle.items() if amount > 0}
        if wanted and not any(_fits(wanted, node) for node in nodes):
            # Name the resources no node has enough of; if each exists but never together, all.
            short = [n for n in sorted(wanted) if all(node.get(n, 0.0) + _EPS < wanted[n] for node in nodes)]
            keys = ", ".join(d.key(name) for name in short or sorted(wanted))
            if keys in named:  # the same key's sensors and fuser: once is enough
                continue
            named.add(keys)
            problems.append(
                f"{keys}: one of {d.what} needs {_show(wanted)}; no node has that ({_best(wanted, nodes)})"
            )
    totals: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.items():
            totals[name] = totals.get(name, 0.0) + amount
    for name in sorted({n for d in demands for n in d.bundle}):
        askers = [d for d in demands if d.bundle.get(name, 0) > 0]
        need = sum(d.count * d.bundle[name] for d in askers)
        have = totals.get(name, 0.0)
        if askers and need > have + _EPS:
            parts = ", ".join(f"{d.what}: {d.count} x {d.bundle[name]:g}" for d in askers)
            hint = " (pin actors with a fraction, e.g. 0.01)" if name not in ("CPU", "GPU") else ""
            keys = ", ".join(dict.fromkeys(d.key(name) for d in askers))
            if keys in named:
                continue
            problems.append(
                f"{keys}: {need:g} {name} needed in all ({parts}), the cluster has {have:g}{hint}"
            )
    return problems


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(name, 0.0) + _EPS >= amount for name, amount in bundle.items())


def _show(bundle: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {amount:g}" for name, amount in sorted(bundle.items())) + "}"


def _best(bundle: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> str:
    if not nodes:
        return "the cluster has no node"
    most = {name: max(node.get(name, 0.0) for node in nodes) for name in bundle}
    return "the most any node has: " + _show(most)


def avoid_nodes(
    nodes: Mapping[str, Mapping[str, float]], pinned: set[str], bundle: Mapping[str, float]
) -> list[str]:
    """Nodes (by id) that can hold `bundle` and carry none of the `pinned` resources.

    Inference actors go there when the rigs pin their sensors to hosts by custom resources: a
    sensor host's few CPUs are for its sensors, not for a model that would starve them.
    Empty when no such node exists (then Ray places inference anywhere).
    """
    return sorted(
        node_id
        for node_id, resources in nodes.items()
        if not pinned & {n for n, v in resources.items() if v > 0} and _fits(bundle, resources)
    )
