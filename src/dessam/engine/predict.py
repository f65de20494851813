"""Inference: a trained DES-SAM model applied to images.

`load_model(path)` reads `RUN/model.pt` (what training changed, the config, and the name and
SHA-256 of the SAM weights), finds and verifies those SAM weights, and returns a `DessamModel`.
`DessamModel.predict(image)` runs: resize -> SAM encoder -> detector boxes -> student decoder
-> low-res logits -> upsample to S x S -> crop the valid region -> resize to the original size ->
threshold at 0 -> official post-processing (score threshold, holes and islands under 70 px) ->
instance label map (overlaps resolved by score). Images larger than what the model was trained
on are cut into overlapping tiles at the training scale and merged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..errors import DessamError
from ..models.dessam import DESSAM
from ..models.sam import build_sam, file_sha256, safe_torch_load, weights_sha256
from ..postprocess import Postprocess, clean_masks, masks_to_labels, score_order
from .fastpath import InferenceSettings, encode_batch, fast_settings, segment_logits
from .inputs import ModelInput, prepare_image


@dataclass
class EncodedImage:
    """An image with its SAM embedding, ready for any number of box prompts."""

    inputs: ModelInput
    embedding: torch.Tensor  # (1, C, h, w)


@dataclass
class Prediction:
    """Instances of one image at its own size. Label k is instance `order[k-1]`."""

    boxes: np.ndarray      # (N, 4) float32 x1y1x2y2, original pixels
    scores: np.ndarray     # (N,)
    masks: np.ndarray      # (N, H, W) bool
    labels: np.ndarray     # (H, W) uint16/uint32, 0 = background
    image: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    def measurements(self, pixel_size_um: Optional[float] = None, image: Optional[np.ndarray] = None) -> list:
        """Per-nucleus morphometry and intensities (scikit-image regionprops), one dict per label."""
        from ..export import nucleus_measurements

        source = image if image is not None else self.image
        if source is None:
            source = np.zeros(self.labels.shape, dtype=np.uint8)
        return nucleus_measurements(self.labels, source, self.scores[score_order(self.scores)], pixel_size_um)

    def to_geojson(self, pixel_size_um: Optional[float] = None) -> dict:
        """QuPath-compatible FeatureCollection: one polygon detection per nucleus."""
        from ..export import labels_to_geojson

        return labels_to_geojson(self.labels, self.measurements(pixel_size_um))


def logits_to_masks(logits: torch.Tensor, inputs: ModelInput, threshold: float = 0.5, chunk: int = 16) -> np.ndarray:
    """Low-res logits (N, 1, h, w) over the padded S x S frame -> bool masks at the original size
    (logit > `threshold`: the authors' 0.5)."""
    size = inputs.rgb.shape[-1]
    h, w = inputs.resized_hw
    out = np.zeros((len(logits),) + tuple(inputs.original_hw), dtype=bool)
    for start in range(0, len(logits), chunk):
        part = F.interpolate(logits[start:start + chunk].float(), (size, size), mode="bilinear", align_corners=False)
        part = part[..., :h, :w]
        part = F.interpolate(part, tuple(inputs.original_hw), mode="bilinear", align_corners=False)
        out[start:start + chunk] = (part[:, 0] > threshold).cpu().numpy()
    return out


class DessamModel:
    """A loaded DES-SAM model. `predict(image)` is the whole pipeline; the pieces are public too."""

    def __init__(self, model: DESSAM, config: Config, sam_identity: dict, device: torch.device,
                 input_scale: Optional[float] = None, settings: Optional[InferenceSettings] = None):
        self.model = model.eval()
        self.settings = settings or fast_settings(device)  # precision, prompt chunks, compile
        self.config = config
        self.sam_identity = sam_identity
        self.device = device
        self.input_scale = input_scale  # training images were resized by this factor (None: unknown)

    @property
    def image_size(self) -> int:
        return self.model.image_size

    # ----- pieces ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def detection_threshold(self, threshold: float):
        """Run the detector with `threshold` as its score cut-off; the previous one is restored."""
        roi_heads = self.model.detector.roi_heads
        saved = roi_heads.score_thresh
        roi_heads.score_thresh = threshold
        try:
            yield
        finally:
            roi_heads.score_thresh = saved

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> EncodedImage:
        inputs = prepare_image(image, self.image_size)
        embedding = encode_batch(self.model, inputs.normalised[None].to(self.device), self.settings)
        return EncodedImage(inputs, embedding)

    @torch.no_grad()
    def detect(self, encoded: EncodedImage):
        """Detector boxes (original pixels) and scores, after the score threshold and NMS."""
        boxes, scores = self.model.detect(encoded.embedding, [encoded.inputs.resized_hw])
        scale = torch.from_numpy(encoded.inputs.scale).to(boxes[0].device)
        return (boxes[0] / scale).cpu().numpy().astype(np.float32), scores[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def segment(self, encoded: EncodedImage, boxes: np.ndarray, use_token: bool = True) -> np.ndarray:
        """Bool masks (N, H, W) of SAM's decoder prompted with `boxes` (original pixels).

        use_token=True is the DES-SAM student; False is the frozen SAM (training-free baseline / teacher).
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0,) + tuple(encoded.inputs.original_hw), dtype=bool)
        prompt = torch.from_numpy(boxes * encoded.inputs.scale).to(self.device)
        logits = segment_logits(self.model, encoded.embedding, prompt, None, self.settings, use_token)
        return logits_to_masks(logits, encoded.inputs, self.config.model.mask_threshold)

    # ----- whole pipeline --------------------------------------------------------------------
    def predict_instances(self, image: np.ndarray, use_token: bool = True):
        """Raw (boxes, scores, masks) for an image that fits one model input."""
        encoded = self.encode(image)
        boxes, scores = self.detect(encoded)
        return boxes, scores, self.segment(encoded, boxes, use_token)

    def needs_tiling(self, image: np.ndarray) -> bool:
        """True when the image, at the training scale, is larger than one model input."""
        if not self.input_scale:
            return False
        return max(image.shape[:2]) * self.input_scale > self.image_size * 1.05

    def predict(self, image: np.ndarray, postprocess: bool = True, tile: Optional[bool] = None,
                overlap: int = 64, progress: bool = False) -> Prediction:
        """Instances of `image` (H x W x 3 uint8 RGB) at its own size.

        tile: None = automatic (tile when the image is larger than the training scale allows),
        True / False to force. Post-processing follows the model's config (score threshold,
        `min_object_size`).
        """
        image = _as_rgb(image)
        if tile is None:
            tile = self.needs_tiling(image)
        # The detector keeps the threshold it was built with; a changed config value applies too.
        with self.detection_threshold(self.config.model.score_threshold):
            if tile:
                boxes, scores, masks = self._predict_tiled(image, overlap, progress)
            else:
                boxes, scores, masks = self.predict_instances(image)
        if postprocess:
            boxes, scores, masks = self._clean(boxes, scores, masks)
        labels = masks_to_labels(masks, scores, self.config.model.overlap_winner)
        return Prediction(boxes, scores, masks, labels, image)

    def _clean(self, boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray, chunk: int = 64):
        """The official post-processing, a few masks at a time and in place: a large field holds
        N x H x W mask bytes once, not three times."""
        settings = Postprocess.from_model_config(self.config.model)
        masks = masks if masks.flags.writeable else masks.copy()
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        kept = []
        for start in range(0, len(masks), chunk):
            cleaned, _, keep = clean_masks(masks[start:start + chunk], scores[start:start + chunk],
                                           settings=settings)
            for mask, index in zip(cleaned, keep + start):
                masks[len(kept)] = mask  # len(kept) <= index: nothing still needed is overwritten
                kept.append(index)
        kept = np.array(kept, dtype=np.int64)
        return boxes[kept], scores[kept], masks[: len(kept)]

    def _predict_tiled(self, image: np.ndarray, overlap: int, progress: bool):
        from ..data.transforms import resize_longest
        from .tiling import predict_tiled

        scale = self.input_scale or 1.0
        height, width = image.shape[:2]
        working = resize_longest(image, int(round(max(height, width) * scale))) if scale != 1.0 else image
        boxes, scores, masks = predict_tiled(working, self.predict_instances, self.image_size, overlap, progress)
        if working.shape[:2] != image.shape[:2]:
            factor = np.array([width / working.shape[1], height / working.shape[0]] * 2, dtype=np.float32)
            boxes = boxes * factor
            small, masks = masks, np.zeros((len(masks), height, width), dtype=bool)
            for start in range(0, len(small), 64):
                part = torch.from_numpy(small[start:start + 64]).float()[:, None]
                masks[start:start + 64] = F.interpolate(part, (height, width), mode="nearest")[:, 0].numpy() > 0.5
        return boxes, scores, masks


def _as_rgb(image: np.ndarray) -> np.ndarray:
    from ..data.images import to_rgb, to_uint8

    return to_rgb(to_uint8(np.asarray(image)))


def find_sam_weights(identity: dict, model_path: Path, sam_checkpoint=None) -> Optional[Path]:
    """Where the SAM checkpoint named in a model file is: explicit path, next to the model, or the cache."""
    name = identity.get("checkpoint")
    if sam_checkpoint:
        return Path(sam_checkpoint)
    if not name:
        return None
    from ..models.fetch import find_sam_checkpoint

    return find_sam_checkpoint(name, extra_dirs=(model_path.parent, model_path.parent.parent))


def load_model(path, device="cpu", sam_checkpoint=None, image_size: Optional[int] = None,
               settings: Optional[InferenceSettings] = None) -> DessamModel:
    """Load `RUN/model.pt`; the SAM weights it names are found and their SHA-256 checked.

    image_size: run the model at another input size than it was trained at (the default
    teacher is fully convolutional; ViT position tables are interpolated).
    settings: inference precision / prompt chunking / compilation (default: the fast path for the
    device, see `dessam.engine.fastpath`).
    """
    from .train import MODEL_FORMAT, resolve_device

    path = Path(path)
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DessamError(f"{path}: not a dessam model file (expected RUN/model.pt written by `dessam train`)")
    config = Config.from_dict(payload["config"], str(path))
    identity = payload["sam"]
    sam_name = identity["name"]
    size = image_size or config.model.image_size
    checkpoint = None
    if sam_name in ("vit_b", "vit_l", "vit_h") or (identity.get("checkpoint") and sam_name != "default"):
        checkpoint = find_sam_weights(identity, path, sam_checkpoint)
        if checkpoint is None or not checkpoint.is_file():
            fetch = f" or run `dessam fetch-sam {sam_name}`" if sam_name in ("vit_b", "vit_l", "vit_h") else ""
            raise DessamError(
                f"{path}: needs the SAM checkpoint {identity.get('checkpoint')} (sha256 {identity['sha256'][:12]}...); "
                f"pass --sam-checkpoint PATH{fetch}"
            )
        digest = file_sha256(checkpoint)
    elif sam_checkpoint:
        checkpoint = Path(sam_checkpoint)
        digest = file_sha256(checkpoint)
    else:
        digest = None
    sam = build_sam(sam_name, checkpoint, size)
    if digest is None:
        if sam_name == "default":
            from ..models.default_teacher import DEFAULT_TEACHER_PATH

            digest = file_sha256(DEFAULT_TEACHER_PATH)
        else:
            digest = weights_sha256(build_sam(sam_name, None, config.model.image_size)) if size != config.model.image_size \
                else weights_sha256(sam)
    if digest != identity["sha256"]:
        where = checkpoint or sam_name
        raise DessamError(
            f"{where}: SAM weights differ from those {path} was trained on (sha256 {digest[:12]}... instead of "
            f"{identity['sha256'][:12]}...); give the original {identity.get('checkpoint') or sam_name} file"
        )
    device = resolve_device(device)
    config.model.image_size = int(sam.image_encoder.img_size)
    model = DESSAM(sam, config)
    try:
        model.load_trainable_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise DessamError(f"{path}: the model's weights do not fit its own config ({str(exc)[:120]}); re-train") from None
    model.to(device)
    return DessamModel(model, config, identity, device, payload.get("input_scale"), settings)
