"""Training images as the model sees them: embeddings computed once and cached, then batches.

The encoder is frozen and there is no photometric augmentation, so each view's embedding (the whole
image fitted to the input, or a window of it: `dessam.training.views`) is computed once
(`encode_training_set`) and read back from the cache for every batch. A model that reads nothing of
SAM's embeddings (`DESSAM.reads_embeddings`: a detector with an encoder of its own and a decoder of
per-box views) is given zeros of their shape instead: SAM's encoder never runs and nothing is cached.
Given masks travel with their view as crops of the low-resolution frame (`dessam.training.mask_targets`).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm.auto import tqdm

from ..data.coco import ImageRecord, read_record_image
from ..data.images import read_image
from ..models.dessam import DESSAM
from ..models.frame_masks import FrameMasks
from ..models.prompted_decoder import UPSCALE
from .cache import EmbeddingCache
from .mask_targets import view_frame_masks
from .views import TrainingView, training_views


@dataclass
class TrainingImage:
    view: TrainingView
    cache_key: str
    boxes: torch.Tensor       # (N, 4) input frame
    resized_hw: tuple
    masks: Optional[FrameMasks] = None  # the given masks, when any annotation has one

    @property
    def record(self) -> ImageRecord:
        return self.view.record


def embedding_shape(model: DESSAM) -> tuple:
    grid = model.sam.prompt_encoder.image_embedding_size
    return (model.sam.prompt_encoder.embed_dim, grid[0], grid[1])


def return_freed_memory() -> None:
    """Hand the memory freed so far back to the system (glibc's malloc_trim; a no-op elsewhere).

    Encoding thousands of training views allocates and frees large buffers (images, activations,
    cached embeddings read back); glibc keeps the freed pieces, so a pre-training run on the corpus
    grew to 12 GB of memory it no longer used. Trimming after each image keeps it near 1 GB."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def view_embedding(model: DESSAM, cache: EmbeddingCache, key: str, inputs, device, shape: tuple) -> torch.Tensor:
    """A view's SAM embedding: verified from the cache, computed once (a damaged or removed entry is
    recomputed, never trusted); zeros of its shape for a model that reads none."""
    if not model.reads_embeddings:
        return model.unread_embeddings(1, device)[0]
    return cache.get_or_compute(key, lambda: model.encode(torch.from_numpy(inputs.normalised[None]).to(device))[0],
                                shape)


def encode_training_set(model: DESSAM, records: list, cache: EmbeddingCache, device, progress=True,
                        factor: Optional[float] = None, given_masks: bool = False) -> list:
    """Every view of every record (see `training_views`; `factor` None: fitted), its embedding cached
    (the encoder runs only for views not cached yet); with `given_masks`, the annotations' masks as
    distillation targets."""
    shape = embedding_shape(model)
    items = []
    for record in tqdm(records, desc="Embedding images", disable=not progress, unit="img"):
        image = None
        for view in training_views(record, model.image_size, factor):
            image = read_record_image(record) if image is None else image
            inputs = view.inputs(image, model.image_size)
            key = cache.key(inputs.resized)
            view_embedding(model, cache, key, inputs, device, shape)
            masks = view_frame_masks(view, model.image_size, UPSCALE * shape[1]) if given_masks else None
            items.append(TrainingImage(view, key, torch.from_numpy(view.boxes).float(), inputs.resized_hw, masks))
        return_freed_memory()
    return items


def batch_tensors(model: DESSAM, items: list, cache: EmbeddingCache, device):
    """The arguments of `DESSAM.forward` for `items`: cached embeddings, padded RGB and normalised
    images, boxes (input frame) and valid sizes."""
    shape = embedding_shape(model)
    embeddings, rgb, normalised = [], [], []
    for item in items:
        inputs = item.view.inputs(read_image(item.record.path), model.image_size)
        embeddings.append(view_embedding(model, cache, item.cache_key, inputs, device, shape).float())
        rgb.append(torch.from_numpy(inputs.rgb))
        normalised.append(torch.from_numpy(inputs.normalised))
    return (
        torch.stack(embeddings).to(device),
        torch.stack(rgb).to(device),
        torch.stack(normalised).to(device),
        [item.boxes.to(device) for item in items],
        [item.resized_hw for item in items],
    )


def batch_masks(items: list, device) -> Optional[list]:
    """The given masks of `items` for `DESSAM.forward` (None when no image of the batch has any)."""
    if all(item.masks is None for item in items):
        return None
    return [None if item.masks is None else item.masks.to(device) for item in items]
