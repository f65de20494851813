"""`dessam bench`: the fast and the reference paths timed in one run, as a Markdown table.

For the device it runs on: encoder throughput, the decoder with 100 boxes on one image, end-to-end
prediction (encoder + detector + decoder + masks at the image size), one training epoch with and
without the embedding cache, and the metrics against their per-instance loop reference. Every
measurement has a warm-up call, then several timed repeats; the median is reported. Targets are
reported, never asserted: a slow machine gives honest numbers, not a failure.

Models: on a CPU the default teacher (the tiny SAM when its weights are not there yet, said in the
output); on CUDA a ViT-B SAM at 1024 x 1024 with random weights (speed does not depend on them).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import write_text_atomic
from ..config import Config
from ..data.coco import load_coco
from ..data.images import read_image
from ..data.synth import make_dataset, make_scene
from ..models.default_teacher import DEFAULT_TEACHER_PATH
from .cache import EmbeddingCache
from .fastpath import (InferenceSettings, encode_batch, fast_settings, mean_mask_iou, predict_images,
                       reference_settings, segment_logits)
from .demo import demo_config
from .inputs import prepare_image
from .predict import DessamModel
# _batch_tensors is how `dessam train` loads a cached batch: the cached epoch times that very code.
from .train import _batch_tensors, build_model, encode_training_set, resolve_device

BENCH_METRICS = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_metrics.py"
DECODER_BOXES = 100


# ----- measuring -----------------------------------------------------------------------------
class PeakMemory:
    """Peak memory growth during a `with` block, in bytes (`.peak`).

    CUDA: `torch.cuda.max_memory_allocated` above what was allocated at the start. CPU: the
    process's resident set size sampled every millisecond from /proc/self/statm, above its size
    at the start after freed heap memory is handed back to the OS (where /proc is missing: the
    growth of the peak RSS from `resource`).
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> Optional[int]:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _max_rss() -> int:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return value if platform.system() == "Darwin" else value * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._highest = max(self._highest, self._rss() or 0)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _release_free_memory()
        self._start = self._rss()
        self._thread = None
        if self._start is None:
            self._start = self._max_rss()
        else:
            self._highest = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._highest, self._rss() or 0) - self._start
        else:
            self.peak = self._max_rss() - self._start
        self.peak = max(int(self.peak), 0)
        return False


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so that RSS growth reflects what a call needs."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class Timing:
    seconds: float      # median of the timed repeats
    peak_bytes: int     # peak memory growth of the worst call, warm-up included
    warmup_s: float     # the first call (includes torch.compile where used)


def measure_alternating(fns: list, device, repeats: int, warmup: bool = True) -> list:
    """One `Timing` per callable: each is warmed up once, then they are timed in turn (ABAB...).

    Alternating makes a load that changes during the run (a shared machine) hit every callable
    alike. CUDA work is synchronised before each clock read; peak memory is the highest of a
    callable's own calls.
    """
    device = torch.device(device)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def timed(fn) -> tuple:
        with PeakMemory(device) as memory:
            start = clock()
            fn()
            elapsed = clock() - start
        return elapsed, memory.peak

    warmups = [timed(fn) if warmup else (0.0, 0) for fn in fns]
    runs = [[] for _ in fns]
    for _ in range(max(repeats, 1)):
        for fn, times in zip(fns, runs):
            times.append(timed(fn))
    return [
        Timing(statistics.median(t for t, _ in times), max([peak for _, peak in times] + [first[1]]), first[0])
        for first, times in zip(warmups, runs)
    ]


def measure(fn: Callable[[], object], device, repeats: int, warmup: bool = True) -> Timing:
    """Warm up once, then time `repeats` calls (see `measure_alternating`)."""
    return measure_alternating([fn], device, repeats, warmup)[0]


# ----- the table -----------------------------------------------------------------------------
@dataclass
class Row:
    label: str                  # what is measured, with its unit
    reference: float            # in `unit`
    fast: float
    unit: str                   # "img/s", "ms" or "s"
    reference_timing: Optional[Timing] = None
    fast_timing: Optional[Timing] = None
    target: str = ""            # e.g. ">= 5x"
    met: Optional[bool] = None

    @property
    def speedup(self) -> float:
        if self.unit == "img/s":
            return self.fast / self.reference
        return self.reference / self.fast


def _mb(value: Optional[int]) -> str:
    return "—" if value is None else f"{value / 2**20:.0f} MB"


def _number(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def format_table(rows: list) -> str:
    lines = [
        "| Measurement | Reference | Fast | Speed-up | Target | Peak memory, reference / fast |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        target = "—" if not row.target else f"{row.target}: {'met' if row.met else 'NOT met'}"
        memory = "—"
        if row.reference_timing is not None and row.fast_timing is not None:
            memory = f"{_mb(row.reference_timing.peak_bytes)} / {_mb(row.fast_timing.peak_bytes)}"
        lines.append(f"| {row.label} | {_number(row.reference, row.unit)} | {_number(row.fast, row.unit)} | "
                     f"{row.speedup:.2f}x | {target} | {memory} |")
    return "\n".join(lines)


# ----- what is measured --------------------------------------------------------------------
def benchmark_sam(device: torch.device, quick: bool = False) -> tuple:
    """(SAM name, input size, note): ViT-B at 1024 on CUDA; on a CPU the default teacher, else tiny.

    A quick run on a CPU works at 128 x 128.
    """
    if device.type == "cuda":
        return "vit_b", 1024, "ViT-B SAM at 1024 x 1024, random weights (speed does not depend on them)"
    size = 128 if quick else 256
    if DEFAULT_TEACHER_PATH.is_file():
        return "default", size, f"the default teacher at {size} x {size}"
    return "tiny", size, (f"tiny SAM at {size} x {size}, random weights: the default teacher's weights "
                          f"({DEFAULT_TEACHER_PATH.name}) are not there yet")


def bench_config(sam: str, size: int, device: torch.device) -> Config:
    """Official settings on CUDA; on a CPU the model `dessam demo` trains (narrower detector).

    The score threshold is 0 and at most 100 boxes are kept, so that untrained heads still give
    100 boxes per image to prompt the decoder with.
    """
    config = Config() if device.type == "cuda" else demo_config()
    config.model.sam = sam
    config.model.image_size = size
    config.model.score_threshold = 0.0
    config.model.max_detections = DECODER_BOXES
    config.train.device = device.type
    return config


def bench_model(sam: str, size: int, device: torch.device) -> DessamModel:
    """A DES-SAM of `bench_config` with freshly initialised trainable parts."""
    config = bench_config(sam, size, device)
    model, identity = build_model(config, device)
    return DessamModel(model, config, identity, device)


def scenes(count: int, size: int, distinct: int = 4) -> list:
    """`count` synthetic cytology fields of size x size (at most `distinct` different ones)."""
    made = [make_scene(np.random.default_rng([7, i]), size=(size, size))[0] for i in range(min(count, distinct))]
    return [made[i % len(made)] for i in range(count)]


def random_boxes(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """`count` nucleus-sized boxes (x1y1x2y2) inside a size x size input frame."""
    rng = np.random.default_rng(seed)
    sides = rng.uniform(0.02, 0.08, (count, 2)) * size
    corners = rng.uniform(0, 1, (count, 2)) * (size - sides)
    return torch.from_numpy(np.hstack([corners, corners + sides]).astype(np.float32))


def _settings_pair(device: torch.device, compile_fast: Optional[bool]) -> tuple:
    fast = fast_settings(device)
    fast = replace(fast, compile=device.type == "cuda" if compile_fast is None else bool(compile_fast))
    return reference_settings(), fast


def time_encoder(dm: DessamModel, images: list, settings: list, repeats: int) -> list:
    """One Timing per settings: all `images` through the encoder."""
    batch = torch.stack([prepare_image(image, dm.image_size).normalised for image in images]).to(dm.device)
    return measure_alternating([lambda s=s: encode_batch(dm.model, batch, s) for s in settings], dm.device, repeats)


def time_decoder(dm: DessamModel, image: np.ndarray, settings: list, repeats: int) -> list:
    """One Timing per settings: the decoder prompted with 100 boxes on the embedding of `image`."""
    normalised = prepare_image(image, dm.image_size).normalised[None].to(dm.device)
    embedding = encode_batch(dm.model, normalised, reference_settings())
    boxes = random_boxes(DECODER_BOXES, dm.image_size).to(dm.device)
    return measure_alternating([lambda s=s: segment_logits(dm.model, embedding, boxes, None, s) for s in settings],
                               dm.device, repeats)


def time_training_epochs(sam: str, size: int, n_images: int, device, repeats: int, workdir: Path,
                         warmup: bool = True) -> dict:
    """Seconds per training epoch with the embedding cache and with the encoder run every iteration.

    Returns {"images", "without_cache", "with_cache" (Timings), "encoder_s" (one encoder call)}.

    Both epochs start from the same weights and optimizer state and do the same steps; the cached
    one loads embeddings as `dessam train` does (verified float16 files), the other runs the frozen
    encoder on every image of every iteration, as training without a cache would.
    """
    device = torch.device(device)
    data = make_dataset(Path(workdir) / "data", n_train=n_images, n_val=0, n_test=0, size=size)
    records = load_coco(data / "train.json", data / "images").images
    records = [record for record in records if len(record.boxes)]
    config = bench_config(sam, size, device)
    model, _ = build_model(config, device)
    cache = EmbeddingCache(Path(workdir) / "cache", encoder_key=f"bench:{sam}:{size}")
    items = encode_training_set(model, records, cache, device, progress=False)
    start_state = model.trainable_state_dict()

    def cached(item):
        return _batch_tensors(model, [item], cache, device)

    def uncached(item):
        inputs = prepare_image(read_image(item.record.path), model.image_size)
        normalised = inputs.normalised[None].to(device)
        return (model.encode(normalised), inputs.rgb[None].to(device), normalised,
                [item.boxes.to(device)], [item.resized_hw])

    def epoch(load):
        model.load_trainable_state_dict(start_state)
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=config.train.lr / config.train.lr_reference_batch,
                                    momentum=config.train.momentum, weight_decay=config.train.weight_decay)
        model.train()
        for item in items:
            total = model.weighted_total(model(*load(item)))
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(total):
                total.backward()
                if config.train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), config.train.grad_clip)
                optimizer.step()
        model.eval()

    first = prepare_image(read_image(items[0].record.path), model.image_size).normalised[None].to(device)
    without, with_cache = measure_alternating([lambda: epoch(uncached), lambda: epoch(cached)], device, repeats, warmup)
    return {
        "images": len(items),
        "without_cache": without,
        "with_cache": with_cache,
        "encoder_s": measure(lambda: model.encode(first), device, max(repeats, 3)).seconds,
    }


def time_metrics(quick: bool) -> Optional[dict]:
    """benchmarks/bench_metrics.py's `run()` (fast metrics vs their loop reference), if in a source checkout."""
    if not BENCH_METRICS.is_file():
        return None
    spec = importlib.util.spec_from_file_location("dessam_bench_metrics", BENCH_METRICS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(size=256 if quick else 1024, repeats=1 if quick else 3)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {torch.get_num_threads()} torch threads"


# ----- the command ---------------------------------------------------------------------------
def run_bench(device="auto", quick: bool = False, out=None, compile: Optional[bool] = None,
              progress: bool = True) -> str:
    """Measure everything on `device` and return (and write to `out`, if given) a Markdown report.

    quick: fewer images and repeats (for checks; the numbers are noisier). compile: torch.compile
    the fast path (default: on CUDA only).
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    repeats = 1 if quick else (10 if cuda else 5)
    n_encoder = (8 if cuda else 2) if quick else (32 if cuda else 8)
    n_predict = (8 if cuda else 1) if quick else (16 if cuda else 8)
    n_train = 1 if quick else 8
    reference, fast = _settings_pair(device, compile)
    sam, size, model_note = benchmark_sam(device, quick)
    dm = bench_model(sam, size, device)
    images = scenes(max(n_encoder, n_predict), size)
    rows = []
    stages = tqdm(total=5, desc="Benchmarking", unit="stage", disable=not progress)

    encoder = time_encoder(dm, images[:n_encoder], [reference, fast], repeats)
    rows.append(Row(f"Encoder, {n_encoder} images (img/s)", n_encoder / encoder[0].seconds,
                    n_encoder / encoder[1].seconds, "img/s", *encoder))
    if cuda:
        rows[-1].target, rows[-1].met = "fast >= 150 img/s (H200)", rows[-1].fast >= 150

    stages.update(1)
    decoder = time_decoder(dm, images[0], [reference, fast], repeats)
    rows.append(Row(f"Decoder, {DECODER_BOXES} boxes on one image (ms)", decoder[0].seconds * 1e3,
                    decoder[1].seconds * 1e3, "ms", *decoder))
    if cuda:
        rows[-1].target, rows[-1].met = "fast <= 8 ms", rows[-1].fast <= 8

    stages.update(1)
    batch = images[:n_predict]
    e2e = measure_alternating([lambda s=s: predict_images(dm, batch, s) for s in (reference, fast)], device,
                              max(repeats // 2, 1))
    rows.append(Row(f"End-to-end predict, {n_predict} images: encoder + detector + decoder + masks (img/s)",
                    n_predict / e2e[0].seconds, n_predict / e2e[1].seconds, "img/s", *e2e))
    if cuda:
        rows[-1].target, rows[-1].met = ">= 5x", rows[-1].speedup >= 5
    reference_out = predict_images(dm, batch, reference)
    fast_out = predict_images(dm, batch, fast, boxes=[boxes for boxes, _, _ in reference_out])
    agreement = mean_mask_iou(reference_out, fast_out)
    n_masks = sum(len(boxes) for boxes, _, _ in reference_out)
    random_note = "; random weights give logits near 0, which makes this pessimistic" if sam != "default" else ""

    stages.update(1)
    train_sam, train_size, train_note = benchmark_sam(torch.device("cpu"), quick)
    with tempfile.TemporaryDirectory(prefix="dessam-bench-") as workdir:
        training = time_training_epochs(train_sam, train_size, n_train, device, 1 if quick else 3, Path(workdir),
                                        warmup=not quick)
    without, with_cache = training["without_cache"], training["with_cache"]
    rows.append(Row(f"Training epoch, {training['images']} images: encoder every iteration / embedding cache (s)",
                    without.seconds, with_cache.seconds, "s", without, with_cache))
    if not cuda:
        rows[-1].target, rows[-1].met = ">= 5x", rows[-1].speedup >= 5
    encoder_share = training["encoder_s"] / (with_cache.seconds / training["images"])

    stages.update(1)
    metrics_result = time_metrics(quick)
    if metrics_result is not None:
        rows.append(Row(f"Metrics (AJI, PQ, F1, object Dice and IoU), {metrics_result['n_gt']} nuclei: "
                        f"per-instance loop / dessam.metrics (s)", metrics_result["reference_s"],
                        metrics_result["fast_s"], "s", target=">= 20x"))
        rows[-1].met = rows[-1].speedup >= 20

    stages.update(1)
    stages.close()
    detector_note = "official detector settings" if cuda else "the detector and loss settings of `dessam demo`"
    memory_note = ("torch.cuda.max_memory_allocated above the start" if cuda else
                   "growth of the process's resident set size (sampled every ms from /proc/self/statm, freed heap handed back first)")
    lines = [
        f"# dessam bench: {device.type}{' (quick)' if quick else ''}",
        "",
        f"- Device: {device_name(device)}; torch {torch.__version__}",
        f"- Model: {model_note}; {detector_note}; detector keeps up to {DECODER_BOXES} boxes (score threshold 0)",
        f"- Reference path: {reference.describe(device)} (as the authors' test code)",
        f"- Fast path: {fast.describe(device)}",
        f"- Training epochs: {train_note}, the same detector and loss settings, batch 1",
        f"- Each time is the median of the timed repeats after one warm-up call{' (quick: none for training)' if quick else ''}"
        f"; reference and fast calls alternate; peak memory is the {memory_note}, in the worst call",
        "",
        format_table(rows),
        "",
        f"Mask agreement, fast vs reference prompted with the same boxes: mean IoU {agreement:.4f} over "
        f"{n_masks} masks (required >= 0.99{random_note}).",
    ]
    lines.append(f"Training: the frozen encoder alone takes {encoder_share:.0%} of the time of one cached training "
                 f"step here, so skipping it can save at most that much per step.")
    if fast.compile:
        lines.append(f"Fast-path warm-up (includes torch.compile): encoder {encoder[1].warmup_s:.1f} s, "
                     f"decoder {decoder[1].warmup_s:.1f} s, end-to-end {e2e[1].warmup_s:.1f} s.")
    if metrics_result is None:
        lines.append(f"Metrics: not measured ({BENCH_METRICS} is only in a source checkout).")
    text = "\n".join(lines) + "\n"
    if out is not None:
        write_text_atomic(out, text)
    return text
