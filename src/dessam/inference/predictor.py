"""The one inference pipeline: images -> batched encoder -> detector -> decoder -> label map.

`Predictor.predict(image)` is `predict_batch([image])[0]`. A batch of images goes through the SAM
encoder `settings.batch_size` at a time, through the detector together, and all their box prompts
through the decoder in chunks of `settings.decoder_chunk` (on a window of the embedding around each
box when local decoding is on); each mask is computed only where it can be positive, cleaned, and
painted into the image's label map. An image larger than what the model was trained on is cut into
overlapping windows at the training scale, which go through the same batches, and the windows'
nuclei are merged (`dessam.inference.tiling`). Memory grows with the nuclei, never with nuclei x
image area.

How results are read (score threshold, detection limit, minimum size, ...) is a `Postprocess`
given per call (default: the model's configuration); how the work runs is `InferenceSettings`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.images import to_rgb, to_uint8
from ..data.transforms import resize_longest
from ..models.dessam import DESSAM
from ..models.prompted_decoder import windows_needed
from ..postprocess import Postprocess, tight
from .acceleration import autocast_for, maybe_compile
from .inputs import ModelInput, prepare_image
from .instances import Instances
from .masks import instance_crop
from .prediction import Prediction
from .settings import InferenceSettings, fast_settings
from .tiling import merge_windows, tile_windows


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from gray, RGBA or 16-bit input."""
    return to_rgb(to_uint8(np.asarray(image)))


class Predictor:
    """A loaded DES-SAM model; `predict(image)` is the whole pipeline and the pieces are public too."""

    def __init__(self, model: DESSAM, config: Config, sam_identity: dict, device: torch.device,
                 input_scale: Optional[float] = None, settings: Optional[InferenceSettings] = None, path=None):
        self.model = model.eval()
        self.config = config
        self.sam_identity = sam_identity
        self.device = torch.device(device)
        self.input_scale = input_scale  # training images were resized by this factor (None: unknown)
        self.settings = settings or fast_settings(self.device)
        self.path = path

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def postprocess_settings(self, **overrides) -> Postprocess:
        """The model's post-processing, with `overrides` (e.g. score_threshold=0.3)."""
        return Postprocess.from_model_config(self.config.model, **overrides)

    def local_margin(self) -> Optional[int]:
        """Tokens around each box when decoding locally, None for the whole embedding."""
        local = self.settings.local_decoding
        if local is None:
            local = self.config.model.local_decoding
        return self.config.model.local_margin if local else None

    # ----- pieces ----------------------------------------------------------------------------
    def prepare(self, images: list) -> list:
        return [prepare_image(as_rgb(image), self.image_size) for image in images]

    @torch.no_grad()
    def encode(self, inputs: list, n_images: Optional[int] = None) -> torch.Tensor:
        """SAM embeddings (B, C, h, w), float32, `settings.batch_size` images per encoder call."""
        batch = torch.stack([item.normalised for item in inputs]).to(self.device)
        encoder = maybe_compile(self.model.sam.image_encoder, self.settings, self.device, n_images)
        pieces = []
        with autocast_for(self.settings, self.device):
            for start in range(0, len(batch), self.settings.batch_size):
                pieces.append(encoder(batch[start:start + self.settings.batch_size]).float())
        return torch.cat(pieces)

    @torch.no_grad()
    def detect(self, embeddings: torch.Tensor, inputs: list, postprocess: Postprocess) -> list:
        """Per image (boxes (N, 4) float32 in original pixels, scores (N,)), in fp32 (box coordinates
        lose pixels in bf16): scores above the threshold, NMS, at most `max_detections`."""
        threshold = postprocess.score_threshold if postprocess.score_threshold is not None else 0.0
        boxes, scores = self.model.detector.detect(
            self.model.neck(embeddings), [item.resized_hw for item in inputs], self.image_size, threshold,
            postprocess.max_detections,
        )
        return [((b / torch.from_numpy(item.scale).to(b.device)).cpu().numpy().astype(np.float32),
                 s.cpu().numpy().astype(np.float64)) for item, b, s in zip(inputs, boxes, scores)]

    @torch.no_grad()
    def decode(self, embeddings: torch.Tensor, inputs: list, boxes: list, use_token: bool = True,
               n_images: Optional[int] = None) -> list:
        """SAM's decoder prompted with `boxes` (one (N, 4) array per image, original pixels), in
        chunks of `settings.decoder_chunk`: a list of (prompt indices, image of each, `DecodedMasks`)."""
        prompts = torch.cat([torch.from_numpy(np.asarray(b, np.float32).reshape(-1, 4) * item.scale)
                             for item, b in zip(inputs, boxes)]).to(self.device)
        owner = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(boxes)]).to(self.device)
        margin = self.local_margin()
        decoder = maybe_compile(self.model.decoder, self.settings, self.device, n_images)
        order = torch.arange(len(prompts))
        if margin is not None and len(prompts):  # similar boxes share a chunk: smaller windows
            order = torch.argsort(windows_needed(prompts.cpu(), self.model.decoder.stride, margin), stable=True)
        chunks = []
        for start in range(0, len(prompts), self.settings.decoder_chunk):
            chosen = order[start:start + self.settings.decoder_chunk].to(self.device)
            origins, size = self.model.decoder.windows(prompts[chosen], margin)
            with autocast_for(self.settings, self.device, "decoder"):
                decoded = decoder(embeddings, prompts[chosen], owner[chosen], use_token=use_token,
                                  origins=origins, size=size)
            decoded.logits = decoded.logits.float()
            chunks.append((chosen.tolist(), owner[chosen].tolist(), decoded))
        return chunks

    @torch.no_grad()
    def segment(self, embeddings: torch.Tensor, inputs: list, boxes: list, scores: Optional[list] = None,
                use_token: bool = True, n_images: Optional[int] = None) -> list:
        """`Instances` per image of SAM's decoder prompted with `boxes` (one (N, 4) array per image,
        original pixels): the DES-SAM student with `use_token`, the frozen SAM without."""
        scores = scores if scores is not None else [np.ones(len(b)) for b in boxes]
        crops = [None] * sum(len(b) for b in boxes)
        threshold = self.config.model.mask_threshold
        for indices, owners, decoded in self.decode(embeddings, inputs, boxes, use_token, n_images):
            origins = decoded.origins.tolist()
            for position, (index, image) in enumerate(zip(indices, owners)):
                crops[index] = instance_crop(decoded.logits[position, 0], tuple(origins[position]), decoded.frame,
                                             inputs[image], threshold)
        out, start = [], 0
        for item, image_boxes, image_scores in zip(inputs, boxes, scores):
            pieces = crops[start:start + len(image_boxes)]
            start += len(image_boxes)
            out.append(Instances(image_boxes, image_scores, [p[0] for p in pieces], [p[1:] for p in pieces],
                                 item.original_hw))
        return out

    # ----- whole pipeline --------------------------------------------------------------------
    def raw_instances(self, images: list, postprocess: Optional[Postprocess] = None, use_token: bool = True,
                      n_images: Optional[int] = None) -> list:
        """Detected and segmented `Instances` of images that each fit one model input, before
        post-processing; batched as the settings say."""
        postprocess = postprocess or self.postprocess_settings()
        out = []
        for start in range(0, len(images), self.settings.batch_size):
            inputs = self.prepare(images[start:start + self.settings.batch_size])
            embeddings = self.encode(inputs, n_images)
            found = self.detect(embeddings, inputs, postprocess)
            out += self.segment(embeddings, inputs, [b for b, _ in found], [s for _, s in found], use_token, n_images)
        return out

    def needs_tiling(self, image: np.ndarray) -> bool:
        """True when the image, at the training scale, is larger than one model input."""
        if not self.input_scale:
            return False
        return max(image.shape[:2]) * self.input_scale > self.image_size * 1.05

    def predict(self, image: np.ndarray, postprocess: Optional[Postprocess] = None, tile: Optional[bool] = None,
                overlap: int = 64, progress: bool = False) -> Prediction:
        """Nuclei of `image` (H x W x 3 uint8 RGB; gray, RGBA and 16-bit are converted) at its own size.

        tile: None = automatic (tile when the image is larger than the training scale allows),
        True / False to force. postprocess: how results are read (default: the model's config;
        `Postprocess(score_threshold=None, remove_holes=False, remove_islands=False)` gives the raw
        instances).
        """
        return self.predict_batch([image], postprocess, tile, overlap, progress)[0]

    def predict_batch(self, images: list, postprocess: Optional[Postprocess] = None, tile: Optional[bool] = None,
                      overlap: int = 64, progress: bool = False) -> list:
        """`predict` for several images: those that fit one input share encoder and decoder calls."""
        postprocess = postprocess or self.postprocess_settings()
        images = [as_rgb(image) for image in images]
        tiled = [self.needs_tiling(image) if tile is None else bool(tile) for image in images]
        raw = [None] * len(images)
        whole = [i for i, t in enumerate(tiled) if not t]
        for index, instances in zip(whole, self.raw_instances([images[i] for i in whole], postprocess,
                                                              n_images=len(images))):
            raw[index] = instances
        for index in (i for i, t in enumerate(tiled) if t):
            raw[index] = self._tiled_instances(images[index], postprocess, overlap, progress)
        return [Prediction.from_instances(instances.postprocessed(postprocess), postprocess.overlap_winner, image)
                for instances, image in zip(raw, images)]

    def _tiled_instances(self, image: np.ndarray, postprocess: Postprocess, overlap: int, progress: bool) -> Instances:
        """Raw instances of a large image: windows at the training scale, merged without duplicates."""
        scale = self.input_scale or 1.0
        height, width = image.shape[:2]
        working = resize_longest(image, int(round(max(height, width) * scale))) if scale != 1.0 else image
        windows = tile_windows(working.shape[:2], self.image_size, overlap)
        found = []
        bar = tqdm(total=len(windows), desc="tiles", unit="tile", disable=not progress or len(windows) == 1)
        step = self.settings.batch_size
        for start in range(0, len(windows), step):
            batch = windows[start:start + step]
            found += self.raw_instances([working[w.rows, w.cols] for w in batch], postprocess, n_images=len(windows))
            bar.update(len(batch))
        bar.close()
        merged = merge_windows(list(zip(windows, found)), working.shape[:2])
        if working.shape[:2] == (height, width):
            return merged
        return rescale_instances(merged, (height, width))


def _nearest_sources(n_in: int, n_out: int, first: int, last: int) -> np.ndarray:
    """PyTorch's "nearest" resize: output positions [first, last) take input floor(i x n_in / n_out)."""
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(first, last, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def rescale_instances(instances: Instances, shape: tuple) -> Instances:
    """Instances found on a resized image, brought back to the image's own `shape` the way PyTorch's
    nearest resizing of each whole mask would, computed only around each mask."""
    (in_h, in_w), (height, width) = instances.shape, shape
    crops, origins = [], []
    for crop, (y0, x0) in zip(instances.crops, instances.origins):
        top, left = max(int(np.floor(y0 * height / in_h)) - 1, 0), max(int(np.floor(x0 * width / in_w)) - 1, 0)
        bottom = min(int(np.ceil((y0 + crop.shape[0]) * height / in_h)) + 1, height)
        right = min(int(np.ceil((x0 + crop.shape[1]) * width / in_w)) + 1, width)
        rows = _nearest_sources(in_h, height, top, bottom) - y0
        cols = _nearest_sources(in_w, width, left, right) - x0
        inside_rows = (rows >= 0) & (rows < crop.shape[0])
        inside_cols = (cols >= 0) & (cols < crop.shape[1])
        big = np.zeros((len(rows), len(cols)), dtype=bool)
        big[np.ix_(inside_rows, inside_cols)] = crop[np.ix_(rows[inside_rows], cols[inside_cols])]
        big, y, x = tight(big, top, left)
        crops.append(big)
        origins.append((y, x))
    factor = np.array([width / in_w, height / in_h] * 2, dtype=np.float32)
    return Instances(instances.boxes * factor, instances.scores, crops, origins, shape)
