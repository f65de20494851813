"""The report `dessam bench` writes: what was measured and on what, the table of speed rows, and the
two paths' agreement."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..config.runtime import reference_settings
from ..inference.predictor import local_margin
from .measuring import format_table

BENCH_METRICS = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_metrics.py"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {torch.get_num_threads()} torch threads"


def report_head(run, model_note: str) -> list:
    """The report's title, what was measured and how, and the table of speed rows of `run` (the bench's
    `_BenchRun`, in `dessam.workflows.bench`)."""
    quick_path, device, cuda = run.quick_path, run.device, run.device.type == "cuda"
    margin = local_margin(quick_path.config, quick_path.settings, quick_path.model.sam)
    memory_note = ("torch.cuda.max_memory_allocated above the start" if cuda else
                   "growth of the process's resident set size (sampled every ms from /proc/self/statm, freed heap handed back first)")
    return [
        f"# dessam bench: {device.type}{' (quick)' if run.quick else ''}",
        "",
        f"- Device: {device_name(device)}; torch {torch.__version__}",
        f"- Model: {model_note}; its post-processing (score threshold, detection limit, minimum size)",
        f"- Reference path: {reference_settings().describe(device)} (as the authors' test code)",
        f"- Fast path: {quick_path.settings.describe(device)}: "
        + (f"local decoding, {margin} tokens around each box" if margin is not None
           else "full decoding (the model is not configured for local decoding)"),
        "- Training iteration: reference = the encoder run and every prompt decoded over the whole embedding "
        "(the authors'); fast = the embedding from the cache and local decoding",
        f"- Each time is the median of {run.repeats} timed repeat(s) after one warm-up call; reference and fast calls "
        f"alternate; peak memory is the {memory_note}, in the worst call",
        "",
        format_table(run.rows),
        "",
    ]


def agreement_lines(run, agreement, split_aji: dict, metrics_result: Optional[dict]) -> list:
    """Masks and AJI of the two paths side by side, the compile warm-up and what was not measured."""
    lines = [f"Mask agreement, fast vs reference prompted with the same boxes: mean IoU {agreement.iou:.4f} over "
             f"{agreement.masks} masks: {agreement.verdict()}."]
    if split_aji:
        worst = max(abs(a - b) for a, b in split_aji.values())
        parts = ", ".join(f"{name} {a:.4f} / {b:.4f}" for name, (a, b) in split_aji.items())
        lines.append(f"AJI on the demo's test splits, reference / fast: {parts}; largest difference {worst:.4f} "
                     f"(required <= 0.005).")
    if run.quick_path.settings.compile:
        lines.append(f"Fast-path warm-up (includes torch.compile): encoder {run.encoder[1].warmup_s:.1f} s, "
                     f"decoder {run.decoder[1].warmup_s:.1f} s.")
    if metrics_result is None:
        lines.append(f"Metrics: not measured ({BENCH_METRICS} is only in a source checkout).")
    return lines


@dataclass
class BenchReport:
    text: str       # the Markdown report
    passed: bool    # every agreement check ran on enough masks and passed
