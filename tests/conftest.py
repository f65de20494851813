import os

import pytest
import torch

# Two cores are shared by the whole suite: keep each test single-threaded and quiet.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def box_dataset(tmp_path_factory):
    """Six small scenes: a boxes-only COCO file and one with masks, over the same images."""
    from scenes import write_box_dataset

    root = tmp_path_factory.mktemp("scenes")
    boxes_json, images = write_box_dataset(root, n_images=6)
    masks_json, _ = write_box_dataset(root, n_images=6, with_masks=True)
    return boxes_json, masks_json, images


@pytest.fixture(scope="session")
def trained_tiny(box_dataset, tmp_path_factory):
    """A tiny DES-SAM trained for a few epochs (shared by tests that need a model file)."""
    from scenes import tiny_config

    from dessam.training.train import train

    boxes_json, _, images = box_dataset
    out = tmp_path_factory.mktemp("tiny_run")
    result = train(tiny_config(epochs=5), boxes_json, images, out, progress=False)
    return result.model_path
