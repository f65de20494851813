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

from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.images import to_rgb, to_uint8
from ..data.transforms import resize_by
from ..models.dessam import DESSAM
from ..models.prompted_decoder import windows_needed
from ..postprocess import Postprocess, tight
from ..scale import ModelScale
from .acceleration import autocast_for, maybe_compile
from .box_otsu import box_otsu_instances
from .inputs import prepare_image
from .instances import Instances
from .masks import instance_crop
from .prediction import Prediction
from .settings import InferenceSettings, fast_settings
from .tiling import Window, merge_windows, tile_windows

STUDENT = "des-sam"
GIVEN = "-gt-boxes"
# Where masks come from: the DES-SAM student, training-free SAM (the frozen teacher), the boxes
# filled, Otsu on the nucleus stain in each box; each from the detected boxes or from given ones.
SOURCES = (STUDENT, "sam", "box-as-mask", "box-otsu",
           STUDENT + GIVEN, "teacher" + GIVEN, "box-as-mask" + GIVEN, "box-otsu" + GIVEN)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from gray, RGBA or 16-bit input."""
    return to_rgb(to_uint8(np.asarray(image)))


class Predictor:
    """A loaded DES-SAM model; `predict(image)` is the whole pipeline and the pieces are public too."""

    def __init__(self, model: DESSAM, config: Config, sam_identity: dict, device: torch.device,
                 scale: Optional[ModelScale] = None, settings: Optional[InferenceSettings] = None, path=None):
        self.model = model.eval()
        self.config = config
        self.sam_identity = sam_identity
        self.device = torch.device(device)
        self.scale = scale or ModelScale(config.model.input_scaling)  # how images are brought to the model
        self.settings = settings or fast_settings(self.device)
        self.path = path

    @property
    def input_scale(self) -> Optional[float]:
        """The factor the training images were resized by (None: unknown)."""
        return self.scale.input_scale

    @input_scale.setter
    def input_scale(self, value: Optional[float]) -> None:
        self.scale.input_scale = value

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
    def window_sources(self, images: list, postprocess: Postprocess, sources=(STUDENT,), given: Optional[list] = None,
                       n_images: Optional[int] = None) -> list:
        """Per image (each fitting one input at the model's scale), {source: raw `Instances`} from one
        encoding and one detection (see `SOURCES`); `given`: per image the boxes (N, 4) that the
        "...-gt-boxes" sources are prompted with. Batched as the settings say."""
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown mask source(s) {sorted(unknown)}; choose from {', '.join(SOURCES)}")
        detected = [s for s in sources if not s.endswith(GIVEN)]
        out = []
        for start in range(0, len(images), self.settings.batch_size):
            batch = images[start:start + self.settings.batch_size]
            inputs = self.prepare(batch)
            embeddings = self.encode(inputs, n_images)
            results = [{} for _ in batch]
            if detected:
                found = self.detect(embeddings, inputs, postprocess)
                self._fill(results, detected, batch, inputs, embeddings, [b for b, _ in found], [s for _, s in found],
                           n_images)
            if given is not None and len(detected) < len(sources):
                boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in given[start:start + len(batch)]]
                self._fill(results, [s for s in sources if s.endswith(GIVEN)], batch, inputs, embeddings, boxes,
                           [np.ones(len(b)) for b in boxes], n_images)
            out += results
        return out

    def _fill(self, results: list, sources: list, images: list, inputs: list, embeddings, boxes: list, scores: list,
              n_images) -> None:
        """Each source's `Instances` of every image of a batch, prompted with `boxes`."""
        for source in sources:
            kind = source[:-len(GIVEN)] if source.endswith(GIVEN) else source
            if kind in ("sam", "teacher", STUDENT):
                found = self.segment(embeddings, inputs, boxes, scores, use_token=kind == STUDENT, n_images=n_images)
            elif kind == "box-as-mask":
                found = [Instances.from_boxes(b, s, item.original_hw) for b, s, item in zip(boxes, scores, inputs)]
            else:  # box-otsu
                found = [box_otsu_instances(image, b, s) for image, b, s in zip(images, boxes, scores)]
            for result, instances in zip(results, found):
                result[source] = instances

    def prepare(self, images: list) -> list:
        fit = self.scale.mode == "fit"
        return [prepare_image(as_rgb(image), self.image_size, fit=fit) for image in images]

    def needs_tiling(self, image: np.ndarray, pixel_size_um: Optional[float] = None) -> bool:
        """True when the image, at the model's scale, is larger than one model input."""
        return self.scale.needs_windows(image.shape[:2], self.image_size, pixel_size_um)

    def image_sources(self, image: np.ndarray, postprocess: Optional[Postprocess] = None, sources=(STUDENT,),
                      given_boxes: Optional[np.ndarray] = None, tile: Optional[bool] = None, overlap: int = 64,
                      pixel_size_um: Optional[float] = None, progress: bool = False,
                      on_window: Optional[Callable[[int, int], None]] = None) -> dict:
        """{source: raw `Instances`} of one image of any size, brought to the model's scale as
        `predict` brings it (see `dessam.scale`): resampled, then whole, or in overlapping windows
        whose nuclei are merged; `given_boxes` (image pixels) are each prompted in the window where
        they lie farthest from its inner edges. Instances come back in the image's own pixels.
        on_window(done, total): called after each batch of windows (a viewer's progress bar); an
        exception it raises stops the work there."""
        postprocess = postprocess or self.postprocess_settings()
        image = as_rgb(image)
        tiled = self.needs_tiling(image, pixel_size_um) if tile is None else bool(tile)
        factor = self.scale.factor(pixel_size_um)
        if not tiled and self.scale.mode == "fit":
            given = None if given_boxes is None else [given_boxes]
            return self.window_sources([image], postprocess, sources, given)[0]
        working = resize_by(image, factor) if factor != 1.0 else image
        scaled = None if given_boxes is None else np.asarray(given_boxes, np.float32).reshape(-1, 4) * np.float32(
            [working.shape[1] / image.shape[1], working.shape[0] / image.shape[0]] * 2)
        windows = tile_windows(working.shape[:2], self.image_size, overlap) if tiled else [whole_window(working.shape)]
        owner = None if scaled is None else best_windows(scaled, windows)
        found = []
        bar = tqdm(total=len(windows), desc="tiles", unit="tile", disable=not progress or len(windows) == 1)
        try:
            for start in range(0, len(windows), self.settings.batch_size):
                batch = windows[start:start + self.settings.batch_size]
                given = None if scaled is None else [window_boxes(scaled, owner == start + i, w)
                                                     for i, w in enumerate(batch)]
                found += self.window_sources([working[w.rows, w.cols] for w in batch], postprocess, sources, given,
                                             n_images=len(windows))
                bar.update(len(batch))
                if on_window is not None:
                    on_window(start + len(batch), len(windows))
        finally:
            bar.close()
        out = {}
        for source in sources:
            pairs = [(window, result[source]) for window, result in zip(windows, found)]
            if source.endswith(GIVEN):
                merged = gather_given(pairs, owner, working.shape[:2])
            else:
                merged = merge_windows(pairs, working.shape[:2]) if tiled else pairs[0][1]
            out[source] = merged if working.shape[:2] == image.shape[:2] else rescale_instances(merged, image.shape[:2])
        return out

    def raw_instances(self, images: list, postprocess: Optional[Postprocess] = None, use_token: bool = True,
                      n_images: Optional[int] = None) -> list:
        """Detected and segmented `Instances` of images that each fit one model input, before
        post-processing; batched as the settings say."""
        source = STUDENT if use_token else "sam"
        found = self.window_sources(images, postprocess or self.postprocess_settings(), (source,), n_images=n_images)
        return [result[source] for result in found]

    def predict(self, image: np.ndarray, postprocess: Optional[Postprocess] = None, tile: Optional[bool] = None,
                overlap: int = 64, progress: bool = False, pixel_size_um: Optional[float] = None,
                on_window: Optional[Callable[[int, int], None]] = None) -> Prediction:
        """Nuclei of `image` (H x W x 3 uint8 RGB; gray, RGBA and 16-bit are converted) at its own size.

        tile: None = automatic (windows when the image is larger than one input at the model's
        scale), True / False to force. postprocess: how results are read (default: the model's
        config; `Postprocess(score_threshold=None, remove_holes=False, remove_islands=False)` gives
        the raw instances). pixel_size_um: the image's pixel size, when known (see `dessam.scale`).
        on_window(done, total): called after each batch of windows, (1, 1) for an image predicted
        whole; an exception it raises stops the work there (a viewer's progress bar and Cancel).
        """
        return self.predict_batch([image], postprocess, tile, overlap, progress, pixel_size_um, on_window)[0]

    def predict_batch(self, images: list, postprocess: Optional[Postprocess] = None, tile: Optional[bool] = None,
                      overlap: int = 64, progress: bool = False, pixel_size_um: Optional[float] = None,
                      on_window: Optional[Callable[[int, int], None]] = None) -> list:
        """`predict` for several images: those that are fitted whole share encoder and decoder calls
        (and count as one window each for `on_window`)."""
        postprocess = postprocess or self.postprocess_settings()
        images = [as_rgb(image) for image in images]
        raw = [None] * len(images)
        whole = (self.scale.mode == "fit" or self.scale.factor(pixel_size_um) == 1.0)
        together = [i for i, image in enumerate(images) if whole and not (
            self.needs_tiling(image, pixel_size_um) if tile is None else tile)]
        for index, instances in zip(together, self.raw_instances([images[i] for i in together], postprocess,
                                                                 n_images=len(images))):
            raw[index] = instances
        if together and on_window is not None:
            on_window(len(together), len(together))
        for index in (i for i in range(len(images)) if raw[i] is None):
            raw[index] = self.image_sources(images[index], postprocess, (STUDENT,), tile=tile, overlap=overlap,
                                            pixel_size_um=pixel_size_um, progress=progress,
                                            on_window=on_window)[STUDENT]
        return [Prediction.from_instances(instances.postprocessed(postprocess), postprocess.overlap_winner, image)
                for instances, image in zip(raw, images)]


def whole_window(shape: tuple) -> Window:
    return Window(0, 0, shape[0], shape[1], (False, False, False, False))


def best_windows(boxes: np.ndarray, windows: list) -> np.ndarray:
    """For each box (N, 4, x1y1x2y2), the window in which it lies farthest from the window's inner
    edges (edges on the image border do not count), as the merge of detected nuclei chooses."""
    margins = np.full((len(boxes), len(windows)), -np.inf)
    for index, window in enumerate(windows):
        top, bottom, left, right = window.inner
        gaps = np.stack([
            boxes[:, 1] - window.y0 if top else np.full(len(boxes), np.inf),
            window.y1 - boxes[:, 3] if bottom else np.full(len(boxes), np.inf),
            boxes[:, 0] - window.x0 if left else np.full(len(boxes), np.inf),
            window.x1 - boxes[:, 2] if right else np.full(len(boxes), np.inf),
        ])
        inside = (boxes[:, 0] < window.x1) & (boxes[:, 2] > window.x0) & (boxes[:, 1] < window.y1) & (boxes[:, 3] > window.y0)
        margins[inside, index] = gaps.min(axis=0)[inside]
    return np.argmax(margins, axis=1) if len(windows) else np.zeros(len(boxes), np.int64)


def window_boxes(boxes: np.ndarray, mine: np.ndarray, window: Window) -> np.ndarray:
    """The boxes a window is to be prompted with, clipped to it and in its pixels."""
    shift = np.float32([window.x0, window.y0, window.x0, window.y0])
    limit = np.float32([window.x1, window.y1, window.x1, window.y1])
    return np.clip(boxes[mine], shift, limit) - shift


def gather_given(pairs: list, owner: np.ndarray, shape: tuple) -> Instances:
    """The instances of given boxes, each from its own window, back in the boxes' order."""
    crops, origins, boxes, scores = [None] * len(owner), [None] * len(owner), [None] * len(owner), [None] * len(owner)
    for index, (window, instances) in enumerate(pairs):
        placed = instances.shifted(window.y0, window.x0, shape)
        for k, box_index in enumerate(np.flatnonzero(owner == index)):
            crops[box_index], origins[box_index] = placed.crops[k], tuple(placed.origins[k])
            boxes[box_index], scores[box_index] = placed.boxes[k], placed.scores[k]
    return Instances(np.array(boxes).reshape(-1, 4), np.array(scores, dtype=np.float64), crops, origins, shape)


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
