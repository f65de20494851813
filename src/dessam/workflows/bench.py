"""`dessam bench`: the fast and the reference paths timed in one run, on the same trained model.

The reference path runs as the authors' test code does: fp32, one image per encoder call, every box
decoded over the whole embedding, the official 1000 test proposals (`reference_settings`). The fast
path is `fast_settings` for the device. Both load the same model file. Measured, each as the median
of repeats after a warm-up, reference and fast calls alternating:

- the encoder; the decoder with 100 boxes on one image;
- end-to-end prediction (encoder, detector, decoder, masks, post-processing, label map) on demo
  fields and on larger fields (the user's own images with `--images`), in images and pixels per second;
- one training iteration on the field with the most boxes: the authors' way (the encoder run, every
  prompt decoded over the whole embedding) against dessam's (cached embedding, local decoding);
- the metrics against their per-instance loop reference;

and, for the two paths' results: the mean mask IoU when both are prompted with the same boxes, and
AJI on the demo's three test splits. Targets are reported, never asserted.

On a CPU with ONNX Runtime installed, the two engines are measured side by side on the larger
fields (`compare_engines`): PyTorch's fast path and the exported graphs run by ONNX Runtime, in one
process (megapixels per second) and as `dessam predict` in a fresh process, as a user times it
(wall clock with start-up, peak RSS, time to the first window), and their masks prompted with the
same boxes.

An agreement check passes only over at least `MIN_MASKS` masks (a check over none cannot fail);
`dessam bench` exits with status 1 when one does not pass.

Without `--model`: the bundled pretrained model (it finds nuclei); where it is missing, a model
trained for a minute (`dessam demo --quick`'s settings) on a CPU, or, on CUDA, ViT-B with random
weights (speed only: its masks mean nothing).
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..config import Config
from ..data.coco import load_coco, read_record_image, record_label_map
from ..data.images import read_image, write_png
from ..data.synth import make_dataset, make_scene
from ..devices import resolve_device
from ..inference.loading import load_model
from ..inference.predictor import Predictor, decode
from ..config.runtime import fast_settings, reference_settings
from ..models.bundled import PRETRAINED_NAME, bundled_models
from ..metrics import evaluate_pair
from ..training.batches import batch_tensors, encode_training_set
from ..training.cache import EmbeddingCache
from ..training.train import build_model, train
from .agreement import mask_agreement
from .bench_report import BENCH_METRICS, BenchReport, agreement_lines, report_head
from .engine_runs import compare_engines
from .measuring import Row, measure_alternating, targeted

DECODER_BOXES = 100
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


# ----- measuring -----------------------------------------------------------------------------


# ----- the table -----------------------------------------------------------------------------


# ----- what is measured --------------------------------------------------------------------
def demo_fields(count: int, size: int = 256, distinct: int = 4, scene: str = "cluster") -> list:
    """`count` synthetic cytology fields (at most `distinct` different ones)."""
    made = [make_scene(np.random.default_rng([7, i]), scene=scene, size=(size, size))[0]
            for i in range(min(count, distinct))]
    return [made[i % len(made)] for i in range(count)]


def random_boxes(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """`count` nucleus-sized boxes (x1y1x2y2) inside a height x width image."""
    rng = np.random.default_rng(seed)
    sides = rng.uniform(0.02, 0.08, (count, 2)) * min(height, width)
    corners = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - sides)
    return np.hstack([corners, corners + sides]).astype(np.float32)


def quick_model(workdir: Path, device: torch.device, progress: bool) -> Path:
    """A model worth predicting with when none is given: the quick demo's (one epoch, 12 fields)."""
    from .demo import demo_config

    config = demo_config(quick=True).replace({"train.device": device.type})
    data = make_dataset(workdir / "data", n_train=12, n_val=0, n_test=0, scene="mixed", seed=10)
    return train(config, data / "train.json", data / "images", workdir / "run", progress=progress).model_path


def random_vit_predictor(device: torch.device, settings) -> Predictor:
    """ViT-B at 1024 x 1024 with random weights and the official detector (speed only)."""
    config = Config().replace({"model.sam": "vit_b", "train.device": device.type})
    model, identity = build_model(config, device)
    return Predictor(model, model.config, identity, device, settings=settings)


def load_pair(model_path: Optional[Path], device: torch.device, fast, vit: bool) -> tuple:
    """(reference, fast) predictors of one model, with identical trainable weights."""
    if vit:
        reference = random_vit_predictor(device, reference_settings())
        quick = random_vit_predictor(device, fast)
        quick.model.load_trainable_state_dict(reference.model.trainable_state_dict())
        return reference, quick
    return load_model(model_path, device, settings=reference_settings()), load_model(model_path, device, settings=fast)


def user_image_paths(folder: Optional[Path], limit: int) -> list:
    if folder is None:
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]


def training_field(data_json: Optional[Path], images_dir: Optional[Path], size: int) -> tuple:
    """(image, boxes) of the annotated field with the most boxes, or a synthetic crowded field."""
    if data_json is not None:
        records = load_coco(data_json, images_dir).images
        record = max(records, key=lambda r: len(r.boxes))
        return read_record_image(record), record.boxes, f"{record.file_name} ({len(record.boxes)} boxes)"
    from ..data.anything import instance_boxes

    image, labels = make_scene(np.random.default_rng([8, 0]), scene="cluster", size=(size, size))
    boxes = instance_boxes(labels)[1]
    return image, boxes, f"a synthetic crowded field of {size} x {size} px ({len(boxes)} nuclei)"


def time_training_iteration(predictor: Predictor, image: np.ndarray, boxes: np.ndarray, workdir: Path,
                            repeats: int) -> tuple:
    """(reference Timing, fast Timing, boxes) of one training iteration on one field (at the model's
    scale: its window with the most boxes), from the same weights: the authors' way (the encoder
    runs, every prompt decoded over the whole embedding) and dessam's (the embedding read from the
    cache, local decoding)."""
    from ..data.coco import ImageRecord
    from ..data.images import write_png

    model, device = predictor.model, predictor.device
    path = write_png(workdir / "field.png", image)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    record = ImageRecord(id=1, file_name="field.png", path=path, height=image.shape[0], width=image.shape[1],
                         boxes=boxes, annotation_ids=list(range(1, len(boxes) + 1)), segmentations=[None] * len(boxes))
    cache = EmbeddingCache(workdir / "cache", encoder_key="bench")
    factor = None if predictor.scale.mode == "fit" else predictor.scale.factor()
    items = encode_training_set(model, [record], cache, device, progress=False, factor=factor)
    item = max(items, key=lambda view: len(view.boxes))  # at the model's scale: the window with most boxes
    start = model.trainable_state_dict()
    config = model.config
    ways = {fast: config.replace({"model.local_decoding": fast}) for fast in (False, True)}

    def iteration(fast: bool):
        model.load_trainable_state_dict(start)
        model.config = ways[fast]
        embeddings, rgb, normalised, gt_boxes, sizes = batch_tensors(model, [item], cache, device)
        if not fast:
            embeddings = model.encode(normalised)
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1e-4, momentum=0.9)
        model.train()
        torch.manual_seed(0)
        total = model.weighted_total(model(embeddings, rgb, normalised, gt_boxes, sizes))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        model.eval()

    try:
        timings = measure_alternating([lambda: iteration(False), lambda: iteration(True)], device, repeats)
    finally:
        model.load_trainable_state_dict(start)
        model.config = config
    return timings[0], timings[1], len(item.boxes)


def demo_split_aji(reference: Predictor, fast: Predictor, n_test: int, workdir: Path) -> dict:
    """Per demo test split: (AJI of the reference path, AJI of the fast path), means over fields."""
    from .demo import SPLITS

    out = {}
    for name, scene, shift, seed in SPLITS:
        folder = make_dataset(workdir / name, n_train=0, n_val=0, n_test=n_test, scene=scene, shift=shift, seed=seed)
        records = load_coco(folder / "test.json", folder / "images").images
        images = [read_record_image(record) for record in records]
        truths = [record_label_map(record) for record in records]
        out[name] = tuple(float(np.mean([evaluate_pair(truth, prediction.labels)["aji"]
                                         for truth, prediction in zip(truths, model.predict_batch(images))]))
                          for model in (reference, fast))
    return out


def time_metrics(quick: bool) -> Optional[dict]:
    """benchmarks/bench_metrics.py's `run()` (fast metrics vs their loop reference), if in a source checkout."""
    if not BENCH_METRICS.is_file():
        return None
    spec = importlib.util.spec_from_file_location("dessam_bench_metrics", BENCH_METRICS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(size=256 if quick else 1024, repeats=1 if quick else 3)


def _predict_row(label: str, reference: Predictor, fast: Predictor, images: list, device, repeats: int) -> Row:
    timings = measure_alternating([lambda m=m: m.predict_batch(images) for m in (reference, fast)], device, repeats)
    pixels = sum(image.shape[0] * image.shape[1] for image in images) / len(images)
    return Row(label, len(images) / timings[0].seconds, len(images) / timings[1].seconds, "img/s", *timings,
               pixels_per_image=pixels)


# ----- the command ---------------------------------------------------------------------------
def run_bench(device="auto", quick: bool = False, out=None, compile: Optional[bool] = None, model=None,
              data=None, images=None, progress: bool = True) -> str:
    """Measure everything on `device` and return (and write to `out`, if given) a Markdown report.

    quick: fewer images and repeats (for checks; the numbers are noisier). compile: torch.compile
    the fast path (default: on CUDA only). model: RUN/model.pt (default: see the module docstring).
    data / images: a COCO file and its image folder (training iteration) or a folder of the user's
    own images (end-to-end prediction on large fields).
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    repeats = 1 if quick else (10 if cuda else 3)
    fast = fast_settings(device)
    fast = replace(fast, compile=cuda if compile is None else bool(compile))
    stages = tqdm(total=7, desc="Benchmarking", unit="stage", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="dessam-bench-") as workdir:
        workdir = Path(workdir)
        model, model_note, vit = _bench_model(model, device, cuda, workdir)
        reference, quick_path = load_pair(Path(model) if model else None, device, fast, vit)
        model_note = model_note or f"`{model}` ({reference.sam_identity['name']} SAM at {reference.image_size} px)"
        stages.update(1)
        run = _BenchRun(reference, quick_path, device, repeats, quick, vit, workdir, stages)
        run.measure_speed(data, images)
        agreement = mask_agreement(reference, quick_path, run.fields + run.large)
        split_aji = {} if vit else demo_split_aji(reference, quick_path, 2 if quick else 12, workdir / "splits")
        stages.update(1)
        engine_lines, engine_agreement = [], None
        if not cuda and not vit and importlib.util.find_spec("onnxruntime") is not None:
            engine_lines, engine_agreement = compare_engines(Path(model), quick_path, run.large, run.large_paths,
                                                             workdir, repeats)

    metrics_result = time_metrics(quick)
    if metrics_result is not None:
        run.rows.append(Row(f"Metrics (AJI, PQ, F1, object Dice and IoU), {metrics_result['n_gt']} nuclei: "
                            f"per-instance loop / dessam.metrics (s)", metrics_result["reference_s"],
                            metrics_result["fast_s"], "s", target=">= 20x"))
        run.rows[-1].met = run.rows[-1].speedup >= 20
    stages.update(1)
    stages.close()
    lines = report_head(run, model_note)
    lines += agreement_lines(run, agreement, split_aji, metrics_result)
    if engine_lines:
        lines += ["", f"## Engines: PyTorch (the fast path above) and ONNX Runtime, on {run.large_note}", ""] + engine_lines
    elif not cuda:
        lines += ["", 'Engines: ONNX Runtime is not installed (pip install "dessam[onnx]"): only PyTorch was measured.']
    checks = [agreement] + ([engine_agreement] if engine_agreement is not None else [])
    passed = all(check.passed for check in checks)
    lines += ["", f"Agreement checks: {'passed' if passed else 'NOT passed'}."]
    text = "\n".join(lines) + "\n"
    if out is not None:
        write_text_atomic(out, text)
    return BenchReport(text, passed)


def _bench_model(model, device: torch.device, cuda: bool, workdir: Path) -> tuple:
    """The model the bench measures, how the report names it (None: by its file), and whether it is a
    random ViT-B SAM (on CUDA without a model: speed only)."""
    vit = model is None and cuda
    model_note = "ViT-B SAM at 1024 x 1024, random weights, official detector (speed only)" if vit else None
    if model is None and not vit and bundled_models().get(PRETRAINED_NAME) is not None:
        model = bundled_models()[PRETRAINED_NAME]  # a model that finds nuclei: the checks compare its masks
    if model is None and not vit:
        model = quick_model(workdir / "model", device, progress=False)
        model_note = "a model trained by `dessam demo --quick`'s settings (one epoch on 12 synthetic fields)"
    return model, model_note, vit


@dataclass
class _BenchRun:
    """One bench's two paths, its images and the speed rows measured on them."""
    reference: Predictor
    quick_path: Predictor
    device: torch.device
    repeats: int
    quick: bool
    vit: bool
    workdir: Path
    stages: tqdm
    rows: list = None
    fields: list = None         # the demo's fields (encoder, decoder, end-to-end)
    large: list = None          # larger fields: the user's images or synthetic ones
    large_paths: list = None
    large_note: str = ""
    encoder: list = None        # the encoder's two Timings (warm-up of the fast path in the report)
    decoder: list = None

    def measure_speed(self, data, images) -> None:
        """Encoder, decoder, end-to-end prediction and a training iteration, reference against fast."""
        reference, quick_path, device, repeats = self.reference, self.quick_path, self.device, self.repeats
        size = reference.image_size
        n_fields = 2 if self.quick else 8
        self.fields = fields = demo_fields(n_fields, 256 if not self.vit else 1024)
        self.rows = rows = []
        self.encoder = measure_alternating([lambda m=m: m.encode(fields) for m in (reference, quick_path)],
                                           device, repeats)
        rows.append(Row(f"Encoder, {n_fields} fields (img/s)", n_fields / self.encoder[0].seconds,
                        n_fields / self.encoder[1].seconds, "img/s", *self.encoder))
        self.stages.update(1)

        encoded = reference.encode(fields[:1])
        boxes = [random_boxes(DECODER_BOXES, *fields[0].shape[:2])]
        self.decoder = measure_alternating([lambda m=m: decode(m, encoded, boxes) for m in (reference, quick_path)],
                                           device, repeats)
        rows.append(targeted(Row(f"Decoder, {DECODER_BOXES} boxes on one image (ms)", self.decoder[0].seconds * 1e3,
                                  self.decoder[1].seconds * 1e3, "ms", *self.decoder), ">= 4x", 4))
        self.stages.update(1)

        rows.append(targeted(_predict_row(f"End-to-end predict, {n_fields} demo fields of 256 px (img/s)",
                                           reference, quick_path, fields, device, repeats), ">= 4x", 4))
        self._read_large(images, size)
        rows.append(targeted(_predict_row(f"End-to-end predict, larger fields: {self.large_note} (img/s)",
                                           reference, quick_path, self.large, device, repeats), ">= 4x", 4))
        self.stages.update(1)

        train_image, train_boxes, train_note = training_field(data, images, 2 * size)
        *iteration, boxes_seen = time_training_iteration(reference, train_image, train_boxes,
                                                         self.workdir / "train", repeats)
        rows.append(targeted(Row(f"Training iteration on {train_note}, {boxes_seen} of its boxes in the model's input (s)",
                                  iteration[0].seconds, iteration[1].seconds, "s", *iteration), ">= 3x", 3))
        self.stages.update(1)

    def _read_large(self, images, size: int) -> None:
        """The user's images when given, otherwise synthetic fields written as PNG (the ONNX engine reads files)."""
        self.large_paths = user_image_paths(images, 2 if self.quick else 8)
        self.large = [read_image(path) for path in self.large_paths]
        self.large_note = f"{len(self.large)} of the user's images from {images}"
        if not self.large:
            self.large = demo_fields(1 if self.quick else 4, 2 * size if not self.vit else 2048, scene="mixed")
            self.large_note = f"{len(self.large)} synthetic fields of {self.large[0].shape[0]} px"
            self.large_paths = [write_png(self.workdir / f"field_{i}.png", image)
                                for i, image in enumerate(self.large)]
