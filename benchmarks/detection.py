"""How well models find nuclei, set by set: detection precision / recall / F1, recall per nucleus
size, AJI and PQ, in one Markdown table.

    python benchmarks/detection.py --models pretrained pretrained-permissive --out runs/detection
    python benchmarks/detection.py --models RUN/model.pt --sets gbm40 gbm40-half --baselines --out R

The sets are those of `benchmarks/devsets.yaml` (`--manifest` for another): the held-out share of
each corpus dataset, GBM40 tiles 31-40 at their own scale and at 0.5x, CoNSeP's test patches. Each
set is written once as a COCO file with masks under OUT/sets/NAME/ and reused; every model is
scored on it as `dessam eval` scores (the model's own scale and post-processing), the reports under
OUT/eval/MODEL/NAME/. The table (OUT/detection.md, also printed) gives per set and model: detection
precision, recall and F1 at mask IoU > 0.5 (means over images), recall per nucleus size (the longer
side of the ground-truth box; pooled over the set's images), AJI and PQ. With `--baselines`, a second
table gives on the same detections the AJI of box-otsu, training-free SAM and DES-SAM, and the
teacher's from the ground-truth boxes. `--sweep 0.3 0.4 0.5` instead reads each model's detections
once per image and scores them at each of these score thresholds (detection F1 and AJI per set and
threshold, and their means over the sets): how a threshold is chosen on held-out sets.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "benchmarks" / "devsets.yaml"
SIZE_NAMES = ("<12", "12-20", "20-30", ">=30")


def read_sets(manifest: Path) -> dict:
    """name -> set entry (paths resolved against the manifest's folder)."""
    data = yaml.safe_load(manifest.read_text())
    sets = {}
    for entry in data["sets"]:
        entry = dict(entry)
        for key in ("corpus", "path", "images"):
            if entry.get(key):
                entry[key] = (manifest.parent / entry[key]).resolve()
        sets[entry["name"]] = entry
    return sets


def resample(image: np.ndarray, labels: np.ndarray, scale: float):
    """The image resampled by `scale` (area-averaged when shrinking, as a coarser scan sees it) and
    its instance map by nearest neighbour; nuclei that vanish are gone from both."""
    height, width = labels.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    filtre = Image.BOX if scale < 1 else Image.BILINEAR
    small = np.asarray(Image.fromarray(image).resize(size, filtre))
    small_labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.NEAREST)).astype(np.uint32)
    return small, small_labels


def set_samples(entry: dict) -> list:
    """The (name, image, instance map) samples of one set."""
    from dessam.data.corpus import DatasetSpec, load_dataset, read_manifest, read_samples

    if entry.get("corpus"):
        corpus = read_manifest(entry["corpus"])
        spec = next((d for d in corpus.datasets if d.name == entry["dataset"]), None)
        if spec is None:
            raise SystemExit(f"{entry['corpus']}: no dataset named {entry['dataset']}")
        samples = load_dataset(spec, progress=True).val
    else:
        spec = DatasetSpec(entry["name"], entry["format"], "measurement only", path=str(entry["path"]),
                           images=str(entry["images"]))
        samples = list(read_samples(spec, []))
    if entry.get("stems"):
        pattern = re.compile(entry["stems"])
        samples = [s for s in samples if pattern.fullmatch(Path(s.name).stem)]
    out = []
    for sample in samples:
        image, labels = sample.image, sample.labels
        if entry.get("scale"):
            image, labels = resample(image, labels, float(entry["scale"]))
        out.append((Path(sample.name).stem, image, labels))
    return out


def build_set(entry: dict, folder: Path) -> Path:
    """OUT/sets/NAME/set.json (COCO with masks) and its images, written once."""
    from dessam.data.coco import label_map_to_annotations, write_coco
    from dessam.data.images import write_png

    json_path = folder / "set.json"
    if json_path.is_file():
        return json_path
    images, annotations = [], []
    for index, (name, image, labels) in enumerate(set_samples(entry)):
        file_name = f"{index:04d}_{name}.png"
        write_png(folder / "images" / file_name, image)
        images.append({"id": index + 1, "file_name": file_name, "height": labels.shape[0], "width": labels.shape[1]})
        annotations += label_map_to_annotations(labels, index + 1, len(annotations) + 1)
    if not images:
        raise SystemExit(f"set {entry['name']}: no images found; check its paths in the manifest")
    write_coco(json_path, images, annotations)
    return json_path


def model_label(path: str) -> str:
    return path if "/" not in path and not path.endswith(".pt") else Path(path).parent.name or Path(path).stem


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def size_cells(summary: dict) -> list:
    cells = []
    for name in SIZE_NAMES:
        entry = summary["recall_by_size"][name]
        cells.append("-" if not entry["n"] else f"{entry['recall']:.2f} ({entry['n']})")
    return cells


def sweep(model, set_json: Path, thresholds: list) -> dict:
    """{threshold: {"f1": mean over images, "aji": mean over images}} from one detection per image."""
    from dataclasses import replace

    from dessam.data.coco import load_coco, read_record_image, record_label_map
    from dessam.inference.prediction import Prediction
    from dessam.inference.predictor import STUDENT
    from dessam.inference.windowed import image_instances
    from dessam.evaluation.sources import METHODS
    from dessam.metrics import evaluate_pair

    lowest = replace(model.postprocess, score_threshold=min(thresholds))
    scores = {t: {"f1": [], "aji": []} for t in thresholds}
    for record in load_coco(set_json, set_json.parent / "images").images:
        image, truth = read_record_image(record), record_label_map(record)
        raw = image_instances(model, image, {STUDENT: METHODS[STUDENT]}, lowest)[STUDENT]
        for threshold in thresholds:
            chosen = replace(lowest, score_threshold=threshold)
            prediction = Prediction.from_instances(raw.postprocessed(chosen), chosen.overlap_winner)
            result = evaluate_pair(truth, prediction.labels)
            scores[threshold]["f1"].append(result["f1"])
            scores[threshold]["aji"].append(result["aji"])
    return {t: {key: float(np.mean(values)) for key, values in s.items()} for t, s in scores.items()}


def sweep_table(results: dict, names: list, thresholds: list) -> str:
    """Markdown: per model and threshold, F1 / AJI per set and their means."""
    lines = ["| model | score threshold | " + " | ".join(names) + " | mean F1 / AJI |",
             "|---|---:|" + "---:|" * (len(names) + 1)]
    for label, per_set in results.items():
        for threshold in thresholds:
            cells = [f"{per_set[n][threshold]['f1']:.3f} / {per_set[n][threshold]['aji']:.3f}" for n in names]
            mean_f1 = np.mean([per_set[n][threshold]["f1"] for n in names])
            mean_aji = np.mean([per_set[n][threshold]["aji"] for n in names])
            lines.append(f"| {label} | {threshold:g} | " + " | ".join(cells) + f" | {mean_f1:.3f} / {mean_aji:.3f} |")
    return "\n".join(lines) + "\n\nDetection F1 / AJI, means over each set's images.\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="model.pt files, or the bundled models' names (pretrained, pretrained-permissive)")
    parser.add_argument("--sets", nargs="+", help="set names (default: every set of the manifest)")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="the sets (default benchmarks/devsets.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the sets, the reports and detection.md")
    parser.add_argument("--sets-dir", type=Path, help="where the sets are written once and read (default OUT/sets)")
    parser.add_argument("--baselines", action="store_true", help="also score box-otsu, training-free SAM and "
                        "the teacher from the ground-truth boxes")
    parser.add_argument("--sweep", type=float, nargs="+", metavar="THRESHOLD",
                        help="score each model's detections at these score thresholds instead (one detection per image)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--padded", action="store_true", help="encode small images with the input's zero padding "
                        "(the authors' way), not trimmed to the image (dessam's default)")
    args = parser.parse_args(argv)

    import torch

    from dataclasses import replace

    from dessam.config.runtime import fast_settings
    from dessam.evaluation.evaluate import evaluate
    from dessam.inference.loading import load_model
    from dessam.models.bundled import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = replace(fast_settings(args.device), trim_inputs=not args.padded)
    sets = read_sets(args.manifest)
    names = args.sets or list(sets)
    unknown = [name for name in names if name not in sets]
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; {args.manifest} has {', '.join(sets)}")
    sets_dir = args.sets_dir or args.out / "sets"
    set_files = {name: build_set(sets[name], sets_dir / name) for name in names}

    if args.sweep:
        thresholds = sorted(args.sweep)
        swept = {}
        for model_name in args.models:
            model = load_model(resolve_model(model_name), device=args.device, settings=settings)
            swept[model_label(model_name)] = {name: sweep(model, set_files[name], thresholds) for name in names}
        text = sweep_table(swept, names, thresholds)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sweep.md").write_text(text)
        print(text)
        return 0

    rows, baseline_rows, results = [], [], {}
    for model_name in args.models:
        model = load_model(resolve_model(model_name), device=args.device, settings=settings)
        label = model_label(model_name)
        for name in names:
            started = time.perf_counter()
            report = evaluate(model, set_files[name], set_files[name].parent / "images",
                              args.out / "eval" / label / name, baselines=args.baselines, model_path=model_name,
                              progress=True)
            seconds = time.perf_counter() - started
            methods = report["methods"]
            student = methods["des-sam"]
            counts = student["counts"]
            results[f"{label}/{name}"] = {key: student.get(key) for key in ("precision", "recall", "f1", "aji", "pq")}
            results[f"{label}/{name}"]["recall_by_size"] = student["recall_by_size"]
            sizes = report["settings"].get("nucleus_size") or {}
            size_cell = (f"{sizes['median_ratio']:.2f} ({sizes['within_25_percent']:.0%})" if sizes.get("images")
                         else "-")
            results[f"{label}/{name}"]["nucleus_size"] = sizes
            rows.append([name, label, str(report["settings"]["n_images"]), str(counts["n_gt"]),
                         fmt(student["precision"]), fmt(student["recall"]), fmt(student["f1"])]
                        + size_cells(student) + [fmt(student["aji"]), fmt(student["pq"]), size_cell,
                                                 f"{seconds / report['settings']['n_images']:.2f}"])
            if args.baselines:
                baseline_rows.append([name, label] + [fmt(methods[m]["aji"]) for m in
                                                      ("box-otsu", "sam", "des-sam", "teacher-gt-boxes")])
    header = ["set", "model", "images", "nuclei", "Det. P", "Det. R", "Det. F1"] + \
             [f"R {name} px (n)" for name in SIZE_NAMES] + ["AJI", "PQ", "nucleus size est. / true", "s / image"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in sorted(rows, key=lambda r: names.index(r[0]))]
    text = "\n".join(lines) + "\n"
    if baseline_rows:
        text += ("\nAJI on the same detections (box-otsu, training-free SAM, DES-SAM) and from the ground-truth "
                 "boxes (the teacher):\n\n| set | model | box-otsu | SAM | DES-SAM | teacher, GT boxes |\n"
                 "|---|---|---:|---:|---:|---:|\n")
        text += "\n".join("| " + " | ".join(row) + " |"
                          for row in sorted(baseline_rows, key=lambda r: names.index(r[0]))) + "\n"
    text += (f"\nDetection at mask IoU > 0.5, means over images; recall per nucleus size (longer side of the "
             f"ground-truth box) pooled over each set's images, with the number of such nuclei; nucleus size: for "
             f"models that bring images to one nucleus size, the median over images of the size they used over the "
             f"ground truth's median box side (in brackets: images within 25 %); "
             f"{torch.get_num_threads()} CPU thread(s).\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.md").write_text(text)
    (args.out / "detection.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
