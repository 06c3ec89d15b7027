"""Evaluation: `fusion eval --checkpoint CKPT --data DIR`.

The model is run on a labelled split once per subset of modalities (each one alone, each
pair, all three), by leaving the other modalities' segments out of every sample, which is how
the live pipeline presents a sensor that is missing. Per subset: accuracy, macro-F1, the
confusion matrix, the position error (metres, over samples that hold an object, whatever the
predicted class) as median and 90th percentile, and accuracy per condition (day or night,
weather, distance band, signal-to-noise band). The report is Markdown with PNG plots, and
checks the targets of the fusion claim: all three beat the best single sensor by at least 10
points, every pair beats each of its members, and no single missing sensor costs more than
10 points.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusion.data import LabelledSet
from fusion.model import Perceiver, collate
from fusion.sample import MODALITY_ORDER, FusedSample, Modality

# Every non-empty subset of the three sensors: singles, pairs, all three.
SUBSETS: tuple[tuple[Modality, ...], ...] = tuple(
    combo for k in range(1, len(MODALITY_ORDER) + 1) for combo in itertools.combinations(MODALITY_ORDER, k)
)
NO_INPUT = -1  # the prediction for a sample that has none of the subset's modalities: always wrong

DISTANCE_BANDS_M = (10.0, 15.0, 20.0)
SNR_BANDS_DB = (-10.0, 0.0, 10.0)
TARGET_GAIN = 10.0  # accuracy points
TARGET_DROP = 10.0
TARGET_ACCURACY = 0.90


def subset_name(subset: Sequence[Modality]) -> str:
    return "+".join(m.value for m in subset)


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

    def targets(self) -> list[tuple[str, bool]]:
        """(claim, holds) for each target of the fusion claim."""
        acc = {r.subset: 100 * r.accuracy for r in self.results}
        full = acc[subset_name(MODALITY_ORDER)]
        singles = {m.value: acc[m.value] for m in MODALITY_ORDER}
        best = max(singles, key=lambda k: singles[k])
        checks = [
            (
                f"all three ({full:.1f}%) beat the best single sensor ({best}, {singles[best]:.1f}%) "
                f"by >= {TARGET_GAIN:g} points (gain {full - singles[best]:+.1f})",
                full - singles[best] >= TARGET_GAIN,
            )
        ]
        for a, b in itertools.combinations(MODALITY_ORDER, 2):
            pair = acc[subset_name((a, b))]
            checks.append(
                (
                    f"{a.value}+{b.value} ({pair:.1f}%) beats {a.value} ({singles[a.value]:.1f}%) "
                    f"and {b.value} ({singles[b.value]:.1f}%)",
                    pair > singles[a.value] and pair > singles[b.value],
                )
            )
        for missing in MODALITY_ORDER:
            rest = tuple(m for m in MODALITY_ORDER if m is not missing)
            pair = acc[subset_name(rest)]
            checks.append(
                (
                    f"without {missing.value}: {pair:.1f}% is within {TARGET_DROP:g} points of all three "
                    f"(drop {full - pair:.1f})",
                    full - pair <= TARGET_DROP,
                )
            )
        checks.append(
            (f"all three reach >= {100 * TARGET_ACCURACY:g}% ({full:.1f}%)", full >= 100 * TARGET_ACCURACY)
        )
        return checks

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


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


# --------------------------------------------------------------------------- report


def write_report(
    report: EvalReport,
    markdown: Path,
    img_dir: Path,
    *,
    title: str,
    checkpoint: str,
    data: str,
    image_prefix: str = "eval",
) -> Path:
    """Write the Markdown report and its PNG plots; image links are relative to the report."""
    img_dir.mkdir(parents=True, exist_ok=True)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, img_dir, image_prefix)
    rel = {k: Path(_relpath(p, markdown.parent)) for k, p in plots.items()}
    lines = [
        f"# {title}",
        "",
        f"Checkpoint `{checkpoint}`, data `{data}`: {report.samples} held-out samples "
        f"(evaluated in {report.seconds:.0f} s). A subset means the other sensors' segments were left "
        "out of every sample, as the pipeline does when a sensor is missing.",
        "",
        "## Targets",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {claim}" for claim, ok in report.targets()],
        "",
        "## Accuracy by subset of sensors",
        "",
        "| sensors | accuracy | macro-F1 | position error median (m) | position error p90 (m) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {r.subset} | {100 * r.accuracy:.1f}% | {r.macro_f1:.3f} | {r.position_median_m:.2f} | {r.position_p90_m:.2f} |"
            for r in report.results
        ],
        "",
        f"![accuracy by subset]({rel['subsets']})",
        "",
        "## Accuracy by condition",
        "",
        "Rows: condition bands (sample counts in brackets); columns: sensor subsets. Distance is "
        "the object's horizontal range; SNR is the object's sound over the background in the 1 s "
        "window ('nothing' samples have neither).",
        "",
    ]
    for cond in ("light", "weather", "distance", "snr"):
        header = "| " + cond + " | " + " | ".join(r.subset for r in report.results) + " |"
        lines += [header, "| --- |" + " ---: |" * len(report.results)]
        for band in band_order(cond):
            cells = [r.by_condition[cond].get(band) for r in report.results]
            if cells[0] is None:
                continue
            lines.append(
                f"| {band} ({cells[0][0]}) | "
                + " | ".join(f"{100 * c[1]:.1f}%" if c else "-" for c in cells)
                + " |"
            )
        lines.append("")
    lines += [f"![accuracy by condition]({rel['conditions']})", "", "## Confusion matrices", ""]
    lines += [f"![confusion matrices]({rel['confusion']})", ""]
    full = report.results[-1]
    lines += [
        "All three sensors (rows: true class, columns: predicted):",
        "",
        "| true \\ predicted | " + " | ".join(report.class_names) + " |",
        "| --- |" + " ---: |" * len(report.class_names),
        *[
            f"| {name} | " + " | ".join(str(v) for v in row) + " |"
            for name, row in zip(report.class_names, full.confusion, strict=True)
        ],
        "",
    ]
    markdown.write_text("\n".join(lines))
    return markdown


def _relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def _plots(report: EvalReport, img_dir: Path, prefix: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {
        "subsets": img_dir / f"{prefix}-subsets.png",
        "conditions": img_dir / f"{prefix}-conditions.png",
        "confusion": img_dir / f"{prefix}-confusion.png",
    }
    names = [r.subset.replace("+", "\n+") for r in report.results]
    acc = [100 * r.accuracy for r in report.results]
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = ["#9bb7d4"] * 3 + ["#5b8fc7"] * 3 + ["#1f4e8c"]
    bars = ax.bar(names, acc, color=colors[: len(acc)])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy by subset of sensors (held-out test split)")
    fig.tight_layout()
    fig.savefig(paths["subsets"], dpi=110)
    plt.close(fig)

    conds = ("light", "weather", "distance", "snr")
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharey=True)
    for ax, cond in zip(axes, conds, strict=True):
        bands = [b for b in band_order(cond) if b in report.results[0].by_condition[cond]]
        for r in report.results:
            ax.plot(bands, [100 * r.by_condition[cond][b][1] for b in bands], marker="o", label=r.subset)
        ax.set_title(cond)
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(paths["conditions"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    shown = [r for r in report.results if r.subset.count("+") != 1]  # singles and all three
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.4))
    for ax, r in zip(axes, shown, strict=True):
        cm = np.asarray(r.confusion, float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(report.class_names)), report.class_names, rotation=60, fontsize=7)
        ax.set_yticks(range(len(report.class_names)), report.class_names if ax is axes[0] else [], fontsize=7)
        for (i, j), v in np.ndenumerate(norm):
            if v >= 0.05:
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if v > 0.5 else "black",
                )
        ax.set_title(f"{r.subset}: {100 * r.accuracy:.1f}%", fontsize=9)
    fig.tight_layout()
    fig.savefig(paths["confusion"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
