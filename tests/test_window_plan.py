"""`WindowPlan`: how an image or a slide region is brought to the model, the one walk over windows of
predict, label and whole slides."""

import numpy as np
import pytest

from dessam.geometry.inputs import resize_by
from dessam.geometry.plan import WindowPlan
from dessam.geometry.scale import ModelScale
from dessam.geometry.tiling import best_windows, tile_windows, whole_window


def test_an_image_of_about_the_training_size_is_fitted_whole():
    plan = WindowPlan.for_image((265, 200, 3), 256, ModelScale("fit", 1.0))  # within 5 % of the input
    assert plan.fitted and not plan.tiled and plan.factor == 1.0
    assert plan.shape == plan.source_hw == (265, 200) and plan.windows == (whole_window((265, 200)),)
    image = np.zeros((265, 200, 3), np.uint8)
    assert plan.working(image) is image  # the model's own resize fits it to the input
    assert WindowPlan.for_image((1000, 1000), 256, ModelScale("fit")).fitted  # a model that does not know its scale


def test_a_large_image_is_resampled_then_cut_into_windows():
    scale = ModelScale("fit", 0.5)
    plan = WindowPlan.for_image((801, 640), 128, scale, overlap=32)
    assert plan.tiled and not plan.fitted and plan.factor == 0.5
    image = np.random.default_rng(0).integers(0, 255, (801, 640, 3), np.uint8)
    working = plan.working(image)
    assert working.shape[:2] == plan.shape == (401, 320)  # resize_by's rounding
    np.testing.assert_array_equal(working, resize_by(image, 0.5))
    assert list(plan.windows) == tile_windows((401, 320), 128, 32)
    assert not WindowPlan.for_image((801, 640), 128, scale, tile=False).tiled  # forced: one window
    assert WindowPlan.for_image((100, 100), 128, ModelScale("fit", 1.0), tile=True).tiled  # forced: the merge runs


def test_fixed_scaling_follows_the_pixel_size_and_pads_small_images():
    scale = ModelScale("fixed", 1.0, pixel_size_um=0.5)
    small = WindowPlan.for_image((100, 90), 128, scale)
    assert not small.tiled and not small.fitted and small.shape == (100, 90) and small.factor == 1.0
    coarse = WindowPlan.for_image((200, 200), 128, scale, pixel_size_um=1.0)  # twice as coarse: upsampled
    assert coarse.factor == 2.0 and coarse.shape == (400, 400) and coarse.tiled and len(coarse.windows) > 4


def test_boxes_go_to_the_working_image_and_to_the_window_where_they_lie_farthest_from_inner_edges():
    plan = WindowPlan.for_image((400, 400), 128, ModelScale("fixed", 0.5), overlap=32)
    boxes = np.array([[10, 10, 30, 30], [150, 150, 170, 176]], np.float32)
    working = plan.to_working(boxes)
    np.testing.assert_allclose(working, boxes * 0.5)
    assert plan.owners(working).tolist() == best_windows(working, list(plan.windows)).tolist()
    assert plan.owners(working)[0] == 0


def test_batches_and_rows():
    plan = WindowPlan.for_region((0, 0, 600, 300), 1.0, 128, 32)
    assert [len(row) for row in plan.rows()] == [6, 6, 6]
    assert [i for row in plan.rows() for i in row] == list(range(len(plan.windows)))
    assert list(plan.batches(4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17]]
    assert list(plan.batches(2, [5, 7, 9])) == [[5, 7], [9]]


def test_a_slide_region_maps_its_windows_to_full_resolution_pixels():
    plan = WindowPlan.for_region((100, 200, 1001, 501), 0.5, 128, 16)
    assert plan.shape == (250, 500) and plan.tiled and plan.downsample == 2.0  # floor(501 x 0.5), floor(1001 x 0.5)
    first, last = plan.windows[0], plan.windows[-1]
    assert plan.source_rect(0) == (100.0, 200.0, (first.x1 - first.x0) * 2.0, (first.y1 - first.y0) * 2.0)
    x, y, w, h = plan.source_rect(len(plan.windows) - 1)
    assert (x + w, y + h) == (100 + 2.0 * last.x1, 200 + 2.0 * last.y1) == (1100.0, 700.0)


@pytest.mark.parametrize("shape", [(130, 129), (300, 70)])
def test_every_pixel_of_the_working_image_is_in_a_window(shape):
    plan = WindowPlan.for_image(shape, 64, ModelScale("fixed", 1.0), overlap=16)
    covered = np.zeros(plan.shape, bool)
    for batch in plan.batches(3):
        for index in batch:
            covered[plan.windows[index].rows, plan.windows[index].cols] = True
    assert covered.all()
