"""`dessam eval`: a trained model scored against ground-truth masks.

`evaluate(model, TEST.json, IMAGES, REPORT)` writes

- `REPORT/metrics.json`  per method: every per-image metric averaged over images, COCO mask
  AP / AP50 / AP75, instance counts summed over images, and the settings used;
- `REPORT/metrics.md`    the same as a table (one row per method, one column per metric), and the
  detection recall per nucleus size (the longer side of each ground-truth box), pooled over images;
- `REPORT/per_image.csv` one row per image x method;
- `REPORT/overlays/worst_K_NAME.png` prediction (yellow) vs ground-truth (green) contours of the
  five images where the DES-SAM student has the lowest AJI.

Methods (`baselines=True` adds all but `des-sam`), all from one encoding per window:

- `box-as-mask`       every detected box filled: what the detector alone gives;
- `box-otsu`          Otsu on the nucleus stain inside every detected box: the cheapest honest mask;
- `sam`               training-free SAM prompted with the detected boxes (no learned token);
- `des-sam`           the student: the detected boxes plus the learned token;
- the same four from the ground-truth boxes (scores 1), where the detector plays no part:
  `box-as-mask-gt-boxes`, `box-otsu-gt-boxes`, `teacher-gt-boxes` (training-free SAM, the frozen
  teacher: the pseudo-label ceiling) and `des-sam-gt-boxes`;
- `pretrained (bundled)` (`dessam eval --baselines`, when dessam ships a pretrained model and it is
  not the model evaluated): that model as `dessam predict` runs it without `--model`, so that a
  trained model is seen beside what one gets without training.

Every method gets the same post-processing as `dessam predict` (the official one): detections
under the score threshold are dropped (not for ground-truth boxes, which are not detections),
holes and islands under `min_size` pixels are removed, and one label map is painted in which, by
default, overlaps go to the lower score (see `dessam.inference.instances`). Per-image metrics are computed
on that label map; COCO AP on the post-processed (possibly overlapping) instance masks with their
scores.

Each image is brought to the model's scale exactly as `dessam predict` brings it (`dessam.geometry.plan`):
fitted whole, or resampled and cut into windows whose nuclei are merged; so an image is never
scored at a scale it would not be predicted at.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..config import Postprocess
from ..data.coco import dataset_has_masks, load_coco, read_record_image, record_label_map
from ..errors import DessamError
from ..geometry.plan import WindowPlan
from ..geometry.scale import check_pixel_size, median_box_side
from ..config.runtime import Runtime
from ..inference.engines import load_predictor
from ..inference.prediction import Prediction
from ..inference.pipeline import STUDENT
from ..inference.windowed import image_instances
from ..metrics import coco_mask_ap, evaluate_pair, pool_size_counts, recall_by_size, summarize
from ..models.bundled import PRETRAINED_NAME, bundled_models
from ..outputs.writers import write_json
from .report import markdown_report, write_csv, write_overlays
from .sources import METHODS
PRETRAINED = "pretrained (bundled)"  # the bundled pretrained model's DES-SAM, a row of `eval --baselines`
COUNT_KEYS = ("n_gt", "n_pred", "tp", "fp", "fn")
N_OVERLAYS = 5



# ---------------------------------------------------------------- the methods' instances


def method_instances(model, image: np.ndarray, gt_boxes: np.ndarray, methods: Sequence[str],
                     postprocess: Postprocess, pixel_size_um: Optional[float] = None,
                     plan: Optional[WindowPlan] = None) -> dict:
    """Raw `Instances` of each method for one image, from one encoding and one detection per window,
    the image brought to the model's scale as `dessam predict` brings it (`plan`, when made already)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    return image_instances(model, image, {method: METHODS[method] for method in methods}, postprocess,
                           given_boxes=gt_boxes, pixel_size_um=pixel_size_um, plan=plan)


# ---------------------------------------------------------------- report building


class _Lazy(Sequence):
    """A read-only sequence whose items are computed on access (keeps memory to one image)."""

    def __init__(self, count: int, item: Callable[[int], object]):
        self.count, self.item = count, item

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.item(index)


def _method_summary(rows: list, ap: dict) -> dict:
    """Means over images of the per-image metrics, AP, and the instance counts summed."""
    means = summarize(rows)
    summary = {key: value for key, value in means.items() if key not in COUNT_KEYS}
    summary.update(ap)
    summary["counts"] = {key: int(sum(row[key] for row in rows)) for key in COUNT_KEYS}
    return summary


# ---------------------------------------------------------------- evaluation


def _load_test_set(data_json, images_dir):
    dataset = load_coco(data_json, images_dir)
    if not dataset.images:
        raise DessamError(f"{data_json}: the test set has no images; add images to evaluate on")
    if not dataset_has_masks(dataset):
        raise DessamError(
            f"{data_json}: evaluation needs masks; every annotation must carry a segmentation "
            "(polygons or RLE); convert the ground truth with `dessam convert` or use a file with masks"
        )
    return dataset


def evaluate(model, data_json, images_dir, out_dir, baselines: bool = False, score_threshold: Optional[float] = None,
             pixel_size_um: Optional[float] = None,
             remove_small: bool = True, min_size: Optional[int] = None, progress: bool = True,
             model_path=None, reference=None, nucleus_size: Optional[float] = None) -> dict:
    """Score `model` (a `Predictor`) on a COCO test set with masks and write the report to `out_dir`.

    score_threshold: None = the model's own (official 0.55); 0 keeps every detection.
    pixel_size_um: the test images' pixel size, when known (brings them to the model's scale).
    nucleus_size: the test images' typical nucleus side in pixels, when known (models with `nucleus`
    scaling; None: estimated per image, as `dessam predict` does).
    remove_small / min_size: hole and island removal (min_size None = the model's, official 70 px).
    model_path: recorded in the report (defaults to the model's `path` attribute, if any).
    reference: another `Predictor` (the bundled pretrained model) whose DES-SAM masks are scored
    too, as the row `PRETRAINED`, each with its own settings, on the same images.
    Returns the content of metrics.json.
    """
    out_dir = Path(out_dir)
    dataset = _load_test_set(data_json, images_dir)
    postprocess = _checked_postprocess(model, score_threshold, min_size, remove_small, pixel_size_um)
    threshold = postprocess.score_threshold
    methods = tuple(METHODS) if baselines else (STUDENT,)
    scores = _Scores(methods + ((PRETRAINED,) if reference is not None else ()))
    records = dataset.images
    for index, record in enumerate(tqdm(records, desc="Evaluating", unit="img", disable=not progress)):
        image = read_record_image(record)
        plan = model.plan(image, pixel_size_um, nucleus_size=nucleus_size, postprocess=postprocess)
        scores.oversized += plan.tiled
        true_size, used_size = median_box_side(record.boxes, at_least=1), _nucleus_side(model, plan)
        scores.sizes.append((true_size, used_size))
        gt_labels = record_label_map(record)
        raw = method_instances(model, image, record.boxes, methods, postprocess, pixel_size_um, plan)
        for method in scores.rows:
            if method == PRETRAINED:
                prediction = reference.predict(image, pixel_size_um=pixel_size_um)
            else:
                cut = threshold if threshold > 0 and not METHODS[method].given_boxes else None
                prediction = Prediction.from_instances(
                    raw[method].postprocessed(replace(postprocess, score_threshold=cut)), postprocess.overlap_winner)
            scores.add(method, index, record, image, gt_labels, prediction,
                       {"nucleus_px_true": _rounded(true_size), "nucleus_px_used": _rounded(used_size)})

    gt_maps = _Lazy(len(records), lambda i: record_label_map(records[i]))
    summaries = {method: _method_summary(scores.per_image[method], coco_mask_ap(gt_maps, scores.predictions[method]))
                 for method in scores.rows}
    for method in scores.rows:
        summaries[method]["recall_by_size"] = pool_size_counts(scores.by_size[method])

    settings = _settings_report(model, model_path, data_json, images_dir, len(records), scores, reference,
                                postprocess, remove_small, pixel_size_um)
    report = {"settings": settings, "methods": summaries}
    write_overlays(out_dir / "overlays", scores.worst)
    write_csv(out_dir / "per_image.csv", scores.csv_rows)
    write_text_atomic(out_dir / "metrics.md", markdown_report(report))
    write_json(out_dir / "metrics.json", report)
    return report


def _settings_report(model, model_path, data_json, images_dir, n_images: int, scores: "_Scores", reference,
                     postprocess, remove_small: bool, pixel_size_um: Optional[float]) -> dict:
    """What was scored and how: the report's "settings"."""
    model_path = model_path if model_path is not None else getattr(model, "path", None)
    return {
        "model": str(model_path) if model_path is not None else None,
        "sam": dict(model.sam_identity),
        "data": str(data_json),
        "images": str(images_dir),
        "n_images": n_images,
        "methods": list(scores.rows),
        "reference": None if reference is None else str(getattr(reference, "path", None)),
        "score_threshold": postprocess.score_threshold,
        "remove_small": bool(remove_small),
        "min_size": postprocess.min_size,
        **_readout_settings(model, postprocess),
        "images_in_windows": int(scores.oversized),
        "pixel_size_um": pixel_size_um,
        "model_scale": model.scale.to_dict(),
        "nucleus_size": _size_agreement(scores.sizes) if model.scale.mode == "nucleus" else None,
        "match_iou": 0.5,
    }


def _checked_postprocess(model, score_threshold: Optional[float], min_size: Optional[int], remove_small: bool,
                         pixel_size_um: Optional[float]):
    """The model's post-processing with the options given, each checked (one clear line when wrong)."""
    threshold = float(model.postprocess.score_threshold if score_threshold is None else score_threshold)
    if not 0 <= threshold <= 1:
        raise DessamError(f"--score-threshold {threshold}: use a value between 0 and 1 (0 keeps every detection)")
    min_size = int(model.postprocess.min_size if min_size is None else min_size)
    if min_size < 0:
        raise DessamError(f"--min-size {min_size}: use 0 or a positive number of pixels")
    check_pixel_size(pixel_size_um)
    return replace(model.postprocess, score_threshold=threshold, min_size=min_size, remove_holes=remove_small,
                   remove_islands=remove_small)


def _readout_settings(model, postprocess) -> dict:
    """How masks were read out, as the report records it."""
    return {
        "connectivity": postprocess.connectivity,
        "fill_border_holes": postprocess.fill_border_holes,
        "keep_largest_island": postprocess.keep_largest_island,
        "overlap_winner": postprocess.overlap_winner,
        "mask_threshold": float(model.config.model.postprocess.mask_threshold),
        "max_detections": int(model.postprocess.max_detections),
        "image_size": int(model.image_size),
    }


class _Scores:
    """Per method: each image's metrics, recall by size and masks (for mask AP); the CSV rows and the
    worst images (overlays) of the student."""

    def __init__(self, rows: tuple):
        self.rows = rows
        self.per_image = {method: [] for method in rows}
        self.by_size = {method: [] for method in rows}
        self.predictions = {method: [] for method in rows}  # per image: (RLEs, scores)
        self.csv_rows, self.worst, self.oversized, self.sizes = [], [], 0, []

    def add(self, method: str, index: int, record, image, gt_labels, prediction, size_columns: dict) -> None:
        result = evaluate_pair(gt_labels, prediction.labels)
        self.per_image[method].append(result)
        self.by_size[method].append(recall_by_size(gt_labels, prediction.labels))
        instances = prediction.instances
        self.predictions[method].append(([instances.rle(k) for k in range(len(instances))], instances.scores))
        self.csv_rows.append({"image": record.file_name, "image_id": record.id, "method": method,
                              **size_columns, **result})
        if method == STUDENT:
            self.worst.append((result["aji"], index, record.file_name, image, prediction.labels, gt_labels))
            self.worst = sorted(self.worst, key=lambda item: item[:2])[:N_OVERLAYS]


def _nucleus_side(model, plan: WindowPlan) -> Optional[float]:
    """The typical nucleus side (source pixels) that `plan` brings to the model's, for `nucleus` scaling."""
    if model.scale.mode != "nucleus" or not model.scale.nucleus_px:
        return None
    return float(model.scale.nucleus_px) / plan.factor


def _rounded(value: Optional[float]):
    return None if value is None else round(float(value), 2)


def _size_agreement(sizes: list) -> dict:
    """How the nucleus sizes the images were brought by compare with their ground truth's median box
    side: the median ratio, and the share of images within 25 %."""
    ratios = np.array([used / true for true, used in sizes if true and used])
    if not ratios.size:
        return {"images": 0}
    return {"images": int(ratios.size), "median_ratio": float(np.median(ratios)),
            "within_25_percent": float(np.mean(np.abs(np.log(ratios)) <= np.log(1.25)))}


def evaluate_model_file(model_path, data_json, images_dir, out_dir, sam_checkpoint=None,
                        runtime: Optional[Runtime] = None, on_model: Optional[Callable] = None, **options) -> dict:
    """`dessam eval`: load RUN/model.pt (and its SAM weights) where `runtime` says (default: PyTorch
    on the best device) and run `evaluate` with `options`; with baselines, the bundled pretrained model
    gets a row too (unless it is the model evaluated). on_model(predictor): called with the loaded
    model before any work (the command line's notes)."""
    runtime = runtime or Runtime(engine="torch")

    def load(path):
        return load_predictor(path, runtime, sam_checkpoint if path == model_path else None,
                              progress=options.get("progress", True))

    model = load(model_path)
    if on_model is not None:
        on_model(model)
    reference = None
    bundled = bundled_models().get(PRETRAINED_NAME)
    if options.get("baselines") and bundled is not None and Path(model_path).resolve() != bundled.resolve():
        reference = load(bundled)
    return evaluate(model, data_json, images_dir, out_dir, model_path=model_path, reference=reference, **options)


def evaluate_label_maps(gt_maps: Sequence[np.ndarray], pred_maps: Sequence[np.ndarray]) -> dict:
    """Metrics of predicted label maps against ground-truth label maps (same order, same sizes).

    Returns `{"summary": means over images with counts summed, "per_image": [one dict per image]}`.
    Without scores there is no COCO AP.
    """
    if len(gt_maps) != len(pred_maps):
        raise DessamError(f"{len(gt_maps)} ground-truth label maps but {len(pred_maps)} predictions; "
                          "pass one prediction per image, in the same order")
    if not len(gt_maps):
        raise DessamError("no label maps to evaluate; pass at least one ground-truth / prediction pair")
    rows = []
    for index, (gt, pred) in enumerate(zip(gt_maps, pred_maps)):
        try:
            rows.append(evaluate_pair(gt, pred))
        except ValueError as exc:
            raise DessamError(f"label map pair {index}: {exc}") from None
    return {"summary": _method_summary(rows, {}), "per_image": rows}
