"""CPU inference benchmark of the Perceiver against perceiver-pytorch and a plain Transformer.

What is measured, for image-like inputs of M = 1024, 4096, 16384, 65536 pixels (square grids
32x32 ... 256x256, 3 channels, 64 Fourier bands, max_resolution = grid side), batch 4, fp32:

* our Perceiver, K/V fast path (`kv_fast_path=True`) and plain path (`False`);
* `perceiver_pytorch.Perceiver` at the matched architecture (256 x 512 latents, 4 cross-attends
  with 2 latent blocks each, 1 cross head of width 261, 8 self heads; its GEGLU feed-forward
  with mult 4 has the matmul FLOPs of our GELU MLP with widening 6);
* a plain Transformer encoder (4 layers, width 256) over the same byte array, only where its
  quadratic attention fits (M <= 4096).

Each (implementation, M) runs in a fresh subprocess. Peak memory is the growth of resident
memory during the first forward (VmHWM after it, reset through /proc/self/clear_refs, minus
VmRSS before it), which includes our one-time caches; the second forward gives the steady
state. Latency is the median of several forwards after the first (the warm-up), under
`torch.inference_mode()`. FLOPs per batch come from `FlopCounterMode` (multiplies and adds
counted apart); achieved GFLOP/s is compared with this machine's 2048^3 fp32 matmul rate.
Also measured: bf16 autocast of our fast path (latency and logit error against fp32), and the
K/V projection cost against the number of Fourier bands at M = 16384.

Run: `make bench` or `.venv/bin/python benchmarks/model.py` (about 15 minutes on 2 cores);
`--quick` for a smoke run under a minute. Results go to `--out` as JSON and a PNG plot, and a
Markdown summary is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fusion.model import ModalityInput, ModelConfig, build_model, fourier_features, grid_positions
from fusion.model.info import count_flops, count_parameters
from fusion.sample import Modality

BATCH = 4  # default; --quick uses 1
CHANNELS = 3
BANDS = 64
BAND_COUNTS = (16, 32, BANDS)  # K/V projection cost vs Fourier bands
FULL_SIZES = (1024, 4096, 16384, 65536)
QUICK_SIZES = (256,)
TRANSFORMER_MAX_M = 4096  # beyond this its M x M attention is skipped
HEAVY_GFLOP = 200.0  # a forward costlier than this per batch gets fewer repeats
IMPLS = ("ours-fast", "ours-plain", "perceiver-pytorch", "transformer")
RESULT_TAG = "RESULT "


@dataclass(frozen=True)
class Job:
    """One measurement, run in its own subprocess."""

    impl: str  # one of IMPLS
    side: int  # grid side; M = side**2
    batch: int
    repeats: int
    bands: int = BANDS
    bf16: bool = False  # also time bf16 autocast and compare its logits with fp32


# ----------------------------------------------------------------------------- models


def our_config(side: int, *, bands: int = BANDS, fast: bool = True) -> ModelConfig:
    """The matched architecture, a single camera modality on a side x side grid."""
    camera = {
        "kind": "grid",
        "channels": CHANNELS,
        "pos_dims": 2,
        "num_bands": bands,
        "max_resolution": [side, side],
        "example_shape": [side, side],
    }
    return ModelConfig.model_validate(
        {
            "name": "bench",
            "inputs": {"camera": camera},
            "num_latents": 256,
            "latent_dim": 512,
            "num_cross_attends": 4,
            "self_attends_per_block": 2,
            "cross_heads": 1,
            "self_heads": 8,
            "min_padding": 0,
            "num_classes": 1000,
            "cross_widening": 6,  # = GEGLU mult 4 in matmul FLOPs: 12 D^2 per token
            "self_widening": 6,
            "share_cross_weights": True,
            "share_latent_weights": True,
            "kv_fast_path": fast,
        }
    )


def reference_perceiver(side: int, *, bands: int = BANDS) -> nn.Module:
    """perceiver-pytorch at the matched architecture. Its bands are linspace(1, max_freq / 2,
    num_bands), ours linspace(1, max_resolution / 2, K): max_freq = side gives the same ones."""
    from perceiver_pytorch import Perceiver

    width = CHANNELS + 2 * (2 * bands + 1)
    return Perceiver(
        input_channels=CHANNELS,
        input_axis=2,
        num_freq_bands=bands,
        max_freq=side,
        depth=4,
        num_latents=256,
        latent_dim=512,
        cross_heads=1,
        cross_dim_head=width,
        latent_heads=8,
        latent_dim_head=64,
        num_classes=1000,
        attn_dropout=0.0,
        ff_dropout=0.0,
        weight_tie_layers=True,
        self_per_cross_attn=2,
    )


class TransformerBaseline(nn.Module):
    """Linear embedding of the byte array [values | Fourier], a pre-LN encoder, mean-pool head."""

    def __init__(self, side: int, *, bands: int = BANDS, dim: int = 256) -> None:
        super().__init__()
        pos = grid_positions((side, side))
        self.register_buffer("fourier", fourier_features(pos, num_bands=bands, max_resolution=[side, side]))
        self.embed = nn.Linear(CHANNELS + self.fourier.shape[-1], dim)
        layer = nn.TransformerEncoderLayer(
            dim, nhead=8, dim_feedforward=1024, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 1000)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        values = image.flatten(1, 2)  # (B, M, 3)
        fourier = self.fourier.to(values.dtype).expand(values.shape[0], -1, -1)
        x = self.encoder(self.embed(torch.cat([values, fourier], dim=-1)))
        return self.head(x.mean(dim=1))


def build(impl: str, side: int, bands: int) -> nn.Module:
    """A freshly initialized model, on the current default device."""
    if impl in ("ours-fast", "ours-plain"):
        return build_model(our_config(side, bands=bands, fast=impl == "ours-fast"))
    if impl == "perceiver-pytorch":
        return reference_perceiver(side, bands=bands)
    if impl == "transformer":
        return TransformerBaseline(side, bands=bands)
    raise ValueError(f"unknown implementation {impl!r}")


def logits_fn(impl: str, model: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A closure running one forward of `model` on `image` [B, H, W, 3], returning logits."""
    if impl.startswith("ours"):
        model.adapter.validate = False  # no NaN / range checks in the timed path
        inputs = {Modality.CAMERA: ModalityInput(values=image.flatten(1, 2), grid=tuple(image.shape[1:3]))}
        return lambda: model(inputs).logits
    return lambda: model(image)


def random_image(batch: int, side: int) -> torch.Tensor:
    """The benchmark input [B, side, side, 3] in [0, 1), independent of model init order."""
    gen = torch.Generator().manual_seed(1)
    return torch.rand(batch, side, side, CHANNELS, generator=gen)


# ----------------------------------------------------------------------------- FLOPs


def flops_per_sample(impl: str, side: int, bands: int = BANDS) -> int:
    """FLOPs of one forward for one sample, counted on the meta device."""
    if impl.startswith("ours"):
        cfg = our_config(side, bands=bands)
        return count_flops(cfg, {Modality.CAMERA: (side, side)}, fast=impl == "ours-fast")
    with torch.device("meta"):
        model = build(impl, side, bands)
        image = torch.empty(1, side, side, CHANNELS)
    # Grad mode on (FlopCounterMode's module tracker needs it); this also keeps the
    # Transformer off its fused fast path, which has no meta kernels.
    with FlopCounterMode(display=False) as counter:
        logits_fn(impl, model.eval(), image)()
    return int(counter.get_total_flops())


def module_flops(module: nn.Module, *args: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(*args)
    return int(counter.get_total_flops())


def architecture_check(side: int) -> dict[str, Any]:
    """Parameters and FLOPs of ours vs perceiver-pytorch, and their MLP FLOPs ratio."""
    with torch.device("meta"):
        ours = build("ours-plain", side, BANDS)
        ref = reference_perceiver(side)
        z = torch.empty(1, 256, 512)
    # One MLP call each (LayerNorm + two Linears); both models make 4 * (1 + 2) such calls.
    mlp_ours = module_flops(ours.cross[0].mlp, z)
    mlp_ref = module_flops(ref.layers[0].cross_ff, z)
    flops_ours = flops_per_sample("ours-plain", side)
    flops_ref = flops_per_sample("perceiver-pytorch", side)
    return {
        "M": side * side,
        "params_ours": count_parameters(ours),
        "params_perceiver_pytorch": count_parameters(ref),
        "gflop_per_sample_ours_plain": flops_ours / 1e9,
        "gflop_per_sample_ours_fast": flops_per_sample("ours-fast", side) / 1e9,
        "gflop_per_sample_perceiver_pytorch": flops_ref / 1e9,
        "mlp_gflop_per_call_ours": mlp_ours / 1e9,
        "mlp_gflop_per_call_perceiver_pytorch": mlp_ref / 1e9,
        "mlp_flops_ratio": mlp_ours / mlp_ref,
    }


# ----------------------------------------------------------------------------- worker


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_growth(fn: Callable[[], object]) -> tuple[float, float]:
    """(MiB, seconds): growth of resident memory while `fn` runs (VmHWM after it minus VmRSS
    before it), and its wall time."""
    gc.collect()
    before = proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return (proc_status_kib("VmHWM") - before) / 1024, elapsed


def seconds(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall time of each of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    return statistics.median(seconds(fn, repeats))


def measure(job: Job) -> dict[str, Any]:
    """Peak memory of the first forward (it fills one-time caches), then of the second
    (steady state), and the median latency of `job.repeats` forwards after the first."""
    torch.manual_seed(0)
    model = build(job.impl, job.side, job.bands).eval()
    image = random_image(job.batch, job.side)
    forward = logits_fn(job.impl, model, image)
    out: dict[str, Any] = {}
    with torch.inference_mode():
        out["peak_mib"], out["first_s"] = peak_growth(forward)
        out["steady_peak_mib"], second_s = peak_growth(forward)
        out["times_s"] = [second_s, *seconds(forward, job.repeats - 1)]
        out["median_s"] = statistics.median(out["times_s"])
        if job.impl.startswith("ours"):
            out["kv_median_s"] = median_seconds(kv_projection_fn(model, image), job.repeats)
        fp32_logits = forward() if job.bf16 else None
    if fp32_logits is not None:
        out.update(bf16_comparison(job, fp32_logits))
    out["load_average_1min"] = os.getloadavg()[0]  # high: other work shared the cores
    return out


def kv_projection_fn(model: nn.Module, image: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Our model's first K/V projection alone (adapter included), as its forward runs it."""
    inputs = {Modality.CAMERA: ModalityInput(values=image.flatten(1, 2), grid=tuple(image.shape[1:3]))}
    return lambda: model.cross[0].kv(model.adapter(inputs), fast=model.kv_fast_path)


def bf16_comparison(job: Job, fp32_logits: torch.Tensor) -> dict[str, float]:
    """bf16 autocast on a second model with the same weights and input (own constant caches).

    Built outside inference mode: the fast path's cache reads parameter version counters.
    """
    torch.manual_seed(0)
    model = build(job.impl, job.side, job.bands).eval()
    forward = logits_fn(job.impl, model, random_image(job.batch, job.side))

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return forward()

    logits = run().float()  # warm-up
    err = (logits - fp32_logits).abs().max() / fp32_logits.abs().max()
    return {"bf16_median_s": median_seconds(run, job.repeats), "bf16_rel_err": float(err)}


def worker_main(spec: str) -> None:
    job = Job(**json.loads(spec))
    print(RESULT_TAG + json.dumps(measure(job)), flush=True)


# ----------------------------------------------------------------------------- parent


def run_job(job: Job, *, timeout_s: float = 1200) -> dict[str, Any]:
    """Run `job` in a fresh interpreter; an error (out of memory, timeout) becomes a field."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(asdict(job))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return {"error": tail[0]}


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matmul rate: 2 n^3 over the median time of an n x n @ n x n product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews timings
    }


@dataclass(frozen=True)
class Plan:
    """What the parent runs: input counts, batch size, and whether this is a smoke run."""

    sizes: list[int]
    batch: int
    quick: bool

    def repeats(self, gflop_per_batch: float) -> int:
        if self.quick:
            return 1
        return 3 if gflop_per_batch > HEAVY_GFLOP else 5

    def job(self, impl: str, side: int, repeats: int, **kw: Any) -> Job:
        return Job(impl=impl, side=side, batch=self.batch, repeats=1 if self.quick else repeats, **kw)


def sweep(plan: Plan, peak_rate: float) -> list[dict[str, Any]]:
    """Every implementation at every M, one subprocess each."""
    rows = []
    for impl in IMPLS:
        for m in plan.sizes:
            side = math.isqrt(m)
            row: dict[str, Any] = {"impl": impl, "M": m}
            if impl == "transformer" and m > TRANSFORMER_MAX_M:
                row["skipped"] = "quadratic"
            else:
                gflop = flops_per_sample(impl, side) * plan.batch / 1e9
                job = plan.job(impl, side, plan.repeats(gflop))
                row |= {"gflop_per_batch": gflop, "repeats": job.repeats, **run_job(job)}
                if "median_s" in row:
                    row["samples_per_s"] = plan.batch / row["median_s"]
                    row["gflops"] = gflop / row["median_s"]
                    row["fraction_of_matmul"] = row["gflops"] / peak_rate
            rows.append(row)
            print(progress_line(row), flush=True)
    return rows


def progress_line(row: dict[str, Any]) -> str:
    head = f"[{row['impl']:>17} M={row['M']:>6}]"
    if "skipped" in row or "error" in row:
        return f"{head} {row.get('skipped') or row['error']}"
    return (
        f"{head} {row['median_s'] * 1e3:9.1f} ms  {row['samples_per_s']:7.2f} samples/s  "
        f"peak {row['peak_mib']:7.1f} MiB (steady {row['steady_peak_mib']:7.1f})  {row['gflops']:6.1f} GFLOP/s"
    )


def bf16_runs(plan: Plan, sides: list[int]) -> list[dict[str, Any]]:
    """Our fast path under bf16 autocast against fp32, same weights and input."""
    rows = []
    for side in sides:
        row = {"M": side * side, **run_job(plan.job("ours-fast", side, 2, bf16=True))}
        rows.append(row)
        if "error" in row:
            print(f"[bf16 M={row['M']}] {row['error']}", flush=True)
            continue
        row["speedup"] = row["median_s"] / row["bf16_median_s"]
        print(
            f"[bf16 M={row['M']:>6}] fp32 {row['median_s'] * 1e3:.1f} ms, bf16 {row['bf16_median_s'] * 1e3:.1f} ms, "
            f"rel. logit error {row['bf16_rel_err']:.2e}",
            flush=True,
        )
    return rows


def band_runs(plan: Plan, side: int, sweep_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fast vs plain path at one M for each band count; the default count comes from the sweep."""
    rows = []
    for bands in (16, BANDS) if plan.quick else BAND_COUNTS:
        for impl in ("ours-fast", "ours-plain"):
            row: dict[str, Any] = {"impl": impl, "M": side * side, "bands": bands}
            if bands == BANDS:
                row |= next(r for r in sweep_rows if r["impl"] == impl and r["M"] == side * side)
            else:
                row |= run_job(plan.job(impl, side, 3, bands=bands))
            rows.append(row)
            if "error" in row:
                print(f"[bands {bands} {impl}] {row['error']}", flush=True)
                continue
            print(
                f"[bands {bands:>2} {impl:>10} M={row['M']}] forward {row['median_s'] * 1e3:.1f} ms, "
                f"K/V projection {row['kv_median_s'] * 1e3:.2f} ms",
                flush=True,
            )
    return rows


# ----------------------------------------------------------------------------- report


def lookup(rows: list[dict[str, Any]], impl: str, m: int, key: str) -> float | None:
    for row in rows:
        if row["impl"] == impl and row["M"] == m and key in row:
            return float(row[key])
    return None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def derived_numbers(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Headline ratios at M = 16384 and 65536 (None where not measured), and their targets."""
    out: dict[str, Any] = {
        "fast_t64k_over_t16k": ratio(
            lookup(rows, "ours-fast", 65536, "median_s"), lookup(rows, "ours-fast", 16384, "median_s")
        ),
        "samples_per_s_ours_over_perceiver_pytorch_16k": ratio(
            lookup(rows, "ours-fast", 16384, "samples_per_s"),
            lookup(rows, "perceiver-pytorch", 16384, "samples_per_s"),
        ),
        "peak_mem_ours_over_perceiver_pytorch_16k": ratio(
            lookup(rows, "ours-fast", 16384, "peak_mib"), lookup(rows, "perceiver-pytorch", 16384, "peak_mib")
        ),
        "steady_peak_mem_ours_over_perceiver_pytorch_16k": ratio(
            lookup(rows, "ours-fast", 16384, "steady_peak_mib"),
            lookup(rows, "perceiver-pytorch", 16384, "steady_peak_mib"),
        ),
        "targets": {
            "fast_t64k_over_t16k": "<= 4.4",
            "samples_per_s_ratio": ">= 2",
            "peak_mem_ratio": "<= 0.5",
        },
    }
    out["fast_over_plain_speedup"] = {
        str(m): ratio(lookup(rows, "ours-plain", m, "median_s"), lookup(rows, "ours-fast", m, "median_s"))
        for m in sizes
    }
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
    """The Markdown summary: machine, main table, bf16, bands, architecture check, ratios."""
    mi = report["machine"]
    lines = [
        f"Machine: {mi['cpu']}, {mi['cores']} cores, torch {mi['torch']} ({mi['torch_threads']} threads); "
        f"fp32 matmul 2048^3: {report['matmul_gflops']:.1f} GFLOP/s; load average {mi['load_average_1min']:.1f} at start, "
        f"{report['load_average_1min_end']:.1f} at end. Batch {report['batch']}, fp32, {BANDS} bands.",
        "",
        "| implementation | M | latency (ms) | samples/s | peak MiB, 1st forward | peak MiB, steady | GFLOP/batch | GFLOP/s | % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if "skipped" in r or "error" in r:
            note = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r['error']}"
            lines.append(f"| {r['impl']} | {r['M']} | {note} | | | | | | |")
            continue
        lines.append(
            f"| {r['impl']} | {r['M']} | {r['median_s'] * 1e3:.1f} | {r['samples_per_s']:.2f} | "
            f"{r['peak_mib']:.0f} | {r['steady_peak_mib']:.0f} | {r['gflop_per_batch']:.1f} | {r['gflops']:.1f} | {100 * r['fraction_of_matmul']:.0f}% |"
        )
    lines += ["", "bf16 autocast, our fast path:", ""]
    lines += ["| M | fp32 (ms) | bf16 (ms) | fp32 / bf16 time | max abs logit error / max abs logit |"]
    lines += ["|---:|---:|---:|---:|---:|"]
    for r in report["bf16"]:
        if "error" not in r:
            lines.append(
                f"| {r['M']} | {r['median_s'] * 1e3:.1f} | {r['bf16_median_s'] * 1e3:.1f} | {r['speedup']:.2f} | {r['bf16_rel_err']:.2e} |"
            )
    lines += [
        "",
        "K/V projection vs Fourier bands (first cross-attend's projection alone, and the whole forward):",
        "",
    ]
    lines += ["| bands | M | fast K/V (ms) | plain K/V (ms) | fast forward (ms) | plain forward (ms) |"]
    lines += ["|---:|---:|---:|---:|---:|---:|"]
    for bands in sorted({r["bands"] for r in report["bands"]}):
        fast = next((r for r in report["bands"] if r["bands"] == bands and r["impl"] == "ours-fast"), {})
        plain = next((r for r in report["bands"] if r["bands"] == bands and r["impl"] == "ours-plain"), {})
        cells = [1e3 * r[k] if k in r else None for k in ("kv_median_s", "median_s") for r in (fast, plain)]
        m = fast.get("M", plain.get("M", ""))
        lines.append(f"| {bands} | {m} | " + " | ".join(fmt(c, ".1f") for c in cells) + " |")
    a = report["architecture"]
    lines += [
        "",
        f"Architecture check at M = {a['M']}: parameters ours {a['params_ours']:,}, perceiver-pytorch "
        f"{a['params_perceiver_pytorch']:,}; GFLOP per sample ours plain {a['gflop_per_sample_ours_plain']:.1f}, "
        f"ours fast {a['gflop_per_sample_ours_fast']:.1f}, perceiver-pytorch {a['gflop_per_sample_perceiver_pytorch']:.1f}; "
        f"MLP FLOPs ratio ours / perceiver-pytorch {a['mlp_flops_ratio']:.3f} (must be within 10%).",
    ]
    d = report["derived"]
    speedups = ", ".join(f"M={m}: {fmt(s)}x" for m, s in d["fast_over_plain_speedup"].items())
    lines += [
        "",
        f"- t(65536) / t(16384), fast path: {fmt(d['fast_t64k_over_t16k'])} (target <= 4.4)",
        f"- samples/s ours fast / perceiver-pytorch at M=16384: {fmt(d['samples_per_s_ours_over_perceiver_pytorch_16k'])} (target >= 2)",
        f"- peak memory ours fast / perceiver-pytorch at M=16384: {fmt(d['peak_mem_ours_over_perceiver_pytorch_16k'])} (target <= 0.5); steady state (2nd forward): {fmt(d['steady_peak_mem_ours_over_perceiver_pytorch_16k'])}",
        f"- fast vs plain path speedup: {speedups}",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], batch: int, path: Path) -> None:
    """Two panels, log-log: latency vs M, peak memory vs M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for impl in IMPLS:
        done = [r for r in rows if r["impl"] == impl and "median_s" in r]
        if not done:
            continue
        ms = [r["M"] for r in done]
        (line,) = axes[0].plot(ms, [r["median_s"] * 1e3 for r in done], "o-", label=impl)
        axes[1].plot(ms, [r["peak_mib"] for r in done], "o-", color=line.get_color(), label=f"{impl}, 1st")
        steady = [r["steady_peak_mib"] for r in done]
        axes[1].plot(ms, steady, "x--", color=line.get_color(), alpha=0.6, label=f"{impl}, steady")
    for ax, ylabel in zip(
        axes, ("forward latency (ms)", "peak memory growth in a forward (MiB)"), strict=True
    ):
        ax.set(xscale="log", yscale="log", xlabel="inputs M", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"CPU inference, batch {batch}, fp32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small M, 1 repeat")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/model"), help="output directory")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="input counts M (perfect squares); default 1024 4096 16384 65536"
    )
    parser.add_argument("--batch", type=int, help=f"batch size (default {BATCH}; 1 with --quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one Job as JSON
    args = parser.parse_args(argv)
    args.batch = args.batch or (1 if args.quick else BATCH)
    args.sizes = sorted(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    bad = [m for m in args.sizes if m < 1 or math.isqrt(m) ** 2 != m]
    if bad:
        parser.error(f"--sizes must be perfect squares (square grids), got {bad}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    torch.manual_seed(0)
    start = time.perf_counter()
    plan = Plan(sizes=args.sizes, batch=args.batch, quick=args.quick)
    sides = [math.isqrt(m) for m in plan.sizes]
    focus = 128 if 128 in sides else sides[-1]  # M = 16384: architecture check and band sweep
    report: dict[str, Any] = {
        "machine": machine_info(),
        "batch": plan.batch,
        "bands": BANDS,
        "quick": plan.quick,
    }
    report["matmul_gflops"] = matmul_gflops()
    print(f"machine: {report['machine']}; matmul {report['matmul_gflops']:.1f} GFLOP/s", flush=True)
    report["architecture"] = architecture_check(focus)
    report["results"] = sweep(plan, report["matmul_gflops"])
    report["bf16"] = bf16_runs(plan, [s for s in sides if s in (64, 128)] or sides[-2:])
    report["bands"] = band_runs(plan, focus, report["results"])
    report["derived"] = derived_numbers(report["results"], plan.sizes)
    report["wall_s"] = time.perf_counter() - start
    report["load_average_1min_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report["results"], plan.batch, args.out / "latency_memory.png")
    print()
    print(markdown(report))
    print(
        f"\nwall time {report['wall_s']:.0f} s; wrote {args.out / 'results.json'} and {args.out / 'latency_memory.png'}"
    )


if __name__ == "__main__":
    main()
