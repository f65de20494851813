"""The ONNX Runtime engine against PyTorch on the same model and images, measured in one run.

    python benchmarks/onnx_engine.py --model pretrained --data gbm40_31_40.json --images GBM40/images \
        --tiles GBM40/images --field field2048.png --threads 2

1. Agreement, per COCO set given with --data (masks as ground truth; several sets may be given,
   each with its image folder in the same order in --images): per image the nucleus count of both
   engines, the mean IoU of the nuclei they share (matched at IoU > 0.5), and each engine's AJI.
   Acceptance: counts within 1 %, matched IoU >= 0.98, AJI within 0.003 (0.005 for int8).
2. Speed on tiles (--tiles, the first --limit images): each engine predicts every image as `dessam
   predict` does, the engines taking turns image by image; megapixels per second.
3. `dessam predict FIELD --engine E` in a fresh process, as a user times it: wall clock (start-up
   included), Mpx/s, peak RSS, time to the first window.

--int8 adds ONNX Runtime's dynamically quantised graphs as a third engine; --openvino times the
graphs under OpenVINO (if installed) against ONNX Runtime, graph by graph. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def agreement(engines: dict, data: str, images_dir: str) -> list:
    """Markdown rows: one per engine besides the first (PyTorch), over the set `data`."""
    from dessam.data.coco import load_coco, read_record_image, record_label_map
    from dessam.metrics import evaluate_pair

    records = load_coco(data, images_dir).images
    found = {name: [] for name in engines}
    truth = []
    for record in records:
        image = read_record_image(record)
        truth.append(record_label_map(record))
        for name, engine in engines.items():
            found[name].append(engine.predict(image).labels)
    names = list(engines)
    base = names[0]
    base_aji = [evaluate_pair(t, p)["aji"] for t, p in zip(truth, found[base])]
    rows = []
    for name in names[1:]:
        counts, ious, ajis = [], [], []
        for t, a, b in zip(truth, found[base], found[name]):
            n_a, n_b = len(np.unique(a)) - 1, len(np.unique(b)) - 1
            counts.append(abs(n_b - n_a) / max(n_a, 1))
            ious.append(evaluate_pair(a.astype(np.int64), b.astype(np.int64))["sq"])
            ajis.append(evaluate_pair(t, b)["aji"])
        rows.append(f"| {Path(data).name} ({len(records)} images) | {name} | {100 * max(counts):.2f} % | "
                    f"{min(ious):.4f} | {np.mean(base_aji):.4f} / {np.mean(ajis):.4f} | "
                    f"{max(abs(x - y) for x, y in zip(base_aji, ajis)):.4f} |")
    return rows


def speed(engines: dict, paths: list) -> list:
    from dessam.data.images import read_image

    images = [read_image(p) for p in paths]
    for engine in engines.values():  # the first call builds what later calls reuse
        engine.predict(images[0])
    seconds = dict.fromkeys(engines, 0.0)
    for image in images:
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.predict(image)
            seconds[name] += time.perf_counter() - start
    megapixels = sum(image.shape[0] * image.shape[1] for image in images) / 1e6
    first = next(iter(seconds.values()))
    return [f"| {name} | {len(images)} tiles, {megapixels:.2f} Mpx | {spent:.1f} | {megapixels / spent:.3f} | "
            f"{first / spent:.2f}x |" for name, spent in seconds.items()]


def field_runs(model: str, field: Path, engines: list) -> list:
    from dessam.workflows.engine_runs import time_predict_command
    from PIL import Image

    width, height = Image.open(field).size
    rows = []
    with tempfile.TemporaryDirectory(prefix="dessam-onnx-bench-") as workdir:
        for engine in engines:
            run = time_predict_command(engine, model, field, Path(workdir))
            rows.append(f"| {engine} | {field.name} ({width} x {height}) | {run.seconds:.1f} | "
                        f"{width * height / run.seconds / 1e6:.3f} | {run.peak_rss / 2**30:.2f} GB | "
                        f"{run.first_window_s:.2f} |")
    return rows


def openvino_rows(folder: Path, threads: int) -> list:
    """Each graph's time under ONNX Runtime and OpenVINO, on the inputs of a real-sized call."""
    try:
        import openvino
    except ImportError:
        return ["OpenVINO is not installed (pip install openvino): not measured."]
    from dessam.inference.onnx_predictor import open_session

    manifest = __import__("json").loads((folder / "manifest.json").read_text())
    size, grid, channels = manifest["image_size"], manifest["embedding"]["grid"], manifest["embedding"]["channels"]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    centres = rng.uniform(20, size - 20, (100, 2)).astype(np.float32)
    boxes = np.concatenate([centres - 9, centres + 9], 1)
    feeds = {"encoder": {"images": images},
             "decoder": {"source": images if manifest["graphs"]["decoder"]["reads"] == "images"
                         else rng.standard_normal((1, channels, grid, grid)).astype(np.float32),
                         "boxes": boxes, "image_index": np.zeros(100, np.int64),
                         "tokens": np.float32(manifest["prompt_token"] or np.zeros((0, channels))).reshape(-1, channels)}}
    core = openvino.Core()
    rows = []
    for name, feed in feeds.items():
        path = folder / manifest["graphs"][name]["file"]
        ort_session = open_session(path, threads)
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
        times = {}
        for label, call in (("onnxruntime", lambda: ort_session.run(None, feed)), ("openvino", lambda: compiled(feed))):
            call()
            start = time.perf_counter()
            for _ in range(3):
                call()
            times[label] = (time.perf_counter() - start) / 3
        rows.append(f"| {name} ({'100 boxes' if name == 'decoder' else '1 image'}) | {times['onnxruntime'] * 1e3:.0f} ms | "
                    f"{times['openvino'] * 1e3:.0f} ms | {times['onnxruntime'] / times['openvino']:.2f}x |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained", help="a model.pt or a bundled model's name (default pretrained)")
    parser.add_argument("--data", nargs="*", default=[], help="COCO files with masks (agreement)")
    parser.add_argument("--images", nargs="*", default=[], help="the image folder of each --data file")
    parser.add_argument("--tiles", help="a folder of images for the speed on tiles")
    parser.add_argument("--limit", type=int, default=20, help="tiles used (the first, by name; default 20)")
    parser.add_argument("--field", help="a large image for `dessam predict` as a user times it")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both engines (default: all cores)")
    parser.add_argument("--int8", action="store_true", help="also ONNX Runtime's dynamically quantised graphs")
    parser.add_argument("--openvino", action="store_true", help="also time the graphs under OpenVINO")
    args = parser.parse_args(argv)
    if len(args.images) != len(args.data):
        parser.error("give one --images folder per --data file")
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the child processes of the field runs too

    import torch

    from dessam.workflows.bench_report import device_name
    from dessam.inference.engines import onnx_model
    from dessam.inference.loading import load_model
    from dessam.outputs.files import expand_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    engines = {"PyTorch": load_model(args.model, device="cpu"),
               "ONNX Runtime fp32": onnx_model(args.model, threads=args.threads)}
    if args.int8:
        engines["ONNX Runtime int8"] = onnx_model(args.model, threads=args.threads, precision="int8")
    print(f"# ONNX Runtime and PyTorch engines, `{args.model}`\n")
    print(f"- CPU: {device_name(torch.device('cpu'))}; onnxruntime {__import__('onnxruntime').__version__}, "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at the start\n")
    if args.data:
        print("| set | engine | largest count difference | lowest matched IoU (per image) | mean AJI, PyTorch / engine | "
              "largest AJI difference (per image) |\n|---|---|---:|---:|---|---:|")
        for data, images in zip(args.data, args.images):
            print("\n".join(agreement(engines, data, images)))
        print()
    if args.tiles:
        print("| engine | images | seconds | Mpx/s | speed vs PyTorch |\n|---|---|---:|---:|---:|")
        print("\n".join(speed(engines, expand_inputs([args.tiles])[:args.limit])))
        print()
    if args.field:
        print("| `dessam predict --engine` | field | wall (s) | Mpx/s as the user times it | peak RSS | "
              "time to the first window (s) |\n|---|---|---:|---:|---:|---:|")
        print("\n".join(field_runs(args.model, Path(args.field), ["torch", "onnx"])))
        print()
    if args.openvino:
        print("| graph | ONNX Runtime | OpenVINO | OpenVINO speed-up |\n|---|---:|---:|---:|")
        print("\n".join(openvino_rows(engines["ONNX Runtime fp32"].folder, args.threads or os.cpu_count())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
