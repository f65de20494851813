"""The steps of inference that every engine shares, in numpy: windows, masks, instances, label map.

An engine runs the model's networks: the PyTorch `Predictor` (`dessam.inference.predictor`), or
`OnnxPredictor` (`dessam.inference.onnx_predictor`), which runs the graphs `dessam export` writes
with ONNX Runtime and never imports torch. Each gives three calls:

- `encode(images, n_images)`: images (each fitting one input at the model's scale) prepared as SAM
  takes them (`prepare_image`) and through the image encoder: an `Encoded`;
- `detect(encoded, postprocess)`: per image (boxes (N, 4) float32 in original pixels, scores (N,));
- `decode(encoded, boxes, use_token, n_images)`: the mask decoder prompted with boxes, as
  `DecodedChunk`s of numpy logits.

`Pipeline` builds the rest on them, once for every engine: `segment` (logits to mask crops at the
image's own size, `dessam.inference.masks`), and `predict` / `predict_batch` (an image of any size
brought to the model's scale by its `WindowPlan`, windows batched, nuclei merged across windows,
cleaned and painted into a label map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..config import Config, Postprocess
from ..geometry.inputs import as_rgb
from ..geometry.plan import WindowPlan
from . import windowed
from .instances import Instances
from .masks import instance_crop
from .nucleus_size import detected_side, settled
from .prediction import Prediction


@dataclass
class Encoded:
    """Images as the model took them (`ModelInput`s: the original sizes, how they were resized),
    their SAM embeddings (B, C, h, w), float32, and the normalised images (B, 3, S, S) themselves
    (which a SAM that decodes on per-box views reads); torch tensors or numpy arrays, as the engine
    keeps them.

    A model whose encoder takes any input size and whose decoder reads per-box views, not the
    embeddings (the bundled models), encodes only the square that holds the batch's images
    (`side`, `dessam.geometry.inputs.trimmed_side`), not the zero padding around a small image: the
    work then follows the image's size, and the encoder's per-image normalisation sees the image
    only (it measured better on the held-out sets than with the padding, docs/detection.md)."""

    inputs: list
    embeddings: Any
    images: Any = None
    side: Optional[int] = None   # the top-left square of the inputs the encoder read (None: all of it)

    def detector_embeddings(self):
        """The embeddings of the square the encoder read: what the detector reads (beyond it the
        embeddings are zeros, which no decoder of per-box views reads)."""
        if self.side is None:
            return self.embeddings
        grid = self.side * self.embeddings.shape[-1] // self.images.shape[-1]
        return self.embeddings[:, :, :grid, :grid]

    def read_images(self):
        """The normalised images of the square the encoder read: what a detector with an image encoder
        of its own reads."""
        return self.images if self.side is None else self.images[:, :, :self.side, :self.side]


@dataclass
class DecodedChunk:
    """The decoder's output for one chunk of prompts, in numpy."""

    indices: list           # each prompt's position among all the prompts of the call
    owners: list            # the image of `Encoded` each prompt belongs to
    logits: np.ndarray      # (n, 1, k, k) float32 low-resolution logits over each prompt's window
    iou: np.ndarray         # (n, 1) SAM's predicted IoU
    origins: np.ndarray     # (n, 2) row, column of each window's first logit in the full low-res frame
    frame: tuple            # (H, W) of the full low-res frame


def decoding_order(prompts: np.ndarray, views: Optional[dict], stride: int, margin: Optional[int]) -> np.ndarray:
    """The order in which prompts (N, 4, input frame) go to the decoder: when each is decoded on a
    window of its own (`margin` not None), by the side of that window, so that similar boxes share
    a chunk and each chunk's common window stays small; else as given. A teacher that decodes on
    views (`views`: their context and min_side) needs a window that holds each box's view."""
    if margin is None or not len(prompts):
        return np.arange(len(prompts))
    boxes = np.asarray(prompts, np.float32)
    if views is not None:  # each box's view square, as `dessam.models.box_views.view_squares` computes it
        centres = (boxes[:, :2] + boxes[:, 2:]) / np.float32(2)
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * np.float32(views["context"])
        half = np.maximum(sides, np.float32(views["min_side"]))[:, None] / np.float32(2)
        boxes = np.concatenate([centres - half, centres + half], 1)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    needed = np.ceil(sides / np.float32(stride)).astype(np.int64) + 1 + 2 * int(margin)
    return np.argsort(needed, kind="stable")


class Pipeline:
    """What `predict` needs beyond the three engine calls (see the module docstring); an engine sets
    `config`, `scale` (`ModelScale`), `settings` (`InferenceSettings`), `image_size` and `path`, and
    gives `estimate_nucleus_size(image)` (None when its model has no trained size head)."""

    config: Config

    def refines_size(self, nucleus_size: Optional[float] = None, pixel_size_um: Optional[float] = None) -> bool:
        """Whether an image's nucleus size is estimated and corrected before it is predicted: a model with
        `nucleus` scaling, given no nucleus size, and no pixel size that decides instead."""
        return (self.scale.mode == "nucleus" and nucleus_size is None
                and not (pixel_size_um is not None and self.scale.pixel_size_um))

    def nucleus_size(self, image: np.ndarray, nucleus_size: Optional[float] = None,
                     pixel_size_um: Optional[float] = None, postprocess: Optional[Postprocess] = None) -> Optional[float]:
        """The typical nucleus side (pixels) by which `image` is brought to a model with `nucleus`
        scaling: `nucleus_size` when given, else none when the image's and the model's pixel sizes
        decide, else the model's estimate corrected by its detections under `postprocess` (the model's
        own by default): the last size detected at, once the nuclei found there agree with it or the
        passes are done (`dessam.inference.nucleus_size`; None when the model has no size head)."""
        if not self.refines_size(nucleus_size, pixel_size_um):
            return nucleus_size if self.scale.mode != "nucleus" or nucleus_size is not None else None
        image = as_rgb(image)
        postprocess = postprocess or self.postprocess
        threshold = self.size_threshold(postprocess)
        size = self.estimate_nucleus_size(image)
        for _ in range(self.config.model.nucleus_refinements if size is not None else 0):
            found = windowed.image_instances(self, image, {SIZE_PASS: SIZE_BOXES}, postprocess, nucleus_size=size,
                                             size_threshold=threshold)
            refined = detected_side(found[SIZE_PASS].boxes)
            if refined is None or settled(size, refined):
                break
            size = refined
        return size

    def size_threshold(self, postprocess: Postprocess) -> Optional[float]:
        """The score above which the passes that correct a nucleus size read their nuclei:
        the model's `model.postprocess.nucleus_score_threshold` when it is below `postprocess`'s threshold, else
        None (the read-out's own). Only the nuclei above the read-out's threshold are segmented and kept."""
        chosen, read_out = self.config.model.postprocess.nucleus_score_threshold, postprocess.score_threshold
        return chosen if chosen is not None and read_out is not None and chosen < read_out else None

    def plan(self, image: np.ndarray, pixel_size_um: Optional[float] = None, tile: Optional[bool] = None,
             overlap: int = 64, nucleus_size: Optional[float] = None,
             postprocess: Optional[Postprocess] = None) -> WindowPlan:
        """How `image` is brought to the model (`dessam.geometry.plan`)."""
        size = self.nucleus_size(image, nucleus_size, pixel_size_um, postprocess)
        return self.plan_at(image, size, pixel_size_um, tile, overlap)

    def plan_at(self, image: np.ndarray, nucleus_size: Optional[float], pixel_size_um: Optional[float] = None,
                tile: Optional[bool] = None, overlap: int = 64) -> WindowPlan:
        """How `image` is brought to the model at a nucleus size already known."""
        return WindowPlan.for_image(image.shape, self.image_size, self.scale, pixel_size_um, tile, overlap, nucleus_size)

    def sized_instances(self, image: np.ndarray, sources: dict, postprocess: Optional[Postprocess] = None,
                        tile: Optional[bool] = None, overlap: int = 64, pixel_size_um: Optional[float] = None,
                        progress: bool = False, on_window: Optional[Callable[[int, int], None]] = None,
                        nucleus_size: Optional[float] = None) -> dict:
        """`windowed.image_instances` of `sources` at the size `plan` gives, in one pass fewer: a pass of
        the size's correction that covers one window decodes its masks at once when its nuclei settle
        the size (or are too few to say), and is then the result, as the same pass after planning would
        be. Images in several windows are corrected on detections alone, then predicted."""
        postprocess = postprocess or self.postprocess
        threshold = self.size_threshold(postprocess)
        image = as_rgb(image)

        def run(chosen: dict, plan: WindowPlan, read_if=None, shown: bool = True) -> dict:
            return windowed.image_instances(self, image, chosen, postprocess, tile=tile, overlap=overlap,
                                            pixel_size_um=pixel_size_um, progress=progress and shown,
                                            on_window=on_window if shown else None, plan=plan, read_if=read_if,
                                            size_threshold=threshold if SIZE_PASS in chosen else None)

        if not self.refines_size(nucleus_size, pixel_size_um):
            return run(sources, self.plan(image, pixel_size_um, tile, overlap, nucleus_size, postprocess))
        size = self.estimate_nucleus_size(image)
        for _ in range(self.config.model.nucleus_refinements if size is not None else 0):
            plan = self.plan_at(image, size, pixel_size_um, tile, overlap)
            one_window, measured = len(plan.windows) == 1, {}

            def read_if(boxes: list, plan=plan, size=size) -> bool:
                measured["side"] = detected_side(plan.to_source(boxes[0]))
                return measured["side"] is None or settled(size, measured["side"])

            found = run({**sources, SIZE_PASS: SIZE_BOXES} if one_window else {SIZE_PASS: SIZE_BOXES}, plan,
                        read_if if one_window else None, shown=one_window)
            if all(name in found for name in sources):
                return {name: found[name] for name in sources}
            refined = measured["side"] if one_window else detected_side(found[SIZE_PASS].boxes)
            if refined is None or settled(size, refined):
                return run(sources, plan)
            size = refined
        return run(sources, self.plan_at(image, size, pixel_size_um, tile, overlap))

    def scale_note(self, pixel_size_um: Optional[float] = None, nucleus_size: Optional[float] = None) -> Optional[str]:
        """One line for the user when a given pixel size cannot bring images to this model (it was
        trained without one) or a given nucleus size plays no part; None when both mean what they say."""
        name = self.path.name if getattr(self, "path", None) is not None else "the model"
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

    @property
    def postprocess(self) -> Postprocess:
        """The model's own post-processing; `dataclasses.replace(predictor.postprocess, score_threshold=0.3)`
        reads results another way."""
        return self.config.model.postprocess

    def segment(self, encoded: Encoded, boxes: list, scores: Optional[list] = None, use_token: bool = True,
                n_images: Optional[int] = None) -> list:
        """`Instances` per image of SAM's decoder prompted with `boxes` (one (N, 4) array per image,
        original pixels): the DES-SAM student with `use_token`, the frozen SAM without."""
        scores = scores if scores is not None else [np.ones(len(b)) for b in boxes]
        crops = [None] * sum(len(b) for b in boxes)
        threshold = self.config.model.postprocess.mask_threshold
        for chunk in self.decode(encoded, boxes, use_token, n_images):
            origins = chunk.origins.tolist()
            for position, (index, image) in enumerate(zip(chunk.indices, chunk.owners)):
                crops[index] = instance_crop(chunk.logits[position, 0], tuple(origins[position]), chunk.frame,
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
        sized = self.refines_size(nucleus_size, pixel_size_um)  # each image its own size: no batch of images
        plans = [None if sized else self.plan(image, pixel_size_um, tile, overlap, nucleus_size) for image in images]
        raw = [None] * len(images)
        together = [i for i, plan in enumerate(plans) if plan is not None and not plan.tiled and plan.factor == 1.0]
        found = windowed.window_instances(self, [images[i] for i in together], postprocess, sources,
                                          n_images=len(images))
        for index, result in zip(together, found):
            raw[index] = result[STUDENT]
        if together and on_window is not None:
            on_window(len(together), len(together))
        for index in (i for i in range(len(images)) if raw[i] is None):
            raw[index] = self.sized_instances(images[index], sources, postprocess, tile, overlap, pixel_size_um,
                                              progress, on_window, nucleus_size)[STUDENT]
        return [Prediction.from_instances(instances.postprocessed(postprocess), postprocess.overlap_winner, image)
                for instances, image in zip(raw, images)]


STUDENT = "des-sam"


def filled_boxes(predictor: Pipeline, encoded: Encoded, images: list, boxes: list, scores: list,
                 n_images: Optional[int] = None) -> list:
    """Each box filled: what the detector alone gives, without a decoder call."""
    return [Instances.from_boxes(b, s, item.original_hw) for b, s, item in zip(boxes, scores, encoded.inputs)]


SIZE_PASS = "size pass"  # the boxes-only source of a pass that measures an image's nucleus size
SIZE_BOXES = windowed.MaskSource(filled_boxes, decodes=False, measures_size=True)


def student_masks(predictor: Pipeline, encoded: Encoded, images: list, boxes: list, scores: list,
                  n_images: Optional[int] = None) -> list:
    """The DES-SAM student's masks: SAM's decoder prompted with the boxes and the learned token."""
    return predictor.segment(encoded, boxes, scores, use_token=True, n_images=n_images)
