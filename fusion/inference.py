"""Running the Perceiver on FusedSamples: device choice, batching, predictions.

`InferenceEngine` is the plain class inside the pipeline's inference actors: it picks CUDA when
there is one (bf16 autocast, pinned host memory, non-blocking copies) and the CPU otherwise,
collates samples of different sizes with key masks, and turns outputs into `Prediction`s.

Objects: a model with a detection head (`ModelConfig.detection`) gives its object list through
`fusion.model.detection.to_objects`. Today's classifier gives at most one object: its top class
with its position estimate, scored by that class's probability; none when the top class is the
no-object class ("nothing" or "none") or the model has no position head. A classifier estimates
no size, heading or motion, so its object is a `CLASSIFIER_BOX_SIZE` cube, yaw 0, at rest.
Objects scoring under `min_score` are left out either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from fusion.detection.boxes import Box3D
from fusion.errors import InputError
from fusion.model import Perceiver, collate
from fusion.model.detection import to_objects
from fusion.model.detection_config import NOTHING
from fusion.model.perceiver import PerceiverOutput
from fusion.sample import MODALITY_ORDER, FusedSample, Prediction

log = logging.getLogger(__name__)

NO_OBJECT_CLASSES = frozenset({NOTHING, "none"})  # a classifier's "no object here"
# The size given to a classifier's object, which has no size estimate: a placeholder 1 m cube
# (a Box3D's sizes must be > 0), the same for every class so that no one reads it as measured.
CLASSIFIER_BOX_SIZE = (1.0, 1.0, 1.0)
DEFAULT_MIN_SCORE = 0.3


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {requested!r} requested but CUDA is not available here")
    return device


class InferenceEngine:
    """Batched prediction with one model on one device; objects scoring under `min_score` (in
    [0, 1]) are left out of the predictions."""

    def __init__(
        self,
        model: Perceiver,
        *,
        model_version: str,
        device: str = "auto",
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise InputError(f"min_score is {min_score}: a score threshold is in [0, 1]")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.model_version = model_version
        self.min_score = min_score
        self.class_names = model.config.class_names or [str(i) for i in range(model.config.num_classes)]
        detection = model.config.detection
        self.object_classes: list[str] | None = None if detection is None else list(detection.classes)
        # bf16 autocast on GPUs; fp32 on CPUs, where it is exact and (without AMX) faster.
        self.autocast = self.device.type == "cuda"

    def warm_up(self) -> None:
        """One forward on random inputs of the model's example shapes, at start-up: the first
        forward (allocations, kernel choice, cached grid encodings) is far slower than the rest
        and would otherwise land on the first live sample. The weights are not touched."""
        from fusion.model.info import example_inputs, example_shapes

        cfg = self.model.config
        gen = torch.Generator().manual_seed(0)
        batch = example_inputs(cfg, example_shapes(cfg), device=self.device, generator=gen)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast),
        ):
            self.model(batch)

    def predict(self, samples: Sequence[FusedSample]) -> list[Prediction]:
        """Predictions in the order of `samples`; a bad sample gets an error Prediction, not an exception."""
        if not samples:
            return []
        try:
            return self._predict_batch(samples)
        except ValueError as err:
            if len(samples) == 1:
                return [self._error(samples[0], str(err))]
        # Isolate the bad sample(s); the others still get predictions.
        return [p for s in samples for p in self.predict([s])]

    def _predict_batch(self, samples: Sequence[FusedSample]) -> list[Prediction]:
        if any(not s.segments for s in samples):
            raise InputError("sample has no modality at all")
        started = time.time()
        batch = collate([s.segments for s in samples])
        if self.device.type == "cuda":
            for x in batch.values():
                for name in ("values", "positions", "mask"):
                    t = getattr(x, name)
                    if t is not None:
                        setattr(x, name, t.pin_memory().to(self.device, non_blocking=True))
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast),
        ):
            out = self.model(batch)
            probs = out.logits.float().softmax(-1).cpu()
            position = None if out.position is None else out.position.float().cpu()
            objects = self._objects(out, probs, position)
        done = time.time()
        preds = []
        for i, s in enumerate(samples):
            label, where = self._top(probs[i], None if position is None else position[i], objects[i])
            preds.append(
                Prediction(
                    rig=s.rig,
                    seq=s.seq,
                    timestamp=s.timestamp,
                    label=label,
                    probs=probs[i].tolist(),
                    position=where,
                    modalities=[m.value for m in MODALITY_ORDER if m in s.segments],
                    latency_s=done - _capture_wall(s, done),
                    model_version=self.model_version,
                    stage_times={**s.stage_times, "forward_start": started, "inferred": done},
                    objects=objects[i],
                )
            )
        return preds

    def _objects(
        self, out: PerceiverOutput, probs: torch.Tensor, position: torch.Tensor | None
    ) -> list[list[Box3D]]:
        """Per sample, its objects over `min_score`, highest score first. probs: [B, num_classes];
        position: [B, 3] or None."""
        if out.detections is not None:
            assert self.object_classes is not None, "detections from a model without a detection head"
            return to_objects(out.detections, self.object_classes, min_score=self.min_score)
        return [
            self._classifier_objects(p, None if position is None else position[i])
            for i, p in enumerate(probs)
        ]

    def _classifier_objects(self, probs: torch.Tensor, position: torch.Tensor | None) -> list[Box3D]:
        """The classifier's top class as one object (see the module docstring), or none."""
        score, index = (float(v) for v in probs.max(-1))
        name = self.class_names[int(index)]
        if position is None or name in NO_OBJECT_CLASSES or score < self.min_score:
            return []
        x, y, z = position.tolist()
        return [Box3D(class_name=name, center=(x, y, z), size=CLASSIFIER_BOX_SIZE, yaw=0.0, score=score)]

    def _top(
        self, probs: torch.Tensor, position: torch.Tensor | None, objects: list[Box3D]
    ) -> tuple[str, list[float] | None]:
        """The deprecated `label` and `position`: the top-scoring object's (a detection model:
        "nothing" and None without one), else the classifier's top class and position."""
        if self.object_classes is None:
            return self.class_names[int(probs.argmax())], None if position is None else position.tolist()
        if not objects:
            return NOTHING, None
        return objects[0].class_name, list(objects[0].center)

    def _error(self, s: FusedSample, message: str) -> Prediction:
        log.warning("rig %s seq %d: sample skipped: %s", s.rig, s.seq, message)
        done = time.time()
        return Prediction(
            rig=s.rig,
            seq=s.seq,
            timestamp=s.timestamp,
            label="",
            probs=[],
            position=None,
            modalities=[m.value for m in MODALITY_ORDER if m in s.segments],
            latency_s=done - _capture_wall(s, done),
            model_version=self.model_version,
            stage_times=dict(s.stage_times),
            error=message,
        )


def _capture_wall(s: FusedSample, default: float) -> float:
    """When the newest reading of the sample was captured: from then on, the sample could exist."""
    captured = [t for k, t in s.stage_times.items() if k.startswith("capture.")]
    return max(captured) if captured else default
