import json

import numpy as np
import pytest
from scipy import ndimage

from dessam.data.coco import label_map_to_annotations, load_coco, record_label_map
from dessam.data.images import read_image
from dessam.data.synth import MIN_NUCLEUS_PX, make_dataset, make_scene, touching_fraction

CASES = [(scene, shift, seed, False) for scene in ("patch", "cluster", "mixed") for shift in (False, True)
         for seed in (0, 1)]
CASES += [("mixed", False, 2, True), ("cluster", True, 3, True)]


@pytest.mark.parametrize("scene, shift, seed, hard", CASES)
def test_every_nucleus_is_one_region_inside_its_box(scene, shift, seed, hard):
    image, labels = make_scene(np.random.default_rng(seed), scene=scene, shift=shift, size=(192, 224),
                               hard_negatives=hard)
    assert image.shape == (192, 224, 3) and image.dtype == np.uint8
    assert labels.shape == (192, 224) and labels.dtype == np.uint16
    ids = np.unique(labels[labels > 0])
    assert ids.size > 0
    for ann in label_map_to_annotations(labels, image_id=1):
        assert ann["area"] >= MIN_NUCLEUS_PX
    for k in ids:
        mask = labels == k
        assert mask.sum() >= MIN_NUCLEUS_PX
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1
    # nuclei are stained: darker than the rest of the field
    gray = image.mean(axis=2)
    assert gray[labels > 0].mean() < gray[labels == 0].mean() - 40


def test_hard_negatives_add_dark_unlabelled_look_alikes():
    def dark_unlabelled(hard):
        pieces = 0
        for seed in range(6):
            image, labels = make_scene(np.random.default_rng(seed), scene="patch", hard_negatives=hard)
            dark = (image.min(axis=2) < 150) & (ndimage.binary_dilation(labels > 0, iterations=2) == 0)
            found, count = ndimage.label(dark)
            pieces += int(np.sum(np.bincount(found.ravel())[1:] >= MIN_NUCLEUS_PX))  # nucleus-sized
        return pieces

    assert dark_unlabelled(True) > 1.3 * dark_unlabelled(False)


@pytest.mark.parametrize("seed", range(6))
def test_cluster_scenes_have_touching_nuclei(seed):
    _, labels = make_scene(np.random.default_rng(seed), scene="cluster")
    assert touching_fraction(labels) >= 0.2


def test_touching_fraction_counts_neighbours():
    labels = np.zeros((10, 10), np.uint16)
    labels[1:3, 1:3] = 1
    labels[3:5, 3:5] = 2  # diagonal neighbour of 1
    labels[7:9, 7:9] = 3  # alone
    assert touching_fraction(labels) == pytest.approx(2 / 3)
    assert touching_fraction(np.zeros((4, 4), np.uint16)) == 0.0


def test_unknown_scene_is_refused():
    with pytest.raises(ValueError, match="scene"):
        make_scene(np.random.default_rng(0), scene="smear")


def test_dataset_files_are_deterministic_and_consistent(tmp_path):
    kwargs = dict(n_train=3, n_val=1, n_test=2, scene="mixed", seed=7, size=96)
    a, b = make_dataset(tmp_path / "a", **kwargs), make_dataset(tmp_path / "b", **kwargs)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert {str(p) for p in files_a} >= {"train.json", "train_full.json", "val.json", "test.json", "preview.png"}
    assert len([p for p in files_a if p.parts[0] == "images"]) == 6
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel

    boxes_only = json.loads((a / "train.json").read_text())
    assert boxes_only["annotations"] and all("segmentation" not in x for x in boxes_only["annotations"])
    full = load_coco(a / "train_full.json", a / "images")
    train = load_coco(a / "train.json", a / "images")
    for rec_full, rec_boxes in zip(full.images, train.images):
        np.testing.assert_array_equal(rec_full.boxes, rec_boxes.boxes)
        labels = record_label_map(rec_full)
        assert labels.max() == len(rec_full.boxes)
        assert read_image(rec_full.path).shape == (96, 96, 3)
    other = make_dataset(tmp_path / "c", **{**kwargs, "seed": 8})
    assert (other / "images" / "train_0000.png").read_bytes() != (a / "images" / "train_0000.png").read_bytes()
