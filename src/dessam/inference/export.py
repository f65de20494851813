"""`dessam export`: a model's networks as ONNX graphs with a manifest, and their check against PyTorch.

`export_model(predictor, out_dir)` writes, for a DES-SAM model or a SAM alone (`load_teacher`):

- `encoder.onnx`: normalised images (B, 3, S, S) -> embeddings (B, C, h, w);
- `detector.onnx` (models only): one embedding, its image's valid height and width in the input, a
  score threshold and a detection limit -> boxes (N, 4, input frame) and scores (N,);
- `decoder.onnx`: the prompted mask decoder (with, for a teacher that decodes each box on a view of
  its own, the view cut and the view encoder) -> low-resolution logits over each box's window,
  SAM's predicted IoU and the windows' origins;
- `manifest.json`: what a host needs besides the graphs (`MANIFEST_FORMAT`): the inputs and their
  names, the input size and pixel normalisation, the model's scale, its thresholds and how masks are
  read out of the logits, the learned prompt token, the licence the weights carry, the SHA-256 of
  the model file, and the model's whole configuration.

See `dessam.models.graphs` for what each graph holds, and docs/onnx.md for running them without
dessam. The graphs are traced by torch's TorchScript-based exporter (`dynamo=False`; torch's newer
default exporter needs onnxscript): it needs no further package, records the detector's
data-dependent sizes (NMS) as graph operations, and torch has it from 2.1 to 2.14.
`check_export` runs each graph against PyTorch on a real image and gives the largest differences.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..atomic import write_text_atomic
from ..digests import file_sha256
from ..errors import DessamError
from ..geometry.inputs import PIXEL_MEAN, PIXEL_STD, as_rgb, prepare_image
from ..geometry.scale import SIZE_RANGE, estimate_crop
from ..models.graphs import DecoderGraph, DetectorGraph, EncoderGraph, SizeGraph
from ..models.prompted_decoder import UPSCALE
from ..models.size_head import fixed_input_side
from .nucleus_size import MAX_CROPS, crop_inputs, estimation_crops, nucleus_side, padded_side
from .predictor import Predictor, local_margin

MANIFEST_FORMAT = "dessam-onnx"
MANIFEST_VERSION = 1
OPSET = 17  # RoIAlign's half-pixel mode needs 16, LayerNormalization 17


def _version() -> str:
    try:
        return importlib.metadata.version("dessam")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list, outputs: list, dynamic: dict) -> None:
    module.eval()  # the exporter restores the mode it found, on the model's own modules too
    kwargs = dict(input_names=inputs, output_names=outputs, dynamic_axes=dynamic, opset_version=OPSET,
                  do_constant_folding=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shapes read as Python numbers, deprecation notes
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
        except TypeError:  # torch before 2.5 has no `dynamo` argument: its exporter is this one
            torch.onnx.export(module, args, str(path), **kwargs)


def weights_licence(model_path: Optional[Path]) -> Optional[str]:
    """The licence line of the model card beside a model file (NAME.md or RUN/model.md), if any."""
    if model_path is None:
        return None
    for card in (Path(model_path).with_suffix(".md"), Path(model_path).parent / "model.md"):
        if card.is_file():
            found = re.search(r"\*\*Licence of these weights:\*\*\s*(.+)", card.read_text(encoding="utf-8"))
            if found:
                return found.group(1).strip()
    return None


def _terms(model_path) -> dict:
    """The terms the model file carries (`dessam.models.weights_terms`), for commands that name them
    without reading the file (and so without importing torch)."""
    from ..models.model_file import read_model_file
    from ..models.weights_terms import model_terms

    return model_terms(read_model_file(model_path)).to_dict()


def _embedding_shape(predictor: Predictor) -> tuple:
    size = predictor.image_size
    with torch.no_grad():
        return tuple(predictor.model.sam.image_encoder(torch.zeros(1, 3, size, size)).shape[1:])


def manifest_of(predictor: Predictor, embedding: tuple, model_path: Optional[Path], has_detector: bool,
                has_size: bool = False) -> dict:
    """What a host needs besides the graphs: the model it came from, each graph's inputs and outputs,
    scaling and read-out."""
    token = predictor.model.decoder.extra_tokens(True)
    views = predictor.model.decoder.views
    post = predictor.postprocess
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "dessam": _version(),
        "torch": torch.__version__.split("+")[0],
        "opset": OPSET,
        "model": {
            "file": None if model_path is None else Path(model_path).name,
            "sha256": None if model_path is None else file_sha256(model_path),
            "sam": predictor.sam_identity,
            "licence": weights_licence(model_path),
            "terms": None if model_path is None else _terms(model_path),
        },
        "graphs": {
            "encoder": {"file": "encoder.onnx", "inputs": {"images": "float32 (B, 3, S, S): RGB 0-255 minus pixel_mean, "
                                                           "divided by pixel_std, zero-padded bottom and right"},
                        "outputs": {"embeddings": "float32 (B, C, h, w)"},
                        "trim_multiple": predictor.trimmable,
                        "trimmed": "when trim_multiple is set, give only the top-left square of side T that holds "
                                   "the batch's images (T: their longest side rounded up to trim_multiple, at most S), "
                                   "pad the embeddings with zeros to (h, w) and give the detector their top-left "
                                   "T/stride square"},
            "detector": _detector_graph(predictor.model.detector_encoder is not None) if has_detector else None,
            "size": _size_graph(predictor) if has_size else None,
            "decoder": _decoder_graph(views is not None),
        },
        "image_size": predictor.image_size,
        "pixel_mean": list(PIXEL_MEAN),
        "pixel_std": list(PIXEL_STD),
        "input_scaling": predictor.scale.mode,
        "scale": predictor.scale.to_dict(),
        "embedding": {"channels": embedding[0], "grid": embedding[1], "stride": predictor.image_size // embedding[1]},
        "frame": UPSCALE * embedding[1],
        "views": None if views is None else {key: float(value) for key, value in views.items()},
        "decoding_margin": local_margin(predictor.config, predictor.settings, predictor.model.sam),
        "decoder_chunk": predictor.settings.decoder_chunk,
        "prompt_token": None if token.shape[0] == 0 else [float(v) for v in token[0].detach().cpu().tolist()],
        "readout": {
            "mask_threshold": predictor.config.model.postprocess.mask_threshold,
            "how": "upsample each window's logits bilinearly (half-pixel centres) to S x S / frame pixels per logit, "
                   "cut the image's valid part, resize it bilinearly to the image's size, keep logit > mask_threshold",
            "score_threshold": post.score_threshold,
            "max_detections": post.max_detections,
            "min_size": post.min_size,
            "overlap_winner": post.overlap_winner,
        },
        "config": predictor.config.to_dict(),
    }


def _detector_graph(reads_images: bool) -> dict:
    source = ({"images": "float32 (1, 3, T, T): the encoder's input image (its top-left T square when trimmed); the "
                         "detector encodes it with an encoder of its own"} if reads_images
              else {"embedding": "float32 (1, C, h, w): the encoder's embedding (its top-left T/stride square when "
                                 "trimmed)"})
    return {
        "file": "detector.onnx",
        "reads": "images" if reads_images else "embeddings",
        "inputs": {**source, "valid_hw": "float32 (2,): the image's height and width "
                   "inside the S x S input", "score_threshold": "float32 ()", "max_detections": "int64 ()"},
        "outputs": {"boxes": "float32 (N, 4) x1 y1 x2 y2 in input pixels", "scores": "float32 (N,)"}}


def _size_graph(predictor: Predictor) -> dict:
    encoder = predictor.model.sam.image_encoder
    fixed_side = fixed_input_side(encoder)
    return {
        "file": "size.onnx",
        "inputs": {"images": "float32 (B, 3, P, P): crops of the image at its own resolution, normalised as the "
                   "encoder's input and zero-padded to P (a multiple of 16, or fixed_side when not 0)",
                   "valid_hw": "float32 (B, 2): each crop's height and width inside P x P"},
        "outputs": {"log_side": "float32 (B,): natural log of the crops' typical nucleus side (box sqrt(w h)) "
                    "in pixels; the image's is the median of exp(log_side), kept within size_range"},
        "crop": estimate_crop(fixed_side),
        "max_crops": MAX_CROPS, "size_range": list(SIZE_RANGE),
        "fixed_side": fixed_side}


def _decoder_graph(reads_images: bool) -> dict:
    return {
        "file": "decoder.onnx",
        "reads": "images" if reads_images else "embeddings",
        "inputs": {"source": "float32 (B, 3, S, S) the encoder's input images" if reads_images
                   else "float32 (B, C, h, w) the encoder's embeddings",
                   "boxes": "float32 (N, 4) x1 y1 x2 y2 in input pixels",
                   "image_index": "int64 (N,): the image of `source` each box lies in",
                   "tokens": "float32 (T, C): prompt_token (T = 1) for the trained model, (0, C) for the frozen SAM"},
        "outputs": {"logits": "float32 (N, 1, k, k): mask logits over each box's window of the low-resolution frame",
                    "iou": "float32 (N, 1): SAM's predicted IoU",
                    "origins": "int64 (N, 2): row, column of each window in the frame"}}


def export_model(predictor: Predictor, out_dir, model_path=None) -> Path:
    """Write the graphs and the manifest of `predictor`'s model (fp32, on the CPU) into `out_dir`,
    atomically (a temporary folder renamed); returns the manifest's path."""
    out_dir = Path(out_dir)
    model = predictor.model
    has_detector = hasattr(model, "detector")
    device = predictor.device
    model.to("cpu").eval()
    try:
        embedding = _embedding_shape(predictor)
        size = predictor.image_size
        work = _work_folder(out_dir)
        try:
            trims = {2: "side", 3: "side"} if predictor.trimmable else {}
            _export(EncoderGraph(model.sam.image_encoder), (torch.zeros(1, 3, size, size),), work / "encoder.onnx",
                    ["images"], ["embeddings"], {"images": {0: "batch", **trims}, "embeddings": {0: "batch"}})
            generator = torch.Generator().manual_seed(0)
            if has_detector:
                own = model.detector_encoder is not None  # the detector reads the images through its own encoder
                sample = torch.randn((1, 3, size, size) if own else (1,) + embedding, generator=generator)
                name, axes = ("images", trims) if own else ("embedding", {2: "grid", 3: "grid"})
                _export(DetectorGraph(model.neck, model.detector, size, embedding, model.detector_encoder),
                        (sample, torch.tensor([size, size], dtype=torch.float32), torch.tensor(0.0),
                         torch.tensor(5, dtype=torch.int64)), work / "detector.onnx",
                        [name, "valid_hw", "score_threshold", "max_detections"], ["boxes", "scores"],
                        {name: axes, "boxes": {0: "detections"}, "scores": {0: "detections"}})
            views = model.decoder.views is not None
            source = (torch.randn(1, 3, size, size, generator=generator) if views
                      else torch.randn((1,) + embedding, generator=generator))
            boxes = torch.tensor([[10.0, 12.0, 40.0, 44.0], [100.0, 90.0, 130.0, 140.0]])
            _export(DecoderGraph(model.decoder, local_margin(predictor.config, predictor.settings, model.sam)),
                    (source, boxes, torch.zeros(2, dtype=torch.int64), model.decoder.extra_tokens(True).detach()),
                    work / "decoder.onnx", ["source", "boxes", "image_index", "tokens"], ["logits", "iou", "origins"],
                    {"source": {0: "batch"}, "boxes": {0: "prompts"}, "image_index": {0: "prompts"},
                     "tokens": {0: "extra_tokens"}, "logits": {0: "prompts", 2: "window", 3: "window"},
                     "iou": {0: "prompts"}, "origins": {0: "prompts"}})
            has_size = _export_size(model, work / "size.onnx", generator)
            manifest = manifest_of(predictor, embedding, None if model_path is None else Path(model_path), has_detector,
                                   has_size)
            write_text_atomic(work / "manifest.json", json.dumps(manifest, indent=1))
            if out_dir.exists():
                shutil.rmtree(out_dir)
            work.rename(out_dir)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    finally:
        model.to(device)
    return out_dir / "manifest.json"


def _work_folder(out_dir: Path) -> Path:
    """A new temporary folder beside `out_dir`, with the permissions a folder made by mkdir gets
    (mkdtemp's is private to its owner)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    return work


def _export_size(model, path: Path, generator: torch.Generator) -> bool:
    """The size head's graph (with the encoder it reads) at `path`, when the model has a trained one."""
    head = getattr(model, "size_head", None)
    if head is None or not head.is_trained:
        return False
    encoder = model.sam.image_encoder
    fixed = fixed_input_side(encoder)
    side = fixed or estimate_crop()
    spatial = {} if fixed else {2: "height", 3: "width"}
    _export(SizeGraph(encoder, head), (torch.randn(2, 3, side, side, generator=generator),
                                       torch.tensor([[side, side], [side // 2, side]], dtype=torch.float32)),
            path, ["images", "valid_hw"], ["log_side"],
            {"images": {0: "crops", **spatial}, "valid_hw": {0: "crops"}, "log_side": {0: "crops"}})
    return True


def _check_detector(predictor: Predictor, folder: Path, images, embedding, item, threads, rows: list) -> np.ndarray:
    """The detector graph against PyTorch on the same embedding or images (rows appended); returns PyTorch's
    boxes, or two fixed boxes when the model has no detector, to prompt the decoder with."""
    from .onnx_predictor import open_session

    if not (folder / "detector.onnx").is_file():
        return np.float32([[10, 12, 40, 44], [100, 90, 130, 140]])
    model, post, size = predictor.model, predictor.postprocess, predictor.image_size
    threshold = post.score_threshold if post.score_threshold is not None else 0.0
    boxes, scores = model.detect(model.detector_input(embedding, images), [item.resized_hw], size, threshold,
                                 post.max_detections)
    boxes, scores = boxes[0].numpy(), scores[0].numpy()
    detector = open_session(folder / "detector.onnx", threads)
    source = {"images": images.numpy()} if model.detector_encoder is not None else {"embedding": embedding.numpy()}
    got_boxes, got_scores = detector.run(None, {
        **source, "valid_hw": np.float32(item.resized_hw),
        "score_threshold": np.array(threshold, np.float32), "max_detections": np.array(post.max_detections, np.int64)})
    note = f"{len(got_boxes)} boxes (PyTorch {len(boxes)})"
    if len(got_boxes) == len(boxes):
        rows.append(("detector", "boxes (input pixels)", float(np.abs(got_boxes - boxes).max(initial=0)), note))
        rows.append(("detector", "scores", float(np.abs(got_scores - scores).max(initial=0)), ""))
    else:
        rows.append(("detector", "boxes", float("nan"), note + ": counts differ"))
    return boxes


def _check_decoder(predictor: Predictor, folder: Path, images, embedding, boxes, threads, rows: list) -> None:
    """The decoder graph against PyTorch on the same boxes, with the student's token and without."""
    from .onnx_predictor import open_session

    model = predictor.model
    prompts = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
    decoder = open_session(folder / "decoder.onnx", threads)
    source = images if model.decoder.views is not None else embedding
    for use_token in (True, False):
        tokens = model.decoder.extra_tokens(use_token)
        want = DecoderGraph(model.decoder, local_margin(predictor.config, predictor.settings, model.sam)).eval()(
            source, prompts, torch.zeros(len(prompts), dtype=torch.int64), tokens)
        got = decoder.run(None, {"source": source.numpy(), "boxes": prompts.numpy(),
                                 "image_index": np.zeros(len(prompts), np.int64), "tokens": tokens.numpy()})
        name = "student" if use_token and tokens.shape[0] else "teacher"
        rows.append(("decoder", f"{name} logits, {len(prompts)} boxes",
                     float(np.abs(got[0] - want[0].numpy()).max(initial=0)), ""))
        rows.append(("decoder", f"{name} predicted IoU", float(np.abs(got[1] - want[1].numpy()).max(initial=0)), ""))
        if not np.array_equal(got[2], want[2].numpy()):
            raise DessamError(f"{folder}: the decoder graph places its windows elsewhere than PyTorch; re-export")


def check_export(predictor: Predictor, folder, image: np.ndarray, threads: Optional[int] = None) -> list:
    """Each graph of `folder` against PyTorch on `image` (its top-left input window): rows of
    (graph, what is compared, largest absolute difference, note). The detector and the decoder are
    fed the same PyTorch inputs as PyTorch, so each row measures one graph alone."""
    from .onnx_predictor import open_session

    folder = Path(folder)
    model = predictor.model.to("cpu")
    size = predictor.image_size
    tile = as_rgb(image)[:size, :size]
    item = prepare_image(tile, size, fit=predictor.scale.mode == "fit")
    images = torch.from_numpy(item.normalised[None])
    rows = []
    with torch.no_grad():
        embedding = model.image_encoder(images)
        encoder = open_session(folder / "encoder.onnx", threads)
        got = encoder.run(None, {"images": images.numpy()})[0]
        rows.append(("encoder", f"embedding {tuple(got.shape)}", float(np.abs(got - embedding.numpy()).max()), ""))
        boxes = _check_detector(predictor, folder, images, embedding, item, threads, rows)
        _check_decoder(predictor, folder, images, embedding, boxes, threads, rows)
        if (folder / "size.onnx").is_file():
            want = predictor.estimate_nucleus_size(tile)
            got = open_session(folder / "size.onnx", threads)
            manifest = json.loads((folder / "manifest.json").read_text())
            fixed = int(manifest["graphs"]["size"]["fixed_side"])
            crops = estimation_crops(tile, fixed)
            images, valid_hw = crop_inputs(crops, padded_side(crops, fixed))
            side = nucleus_side(got.run(None, {"images": images, "valid_hw": valid_hw})[0])
            rows.append(("size", "typical nucleus side (px)", abs(side - want), f"{side:.2f} px (PyTorch {want:.2f})"))
    predictor.model.to(predictor.device)
    return rows
