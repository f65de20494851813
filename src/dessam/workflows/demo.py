"""`dessam demo`: the whole method end to end on a CPU in minutes, with nothing to download.

1. synthetic cervical cytology: a box-only training split of mixed scenes, and three masked test
   splits (isolated cells "patch", crowded "cluster", and "shifted": another stain, scale, blur);
2. DES-SAM trained from the boxes on the first bundled teacher (`default-v1`, synthetic shapes only);
3. `eval --baselines` on each test split (box-as-mask, training-free SAM, DES-SAM, teacher with
   ground-truth boxes);
4. `demo_output/`: report.md with the summary table, loss_curve.png, the overlays of each report.

The demo model has DES-SAM's structure with narrower detector layers than the official ViT-B
setting (see `demo_config`) and a schedule shortened to fit a few CPU minutes.

Its table is meant to be the same on any x86-64 CPU: the demo runs on one thread, in fp32, with
PyTorch's deterministic algorithms, and holds the math libraries to one instruction set
(`CPU_MATH`, set by `pin_cpu_math` before PyTorch is loaded): a reduction summed in 8-wide AVX2
registers on one CPU and 16-wide AVX-512 ones on another gives other rounding, and over a training
run that moves the table. report.md records the CPU and the settings it ran with.
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import sys
import time
from pathlib import Path

from ..atomic import atomic_path, write_text_atomic
from ..config import Config

DEMO_THREADS = 1
# Read by PyTorch's libraries when they load: ATen's own kernels and oneDNN's (convolutions) held to
# AVX2, which most x86-64 CPUs made since 2015 have, and MKL (matrix products) to the code
# path whose results it keeps the same across processors (on AMD, MKL honours only this one).
CPU_MATH = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE",
            "OMP_NUM_THREADS": str(DEMO_THREADS), "MKL_NUM_THREADS": str(DEMO_THREADS)}

SPLITS = (
    # name, scene, shift, seed
    ("patch", "patch", False, 11),
    ("cluster", "cluster", False, 12),
    ("shifted", "mixed", True, 13),
)


def demo_config(quick: bool = False) -> Config:
    """The `demo` preset (DES-SAM's structure, sized for a few CPU minutes on 256 px synthetic
    fields); `quick`: one epoch."""
    return Config.compose("demo", overrides={"train.epochs": 1} if quick else None)


def pin_cpu_math() -> None:
    """Set `CPU_MATH` in the environment, keeping values already set (so that a run can be compared
    under other settings); it holds only when PyTorch is loaded after this."""
    if "torch" in sys.modules:
        print("dessam demo: PyTorch was loaded before the demo could hold its math libraries to AVX2; "
              "the table may differ on another CPU", file=sys.stderr)
    for key, value in CPU_MATH.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def deterministic_cpu():
    """One thread and deterministic algorithms while the demo runs (as they were afterwards); gives
    what holds, in one line."""
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(DEMO_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    settings = ", ".join(f"{key}={os.environ.get(key, 'unset')}" for key in ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR"))
    try:
        yield (f"{cpu_name()}; PyTorch {torch.__version__}, ATen kernels {torch.backends.cpu.get_cpu_capability()}, "
               f"{settings}, {torch.get_num_threads()} thread, fp32, deterministic algorithms")
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plot_loss_curve(log_csv: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with open(log_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    iterations = np.array([int(r["iteration"]) for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name in ("total", "rpn_cls", "roi_cls", "roi_box", "distill_bce", "edge_local"):
        values = np.array([float(r[name]) for r in rows])
        window = min(25, len(values))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(iterations[window - 1:], smooth, label=name, linewidth=1.5 if name == "total" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (moving mean of {window})")
    ax.set_yscale("log")
    ax.set_title("DES-SAM training from boxes (demo)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_demo(out="demo_output", quick: bool = False, progress: bool = True, n_train: int = None,
             n_test: int = None) -> str:
    """The demo (see the module docstring) into `out`; the report's text."""
    with deterministic_cpu() as machine:
        return _run_demo(machine, out, quick, progress, n_train, n_test)


def _run_demo(machine: str, out, quick: bool, progress: bool, n_train, n_test) -> str:
    from ..data.synth import make_dataset
    from ..evaluation.compare import compare_reports
    from ..evaluation.evaluate import evaluate
    from ..inference.loading import load_model
    from ..training.train import train

    start = time.perf_counter()
    out = Path(out)
    data = out / "data"
    n_train = n_train or (12 if quick else 60)
    n_test = n_test or (3 if quick else 12)
    make_dataset(data / "train", n_train=n_train, n_val=0, n_test=0, scene="mixed", seed=10)
    for name, scene, shift, seed in SPLITS:
        make_dataset(data / name, n_train=0, n_val=0, n_test=n_test, scene=scene, shift=shift, seed=seed)

    config = demo_config(quick)
    run = out / "run"
    train(config, data / "train" / "train.json", data / "train" / "images", run, progress=progress)
    plot_loss_curve(run / "log.csv", out / "loss_curve.png")

    model = load_model(run / "model.pt")
    reports = []
    for name, *_ in SPLITS:
        report = out / "reports" / name
        evaluate(model, data / name / "test.json", data / name / "images", report, baselines=True,
                 progress=progress, model_path=run / "model.pt")
        reports.append(report)
    table = compare_reports(reports, names=[name for name, *_ in SPLITS])
    minutes = (time.perf_counter() - start) / 60
    overlays = "\n".join(
        f"- {name}: " + ", ".join(f"[{p.name}](reports/{name}/overlays/{p.name})"
                                  for p in sorted((out / "reports" / name / "overlays").glob("*.png")))
        for name, *_ in SPLITS
    )
    text = (
        "# dessam demo\n\n"
        f"DES-SAM trained from boxes only ({n_train} synthetic cytology fields, {config.train.epochs} epochs, "
        f"first bundled teacher, default-v1) and evaluated on three masked test splits of {n_test} fields each, "
        f"with the baselines, in {minutes:.1f} minutes.\n\nRun on: {machine}.\n\n"
        "Methods: `box-as-mask` (detected boxes filled), `sam` (training-free SAM on the detected boxes), "
        "`des-sam` (the student with the learned prompt token), `teacher-gt-boxes` (frozen teacher prompted "
        "with the ground-truth boxes: the pseudo-label ceiling).\n\n"
        f"{table}\n\n![loss curve](loss_curve.png)\n\nWorst images by AJI (contours: prediction yellow, "
        f"ground truth green):\n{overlays}\n"
    )
    write_text_atomic(out / "report.md", text)
    print(table)
    print(f"\nreport: {out / 'report.md'} ({minutes:.1f} min)")
    return text
