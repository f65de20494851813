import numpy as np
from scipy import ndimage

from dessam.data.anything import MIN_VISIBLE_AREA, instance_boxes, make_anything_scene


def test_scene_shapes_and_types():
    image, labels = make_anything_scene(np.random.default_rng(1), size=96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert labels.shape == (96, 96) and labels.dtype == np.uint16
    assert labels.max() >= 1


def test_every_label_is_one_connected_visible_piece():
    for seed in range(4):
        _, labels = make_anything_scene(np.random.default_rng(seed), size=128)
        ids = np.unique(labels[labels > 0])
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive ids
        for label in ids:
            _, count = ndimage.label(labels == label)
            assert count == 1
            assert (labels == label).sum() >= MIN_VISIBLE_AREA


def test_seeded_determinism_and_variety():
    a = make_anything_scene(np.random.default_rng(7), size=64)
    b = make_anything_scene(np.random.default_rng(7), size=64)
    c = make_anything_scene(np.random.default_rng(8), size=64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_instance_boxes_are_tight_pixel_edges():
    labels = np.zeros((20, 30), np.uint16)
    labels[2:5, 3:9] = 1
    labels[10:18, 20:21] = 3
    ids, boxes = instance_boxes(labels)
    assert ids.tolist() == [1, 3]
    assert boxes.tolist() == [[3, 2, 9, 5], [20, 10, 21, 18]]
