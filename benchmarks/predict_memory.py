"""Peak memory of `dessam predict` on large fields: it must grow with the field, not with nuclei x area.

Square mosaics of the most crowded of many synthetic cluster fields (256 px each; 1024, 2048 and 4096 px a side)
are written as PNG and predicted by `dessam predict`, each in its own process, whose peak resident
set size GNU time reports (`/usr/bin/time`, Debian's `time` package). The table gives, per field,
the nuclei found, the peak, and what N x H x W boolean masks alone would have taken.

    python benchmarks/predict_memory.py --model RUN/model.pt [--out predict_memory/] [--sides 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from dessam.data.synth import make_scene

FIELD = 256


def mosaic(side: int, seed: int = 0, candidates: int = 5) -> np.ndarray:
    """Crowded fields: of `candidates` x as many cluster scenes as the mosaic holds, the most crowded,
    in the order they were drawn."""
    tiles = side // FIELD
    scenes = [make_scene(np.random.default_rng([seed, k]), scene="cluster", size=(FIELD, FIELD))
              for k in range(candidates * tiles * tiles)]
    crowd = np.array([len(np.unique(labels)) - 1 for _, labels in scenes])
    kept = np.sort(np.argsort(-crowd, kind="stable")[:tiles * tiles])
    fields = [scenes[k][0] for k in kept]
    rows = [np.concatenate(fields[r * tiles:(r + 1) * tiles], axis=1) for r in range(tiles)]
    return np.concatenate(rows, axis=0)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=Path("predict_memory"))
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 4096])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["| field | nuclei found | peak memory | time | N x H x W masks would take |", "|---|---:|---:|---:|---:|"]
    for side in args.sides:
        image = args.out / f"mosaic_{side}.png"
        Image.fromarray(mosaic(side)).save(image)
        record = args.out / f"mosaic_{side}.rss"
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(record), sys.executable, "-m", "dessam", "predict",
                        "--model", str(args.model), str(image), "--out", str(args.out / f"out_{side}"),
                        "--formats", "labels", "--overwrite", "--quiet"], check=True)
        wall = time.perf_counter() - start
        peak = int(record.read_text().split()[-1]) * 1024
        nuclei = len(np.unique(tifffile.imread(args.out / f"out_{side}" / f"mosaic_{side}_labels.tif"))) - 1
        lines.append(f"| {side} x {side} px | {nuclei} | {peak / 2**30:.2f} GB | {wall:.0f} s | "
                     f"{nuclei * side * side / 2**30:.1f} GB |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    (args.out / "predict_memory.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
