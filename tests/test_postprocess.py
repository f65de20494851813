import numpy as np
import pytest

from scipy import ndimage

from dessam.config import Postprocess
from dessam.inference.instances import clean_masks, labels_to_masks, masks_to_labels, score_order


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


def test_a_border_hole_under_min_size_is_filled_as_the_authors_do():
    mask = np.zeros((30, 30), dtype=bool)
    mask[0:12, 3:15] = True
    mask[0:4, 6:9] = False  # a notch open to the top border, 12 px: a background piece of its own
    out, _, _ = clean_masks(mask[None], [1.0])
    assert out[0, 0:4, 6:9].all()
    kept, _, _ = clean_masks(mask[None], [1.0], settings=Postprocess(fill_border_holes=False, connectivity=4))
    assert not kept[0, 0:4, 6:9].any()


def test_holes_and_islands_are_8_connected_by_default():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:25, 5:25] = True
    mask[8:12, 8:12] = False  # a 16 px hole ...
    mask[12, 12] = False  # ... and a 1 px hole touching it at one corner only
    mask[30, 30] = mask[31, 31] = True  # two 1 px islands, diagonal neighbours
    eight, _, _ = clean_masks(mask[None], [1.0], min_size=17)
    assert not eight[0, 8:12, 8:12].any() and not eight[0, 12, 12]  # one hole of 17 px: kept
    four, _, _ = clean_masks(mask[None], [1.0], settings=Postprocess(min_size=17, connectivity=4))
    assert four[0, 8:13, 8:13].all()  # holes of 16 and 1 px: filled
    eight, _, _ = clean_masks(mask[None], [1.0], min_size=2)
    assert eight[0, 30, 30] and eight[0, 31, 31]  # one island of 2 px
    four, _, _ = clean_masks(mask[None], [1.0], settings=Postprocess(min_size=2, connectivity=4))
    assert not four[0, 30, 30] and not four[0, 31, 31]  # two islands of 1 px


def test_when_every_island_is_small_the_largest_is_kept():
    mask = np.zeros((40, 40), dtype=bool)
    mask[2:8, 2:8] = True  # 36 px
    mask[20:25, 20:25] = True  # 25 px
    out, _, keep = clean_masks(mask[None], [1.0], min_size=70)
    assert keep.tolist() == [0]
    assert out[0].sum() == 36 and out[0, 2:8, 2:8].all()
    dropped, _, keep = clean_masks(mask[None], [1.0], settings=Postprocess(keep_largest_island=False))
    assert keep.tolist() == [] and dropped.shape == (0, 40, 40)


def test_the_outside_background_is_never_a_hole_even_when_the_crop_holds_little_of_it():
    mask = np.zeros((12, 12), dtype=bool)
    mask[1:11, 1:11] = True  # the background outside is only the 44 px frame: under 70 px
    out, _, _ = clean_masks(mask[None], [1.0], min_size=70)
    assert out[0].all()  # the authors fill it: on the whole image it is one piece of 44 px
    wide = np.zeros((12, 200), dtype=bool)
    wide[1:11, 1:11] = True
    out, _, _ = clean_masks(wide[None], [1.0], min_size=70)
    assert out[0].sum() == 100


def _authors_reference(mask, min_size):
    """SAM's remove_small_regions on the whole image, as the authors call it (holes, then islands)."""
    structure = np.ones((3, 3), dtype=bool)
    holes, _ = ndimage.label(~mask, structure)
    sizes = np.bincount(holes.ravel())
    small = [i for i in range(1, len(sizes)) if sizes[i] < min_size]
    mask = mask | np.isin(holes, small)
    islands, count = ndimage.label(mask, structure)
    sizes = np.bincount(islands.ravel())
    keep = [i for i in range(1, count + 1) if sizes[i] >= min_size]
    if not keep and count:
        keep = [int(np.argmax(sizes[1:])) + 1]
    return np.isin(islands, keep)


def test_cleaning_on_crops_equals_the_authors_whole_image_cleaning():
    rng = np.random.default_rng(0)
    for trial in range(60):
        shape = tuple(rng.integers(8, 40, 2))
        mask = ndimage.binary_opening(rng.random(shape) < rng.uniform(0.3, 0.8)) | (rng.random(shape) < 0.05)
        if rng.random() < 0.3:  # a mask spanning the whole width or height
            mask[:, rng.integers(0, shape[1])] = True
        min_size = int(rng.integers(2, 80))
        out, _, _ = clean_masks(mask[None], [1.0], min_size=min_size)
        expected = _authors_reference(mask, min_size)
        if not mask.any():
            assert out.shape[0] == 0
            continue
        assert np.array_equal(out[0], expected), (trial, shape, min_size)


def test_clean_masks_drops_masks_left_empty():
    shape = (30, 30)
    masks = np.stack([_square(shape, 0, 0, 5), _square(shape, 10, 10, 10), np.zeros(shape, bool)])
    out, scores, keep = clean_masks(masks, np.array([0.9, 0.8, 0.7]))
    assert keep.tolist() == [0, 1]  # the 25 px square is small, but it is all the mask has
    out, scores, keep = clean_masks(masks, np.array([0.9, 0.8, 0.7]), settings=Postprocess(keep_largest_island=False))
    assert keep.tolist() == [1]
    assert out.shape == (1, 30, 30) and scores.tolist() == [0.8]


def test_masks_to_labels_paints_the_lower_score_over_the_higher_as_the_authors_do():
    shape = (30, 30)
    low = _square(shape, 0, 0, 15)
    high = _square(shape, 10, 10, 15)
    labels = masks_to_labels(np.stack([low, high]), np.array([0.6, 0.9]))
    assert (labels == 2).sum() == low.sum()  # id 2 = the lower score, painted last
    assert (labels == 1).sum() == high.sum() - (low & high).sum()
    assert labels[12, 12] == 2


def test_masks_to_labels_resolves_overlaps_by_score():
    shape = (30, 30)
    low = _square(shape, 0, 0, 15)
    high = _square(shape, 10, 10, 15)
    covered = _square(shape, 12, 12, 5)  # inside `high`, lower score: disappears
    labels = masks_to_labels(np.stack([low, high, covered]), np.array([0.6, 0.9, 0.7]), "higher-score")
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
    labels = masks_to_labels(masks, scores, "higher-score")
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
