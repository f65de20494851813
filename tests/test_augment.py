"""Pre-training views: rescaled crops keep instance ids exact, colours change, shapes do not."""

import numpy as np
import pytest

from dessam.data.augment import (
    MAX_NUCLEUS_PX,
    MIN_NUCLEUS_PX,
    draw_scale,
    hed_jitter,
    median_nucleus_side,
    random_view,
    recolour,
    resampled_crop,
)


def _scene(seed=0, size=64):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint32)
    for k in range(6):
        y, x = rng.integers(0, size - 10, 2)
        labels[y:y + 8, x:x + 10] = k + 1
    return image, labels


def test_a_crop_at_scale_one_is_plain_slicing():
    image, labels = _scene()
    crop, crop_labels = resampled_crop(image, labels, 10, 7, 1.0, 32)
    np.testing.assert_array_equal(crop, image[10:42, 7:39])
    np.testing.assert_array_equal(crop_labels, labels[10:42, 7:39])


def test_labels_are_resampled_by_nearest_neighbour_and_padding_is_background():
    image, labels = _scene()
    crop, crop_labels = resampled_crop(image, labels, -8, 40, 2.0, 64)  # beyond the top and right edges
    assert set(np.unique(crop_labels)) <= set(np.unique(labels))
    assert (crop_labels[:16] == 0).all()  # rows above the image
    np.testing.assert_array_equal(crop_labels[16::2, ::2][:24, :12], labels[:24, 40:52])


def test_scale_keeps_the_median_nucleus_workable():
    rng = np.random.default_rng(0)
    for side in (2.0, 10.0, 30.0, 200.0):
        scales = [draw_scale(rng, side) for _ in range(50)]
        sizes = np.array(scales) * side
        assert sizes.min() >= min(MIN_NUCLEUS_PX, side * 2) - 1e-6
        assert sizes.max() <= max(MAX_NUCLEUS_PX, side * 0.5) + 1e-6
    assert median_nucleus_side(np.zeros((4, 4), np.uint32)) == 0.0


def test_random_views_have_the_asked_size_and_the_scenes_ids():
    image, labels = _scene()
    rng = np.random.default_rng(1)
    for _ in range(10):
        crop, crop_labels = random_view(rng, image, labels, 48)
        assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8 and crop_labels.shape == (48, 48)
        assert set(np.unique(crop_labels)) <= set(np.unique(labels))


def test_hed_jitter_without_change_keeps_the_image_and_recolour_inverts_dark_fields():
    rng = np.random.default_rng(0)
    image = rng.integers(30, 230, (16, 16, 3), dtype=np.uint8)
    same = hed_jitter(rng, image, sigma=0.0, bias=0.0)
    assert np.abs(same.astype(int) - image).max() <= 2
    dark = np.full((16, 16, 3), 10, np.uint8)
    dark[4:8, 4:8] = 220
    means = [recolour(np.random.default_rng(seed), dark).mean() for seed in range(40)]
    assert min(means) < 60 < max(means)  # inverted (bright background) some of the time
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(recolour(np.random.default_rng(3), image), image)


def test_a_reference_size_rescales_every_image_around_its_nuclei():
    rng = np.random.default_rng(0)
    for side in (8.0, 24.0, 60.0):
        sizes = np.array([draw_scale(rng, side, reference=24.0) for _ in range(200)]) * side
        assert sizes.min() >= 12 - 1e-6 and sizes.max() <= 48 + 1e-6
        assert sizes.min() < 16 and sizes.max() > 36  # the whole 0.5-2 x range is drawn
