"""The evaluation report: Markdown with tables and PNG plots (`fusion eval --report`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fusion.training.evaluate import EvalReport, band_order


def write_report(
    report: EvalReport,
    markdown: Path,
    img_dir: Path,
    *,
    title: str,
    checkpoint: str,
    data: str,
    image_prefix: str = "eval",
    shifted: EvalReport | None = None,
    shifted_data: str = "",
) -> Path:
    """Write the Markdown report and its PNG plots; image links are relative to the report.

    `shifted`: the same model on a shifted world's split (`shifted_data` names it): its table,
    plot and the shifted-world targets are added."""
    img_dir.mkdir(parents=True, exist_ok=True)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, img_dir, image_prefix, shifted)
    best, gain = report.fusion_gain()
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
        *[f"- {'PASS' if ok else 'FAIL'}: {claim}" for claim, ok in report.targets(shifted=shifted)],
        "",
        f"All three add {gain:+.1f} points to the best single sensor ({best}).",
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
        lines += _condition_table(report, cond)
    lines += [f"![accuracy by condition]({rel['conditions']})", ""]
    if shifted is not None:
        lines += _shifted_section(report, shifted, shifted_data, rel["shifted"])
    lines += ["## Confusion matrices", ""]
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


def _shifted_section(report: EvalReport, shifted: EvalReport, data: str, plot: Path) -> list[str]:
    """The shifted world beside the held-out split: accuracy per subset and the cost of each loss."""
    full = 100 * shifted.results[-1].accuracy
    lines = [
        "## Shifted world",
        "",
        f"The same model on `{data}`: {shifted.samples} samples of a world with more night, fog "
        "and rain than training (evaluated in " + f"{shifted.seconds:.0f} s).",
        "",
        "| sensors | held-out | shifted | shifted: drop vs all three | shifted: position median (m) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r, s in zip(report.results, shifted.results, strict=True):
        drop = "-" if s is shifted.results[-1] else f"{full - 100 * s.accuracy:.1f}"
        lines.append(
            f"| {r.subset} | {100 * r.accuracy:.1f}% | {100 * s.accuracy:.1f}% | {drop} | {s.position_median_m:.2f} |"
        )
    lines += ["", "In the shifted world, by condition:", ""]
    for cond in ("light", "weather"):
        lines += _condition_table(shifted, cond)
    lines += [f"![held-out and shifted world]({plot})", ""]
    return lines


def _condition_table(report: EvalReport, cond: str) -> list[str]:
    header = "| " + cond + " | " + " | ".join(r.subset for r in report.results) + " |"
    lines = [header, "| --- |" + " ---: |" * len(report.results)]
    for band in band_order(cond):
        cells = [r.by_condition[cond].get(band) for r in report.results]
        if cells[0] is None:
            continue
        lines.append(
            f"| {band} ({cells[0][0]}) | "
            + " | ".join(f"{100 * c[1]:.1f}%" if c else "-" for c in cells)
            + " |"
        )
    return [*lines, ""]


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _plots(report: EvalReport, img_dir: Path, prefix: str, shifted: EvalReport | None) -> dict[str, Path]:
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

    if shifted is not None:
        paths["shifted"] = img_dir / f"{prefix}-shifted.png"
        x = np.arange(len(report.results))
        fig, ax = plt.subplots(figsize=(9, 4))
        for k, (rep, label, color) in enumerate(
            ((report, "held-out", "#5b8fc7"), (shifted, "shifted world", "#d47f3b"))
        ):
            bars = ax.bar(
                x + (k - 0.5) * 0.4, [100 * r.accuracy for r in rep.results], 0.4, label=label, color=color
            )
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, names)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.legend(loc="lower right")
        ax.set_title("Accuracy by subset of sensors: held-out split and shifted world")
        fig.tight_layout()
        fig.savefig(paths["shifted"], dpi=110)
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
