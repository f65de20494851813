"""Prediction speed of several models on the same images, measured in one run.

    python benchmarks/model_speed.py --images GBM40/images --models demo_output/run/model.pt pretrained

Each model predicts every image as `dessam predict` does (the fast path of the device, the model's
own scale and windows); the models take turns image by image, so that whatever else the machine
does weighs on all of them alike. Prints megapixels per second for each model and its ratio to
the first. `--padded` adds each model encoding small images with the input's zero padding, the way
before dessam trimmed them (`InferenceSettings.trim_inputs`). "pretrained" and
"pretrained-permissive" name the bundled models.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="a folder of images")
    parser.add_argument("--models", nargs="+", required=True,
                        help="model.pt files, or the bundled models' names (pretrained, pretrained-permissive)")
    parser.add_argument("--limit", type=int, default=20, help="images used (the first, by name; default 20)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--padded", action="store_true", help="also run each model with small images encoded "
                        "with the input's zero padding (the authors' way), as rows 'MODEL (padded)'")
    args = parser.parse_args(argv)

    from dessam.config.runtime import fast_settings
    from dessam.data.images import read_image
    from dessam.inference.loading import load_model
    from dessam.models.bundled import resolve_model
    from dessam.outputs.files import expand_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [(resolve_model(m), True) for m in args.models]
    if args.padded:
        runs += [(path, False) for path, _ in list(runs)]
    paths = [str(path) if trimmed else f"{path} (padded)" for path, trimmed in runs]
    models = [load_model(path, device="cpu", settings=replace(fast_settings("cpu"), trim_inputs=trimmed))
              for path, trimmed in runs]
    images = [read_image(p) for p in expand_inputs([args.images])[:args.limit]]
    for model in models:  # the first call builds what later calls reuse
        model.predict(images[0])
    seconds, nuclei = np.zeros(len(models)), np.zeros(len(models))
    for image in images:
        for index, model in enumerate(models):
            start = time.perf_counter()
            nuclei[index] += len(model.predict(image))
            seconds[index] += time.perf_counter() - start
    megapixels = sum(image.shape[0] * image.shape[1] for image in images) / 1e6
    print(f"{len(images)} images, {megapixels:.2f} Mpx, {torch.get_num_threads()} CPU threads\n")
    print("| model | seconds | Mpx/s | nuclei per image | speed vs the first |")
    print("|---|---:|---:|---:|---:|")
    for path, time_spent, found in zip(paths, seconds, nuclei):
        print(f"| {path} | {time_spent:.1f} | {megapixels / time_spent:.3f} | {found / len(images):.0f} | "
              f"{seconds[0] / time_spent:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
