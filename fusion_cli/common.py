"""What more than one command needs: argument types, `--rig` lookup, Ctrl-C / SIGTERM handling.

Imports stay light (no Ray, no torch, no pipeline config): the parser is built from these for
every command, `fusion --help` included.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fusion.errors import ConfigError
from fusion.sample import Modality, parse_modality

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig, RigConfig

SignalHandler = Callable[[int, Any], None]


def parse_shape(text: str) -> tuple[Modality, tuple[int, ...]]:
    """`camera=224x224` or `lidar=4096` -> (modality, shape)."""
    try:
        name, _, dims = text.partition("=")
        shape = tuple(int(d) for d in dims.lower().split("x"))
        if not dims or min(shape) < 1:
            raise ValueError
        return parse_modality(name), shape
    except ValueError as err:
        msg = (
            str(err)
            if "modality" in str(err)
            else f"bad --input {text!r}: expected MODALITY=AxB or MODALITY=N"
        )
        raise argparse.ArgumentTypeError(msg) from None


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = as fast as possible), got {text}")
    return value


def pick_rig(
    config: PipelineConfig, wanted: str | None, *, path: str, replicas: bool = False
) -> tuple[str, RigConfig]:
    """The rig `--rig` names (default: the first), as (its name, its config).

    With `replicas`, the names are those the running pipeline gives a rig's copies (`<id>-<k>`),
    for a command that watches one of them (the demo); without, the config's rig ids, for a
    command that reads a rig's sensors as configured (record, replay). A name not there is a
    ConfigError that lists the names there are.
    """
    from pipelines.config import rig_ids

    names = {name: rig for rig in config.rigs for name in (rig_ids(rig) if replicas else [rig.id])}
    if wanted is None:
        return next(iter(names.items()))
    if wanted not in names:
        raise ConfigError(f"--rig {wanted!r}: not in {path} (rigs: {', '.join(names)})")
    return wanted, names[wanted]


def stop_handler(stop: Callable[[], None], *, who: str, doing: str = "stopping") -> SignalHandler:
    """First Ctrl-C or SIGTERM: `stop()`, a clean stop (outputs flushed, actors closed, Ray shut
    down by the command); a second one: KeyboardInterrupt, at once, for a stop that hangs."""
    stopping: list[int] = []

    def handle(signum: int, _frame: Any) -> None:
        if stopping:
            raise KeyboardInterrupt
        stopping.append(signum)
        print(f"\n{who}: {signal.Signals(signum).name}: {doing}", file=sys.stderr, flush=True)
        stop()

    return handle


def install(handler: SignalHandler) -> None:
    """Put `handler` on SIGINT and SIGTERM. Again after `ray.init`, which puts in a SIGTERM
    handler of its own that exits without the clean stop."""
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
