"""Running the Perceiver on FusedSamples: device choice, batching, predictions.

`InferenceEngine` is the plain class inside the pipeline's inference actors: it picks CUDA when
there is one (bf16 autocast, pinned host memory, non-blocking copies) and the CPU otherwise,
collates samples of different sizes with key masks, and turns outputs into `Prediction`s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from fusion.errors import InputError
from fusion.model import Perceiver, collate
from fusion.sample import MODALITY_ORDER, FusedSample, Prediction

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {requested!r} requested but CUDA is not available here")
    return device


class InferenceEngine:
    """Batched prediction with one model on one device."""

    def __init__(self, model: Perceiver, *, model_version: str, device: str = "auto") -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.model_version = model_version
        self.class_names = model.config.class_names or [str(i) for i in range(model.config.num_classes)]
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
        done = time.time()
        preds = []
        for i, s in enumerate(samples):
            p = probs[i]
            preds.append(
                Prediction(
                    rig=s.rig,
                    seq=s.seq,
                    timestamp=s.timestamp,
                    label=self.class_names[int(p.argmax())],
                    probs=p.tolist(),
                    position=None if position is None else position[i].tolist(),
                    modalities=[m.value for m in MODALITY_ORDER if m in s.segments],
                    latency_s=done - _capture_wall(s, done),
                    model_version=self.model_version,
                    stage_times={**s.stage_times, "forward_start": started, "inferred": done},
                )
            )
        return preds

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
