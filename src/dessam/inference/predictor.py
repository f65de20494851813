"""The one inference pipeline: images -> batched encoder -> detector -> decoder -> label map.

`Predictor` has the pipeline's four steps, as segment-anything's `SamPredictor` has its own:
`encode` (images prepared and through SAM's encoder, `settings.batch_size` at a time), `detect`
(the detector's boxes), `segment` (SAM's decoder prompted with boxes: the student with its learned
token, or the frozen SAM without it; `decode` gives the decoder's raw output) and `predict` (all of it for an image of any size, cleaned and
painted into a label map). `predict_batch([image])[0]` is `predict(image)`.

An image larger than what the model was trained on is cut into overlapping windows at the training
scale, which go through the same batches, and the windows' nuclei are merged
(`dessam.inference.windowed`). Memory grows with the nuclei, never with nuclei x image area.

How results are read (score threshold, detection limit, minimum size, ...) is a `Postprocess`
given per call (default: the model's configuration, `predictor.postprocess`); how the work runs is
`InferenceSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..config import Config, Postprocess
from ..geometry.inputs import as_rgb, prepare_image
from ..geometry.plan import WindowPlan
from ..geometry.scale import ModelScale
from ..models.prompted_decoder import decoding_margin, windows_needed
from . import windowed
from .acceleration import autocast_for, maybe_compile
from .instances import Instances
from .masks import instance_crop
from .prediction import Prediction
from .settings import InferenceSettings, fast_settings


@dataclass
class Encoded:
    """Images as the model took them (`ModelInput`s: the original sizes, how they were resized),
    their SAM embeddings (B, C, h, w), float32, and the normalised images (B, 3, S, S) themselves
    (which a SAM that decodes on per-box views reads)."""

    inputs: list
    embeddings: torch.Tensor
    images: Optional[torch.Tensor] = None


class Predictor:
    """A loaded DES-SAM model (or the frozen SAM alone, `dessam.inference.loading.load_teacher`)."""

    def __init__(self, model, config: Config, sam_identity: dict, device: torch.device,
                 scale: Optional[ModelScale] = None, settings: Optional[InferenceSettings] = None, path=None):
        self.model = model.eval()
        self.config = config
        self.sam_identity = sam_identity
        self.device = torch.device(device)
        self.scale = scale or ModelScale(config.model.input_scaling)  # how images are brought to the model
        self.settings = settings or fast_settings(self.device)
        self.path = path

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def postprocess(self) -> Postprocess:
        """The model's own post-processing; `dataclasses.replace(predictor.postprocess, score_threshold=0.3)`
        reads results another way."""
        return self.config.model.postprocess

    def nucleus_size(self, image: np.ndarray, nucleus_size: Optional[float] = None,
                     pixel_size_um: Optional[float] = None) -> Optional[float]:
        """The typical nucleus side (pixels) by which `image` is brought to a model with `nucleus`
        scaling: `nucleus_size` when given, else none when the image's and the model's pixel sizes
        decide, else the model's estimate (`dessam.inference.nucleus_size`; None when it has none)."""
        if self.scale.mode != "nucleus" or nucleus_size is not None:
            return nucleus_size
        if pixel_size_um is not None and self.scale.pixel_size_um:
            return None
        from .nucleus_size import estimate_nucleus_size

        return estimate_nucleus_size(self.model, as_rgb(image), self.device)

    def scale_note(self, pixel_size_um: Optional[float] = None, nucleus_size: Optional[float] = None) -> Optional[str]:
        """One line for the user when a given pixel size cannot bring images to this model (it was
        trained without one) or a given nucleus size plays no part; None when both mean what they say."""
        name = self.path.name if self.path is not None else "the model"
        if nucleus_size is not None and self.scale.mode != "nucleus":
            return (f"{name} does not bring images to a nucleus size: --nucleus-size {nucleus_size:g} plays no part; "
                    "give --pixel-size to rescale images for it")
        if pixel_size_um is None or self.scale.pixel_size_um:
            return None
        if self.scale.mode == "nucleus":
            how = ("each image is brought to it by its nucleus size (--nucleus-size when given, else estimated from "
                   "the image)")
        else:
            how = "images are used at the scale it was trained at (train with --pixel-size to make it count)"
        return (f"{name} was trained without a pixel size, so --pixel-size {pixel_size_um:g} gives the "
                f"measurements in microns and does not rescale: {how}")

    def plan(self, image: np.ndarray, pixel_size_um: Optional[float] = None, tile: Optional[bool] = None,
             overlap: int = 64, nucleus_size: Optional[float] = None) -> WindowPlan:
        """How `image` is brought to the model (`dessam.geometry.plan`)."""
        size = self.nucleus_size(image, nucleus_size, pixel_size_um)
        return WindowPlan.for_image(image.shape, self.image_size, self.scale, pixel_size_um, tile, overlap, size)

    @torch.no_grad()
    def encode(self, images: list, n_images: Optional[int] = None) -> Encoded:
        """`images` (each fitting one input at the model's scale) prepared as SAM takes them and
        encoded, `settings.batch_size` images per encoder call."""
        fit = self.scale.mode == "fit"
        inputs = [prepare_image(as_rgb(image), self.image_size, fit=fit) for image in images]
        batch = torch.stack([item.normalised for item in inputs]).to(self.device)
        encoder = maybe_compile(self.model.sam.image_encoder, self.settings, self.device, n_images)
        pieces = []
        with autocast_for(self.settings, self.device):
            for start in range(0, len(batch), self.settings.batch_size):
                pieces.append(encoder(batch[start:start + self.settings.batch_size]).float())
        return Encoded(inputs, torch.cat(pieces), batch)

    @torch.no_grad()
    def detect(self, encoded: Encoded, postprocess: Optional[Postprocess] = None) -> list:
        """Per image (boxes (N, 4) float32 in original pixels, scores (N,)), in fp32 (box coordinates
        lose pixels in bf16): scores above the threshold, NMS, at most `max_detections`."""
        postprocess = postprocess or self.postprocess
        threshold = postprocess.score_threshold if postprocess.score_threshold is not None else 0.0
        boxes, scores = self.model.detector.detect(
            self.model.neck(encoded.embeddings), [item.resized_hw for item in encoded.inputs], self.image_size,
            threshold, postprocess.max_detections,
        )
        return [((b / torch.from_numpy(item.scale).to(b.device)).cpu().numpy().astype(np.float32),
                 s.cpu().numpy().astype(np.float64)) for item, b, s in zip(encoded.inputs, boxes, scores)]

    @torch.no_grad()
    def segment(self, encoded: Encoded, boxes: list, scores: Optional[list] = None, use_token: bool = True,
                n_images: Optional[int] = None) -> list:
        """`Instances` per image of SAM's decoder prompted with `boxes` (one (N, 4) array per image,
        original pixels): the DES-SAM student with `use_token`, the frozen SAM without."""
        scores = scores if scores is not None else [np.ones(len(b)) for b in boxes]
        crops = [None] * sum(len(b) for b in boxes)
        threshold = self.config.model.mask_threshold
        for indices, owners, decoded in decode(self, encoded, boxes, use_token, n_images):
            origins = decoded.origins.tolist()
            for position, (index, image) in enumerate(zip(indices, owners)):
                crops[index] = instance_crop(decoded.logits[position, 0], tuple(origins[position]), decoded.frame,
                                             encoded.inputs[image], threshold)
        out, start = [], 0
        for item, image_boxes, image_scores in zip(encoded.inputs, boxes, scores):
            pieces = crops[start:start + len(image_boxes)]
            start += len(image_boxes)
            out.append(Instances(image_boxes, image_scores, [p[0] for p in pieces], [p[1:] for p in pieces],
                                 item.original_hw))
        return out

    def predict(self, image: np.ndarray, postprocess: Optional[Postprocess] = None, tile: Optional[bool] = None,
                overlap: int = 64, progress: bool = False, pixel_size_um: Optional[float] = None,
                on_window: Optional[Callable[[int, int], None]] = None,
                nucleus_size: Optional[float] = None) -> Prediction:
        """Nuclei of `image` (H x W x 3 uint8 RGB; gray, RGBA and 16-bit are converted) at its own size.

        tile: None = automatic (windows when the image is larger than one input at the model's
        scale), True / False to force. postprocess: how results are read (default: the model's
        config; `Postprocess(score_threshold=None, remove_holes=False, remove_islands=False)` gives
        the raw instances). pixel_size_um: the image's pixel size, when known (see
        `dessam.geometry.scale`). on_window(done, total): called after each batch of windows, (1, 1)
        for an image predicted whole; an exception it raises stops the work there (a viewer's
        progress bar and Cancel). nucleus_size: the image's typical nucleus side in pixels (models with
        `nucleus` scaling; None: estimated).
        """
        return self.predict_batch([image], postprocess, tile, overlap, progress, pixel_size_um, on_window,
                                  nucleus_size)[0]

    def predict_batch(self, images: list, postprocess: Optional[Postprocess] = None, tile: Optional[bool] = None,
                      overlap: int = 64, progress: bool = False, pixel_size_um: Optional[float] = None,
                      on_window: Optional[Callable[[int, int], None]] = None,
                      nucleus_size: Optional[float] = None) -> list:
        """`predict` for several images: those that go to the model whole share encoder and decoder calls
        (and count as one window each for `on_window`)."""
        postprocess = postprocess or self.postprocess
        images = [as_rgb(image) for image in images]
        sources = {STUDENT: windowed.MaskSource(student_masks)}
        plans = [self.plan(image, pixel_size_um, tile, overlap, nucleus_size) for image in images]
        raw = [None] * len(images)
        together = [i for i, plan in enumerate(plans) if not plan.tiled and plan.factor == 1.0]
        found = windowed.window_instances(self, [images[i] for i in together], postprocess, sources,
                                          n_images=len(images))
        for index, result in zip(together, found):
            raw[index] = result[STUDENT]
        if together and on_window is not None:
            on_window(len(together), len(together))
        for index in (i for i in range(len(images)) if raw[i] is None):
            raw[index] = windowed.image_instances(self, images[index], sources, postprocess, tile=tile, overlap=overlap,
                                                  pixel_size_um=pixel_size_um, progress=progress,
                                                  on_window=on_window, plan=plans[index])[STUDENT]
        return [Prediction.from_instances(instances.postprocessed(postprocess), postprocess.overlap_winner, image)
                for instances, image in zip(raw, images)]


STUDENT = "des-sam"


def student_masks(predictor: Predictor, encoded: Encoded, images: list, boxes: list, scores: list,
                  n_images: Optional[int] = None) -> list:
    """The DES-SAM student's masks: SAM's decoder prompted with the boxes and the learned token."""
    return predictor.segment(encoded, boxes, scores, use_token=True, n_images=n_images)


def local_margin(config, settings, sam) -> Optional[int]:
    """Tokens around each box when decoding locally as `settings.local_decoding` asks (None: as the
    model was configured), None for the whole embedding (see `decoding_margin`)."""
    return decoding_margin(config, sam, settings.local_decoding)


@torch.no_grad()
def decode(predictor, encoded, boxes: list, use_token: bool = True, n_images: Optional[int] = None) -> list:
    """SAM's decoder prompted with `boxes` (one (N, 4) array per image of `encoded`, original
    pixels), in chunks of `settings.decoder_chunk`: a list of (prompt indices, image of each,
    `DecodedMasks`)."""
    model, settings, device = predictor.model, predictor.settings, predictor.device
    prompts = torch.cat([torch.from_numpy(np.asarray(b, np.float32).reshape(-1, 4) * item.scale)
                         for item, b in zip(encoded.inputs, boxes)]).to(device)
    owner = torch.cat([torch.full((len(b),), i, dtype=torch.long) for i, b in enumerate(boxes)]).to(device)
    margin = local_margin(predictor.config, settings, model.sam)
    decoder = maybe_compile(model.decoder, settings, device, n_images)
    order = torch.arange(len(prompts))
    if margin is not None and len(prompts):  # similar boxes share a chunk: smaller windows
        needed = windows_needed(model.decoder.window_boxes(prompts.cpu()), model.decoder.stride, margin)
        order = torch.argsort(needed, stable=True)
    chunks = []
    for start in range(0, len(prompts), settings.decoder_chunk):
        chosen = order[start:start + settings.decoder_chunk].to(device)
        origins, size = model.decoder.windows(prompts[chosen], margin)
        with autocast_for(settings, device, "decoder"):
            decoded = decoder(encoded.embeddings, prompts[chosen], owner[chosen], use_token=use_token,
                              origins=origins, size=size, images=encoded.images)
        decoded.logits = decoded.logits.float()
        chunks.append((chosen.tolist(), owner[chosen].tolist(), decoded))
    return chunks
