"""Training run files: the optimizer's state as safetensors, and finding a run's newest checkpoint.

A checkpoint of `fusion train` is two files in the run directory: `step-NNNNNNN.safetensors` (the
model, `fusion.training.checkpoint`) and `step-NNNNNNN.state.safetensors` (this module: the optimizer's
moments, written last, so a checkpoint whose state file exists is complete). Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fusion.errors import CheckpointError

STEP_KEY = "fusion.train_step"


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.chmod(tmp, 0o644)  # safetensors writes owner-only files; a shipped model is for everyone
    os.replace(tmp, path)


def save_state(optimizer: torch.optim.Optimizer, path: Path, *, step: int) -> None:
    """The optimizer's moments and step counters as safetensors (param_groups in the metadata)."""
    state = optimizer.state_dict()
    tensors = {
        f"{idx}.{key}": value.detach().contiguous().cpu() if torch.is_tensor(value) else torch.tensor(value)
        for idx, entry in state["state"].items()
        for key, value in entry.items()
    }
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    atomic_write(
        path,
        lambda p: save_file(
            tensors, str(p), metadata={STEP_KEY: str(step), "param_groups": json.dumps(groups)}
        ),
    )


def load_state(optimizer: torch.optim.Optimizer, path: Path) -> int:
    """Restore the optimizer from `save_state`'s file; returns the step."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{path}: not a valid optimizer state file ({err})") from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    ordered = {idx: state[idx] for idx in sorted(state)}
    optimizer.load_state_dict({"state": ordered, "param_groups": json.loads(meta["param_groups"])})
    return int(meta[STEP_KEY])


def latest_checkpoint(run_dir: Path) -> tuple[Path, Path] | None:
    """(model file, state file) of the newest complete checkpoint in `run_dir`, or None."""
    states = sorted(run_dir.glob("step-*.state.safetensors"))
    for state in reversed(states):
        model = state.with_name(state.name.replace(".state", ""))
        if model.is_file():
            return model, state
    return None
