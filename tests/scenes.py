"""Small box-annotated scenes for the model tests: dark round nuclei on a pale, noisy field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_nuclei_scene(rng: np.random.Generator, size: int = 128, count: int = 10):
    """An RGB image and its instance label map with `count` non-overlapping nuclei."""
    yy, xx = np.mgrid[:size, :size]
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = (225, 215, 220)
    image += rng.normal(0, 6, image.shape)
    labels = np.zeros((size, size), dtype=np.uint16)
    placed = 0
    for _ in range(200):
        if placed == count:
            break
        ry, rx = rng.uniform(6, 12, 2)
        cy, cx = rng.uniform(14, size - 14, 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        grown = ((yy - cy) / (ry + 3)) ** 2 + ((xx - cx) / (rx + 3)) ** 2 <= 1
        if labels[grown].any():
            continue
        placed += 1
        labels[inside] = placed
        image[inside] = np.array((90, 60, 140)) + rng.normal(0, 8, (inside.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def tiled_field(size: int, seed: int = 0):
    """A `size` px field tiled from 128 px scenes: the image, its label map and one box per nucleus
    (x1 y1 x2 y2, pixel edges)."""
    rng = np.random.default_rng(seed)
    image, labels = np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint32)
    for y in range(0, size, 128):
        for x in range(0, size, 128):
            scene, scene_labels = make_nuclei_scene(rng, 128)
            h, w = min(128, size - y), min(128, size - x)
            image[y:y + h, x:x + w] = scene[:h, :w]
            part = scene_labels[:h, :w].astype(np.uint32)
            labels[y:y + h, x:x + w] = np.where(part > 0, part + labels.max(), 0)
    return image, labels, label_boxes(labels)


def label_boxes(labels: np.ndarray) -> np.ndarray:
    """The box (x1 y1 x2 y2, pixel edges) of each label id present, in ascending id order."""
    from scipy import ndimage

    return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)
                     if s is not None], np.float32).reshape(-1, 4)


def write_box_dataset(folder: Path, n_images: int = 4, size: int = 128, seed: int = 0, with_masks=False):
    """Write images/ and a COCO file; boxes only unless `with_masks`. Returns (json path, images dir)."""
    from dessam.data.coco import label_map_to_annotations, write_coco

    rng = np.random.default_rng(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(n_images):
        image, labels = make_nuclei_scene(rng, size)
        name = f"scene_{index:03d}.png"
        Image.fromarray(image).save(images_dir / name)
        images.append({"id": index + 1, "file_name": name, "height": size, "width": size})
        anns = label_map_to_annotations(labels, index + 1, first_ann_id=len(annotations) + 1, with_masks=with_masks)
        annotations.extend(anns)
    json_path = folder / ("full.json" if with_masks else "boxes.json")
    write_coco(json_path, images, annotations)
    return json_path, images_dir


def tiny_config(**train):
    from dessam.config import Config

    return Config.compose("tiny", overrides={f"train.{key}": value for key, value in train.items()})
