"""The PyTorch engine of the one inference pipeline: images -> batched encoder -> detector -> decoder.

`Predictor` has the pipeline's steps, as segment-anything's `SamPredictor` has its own: `encode`
(images prepared and through SAM's encoder, `settings.batch_size` at a time), `detect` (the
detector's boxes), `decode` (SAM's decoder prompted with boxes: the student with its learned token,
or the frozen SAM without it), and, shared with every engine (`dessam.inference.pipeline`),
`segment` (masks of boxes) and `predict` (all of it for an image of any size, cleaned and painted
into a label map). `predict_batch([image])[0]` is `predict(image)`.

An image larger than what the model was trained on is cut into overlapping windows at the training
scale, which go through the same batches, and the windows' nuclei are merged
(`dessam.inference.windowed`). Memory grows with the nuclei, never with nuclei x image area.

How results are read (score threshold, detection limit, minimum size, ...) is a `Postprocess`
given per call (default: the model's configuration, `predictor.postprocess`); how the work runs is
`InferenceSettings`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, Postprocess
from ..geometry.inputs import as_rgb, prepare_image, trimmed_side
from ..geometry.scale import ModelScale
from ..models.graphs import SizeGraph
from ..models.prompted_decoder import decoding_margin
from ..models.size_head import fixed_input_side
from .acceleration import autocast_for, maybe_compile
from .nucleus_size import crop_inputs, estimation_crops, nucleus_side, padded_side
from .pipeline import STUDENT, DecodedChunk, Encoded, Pipeline, decoding_order, student_masks  # noqa: F401 (STUDENT, student_masks: their old home)
from ..config.runtime import InferenceSettings, fast_settings


class Predictor(Pipeline):
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

    @torch.no_grad()
    def estimate_nucleus_size(self, image: np.ndarray) -> Optional[float]:
        """The typical nucleus side (pixels) of `image` that the model's size head reads
        (`dessam.inference.nucleus_size`), or None when it has no trained head."""
        head = getattr(self.model, "size_head", None)
        if head is None or not head.is_trained:
            return None
        encoder = self.model.image_encoder
        fixed = fixed_input_side(encoder)
        crops = estimation_crops(image, fixed)
        images, valid_hw = crop_inputs(crops, padded_side(crops, fixed))
        log_sides = SizeGraph(encoder, head)(torch.from_numpy(images).to(self.device),
                                             torch.from_numpy(valid_hw).to(self.device))
        return nucleus_side(log_sides.cpu().numpy())

    @property
    def trimmable(self) -> Optional[int]:
        """What the side of a trimmed input must divide by, or None when the encoder must read whole
        inputs: `fit` scaling (every image fills the input), or what the model says
        (`DESSAM.trim_multiple`: a fixed-size encoder, a decoder that reads the embeddings, no detector)."""
        return None if self.scale.mode == "fit" else self.model.trim_multiple

    @property
    def trim_multiple(self) -> Optional[int]:
        """`trimmable`, when `settings.trim_inputs` asks for trimmed inputs; else None."""
        return self.trimmable if self.settings.trim_inputs else None

    @torch.no_grad()
    def encode(self, images: list, n_images: Optional[int] = None) -> Encoded:
        """`images` (each fitting one input at the model's scale) prepared as SAM takes them and
        encoded, `settings.batch_size` images per encoder call (only the square that holds them
        where `trim_multiple` allows, zeros beyond it). A model that reads nothing of SAM's embeddings
        (`reads_embeddings`) gets zeros of their shape: its detector and decoder read the images."""
        fit = self.scale.mode == "fit"
        inputs = [prepare_image(as_rgb(image), self.image_size, fit=fit) for image in images]
        batch = torch.from_numpy(np.stack([item.normalised for item in inputs])).to(self.device)
        side = trimmed_side([item.resized_hw for item in inputs], self.image_size, self.trim_multiple)
        if not self.model.reads_embeddings:
            return Encoded(inputs, self.model.unread_embeddings(len(inputs), self.device), batch, side)
        read = batch if side is None else batch[:, :, :side, :side]
        encoder = maybe_compile(self.model.image_encoder, self.settings, self.device, n_images)
        pieces = []
        with autocast_for(self.settings, self.device):
            for start in range(0, len(read), self.settings.batch_size):
                pieces.append(encoder(read[start:start + self.settings.batch_size]).float())
        embeddings = torch.cat(pieces)
        if side is not None:
            grid = self.image_size * embeddings.shape[-1] // side
            embeddings = F.pad(embeddings, (0, grid - embeddings.shape[-1], 0, grid - embeddings.shape[-2]))
        return Encoded(inputs, embeddings, batch, side)

    @torch.no_grad()
    def detect(self, encoded: Encoded, postprocess: Optional[Postprocess] = None) -> list:
        """Per image (boxes (N, 4) float32 in original pixels, scores (N,)), in fp32 (box coordinates
        lose pixels in bf16): scores above the threshold, NMS, at most `max_detections`."""
        postprocess = postprocess or self.postprocess
        threshold = postprocess.score_threshold if postprocess.score_threshold is not None else 0.0
        source = self.model.detector_input(encoded.detector_embeddings(), encoded.read_images())
        boxes, scores = self.model.detect(source, [item.resized_hw for item in encoded.inputs],
                                          encoded.side or self.image_size, threshold, postprocess.max_detections)
        return [((b / torch.from_numpy(item.scale).to(b.device)).cpu().numpy().astype(np.float32),
                 s.cpu().numpy().astype(np.float64)) for item, b, s in zip(encoded.inputs, boxes, scores)]

    def decode(self, encoded: Encoded, boxes: list, use_token: bool = True, n_images: Optional[int] = None) -> list:
        """`DecodedChunk`s of SAM's decoder prompted with `boxes` (one (N, 4) array per image of
        `encoded`, original pixels), in numpy."""
        return [DecodedChunk(indices, owners, decoded.logits.cpu().numpy(), decoded.iou.float().cpu().numpy(),
                             decoded.origins.cpu().numpy(), tuple(decoded.frame))
                for indices, owners, decoded in decode(self, encoded, boxes, use_token, n_images)]


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
    order = torch.from_numpy(decoding_order(prompts.cpu().numpy(), model.decoder.views, model.decoder.stride, margin))
    chunks = []
    for start in range(0, len(prompts), settings.decoder_chunk):
        chosen = order[start:start + settings.decoder_chunk].to(device)
        with autocast_for(settings, device, "decoder"):
            decoded = model.decode(encoded.embeddings, prompts[chosen], owner[chosen], use_token, margin,
                                   encoded.images, decoder)
        decoded.logits = decoded.logits.float()
        chunks.append((chosen.tolist(), owner[chosen].tolist(), decoded))
    return chunks
