"""Evaluation: `fusion eval --checkpoint CKPT --data DIR`.

The model is run on a labelled split once per subset of modalities (each one alone, each
pair, all three), by leaving the other modalities' segments out of every sample, which is how
the live pipeline presents a sensor that is missing. Per subset: accuracy, macro-F1, the
confusion matrix, the position error (metres, over samples that hold an object, whatever the
predicted class) as median and 90th percentile, and accuracy per condition (day or night,
weather, distance band, signal-to-noise band). With `--shifted SPLIT` the same model is also
run on a split rendered in a shifted world (more night, fog and rain than training). The
report is Markdown with PNG plots (`fusion.training.eval_report`) and checks the quality targets
(`Targets`): all three sensors >= 98.5 %, the camera alone >= 75 % (>= 85 % by day), every
pair beats each of its members, losing any one sensor costs <= 5 points (<= 10 in the
shifted world), position error median <= 0.6 m.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fusion.model import Perceiver, collate
from fusion.sample import MODALITY_ORDER, FusedSample, Modality
from fusion.training.data import LabelledSet

# Every non-empty subset of the three sensors: singles, pairs, all three.
SUBSETS: tuple[tuple[Modality, ...], ...] = tuple(
    combo for k in range(1, len(MODALITY_ORDER) + 1) for combo in itertools.combinations(MODALITY_ORDER, k)
)
NO_INPUT = -1  # the prediction for a sample that has none of the subset's modalities: always wrong

DISTANCE_BANDS_M = (10.0, 15.0, 20.0)
SNR_BANDS_DB = (-10.0, 0.0, 10.0)


@dataclass(frozen=True)
class Targets:
    """What the shipped model must reach (accuracy in percent, drops in points)."""

    all_three: float = 98.5
    camera: float = 75.0
    camera_day: float = 85.0
    max_drop: float = 5.0  # losing any one sensor, on the held-out split
    max_drop_shifted: float = 10.0  # losing any one sensor, in the shifted world
    position_median_m: float = 0.6


def subset_name(subset: Sequence[Modality]) -> str:
    return "+".join(m.value for m in subset)


ALL = subset_name(MODALITY_ORDER)


def _drop_checks(acc: dict[str, float], limit: float, where: str) -> list[tuple[str, bool]]:
    """Losing any one sensor costs at most `limit` points against all three."""
    full, out = acc[ALL], []
    for missing in MODALITY_ORDER:
        pair = acc[subset_name(tuple(m for m in MODALITY_ORDER if m is not missing))]
        out.append(
            (
                f"{where}without {missing.value}: {pair:.1f}% is within {limit:g} points of all three "
                f"({full:.1f}%, drop {full - pair:.1f})",
                full - pair <= limit,
            )
        )
    return out


def predict(
    model: Perceiver,
    samples: Sequence[FusedSample],
    *,
    modalities: Sequence[Modality] | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(class index [N] (NO_INPUT when a sample has none of `modalities`), position [N, 3] (NaN
    where there is no head or no input)), using only `modalities` (default: all present)."""
    keep = tuple(modalities or MODALITY_ORDER)
    pred = np.full(len(samples), NO_INPUT, dtype=np.int64)
    pos = np.full((len(samples), 3), np.nan)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, len(samples), batch_size):
                segments = [
                    {m: s.segments[m] for m in keep if m in s.segments} for s in samples[lo : lo + batch_size]
                ]
                idx = np.array([lo + i for i, seg in enumerate(segments) if seg])
                if not len(idx):
                    continue
                out = model(collate([seg for seg in segments if seg]))
                pred[idx] = out.logits.argmax(-1).numpy()
                if out.position is not None:
                    pos[idx] = out.position.numpy()
    finally:
        model.train(was_training)
    return pred, pos


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows true class, columns predicted (NO_INPUT predictions left out)."""
    ok = pred >= 0
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels[ok], pred[ok]), 1)
    return cm


def macro_f1(cm: np.ndarray, labels: np.ndarray) -> float:
    """Mean F1 over classes; `labels` gives each class's support (NO_INPUT counts as a miss)."""
    tp = np.diag(cm).astype(float)
    support = np.bincount(labels, minlength=len(cm)).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1[support > 0].mean())


def condition_bands(scene: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per condition, each sample's band name ('' for 'not applicable', e.g. range of 'nothing')."""
    dist = scene["distance_m"]
    snr = scene["snr_db"]
    return {
        "light": np.where(scene["night"], "night", "day"),
        "weather": np.asarray(scene["weather"], dtype=object),
        "distance": _bands(dist, DISTANCE_BANDS_M, "m"),
        "snr": _bands(snr, SNR_BANDS_DB, "dB"),
    }


def _bands(x: np.ndarray, edges: Sequence[float], unit: str) -> np.ndarray:
    names = [f"< {edges[0]:g} {unit}"]
    names += [f"{a:g} to {b:g} {unit}" for a, b in itertools.pairwise(edges)]
    names += [f">= {edges[-1]:g} {unit}"]
    out = np.array([names[i] for i in np.digitize(np.nan_to_num(x), edges)], dtype=object)
    out[np.isnan(x)] = ""
    return out


def band_order(condition: str) -> list[str]:
    if condition == "light":
        return ["day", "night"]
    if condition == "weather":
        return ["clear", "fog", "rain"]
    edges, unit = (DISTANCE_BANDS_M, "m") if condition == "distance" else (SNR_BANDS_DB, "dB")
    return list(_bands(np.array([edges[0] - 1, *edges]), edges, unit))


@dataclass
class SubsetResult:
    """Metrics of one modality subset."""

    subset: str
    samples: int
    no_input: int  # samples that had none of the subset's modalities (counted as wrong)
    accuracy: float
    macro_f1: float
    position_median_m: float
    position_p90_m: float
    confusion: list[list[int]]
    by_condition: dict[str, dict[str, tuple[int, float]]] = field(
        default_factory=dict
    )  # band -> (n, accuracy)


def score(
    labels: np.ndarray,
    pred: np.ndarray,
    pos_pred: np.ndarray,
    pos_true: np.ndarray,
    bands: dict[str, np.ndarray],
    *,
    subset: str,
    num_classes: int,
) -> SubsetResult:
    correct = pred == labels
    cm = confusion_matrix(labels, pred, num_classes)
    has = ~np.isnan(pos_true).any(axis=1)
    err = np.linalg.norm(pos_pred[has] - pos_true[has], axis=1)
    err = err[~np.isnan(err)]
    by_condition = {
        cond: {
            band: (int((names == band).sum()), float(correct[names == band].mean()))
            for band in band_order(cond)
            if (names == band).any()
        }
        for cond, names in bands.items()
    }
    return SubsetResult(
        subset=subset,
        samples=len(labels),
        no_input=int((pred == NO_INPUT).sum()),
        accuracy=float(correct.mean()),
        macro_f1=macro_f1(cm, labels),
        position_median_m=float(np.median(err)) if len(err) else math.nan,
        position_p90_m=float(np.percentile(err, 90)) if len(err) else math.nan,
        confusion=cm.tolist(),
        by_condition=by_condition,
    )


@dataclass
class EvalReport:
    class_names: list[str]
    samples: int
    results: list[SubsetResult]
    seconds: float

    def result(self, subset: Sequence[Modality]) -> SubsetResult:
        name = subset_name(subset)
        return next(r for r in self.results if r.subset == name)

    def targets(
        self, targets: Targets | None = None, *, shifted: EvalReport | None = None
    ) -> list[tuple[str, bool]]:
        """(claim, holds) for each quality target; `shifted`: the same model in a shifted world."""
        t = targets or Targets()
        acc = {r.subset: 100 * r.accuracy for r in self.results}
        full = acc[ALL]
        camera = self.result((Modality.CAMERA,))
        day = camera.by_condition.get("light", {}).get("day", (0, math.nan))[1] * 100
        position = self.result(MODALITY_ORDER).position_median_m
        checks = [
            (f"all three reach >= {t.all_three:g}% ({full:.1f}%)", full >= t.all_three),
            (f"camera alone reaches >= {t.camera:g}% ({acc['camera']:.1f}%)", acc["camera"] >= t.camera),
            (f"camera alone by day reaches >= {t.camera_day:g}% ({day:.1f}%)", day >= t.camera_day),
        ]
        for a, b in itertools.combinations(MODALITY_ORDER, 2):
            pair, sa, sb = acc[subset_name((a, b))], acc[a.value], acc[b.value]
            checks.append(
                (
                    f"{a.value}+{b.value} ({pair:.1f}%) beats {a.value} ({sa:.1f}%) and {b.value} ({sb:.1f}%)",
                    pair > sa and pair > sb,
                )
            )
        checks += _drop_checks(acc, t.max_drop, "")
        if shifted is not None:
            checks += _drop_checks(
                {r.subset: 100 * r.accuracy for r in shifted.results}, t.max_drop_shifted, "shifted world, "
            )
        checks.append(
            (
                f"position error median with all three <= {t.position_median_m:g} m ({position:.2f} m)",
                position <= t.position_median_m,
            )
        )
        return checks

    def fusion_gain(self) -> tuple[str, float]:
        """The best single sensor and how many points all three add to it."""
        acc = {m.value: 100 * self.result((m,)).accuracy for m in MODALITY_ORDER}
        best = max(acc, key=lambda k: acc[k])
        return best, 100 * self.result(MODALITY_ORDER).accuracy - acc[best]


def evaluate(
    model: Perceiver, data: LabelledSet, *, batch_size: int = 64, progress: bool = True
) -> EvalReport:
    """Every subset's metrics on `data`."""
    import time

    from tqdm import tqdm

    names = model.config.class_names or [str(i) for i in range(model.config.num_classes)]
    labels = data.labels
    pos_true = np.array(
        [s.target_position if s.target_position is not None else (np.nan,) * 3 for s in data.samples], float
    )
    bands = condition_bands(data.scene)
    results = []
    t0 = time.perf_counter()
    for subset in tqdm(SUBSETS, desc="eval", unit="subset", disable=not progress):
        pred, pos = predict(model, data.samples, modalities=subset, batch_size=batch_size)
        results.append(
            score(labels, pred, pos, pos_true, bands, subset=subset_name(subset), num_classes=len(names))
        )
    return EvalReport(
        class_names=list(names), samples=len(data), results=results, seconds=time.perf_counter() - t0
    )
