"""Write one large synthetic slide with `dessam synth --slide` and report time, memory and sizes.

The run is the command users run (slide, label pyramid, box table and QuPath GeoJSON), in this
process, so the peak resident memory printed is the command's own.

    python benchmarks/slide_synth.py [--size 40000] [--cell-fraction 0.03] [--out DIR]

Without --out the files go to a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from dessam.commands import main
from dessam.data.synth_slide import truth_paths


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def run(size: int, cell_fraction: float, folder: Path, seed: int = 0) -> dict:
    slide = folder / "synthetic.svs"
    start = time.perf_counter()
    status = main(["synth", "--slide", str(slide), "--slide-size", str(size), "--cell-fraction", str(cell_fraction),
                   "--seed", str(seed)])
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(status)
    files = (slide, *truth_paths(slide))
    return {"size_px": size, "wall_s": round(seconds, 1), "peak_rss_mb": round(_peak_rss_mb()),
            **{f"{path.name}_mb": round(path.stat().st_size / 2**20, 1) for path in files}}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40000, help="slide side in pixels (default 40000)")
    parser.add_argument("--cell-fraction", type=float, default=0.03)
    parser.add_argument("--out", help="keep the files in this folder")
    args = parser.parse_args()
    if args.out:
        result = run(args.size, args.cell_fraction, Path(args.out))
    else:
        with tempfile.TemporaryDirectory(prefix="dessam-slide-synth-") as folder:
            result = run(args.size, args.cell_fraction, Path(folder))
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    cli()
