"""Time dessam.metrics against the per-instance loop reference on a dense nuclei-like pair.

A ground-truth map of about 1000 elliptical, partly touching nuclei on a 1024 x 1024 image and a
perturbed copy (shifted, resized, some dropped, some spurious) are scored with AJI, PQ, pixel F1,
object Dice and object IoU, once with the public functions of dessam.metrics and once with the
slow reference of tests/metrics_reference.py, in the same run. The values must agree to 1e-9.

    python benchmarks/bench_metrics.py [--size 1024] [--spacing 32] [--seed 0] [--no-reference]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from skimage.draw import ellipse

from dessam import metrics

TESTS = Path(__file__).resolve().parents[1] / "tests"  # holds metrics_reference.py

TIMED = ("aji", "pq", "pixel_f1", "object_dice", "object_iou")


def nuclei_layout(rng: np.random.Generator, size: int, spacing: int) -> np.ndarray:
    """(N, 5) ellipses cy, cx, semi-axis r, semi-axis c, angle on a jittered grid, one per cell."""
    centres = np.arange(spacing // 2, size, spacing)
    cy, cx = (g.ravel().astype(float) for g in np.meshgrid(centres, centres, indexing="ij"))
    n = cy.size
    jitter = spacing * 0.2
    return np.column_stack([
        cy + rng.uniform(-jitter, jitter, n),
        cx + rng.uniform(-jitter, jitter, n),
        rng.uniform(0.22, 0.42, n) * spacing,
        rng.uniform(0.22, 0.42, n) * spacing,
        rng.uniform(0, np.pi, n),
    ])


def perturb(rng: np.random.Generator, layout: np.ndarray, spacing: int) -> np.ndarray:
    """Shift and rescale every nucleus, drop 5 % and add 5 % spurious ones."""
    n = len(layout)
    moved = layout.copy()
    moved[:, :2] += rng.normal(0, spacing * 0.06, (n, 2))
    moved[:, 2:4] *= rng.uniform(0.85, 1.15, (n, 2))
    kept = moved[rng.random(n) > 0.05]
    extra = layout[rng.choice(n, n // 20, replace=False)].copy()
    extra[:, :2] += spacing / 2
    return np.concatenate([kept, extra])


def paint(layout: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Label map of the ellipses with shuffled, non-contiguous ids (later ones on top)."""
    label_map = np.zeros((size, size), np.uint32)
    ids = rng.choice(np.arange(1, 50 * len(layout)), size=len(layout), replace=False)
    for (cy, cx, rr, rc, angle), i in zip(layout, ids):
        rows, cols = ellipse(cy, cx, rr, rc, shape=label_map.shape, rotation=angle)
        label_map[rows, cols] = i
    return label_map


def make_pair(size: int = 1024, spacing: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    layout = nuclei_layout(rng, size, spacing)
    return paint(layout, size, rng), paint(perturb(rng, layout, spacing), size, rng)


def score(implementation, gt: np.ndarray, pred: np.ndarray) -> dict:
    """The timed metrics from `implementation`: dessam.metrics or the reference module."""
    return dict(
        aji=implementation.aji(gt, pred),
        pq=implementation.panoptic_quality(gt, pred)["pq"],
        pixel_f1=implementation.pixel_f1(gt, pred),
        object_dice=implementation.object_dice(gt, pred),
        object_iou=implementation.object_iou(gt, pred),
    )


def _timed(fn, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def run(size: int = 1024, spacing: int = 32, seed: int = 0, reference: bool = True, repeats: int = 3) -> dict:
    """Time the fast metrics (best of `repeats`) and, if asked, the loop reference; check agreement."""
    gt, pred = make_pair(size, spacing, seed)
    fast_s, fast = min((_timed(score, metrics, gt, pred) for _ in range(repeats)), key=lambda r: r[0])
    evaluate_s, _ = min((_timed(metrics.evaluate_pair, gt, pred) for _ in range(repeats)), key=lambda r: r[0])
    result = dict(
        size=size,
        n_gt=len(np.unique(gt)) - 1,
        n_pred=len(np.unique(pred)) - 1,
        metrics=list(TIMED),
        values=fast,
        fast_s=fast_s,
        evaluate_pair_s=evaluate_s,
    )
    if reference:
        sys.path.insert(0, str(TESTS))
        import metrics_reference

        reference_s, slow = _timed(score, metrics_reference, gt, pred)
        worst = max(abs(fast[key] - slow[key]) for key in TIMED)
        if worst > 1e-9:
            raise AssertionError(f"fast and reference metrics differ by {worst:.3g}: {fast} vs {slow}")
        result.update(reference_s=reference_s, ratio=reference_s / fast_s, max_abs_difference=worst)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--spacing", type=int, default=32, help="grid spacing of the nuclei (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true", help="skip the slow loop reference")
    args = parser.parse_args(argv)
    r = run(args.size, args.spacing, args.seed, reference=not args.no_reference)
    print(f"{r['size']} x {r['size']} pair, {r['n_gt']} ground-truth and {r['n_pred']} predicted nuclei")
    print("metrics timed: " + ", ".join(r["metrics"]))
    print("values: " + ", ".join(f"{k}={v:.4f}" for k, v in r["values"].items()))
    print(f"fast (dessam.metrics, best of 3): {r['fast_s']:.3f} s")
    print(f"evaluate_pair (all metrics incl. Hausdorff, one table): {r['evaluate_pair_s']:.3f} s")
    if "reference_s" in r:
        print(f"per-instance loop reference: {r['reference_s']:.2f} s")
        print(f"ratio reference / fast: {r['ratio']:.1f}x (max |difference| {r['max_abs_difference']:.1e})")
    return r


if __name__ == "__main__":
    main()
