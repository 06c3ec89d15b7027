"""Starting a training run from a checkpoint's weights: `fusion train --init CHECKPOINT`.

Every tensor of the checkpoint is loaded into the new model, position head included. When the
new model's class list differs from the checkpoint's (other names, other order, other number),
the classifier is left as freshly initialized: its rows belong to classes the new model does
not have in that place. Anything else that does not match (another architecture, another input
layout) is an error naming the tensors, as fine-tuning on half-loaded weights would silently
train a different model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fusion.errors import CheckpointError
from fusion.model import Perceiver
from fusion.training.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

CLASSIFIER = "classifier."  # the state-dict prefix of the class head


@dataclass(frozen=True)
class InitReport:
    kept: int  # tensors loaded from the checkpoint
    reset: tuple[str, ...]  # tensors left as initialized (the classifier's, when classes changed)
    classes_from: list[str]
    classes_to: list[str]

    def describe(self, path: str | Path) -> str:
        if not self.reset:
            return f"initialized from {path}: all {self.kept} tensors kept (same classes: {', '.join(self.classes_to)})"
        return (
            f"initialized from {path}: {self.kept} tensors kept (encoder, latents, position head); "
            f"classifier re-initialized for the new classes ({', '.join(self.classes_from)} -> "
            f"{', '.join(self.classes_to)})"
        )


def _names(model_classes: list[str] | None, count: int) -> list[str]:
    return list(model_classes) if model_classes is not None else [str(i) for i in range(count)]


def init_from_checkpoint(model: Perceiver, path: str | Path) -> InitReport:
    """Load `path`'s weights into `model`; the classifier too only when the class lists agree."""
    config, state, _ = read_checkpoint(path)
    before = _names(config.class_names, config.num_classes)
    after = _names(model.config.class_names, model.config.num_classes)
    own = model.state_dict()
    reset = tuple(k for k in own if k.startswith(CLASSIFIER)) if before != after else ()
    wanted = {k: v for k, v in state.items() if k not in reset}
    missing = sorted(set(own) - set(wanted) - set(reset))
    extra = sorted(set(wanted) - set(own))
    shapes = sorted(k for k in set(wanted) & set(own) if wanted[k].shape != own[k].shape)
    if missing or extra or shapes:
        parts = [
            f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (("missing", missing), ("unexpected", extra), ("shape differs", shapes))
            if keys
        ]
        raise CheckpointError(f"{path}: weights do not fit the model being trained ({'; '.join(parts)})")
    model.load_state_dict(wanted, strict=False)
    report = InitReport(kept=len(wanted), reset=reset, classes_from=before, classes_to=after)
    log.info(report.describe(path))
    return report
