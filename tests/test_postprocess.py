import numpy as np
import pytest

from dessam.postprocess import clean_masks, labels_to_masks, masks_to_labels, score_order


def _square(shape, y0, x0, size):
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def test_clean_masks_drops_low_scores_and_keeps_index():
    shape = (40, 40)
    masks = np.stack([_square(shape, 2, 2, 12), _square(shape, 20, 20, 12), _square(shape, 5, 25, 12)])
    scores = np.array([0.9, 0.5, 0.6])
    out, out_scores, keep = clean_masks(masks, scores)
    assert keep.tolist() == [0, 2]
    assert out_scores.tolist() == [0.9, 0.6]
    assert np.array_equal(out, masks[[0, 2]])
    _, _, keep_all = clean_masks(masks, scores, score_threshold=None)
    assert keep_all.tolist() == [0, 1, 2]


def test_clean_masks_fills_small_holes_and_removes_small_islands():
    shape = (60, 60)
    mask = _square(shape, 5, 5, 30)  # 900 px
    mask[10:15, 10:15] = False  # small hole, 25 px
    mask[20:32, 20:32] = False  # large hole, 144 px
    mask[45:50, 45:50] = True  # small island, 25 px
    mask[45:55, 5:15] = True  # large island, 100 px
    out, _, keep = clean_masks(mask[None], np.array([1.0]), min_size=70)
    assert keep.tolist() == [0]
    cleaned = out[0]
    assert cleaned[10:15, 10:15].all()
    assert not cleaned[20:32, 20:32].any()
    assert not cleaned[45:50, 45:50].any()
    assert cleaned[45:55, 5:15].all()
    assert cleaned.sum() == 900 - 144 + 100


def test_clean_masks_steps_can_be_switched_off():
    shape = (40, 40)
    mask = _square(shape, 2, 2, 20)
    mask[8:10, 8:10] = False
    mask[30:33, 30:33] = True
    no_holes, _, _ = clean_masks(mask[None], [1.0], remove_holes=False)
    assert not no_holes[0, 8:10, 8:10].any() and not no_holes[0, 30:33, 30:33].any()
    no_islands, _, _ = clean_masks(mask[None], [1.0], remove_islands=False)
    assert no_islands[0, 8:10, 8:10].all() and no_islands[0, 30:33, 30:33].all()


def test_clean_masks_background_cut_off_by_the_image_border_is_not_a_hole():
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:12, 3:15] = True
    mask[0:4, 6:9] = False  # a notch open to the top border, 12 px
    out, _, _ = clean_masks(mask[None], [1.0])
    assert not out[0, 0:4, 6:9].any()


def test_clean_masks_drops_masks_left_empty():
    shape = (30, 30)
    masks = np.stack([_square(shape, 0, 0, 5), _square(shape, 10, 10, 10), np.zeros(shape, bool)])
    out, scores, keep = clean_masks(masks, np.array([0.9, 0.8, 0.7]))
    assert keep.tolist() == [1]
    assert out.shape == (1, 30, 30) and scores.tolist() == [0.8]


def test_masks_to_labels_resolves_overlaps_by_score():
    shape = (30, 30)
    low = _square(shape, 0, 0, 15)
    high = _square(shape, 10, 10, 15)
    covered = _square(shape, 12, 12, 5)  # inside `high`, lower score: disappears
    labels = masks_to_labels(np.stack([low, high, covered]), np.array([0.6, 0.9, 0.7]))
    assert labels.dtype == np.uint16
    assert set(np.unique(labels).tolist()) == {0, 1, 3}  # id 2 (the covered mask) is gone
    assert (labels == 1).sum() == high.sum()
    assert (labels == 3).sum() == low.sum() - (low & high).sum()
    assert np.array_equal(score_order([0.6, 0.9, 0.7]), [1, 2, 0])


def test_masks_to_labels_uses_uint32_past_65535_instances():
    count = 65536 + 4
    masks = np.zeros((count, 1, 3), dtype=bool)
    scores = np.linspace(1.0, 0.5, count)
    masks[0, 0, 0] = True  # the highest score: id 1
    masks[-1, 0, 2] = True  # the lowest score: id `count`, past the uint16 range
    labels = masks_to_labels(masks, scores)
    assert labels.dtype == np.uint32
    assert labels[0].tolist() == [1, 0, count]


def test_labels_to_masks_round_trip():
    rng = np.random.default_rng(0)
    labels = np.zeros((20, 20), dtype=np.uint16)
    labels[2:6, 2:6] = 3
    labels[10:15, 4:9] = 7
    labels[rng.integers(0, 20, 5), rng.integers(12, 20, 5)] = 11
    masks, ids = labels_to_masks(labels)
    assert ids.tolist() == [3, 7, 11]
    assert masks.dtype == bool and masks.shape == (3, 20, 20)
    rebuilt = np.zeros_like(labels)
    for mask, label in zip(masks, ids):
        rebuilt[mask] = label
    assert np.array_equal(rebuilt, labels)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        clean_masks(np.zeros((2, 5, 5), bool), [1.0])
    with pytest.raises(ValueError):
        masks_to_labels(np.zeros((5, 5), bool), [1.0])
