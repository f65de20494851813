"""The fast inference path: batched encoder calls, large decoder chunks, bf16 autocast, torch.compile.

Nothing of SAM is changed: the official image encoder module and the prompted decoder are run as
they are, only more images per encoder call, more prompts per decoder call, under autocast and,
where asked, through `torch.compile`. `reference_settings()` reproduces how the authors run
inference (fp32, one image at a time, 50 prompts per decoder call), so both paths can be timed and
their masks compared in the same run (`dessam bench`).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DessamError
from ..models.dessam import DESSAM
from .inputs import prepare_image

if TYPE_CHECKING:  # predict.py imports this module
    from .predict import DessamModel

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The authors' test code (StandardRoIMaskHead._mask_pred) splits the box prompts of an image into
# groups of 50 per decoder call; training uses 40.
REFERENCE_DECODER_CHUNK = 50
# torch.compile of the ViT-B encoder takes about a minute; "auto" compiles only for jobs long
# enough to win that back.
AUTO_COMPILE_MIN_IMAGES = 1000


@dataclass
class InferenceSettings:
    """How inference runs; none of these change what the model computes beyond float rounding.

    precision: the encoder's autocast: "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16".
    decoder_chunk: box prompts per decoder call.
    compile: torch.compile the encoder and decoder: False, True or "auto" (CUDA jobs of at least
        `AUTO_COMPILE_MIN_IMAGES` images).
    batch_size: images per encoder call.
    decoder_precision: the decoder's autocast; "auto" is fp32 when the encoder runs in fp32 and
        fp16 otherwise. bf16 keeps the ViT encoder's range (fp16 is known to break ViT-H), but its
        8-bit mantissa moves the decoder's mask boundaries: with the default teacher, small nuclei
        kept a mean mask IoU of 0.95 against fp32 with a bf16 decoder, 0.99 with an fp16 one.
    """

    precision: str = "auto"
    decoder_chunk: int = 256
    compile: Union[bool, str] = False
    batch_size: int = 8
    decoder_precision: str = "auto"

    def __post_init__(self):
        for name in (self.precision, self.decoder_precision):
            if name not in PRECISIONS:
                raise DessamError(f"--precision {name}: use one of {', '.join(PRECISIONS)}")
        if self.compile not in (True, False, "auto"):
            raise DessamError(f"compile={self.compile!r}: use true, false or auto")
        if int(self.decoder_chunk) < 1 or int(self.batch_size) < 1:
            raise DessamError("decoder_chunk and batch_size must be at least 1")

    def autocast_dtype(self, device, part: str = "encoder") -> Optional[torch.dtype]:
        """The autocast dtype of `part` ("encoder" or "decoder") on `device`; None for plain fp32."""
        encoder = self.precision
        if encoder == "auto":
            encoder = "bf16" if torch.device(device).type == "cuda" else "fp32"
        if part == "encoder":
            return DTYPES.get(encoder)
        decoder = self.decoder_precision
        if decoder == "auto":
            decoder = "fp32" if encoder == "fp32" else "fp16"
        return DTYPES.get(decoder)

    def compiles(self, device, n_images: Optional[int] = None) -> bool:
        """Whether a job of `n_images` (None: unknown, counted as short) on `device` is compiled."""
        if self.compile == "auto":
            return torch.device(device).type == "cuda" and (n_images or 0) >= AUTO_COMPILE_MIN_IMAGES
        return bool(self.compile)

    def describe(self, device, n_images: Optional[int] = None) -> str:
        names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        encoder, decoder = (names[self.autocast_dtype(device, part)] for part in ("encoder", "decoder"))
        precision = encoder if encoder == decoder else f"{encoder} encoder, {decoder} decoder"
        return (f"{precision}, {self.batch_size} image(s) per encoder call, {self.decoder_chunk} prompts per "
                f"decoder call, {'torch.compile' if self.compiles(device, n_images) else 'eager'}")


def reference_settings() -> InferenceSettings:
    """The authors' way: fp32, one image per encoder call, 50 prompts per decoder call, eager."""
    return InferenceSettings(precision="fp32", decoder_chunk=REFERENCE_DECODER_CHUNK, compile=False, batch_size=1,
                             decoder_precision="fp32")


def fast_settings(device="cpu") -> InferenceSettings:
    """CUDA: bf16 encoder, fp16 decoder, 8-image batches. CPU: fp32 and 4-image batches, as memory is
    tighter there (a ViT-B global-attention map alone is 0.8 GB per image at 1024 x 1024 in fp32)."""
    if torch.device(device).type == "cuda":
        return InferenceSettings(precision="auto", decoder_chunk=256, compile="auto", batch_size=8)
    return InferenceSettings(precision="auto", decoder_chunk=256, compile=False, batch_size=4)


def autocast_for(settings: InferenceSettings, device, part: str = "encoder"):
    """A context manager: autocast `part` ("encoder" or "decoder") to the settings' dtype on `device`,
    or nothing for fp32."""
    dtype = settings.autocast_dtype(device, part)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


_compiled = weakref.WeakKeyDictionary()  # module -> its _CompiledOrEager wrapper (compile once)
_warned = [False]


def _warn_once(message: str) -> None:
    if not _warned[0]:
        _warned[0] = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class _CompiledOrEager:
    """Calls the compiled module; if compiling fails (it happens at the first call), runs eagerly."""

    def __init__(self, module: torch.nn.Module, compiled):
        self.module = module
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # inductor/dynamo failures have many types
                _warn_once(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:120]}); running without it")
                self.compiled = None
        return self.module(*args, **kwargs)


def maybe_compile(module: torch.nn.Module, settings: InferenceSettings, device=None, n_images: Optional[int] = None):
    """`module`, compiled when the settings ask for it and torch.compile exists and works.

    The module itself is never modified (its state dict keeps its keys); a compiled wrapper is
    made once per module and reused. Falls back to the module, with one warning, when torch.compile
    is missing or fails.
    """
    if device is None:
        device = next(module.parameters()).device
    if not settings.compiles(device, n_images):
        return module
    wrapper = _compiled.get(module)
    if wrapper is not None:
        return wrapper
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        _warn_once("torch.compile is not available in this torch; running without it")
        return module
    try:
        compiled = compile_fn(module)
    except Exception as exc:
        _warn_once(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:120]}); running without it")
        return module
    wrapper = _CompiledOrEager(module, compiled)
    _compiled[module] = wrapper
    return wrapper


@torch.no_grad()
def encode_batch(model: DESSAM, images_normalised: torch.Tensor, settings: InferenceSettings,
                 n_images: Optional[int] = None) -> torch.Tensor:
    """SAM embeddings (B, C, h, w), float32, of normalised padded images (B, 3, S, S).

    Runs `settings.batch_size` images per encoder call under the settings' autocast.
    """
    device = images_normalised.device
    encoder = maybe_compile(model.sam.image_encoder, settings, device, n_images)
    pieces = []
    with autocast_for(settings, device):
        for start in range(0, len(images_normalised), settings.batch_size):
            pieces.append(encoder(images_normalised[start:start + settings.batch_size]).float())
    return torch.cat(pieces)


@torch.no_grad()
def segment_logits(model: DESSAM, embeddings: torch.Tensor, boxes: torch.Tensor, image_index=None,
                   settings: Optional[InferenceSettings] = None, use_token: bool = True,
                   n_images: Optional[int] = None) -> torch.Tensor:
    """Low-res mask logits (N, 1, 4h, 4w), float32, for boxes in the input frame.

    `settings.decoder_chunk` prompts per decoder call, under the settings' autocast; `image_index`
    says which embedding each box belongs to (default: all image 0).
    """
    settings = settings or InferenceSettings()
    decoder = maybe_compile(model.decoder, settings, embeddings.device, n_images)
    chunk = settings.decoder_chunk
    pieces = []
    with autocast_for(settings, embeddings.device, "decoder"):
        for start in range(0, max(len(boxes), 1), chunk):
            index = None if image_index is None else image_index[start:start + chunk]
            logits, _ = decoder(embeddings, boxes[start:start + chunk], index, use_token=use_token)
            pieces.append(logits.float())
    return torch.cat(pieces)


@torch.no_grad()
def predict_images(dessam_model: DessamModel, images: list, settings: InferenceSettings, use_token: bool = True,
                   boxes: Optional[list] = None, progress: bool = False) -> list:
    """Raw (boxes, scores, masks) per image, as `DessamModel.predict_instances`, batched.

    Encoder: `settings.batch_size` images per call; detector: the same batch, in fp32 (box
    coordinates lose pixels in bf16); decoder: all boxes of the batch together, in chunks.
    `boxes`: one (N, 4) array per image to prompt with instead of detecting (scores are then 1).
    Boxes are x1y1x2y2 in original pixels, masks bool at the original size.
    """
    from .predict import logits_to_masks

    model, device = dessam_model.model, dessam_model.device
    size = dessam_model.image_size
    results = []
    bar = tqdm(total=len(images), desc="Predicting", unit="img", disable=not progress)
    for start in range(0, len(images), settings.batch_size):
        inputs = [prepare_image(image, size) for image in images[start:start + settings.batch_size]]
        batch = torch.stack([item.normalised for item in inputs]).to(device)
        embeddings = encode_batch(model, batch, settings, len(images))
        if boxes is None:
            found, found_scores = model.detect(embeddings, [item.resized_hw for item in inputs])
            # The same round trip through original pixels as DessamModel.detect / segment.
            original = [(b / torch.from_numpy(item.scale).to(b.device)).cpu().numpy().astype(np.float32)
                        for item, b in zip(inputs, found)]
            scores = [s.cpu().numpy().astype(np.float32) for s in found_scores]
        else:
            original = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes[start:start + len(inputs)]]
            scores = [np.ones(len(b), dtype=np.float32) for b in original]
        prompts = torch.cat([torch.from_numpy(b * item.scale) for item, b in zip(inputs, original)]).to(device)
        index = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(original)]).to(device)
        logits = segment_logits(model, embeddings, prompts, index, settings, use_token, len(images))
        for item, image_boxes, image_scores, part in zip(inputs, original, scores,
                                                         torch.split(logits, [len(b) for b in original])):
            results.append((image_boxes, image_scores,
                            logits_to_masks(part, item, dessam_model.config.model.mask_threshold)))
        bar.update(len(inputs))
    bar.close()
    return results


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corresponding masks (N, H, W) of two stacks; two empty masks count as 1."""
    pixels = int(np.prod(a.shape[1:]))
    a = a.reshape(len(a), pixels)
    b = b.reshape(len(b), pixels)
    inter = np.logical_and(a, b).sum(1)
    union = np.logical_or(a, b).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mean_mask_iou(first: list, second: list) -> float:
    """Mean IoU of the masks of two `predict_images` results on the same images and boxes."""
    ious = []
    for (boxes_a, _, masks_a), (boxes_b, _, masks_b) in zip(first, second):
        if len(masks_a) != len(masks_b):
            raise ValueError(f"different numbers of detections ({len(masks_a)} vs {len(masks_b)})")
        ious.append(mask_iou(masks_a, masks_b))
    ious = np.concatenate(ious) if ious else np.zeros(0)
    return float(ious.mean()) if len(ious) else 1.0
