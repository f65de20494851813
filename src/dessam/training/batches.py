"""Training images as the model sees them: embeddings computed once and cached, then batches.

The encoder is frozen and there is no photometric augmentation, so each image's embedding is
computed once (`encode_training_set`) and read back from the cache for every batch. Given masks
travel with their image as crops of the low-resolution frame (`dessam.training.mask_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from tqdm.auto import tqdm

from ..data.coco import ImageRecord, read_record_image
from ..data.images import read_image
from ..inference.inputs import prepare_image
from ..models.dessam import DESSAM
from ..models.frame_masks import FrameMasks
from ..models.prompted_decoder import UPSCALE
from .cache import EmbeddingCache
from .mask_targets import record_frame_masks


@dataclass
class TrainingImage:
    record: ImageRecord
    cache_key: str
    boxes: torch.Tensor       # (N, 4) input frame
    resized_hw: tuple
    masks: Optional[FrameMasks] = None  # the given masks, when any annotation has one


def encode_training_set(model: DESSAM, records: list, cache: EmbeddingCache, device, progress=True,
                        given_masks: bool = False) -> list:
    """Cache every image's embedding (running the encoder only for images not cached yet); with
    `given_masks`, keep the annotations' masks as distillation targets."""
    grid = model.sam.prompt_encoder.image_embedding_size
    shape = (model.sam.prompt_encoder.embed_dim, grid[0], grid[1])
    items = []
    for record in tqdm(records, desc="Embedding images", disable=not progress, unit="img"):
        inputs = prepare_image(read_record_image(record), model.image_size)
        key = cache.key(inputs.resized)
        cache.get_or_compute(key, lambda: model.encode(inputs.normalised[None].to(device))[0], shape)
        boxes = torch.from_numpy(record.boxes * inputs.scale).float()
        masks = record_frame_masks(record, inputs, UPSCALE * grid[0]) if given_masks else None
        items.append(TrainingImage(record, key, boxes, inputs.resized_hw, masks))
    return items


def batch_tensors(model: DESSAM, items: list, cache: EmbeddingCache, device):
    """The arguments of `DESSAM.forward` for `items`: cached embeddings, padded RGB and normalised
    images, boxes (input frame) and valid sizes."""
    grid = model.sam.prompt_encoder.image_embedding_size
    shape = (model.sam.prompt_encoder.embed_dim, grid[0], grid[1])
    embeddings, rgb, normalised = [], [], []
    for item in items:
        inputs = prepare_image(read_image(item.record.path), model.image_size)
        # verified cached embedding; a damaged or removed entry is recomputed, never trusted
        embedding = cache.get_or_compute(
            item.cache_key, lambda: model.encode(inputs.normalised[None].to(device))[0], shape
        )
        embeddings.append(embedding.float())
        rgb.append(inputs.rgb)
        normalised.append(inputs.normalised)
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
