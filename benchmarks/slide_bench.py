"""Whole slides, measured: wall time and peak memory of `dessam predict` on synthetic slides, and
what skipping the glass saves.

1. an ~8,000 px slide with ~10 % cells, predicted with and without glass skipping, in the same run:
   the speed-up and whether the same nuclei were found (detection F1 at IoU 0.5 between the two
   label images, and against the slide's ground truth);
2. a 40,000 px slide with a few per cent of cells (glass skipped): wall time and peak resident memory.

Each prediction runs in its own process (`dessam predict`), whose peak resident set size GNU time
reports (`/usr/bin/time`, Debian's `time` package).

    python benchmarks/slide_bench.py --model RUN/model.pt [--out slide_bench/] [--large 40000] [--skip-large]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from dessam.data.synth_slide import make_synthetic_slide, truth_paths
from dessam.metrics import detection_scores


def run_predict(model: Path, slide: Path, out: Path, *extra: str) -> tuple:
    """(wall seconds, peak RSS in bytes) of one `dessam predict` process (GNU time's %M)."""
    record = out.with_suffix(".rss")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(record), sys.executable, "-m", "dessam", "predict",
                    "--model", str(model), str(slide), "--out", str(out), "--quiet", "--overwrite", *extra], check=True)
    wall = time.perf_counter() - start
    return wall, int(record.read_text().split()[-1]) * 1024


def label_image(out: Path, slide: Path) -> np.ndarray:
    return tifffile.imread(out / f"{slide.name.split('.')[0]}_labels.ome.tif", level=0)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=Path("slide_bench"))
    parser.add_argument("--small", type=int, default=8000)
    parser.add_argument("--small-cells", type=float, default=0.10)
    parser.add_argument("--large", type=int, default=40000)
    parser.add_argument("--large-cells", type=float, default=0.03)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| slide | glass skipping | wall time | peak memory | nuclei |", "|---|---|---:|---:|---:|"]

    small = args.out / "small.svs"
    made = time.perf_counter()
    make_synthetic_slide(small, args.small, args.small, cell_fraction=args.small_cells, seed=1)
    print(f"wrote {small} in {time.perf_counter() - made:.0f} s", flush=True)
    truth = tifffile.imread(truth_paths(small)[0], level=0)
    results = {}
    for name, extra in (("on", ()), ("off", ("--no-skip-glass",))):
        wall, peak = run_predict(args.model, small, args.out / f"small_{name}", *extra)
        labels = label_image(args.out / f"small_{name}", small)
        results[name] = (wall, labels)
        found = len(np.unique(labels)) - 1
        lines.append(f"| {args.small} x {args.small} px, {args.small_cells:.0%} cells | {name} | {wall:.0f} s | "
                     f"{peak / 2**30:.2f} GB | {found} |")
        print(lines[-1], flush=True)
    same = detection_scores(results["off"][1], results["on"][1], iou=0.5)["f1"]
    against_truth = {name: detection_scores(truth, labels, iou=0.5)["f1"] for name, (_, labels) in results.items()}
    summary = [f"Glass skipping: {results['off'][0] / results['on'][0]:.1f}x faster; the two runs' nuclei agree "
               f"with detection F1 {same:.4f} (IoU 0.5); F1 against the slide's ground truth: skipping "
               f"{against_truth['on']:.3f}, every window {against_truth['off']:.3f}."]
    del results, truth

    if not args.skip_large:
        large = args.out / "large.svs"
        made = time.perf_counter()
        make_synthetic_slide(large, args.large, args.large, cell_fraction=args.large_cells, seed=2)
        print(f"wrote {large} in {time.perf_counter() - made:.0f} s", flush=True)
        wall, peak = run_predict(args.model, large, args.out / "large")
        nuclei = sum(1 for _ in open(args.out / "large" / "large_nuclei.csv")) - 1
        lines.append(f"| {args.large} x {args.large} px, {args.large_cells:.0%} cells | on | {wall:.0f} s | "
                     f"{peak / 2**30:.2f} GB | {nuclei} |")
    text = "\n".join(lines + [""] + summary) + "\n"
    (args.out / "slide_bench.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
