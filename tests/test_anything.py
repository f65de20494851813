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


def _touching_pairs(labels: np.ndarray) -> set:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs |= set(zip(a[m].tolist(), b[m].tolist()))
    return pairs


def test_crowds_pack_look_alike_objects_that_touch(monkeypatch):
    import dessam.data.anything as anything

    image = np.zeros((96, 96, 3), np.float32)
    labels = np.zeros((96, 96), np.int32)
    next_id = anything._crowd(np.random.default_rng(3), image, labels, 1)
    assert next_id > 3  # at least three members were painted
    assert len(_touching_pairs(labels)) >= 2  # members touch or overlap their neighbours
    monkeypatch.setattr(anything, "CROWD_CHANCE", 1.0)
    touching = [len(_touching_pairs(make_anything_scene(np.random.default_rng(s), 128)[1])) for s in range(3)]
    monkeypatch.setattr(anything, "CROWD_CHANCE", 0.0)
    sparse = make_anything_scene(np.random.default_rng(0), 128)[1]
    assert min(touching) > 0 and sparse.max() >= 1


def test_shared_style_gives_weak_boundaries():
    from dessam.data.anything import _paint, _random_style

    rng = np.random.default_rng(5)
    style = _random_style(rng)
    style.update(texture=0.0, shading=0.0, rim=None, alpha=1.0)
    image = np.zeros((20, 20, 3), np.float32)
    labels = np.zeros((20, 20), np.int32)
    square = np.ones((6, 6), bool)
    _paint(rng, image, labels, square, 2, 2, 1, style)
    _paint(rng, image, labels, square, 2, 8, 2, style)  # the next square, touching the first
    assert np.allclose(image[4, 4], image[4, 10]) and labels[4, 4] == 1 and labels[4, 10] == 2
