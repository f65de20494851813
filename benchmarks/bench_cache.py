"""Time training epochs with the embedding cache against running the frozen encoder every iteration.

Both epochs start from the same weights and do the same optimizer steps on the same synthetic
cytology fields, in the same run; the cached epoch loads embeddings exactly as `dessam train`
does. The default SAM is the bundled default teacher (the tiny SAM while its weights are missing).

    python benchmarks/bench_cache.py [--sam default|tiny|vit_b] [--size 256] [--images 8] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from dessam.engine.bench import benchmark_sam, time_training_epochs
from dessam.engine.train import resolve_device


def run(sam: str | None = None, size: int | None = None, images: int = 8, repeats: int = 3,
        device: str = "cpu") -> dict:
    """Seconds per epoch without and with the cache, their ratio, and one encoder call."""
    default_sam, default_size, _ = benchmark_sam(torch.device("cpu"))
    sam, size = sam or default_sam, size or default_size
    with tempfile.TemporaryDirectory(prefix="dessam-bench-cache-") as workdir:
        result = time_training_epochs(sam, size, images, resolve_device(device), repeats, Path(workdir))
    without, with_cache = result["without_cache"].seconds, result["with_cache"].seconds
    return dict(sam=sam, size=size, images=result["images"], without_cache_s=without, with_cache_s=with_cache,
                ratio=without / with_cache, encoder_s=result["encoder_s"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", help="default (the bundled teacher), tiny or vit_b (random weights)")
    parser.add_argument("--size", type=int, help="input size S (default 256)")
    parser.add_argument("--images", type=int, default=8, help="training images in the epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    r = run(args.sam, args.size, args.images, args.repeats, args.device)
    print(f"{r['sam']} SAM at {r['size']} x {r['size']}, {r['images']} images per epoch, median of {args.repeats}")
    print(f"epoch, encoder every iteration: {r['without_cache_s']:.2f} s")
    print(f"epoch, embedding cache:         {r['with_cache_s']:.2f} s")
    print(f"ratio: {r['ratio']:.2f}x (one encoder call: {r['encoder_s'] * 1e3:.1f} ms)")
    return r


if __name__ == "__main__":
    main()
