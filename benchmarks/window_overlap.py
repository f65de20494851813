"""What windows and their overlap cost on a large field, and what they change at the seams.

    python benchmarks/window_overlap.py --field field2048.png --truth field2048_labels.tif \
        --sizes 512 1056 --overlaps 0 32 64 96 --threads 1

For each window size (the model's input size S; the bundled models' encoders are fully
convolutional, so S may differ from the training size) and overlap: the number of windows, the
pixels they cover against the field's (the cost of the overlap), the seconds `predict` takes, the
nuclei found, and, against the ground truth, AJI and detection F1 over the whole field and over the
bands of 48 px around the inner window edges (where the seams are). Runs the ONNX engine (the
graphs are exported per size into the user's cache); the detection limit per window grows with the
window's area, the RPN's proposals per level do not. Prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np


def seam_band(shape: tuple, windows: list, half_width: int = 24) -> np.ndarray:
    """The pixels within `half_width` of an inner window edge."""
    band = np.zeros(shape, bool)
    for window in windows:
        top, bottom, left, right = window.inner
        for inner, rows, cols in ((top, slice(window.y0, window.y0 + half_width), window.cols),
                                  (bottom, slice(window.y1 - half_width, window.y1), window.cols),
                                  (left, window.rows, slice(window.x0, window.x0 + half_width)),
                                  (right, window.rows, slice(window.x1 - half_width, window.x1))):
            if inner:
                band[rows, cols] = True
    return band


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--field", required=True)
    parser.add_argument("--truth", help="its label image (ground truth)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[512])
    parser.add_argument("--overlaps", nargs="+", type=int, default=[0, 32, 64, 96])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from dessam.data.images import read_image, read_image_raw
    from dessam.geometry.plan import WindowPlan
    from dessam.inference.engines import onnx_model
    from dessam.metrics import evaluate_pair

    field = read_image(args.field)
    truth = None if args.truth is None else np.asarray(read_image_raw(args.truth)).astype(np.int64)
    print(f"`{args.model}` on {args.field} ({field.shape[1]} x {field.shape[0]}), ONNX engine, "
          f"{args.threads or 'all'} thread(s)\n")
    print("| window | overlap | windows | pixels / field | seconds | nuclei | AJI | F1 | AJI at seams | F1 at seams |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        model = onnx_model(args.model, image_size=None if size == 512 else size, threads=args.threads)
        # the detection limit is per window: it grows with the window's area (the RPN's proposals do not)
        postprocess = replace(model.postprocess, max_detections=round(model.postprocess.max_detections * (size / 512) ** 2))
        model.predict(field[:size, :size], postprocess)  # warm-up
        for overlap in args.overlaps:
            plan = WindowPlan.for_image(field.shape, model.image_size, model.scale, overlap=overlap)
            covered = sum((w.y1 - w.y0) * (w.x1 - w.x0) for w in plan.windows) / (field.shape[0] * field.shape[1])
            start = time.perf_counter()
            prediction = model.predict(field, postprocess, overlap=overlap)
            seconds = time.perf_counter() - start
            cells = [str(size), str(overlap), str(len(plan.windows)), f"{covered:.2f}", f"{seconds:.1f}",
                     str(len(prediction))]
            if truth is not None:
                labels = prediction.labels.astype(np.int64)
                whole = evaluate_pair(truth, labels)
                band = seam_band(field.shape[:2], plan.windows)
                if band.any():
                    at_seams = evaluate_pair(np.where(band, truth, 0), np.where(band, labels, 0))
                    seams = [f"{at_seams['aji']:.4f}", f"{at_seams['f1']:.4f}"]
                else:
                    seams = ["—", "—"]
                cells += [f"{whole['aji']:.4f}", f"{whole['f1']:.4f}"] + seams
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
