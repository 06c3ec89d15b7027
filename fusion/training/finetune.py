"""Starting a training run from a checkpoint's weights: `fusion train --init CHECKPOINT`.

Every tensor of the checkpoint is loaded into the new model, position head included. Each class
head (the classifier, over `class_names`; the detection head's class scores, over
`detection.classes` and its "nothing" row, last) is matched to the new model's class list by
name: the same names in another order load with their rows reordered, so that every class keeps
its own weights; other names (renamed, missing or extra classes) are an `InputError` naming
them, since loading the rows by position would silently give each class another's weights.
With `new_head=True` (`--new-head`), asked for explicitly, such a head is left as freshly
initialized instead, and so is a detection head that the checkpoint does not have. Anything
else that does not match (another architecture, another input layout) is a `CheckpointError`
naming the tensors, as fine-tuning on half-loaded weights would silently train a different model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fusion.errors import CheckpointError, InputError
from fusion.model import ModelConfig, Perceiver
from fusion.training.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

CLASSIFIER = "classifier."  # the state-dict prefix of the class head
DETECTOR = "detector."  # the state-dict prefix of the detection head
DETECTOR_CLASSES = "detector.class_head."  # its class scores: a row per class, then "nothing"


@dataclass(frozen=True)
class InitReport:
    kept: int  # tensors loaded from the checkpoint (reordered ones included)
    reset: tuple[str, ...]  # tensors left as initialized (a new head, asked for)
    classes_from: list[str]
    classes_to: list[str]
    remapped: tuple[str, ...] = ()  # tensors whose class rows were reordered by name

    def describe(self, path: str | Path) -> str:
        if self.reset:
            return (
                f"initialized from {path}: {self.kept} tensors kept; new class head(s) for "
                f"{', '.join(self.classes_from)} -> {', '.join(self.classes_to)} "
                f"({', '.join(self.reset)} re-initialized)"
            )
        if self.remapped:
            return (
                f"initialized from {path}: all {self.kept} tensors kept, the class rows reordered by name "
                f"({', '.join(self.classes_from)} -> {', '.join(self.classes_to)})"
            )
        return f"initialized from {path}: all {self.kept} tensors kept (same classes: {', '.join(self.classes_to)})"


def _names(config: ModelConfig) -> list[str]:
    return (
        list(config.class_names)
        if config.class_names is not None
        else [str(i) for i in range(config.num_classes)]
    )


def _heads(before: ModelConfig, after: ModelConfig) -> list[tuple[str, list[str], list[str]]]:
    """(state-dict prefix, checkpoint's class names, new model's) of each class head both have."""
    heads = [(CLASSIFIER, _names(before), _names(after))]
    if before.detection is not None and after.detection is not None:
        heads.append((DETECTOR_CLASSES, list(before.detection.classes), list(after.detection.classes)))
    return heads


def class_order(before: list[str], after: list[str], *, head: str) -> list[int]:
    """For each of `after`'s classes, its row in `before`.

    Raises:
        InputError: naming the differing classes, when the two lists are not the same names.
    """
    if sorted(before) == sorted(after):
        return [before.index(name) for name in after]
    gone = [n for n in before if n not in after]
    new = [n for n in after if n not in before]
    parts = [
        f"not in the new config: {', '.join(gone)}" if gone else "",
        f"new: {', '.join(new)}" if new else "",
    ]
    raise InputError(
        f"{head}: the checkpoint's classes ({', '.join(before)}) are not the training config's "
        f"({', '.join(after)}): {'; '.join(p for p in parts if p)}; fix the config's `classes`, or "
        "pass --new-head to train a new class head from scratch"
    )


def _remap(state: dict[str, torch.Tensor], prefix: str, order: list[int]) -> list[str]:
    """Reorder the class rows of every tensor under `prefix` (rows past the classes stay put)."""
    keys = [k for k in state if k.startswith(prefix)]
    for key in keys:
        rows = torch.tensor(order + list(range(len(order), state[key].shape[0])))
        state[key] = state[key].index_select(0, rows)
    return keys


def init_from_checkpoint(model: Perceiver, path: str | Path, *, new_head: bool = False) -> InitReport:
    """Load `path`'s weights into `model`, class heads matched by name (see the module docstring)."""
    config, state, _ = read_checkpoint(path)
    own = model.state_dict()
    reset: list[str] = []
    remapped: list[str] = []
    for prefix, before, after in _heads(config, model.config):
        try:
            order = class_order(before, after, head=f"{path}: {prefix.rstrip('.')}")
        except InputError:
            if not new_head:
                raise
            reset += [k for k in own if k.startswith(prefix)]
            continue
        if order != list(range(len(order))):
            remapped += _remap(state, prefix, order)
    if new_head and config.detection is None:
        reset += [k for k in own if k.startswith(DETECTOR)]
    wanted = {k: v for k, v in state.items() if k not in reset}
    _check_fit(path, own, wanted, set(reset))
    model.load_state_dict(wanted, strict=False)
    report = InitReport(
        kept=len(wanted),
        reset=tuple(reset),
        classes_from=_names(config),
        classes_to=_names(model.config),
        remapped=tuple(remapped),
    )
    log.info(report.describe(path))
    return report


def _check_fit(
    path: str | Path, own: dict[str, torch.Tensor], wanted: dict[str, torch.Tensor], reset: set[str]
) -> None:
    missing = sorted(set(own) - set(wanted) - reset)
    extra = sorted(set(wanted) - set(own))
    shapes = sorted(k for k in set(wanted) & set(own) if wanted[k].shape != own[k].shape)
    if missing or extra or shapes:
        parts = [
            f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("shape differs", shapes))
            if keys
        ]
        raise CheckpointError(f"{path}: weights do not fit the model being trained ({'; '.join(parts)})")
