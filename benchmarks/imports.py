"""What the lazy sensor registry saves (issue 23, item 2), against the old behaviour, in one run.

The registry imports only the backends' light config modules on a lookup, and a backend's
implementation module (with its library: cv2, open3d, rosbags, ...) only when `make_source`
builds a source of it. The baseline is the old behaviour reproduced: the same process with every
backend's implementation module imported first (the list is read from the registry). Each case
runs in a fresh `python -c` subprocess, lazy and eager alternating, `--repeat` times each:

* config typo: `fusion run --config` (as `python -m fusion_cli` runs it) on a copy of
  configs/pipeline/sim-local.yaml with one source key misspelt; it must exit with status 2;
* a simulated sensor process per modality: build a simulated source, read 3 frames.

Wall time is measured around the subprocess (interpreter start-up included); peak RSS is the
child's own `ru_maxrss`, printed at its end with the backend libraries in its `sys.modules`.

    .venv/bin/python benchmarks/imports.py --repeat 5 --markdown
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fusion.sample import Modality  # noqa: E402
from fusion.sensors import backends, find_backend  # noqa: E402

LIBRARIES = ("cv2", "open3d", "rosbags", "velodyne_decoder", "dpkt", "soundfile", "soxr")
MARK = "@@imports@@"
TYPO = ("rate_hz: 30, width", "rate_hx: 30, width")  # cam0's source key, misspelt

# The child's report, printed at its end however it ends (`fusion` exits through SystemExit).
CHILD = """import json, resource, sys
{imports}
try:
{body}
finally:
    print({mark!r} + json.dumps({{
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "libraries": [name for name in {libraries!r} if name in sys.modules],
    }}), flush=True)
"""
CLI = """    import runpy
    sys.argv = ["fusion", "run", "--config", {config!r}]
    runpy.run_module("fusion_cli", run_name="__main__")"""
SENSOR = """    from fusion.sample import Modality
    from fusion.sensors import make_source, parse_source
    modality = Modality({modality!r})
    config = parse_source(modality, {{"backend": "simulated", "duration_s": 0.3}})
    with make_source(modality, config) as source:
        for _ in range(3):
            source.read()"""


def implementation_modules() -> list[str]:
    """Every backend's implementation module (of its "module:Class" source), in registry order."""
    sources = (find_backend(m, name).source for m in Modality for name in backends(m))
    return list(dict.fromkeys(source.partition(":")[0] for source in sources))


def machine_info() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"cpu": cpu, "python": platform.python_version(), "torch": version("torch")}


def run_child(code: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; its wall time, exit status, peak RSS and libraries."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if not lines:
        raise RuntimeError(f"child printed no report (exit {proc.returncode}):\n{proc.stderr}")
    report = json.loads(lines[-1].removeprefix(MARK))
    return {"wall_s": wall, "rc": proc.returncode, "peak_mib": report["maxrss_kib"] / 1024, **report}


def cases(config: Path) -> dict[str, tuple[str, int]]:
    """Case name -> the body of its child program and the exit status it must end with."""
    found = {"config typo (`fusion run`)": (CLI.format(config=str(config)), 2)}
    for modality in (Modality.CAMERA, Modality.MICROPHONE, Modality.LIDAR):
        found[f"simulated {modality.value}, 3 frames"] = (SENSOR.format(modality=modality.value), 0)
    return found


def measure(repeat: int, config: Path) -> dict[str, Any]:
    imports = {"lazy": "", "eager": "import " + ", ".join(implementation_modules())}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_ in range(repeat):
        order = ("lazy", "eager") if round_ % 2 == 0 else ("eager", "lazy")  # neither always first
        for case, (body, status) in cases(config).items():
            for variant in order:
                code = CHILD.format(imports=imports[variant], body=body, mark=MARK, libraries=LIBRARIES)
                run = run_child(code)
                if run["rc"] != status:
                    raise RuntimeError(f"{case}, {variant}: exit status {run['rc']}, expected {status}")
                runs.setdefault(case, {}).setdefault(variant, []).append(run)
        print(f"round {round_ + 1}/{repeat} done", file=sys.stderr)
    results = {}
    for case, by_variant in runs.items():
        results[case] = {}
        for variant, rs in by_variant.items():
            results[case][variant] = {
                "wall_s": statistics.median(r["wall_s"] for r in rs),
                "peak_mib": statistics.median(r["peak_mib"] for r in rs),
                "libraries": sorted({lib for r in rs for lib in r["libraries"]}),
                "exit_status": sorted({r["rc"] for r in rs}),
                "runs": rs,
            }
    return {"eager_imports": imports["eager"], "results": results}


# The table's columns, and whether each is text (left-aligned) or a number.
HEADER = (
    ("case", True),
    ("wall s, lazy", False),
    ("eager", False),
    ("eager/lazy", False),
    ("peak MiB, lazy", False),
    ("eager", False),
    ("eager/lazy", False),
    ("libraries loaded, lazy", True),
    ("eager", True),
)


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per case: median wall time and peak RSS, lazy and eager, their ratios, libraries."""
    rows = []
    for case, r in report["results"].items():
        lazy, eager = r["lazy"], r["eager"]
        rows.append(
            [
                case,
                f"{lazy['wall_s']:.3f}",
                f"{eager['wall_s']:.3f}",
                f"{eager['wall_s'] / lazy['wall_s']:.2f}",
                f"{lazy['peak_mib']:.1f}",
                f"{eager['peak_mib']:.1f}",
                f"{eager['peak_mib'] / lazy['peak_mib']:.2f}",
                ", ".join(lazy["libraries"]) or "none",
                ", ".join(eager["libraries"]) or "none",
            ]
        )
    return rows


def render(rows: list[list[str]], *, markdown: bool) -> str:
    names = [name for name, _ in HEADER]
    if markdown:
        align = ["---" if text else "---:" for _, text in HEADER]
        return "\n".join("| " + " | ".join(row) + " |" for row in [names, align, *rows])
    widths = [max(len(row[i]) for row in [names, *rows]) for i in range(len(names))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [names, *rows]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case and variant (default 5)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")
    machine = machine_info()
    print(f"CPU: {machine['cpu']}; Python {machine['python']}, torch {machine['torch']}")
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        config = Path(tmp) / "sim-local-typo.yaml"
        text = (ROOT / "configs/pipeline/sim-local.yaml").read_text()
        if TYPO[0] not in text:
            raise RuntimeError(f"configs/pipeline/sim-local.yaml has no {TYPO[0]!r} to misspell")
        config.write_text(text.replace(TYPO[0], TYPO[1], 1))
        report = {"machine": machine, "repeat": args.repeat, **measure(args.repeat, config)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(render(table_rows(report), markdown=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
