"""The two engines side by side on the larger fields (`compare_engines`): in one process (megapixels
per second) and as `dessam predict` in a fresh process, as a user times it (wall clock with start-up,
peak RSS, time to the first window)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


from ..inference.predictor import Predictor
from .agreement import mask_agreement
from .measuring import measure_alternating


# `dessam predict` as a user runs it, in a child process that notes when its first window starts
FIRST_WINDOW_PROBE = """
import sys, time
start = float(sys.argv[1])
import dessam.inference.windowed as windowed
original = windowed.window_instances
def first_window(*args, **kwargs):
    if windowed.window_instances is first_window:
        print(f"FIRST_WINDOW {time.time() - start:.4f}", file=sys.stderr, flush=True)
        windowed.window_instances = original
    return original(*args, **kwargs)
windowed.window_instances = first_window
from dessam.commands import main
code = main(sys.argv[2:])
with open("/proc/self/status") as status:  # this process's own peak (a child's rusage counts its parent's at fork)
    print(next(line for line in status if line.startswith("VmHWM")), file=sys.stderr, flush=True)
sys.exit(code)
"""


@dataclass
class CommandRun:
    seconds: float              # wall clock, start-up included
    peak_rss: int               # bytes, the whole process
    first_window_s: float       # from the start to the first window


def time_predict_command(engine: str, model, image_path: Path, workdir: Path) -> CommandRun:
    """`dessam predict IMAGE --engine ENGINE` in a fresh process, timed as a user times it (Linux: the
    peak RSS is read from /proc)."""
    import subprocess
    import sys

    log = workdir / f"predict_{engine}.log"
    args = [sys.executable, "-c", FIRST_WINDOW_PROBE, "", "predict", str(image_path), "--model", str(model),
            "--out", str(workdir / f"predict_{engine}"), "--engine", engine, "--device", "cpu", "--quiet", "--overwrite"]
    with open(log, "w") as handle:
        start = time.time()
        args[3] = repr(start)
        process = subprocess.Popen(args, stderr=handle, stdout=subprocess.DEVNULL)
        code = process.wait()
        seconds = time.time() - start
    text = log.read_text()
    if code != 0:
        raise RuntimeError(f"dessam predict --engine {engine} failed: {text[-500:]}")
    first = float(next(line.split()[1] for line in text.splitlines() if line.startswith("FIRST_WINDOW")))
    peak = next(int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("VmHWM"))
    return CommandRun(seconds, peak, first)


def compare_engines(model: Path, torch_path: Predictor, images: list, image_paths: list, workdir: Path,
                    repeats: int) -> tuple:
    """(Markdown lines, `Agreement`) of the PyTorch and ONNX Runtime engines on the same model and images:
    megapixels per second in one process, `dessam predict` on the first image as a user times it (wall
    clock, peak RSS, time to the first window), and their masks prompted with the same boxes."""
    from ..inference.engines import onnx_model

    onnx_path = onnx_model(model, progress=False)  # exported now, if not yet: the timed runs find it cached
    timings = measure_alternating([lambda m=m: m.predict_batch(images) for m in (torch_path, onnx_path)], "cpu", repeats)
    pixels = sum(image.shape[0] * image.shape[1] for image in images)
    runs = [time_predict_command(engine, model, image_paths[0], workdir) for engine in ("torch", "onnx")]
    first_pixels = images[0].shape[0] * images[0].shape[1]
    lines = [f"| Engine | Predict in one process ({len(images)} image(s), Mpx/s) | `dessam predict` on "
             f"{image_paths[0].name}: wall (s) | Mpx/s as the user times it | peak RSS | time to the first window (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, timing, run in zip(("PyTorch", "ONNX Runtime fp32"), timings, runs):
        lines.append(f"| {name} | {pixels / timing.seconds / 1e6:.3f} | {run.seconds:.1f} | "
                     f"{first_pixels / run.seconds / 1e6:.3f} | {run.peak_rss / 2**30:.2f} GB | {run.first_window_s:.2f} |")
    lines.append(f"| ONNX / PyTorch | {timings[0].seconds / timings[1].seconds:.2f}x | "
                 f"{runs[0].seconds / runs[1].seconds:.2f}x | | | |")
    agreement = mask_agreement(torch_path, onnx_path, images)
    lines += ["", f"Engine agreement, ONNX Runtime vs PyTorch prompted with the same boxes: mean mask IoU "
                  f"{agreement.iou:.4f} over {agreement.masks} masks: {agreement.verdict()}."]
    return lines, agreement
