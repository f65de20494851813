"""Scale as a property of a model: how training sees images, and how predict and eval bring every
image to the same scale; the box-otsu baseline."""

from dataclasses import replace

import numpy as np
import pytest
from scenes import make_nuclei_scene, tiny_config, write_box_dataset

from dessam.data.coco import ImageRecord
from dessam.errors import DessamError
from dessam.evaluation.box_otsu import box_otsu_instances
from dessam.evaluation.evaluate import METHODS, method_instances
from dessam.geometry.scale import ModelScale
from dessam.geometry.tiling import Window
from dessam.inference import windowed
from dessam.inference.loading import load_model
from dessam.training.train import train
from dessam.training.views import clip_to_window, training_views


def _record(height, width, boxes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(1, "x.png", None, height, width, boxes, list(range(len(boxes))), [None] * len(boxes))


def test_fit_scaling_is_one_view_resized_to_the_input():
    [view] = training_views(_record(300, 200, [[0, 0, 30, 60]]), 150, None)
    assert view.window is None and view.factor is None
    np.testing.assert_allclose(view.boxes, [[0, 0, 15, 30]])


def test_fixed_scaling_cuts_large_images_into_windows_at_native_resolution():
    boxes = [[10, 10, 30, 30], [120, 5, 140, 25], [240, 240, 260, 260]]
    views = training_views(_record(300, 300, boxes), 128, 1.0)
    assert len(views) > 1 and all(v.window is not None for v in views)
    assert all(v.window.y1 - v.window.y0 == 128 for v in views)
    seen = np.concatenate([v.boxes + [v.window.x0, v.window.y0] * 2 for v in views])
    for box in boxes:  # every nucleus lies whole in some window, at its own size
        assert any(np.allclose(s, box) for s in seen)
    small = training_views(_record(100, 80, boxes[:1]), 128, 1.0)
    assert len(small) == 1 and small[0].window is None  # padded, not stretched
    np.testing.assert_allclose(small[0].boxes, [boxes[0]])
    half = training_views(_record(300, 300, boxes), 128, 0.5)  # e.g. 0.25 um/px images for a 0.5 um/px model
    assert len(half) == 4  # 150 px: two windows a side
    assert {tuple(np.round(b, 2)) for v in half for b in v.boxes + [v.window.x0, v.window.y0] * 2} >= {(5.0, 5.0, 15.0, 15.0)}


def test_a_box_cut_by_a_window_is_kept_clipped_when_mostly_inside():
    window = Window(0, 0, 100, 100, (False, True, False, True))
    kept, index = clip_to_window(np.array([[90, 10, 110, 20], [95, 30, 130, 40], [10, 10, 20, 20]], np.float32), window)
    np.testing.assert_allclose(kept, [[90, 10, 100, 20], [10, 10, 20, 20]])  # half inside stays, a sliver goes
    assert index.tolist() == [0, 2]


def test_model_scale_factor_and_windows():
    fit = ModelScale("fit", 0.5)
    assert fit.factor() == 0.5 and fit.needs_windows((600, 600), 256) and not fit.needs_windows((512, 512), 256)
    fixed = ModelScale("fixed", 1.0, pixel_size_um=0.5)
    assert fixed.factor() == 1.0 and fixed.factor(0.25) == 0.5 and fixed.factor(1.0) == 2.0
    assert fixed.needs_windows((300, 300), 256) and not fixed.needs_windows((300, 300), 256, pixel_size_um=0.25)
    assert ModelScale.from_dict(None, 0.75) == ModelScale("fit", 0.75)
    with pytest.raises(DessamError, match="--pixel-size"):
        fixed.factor(-1.0)
    with pytest.raises(DessamError, match="input_scaling"):
        ModelScale("stretch")


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory):
    """A tiny model trained at a fixed scale (0.5 um/px images) on 192 px fields: 128 px windows."""
    root = tmp_path_factory.mktemp("fixed")
    boxes_json, images = write_box_dataset(root / "data", n_images=2, size=192)
    config = tiny_config(epochs=1)
    config = config.replace({"model.input_scaling": "fixed"})
    config = config.replace({"train.pixel_size_um": 0.5})
    result = train(config, boxes_json, images, root / "run", progress=False)
    return load_model(result.model_path)


def test_a_fixed_scale_model_records_its_scale(fixed_model):
    scale = fixed_model.scale
    assert scale.mode == "fixed" and scale.input_scale == 1.0 and scale.pixel_size_um == 0.5
    assert 10 < scale.nucleus_px < 30  # the scenes' nuclei are 12-24 px across


def test_predict_and_eval_bring_an_image_to_the_model_scale_the_same_way(fixed_model, monkeypatch):
    model = fixed_model
    model.config = model.config.replace({"model.postprocess.mask_threshold": 0.0})
    post = replace(model.postprocess, score_threshold=0.0, min_size=0, max_detections=8)
    rng = np.random.default_rng(1)
    image, labels = make_nuclei_scene(rng, 200)
    windows = []
    original = windowed.window_instances
    monkeypatch.setattr(windowed, "window_instances", lambda predictor, images, *a, **k: windows.extend(
        i.shape[:2] for i in images) or original(predictor, images, *a, **k))
    prediction = model.predict(image, post)
    assert windows and all(shape == (128, 128) for shape in windows)  # native scale, in windows
    windows.clear()
    gt = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in __import__("scipy").ndimage.find_objects(labels)],
                  np.float32)
    raw = method_instances(model, image, gt, METHODS, post)
    assert windows and all(shape == (128, 128) for shape in windows)
    windows.clear()
    small = model.predict(image[:100, :90], post)  # smaller than the input: padded, not stretched
    assert windows == [(100, 90)] and small.labels.shape == (100, 90)
    windows.clear()
    model.predict(image, post, pixel_size_um=1.0)  # twice as coarse as the model's: upsampled, 400 px
    assert len(windows) > 4
    student = raw["des-sam"].postprocessed(post)
    assert np.array_equal(np.sort(student.scores), np.sort(prediction.scores))
    for method in METHODS:
        if method.endswith("-gt-boxes"):
            assert len(raw[method]) == len(gt)  # one mask per given box, in its order
            np.testing.assert_allclose(raw[method].boxes, gt, atol=1e-3)
    assert raw["teacher-gt-boxes"].shape == image.shape[:2]


def test_box_otsu_finds_a_dark_nucleus_inside_its_box():
    image = np.full((60, 60, 3), 235, np.uint8)
    yy, xx = np.mgrid[:60, :60]
    disk = (yy - 30) ** 2 + (xx - 28) ** 2 <= 10 ** 2
    image[disk] = (70, 40, 130)  # haematoxylin-like purple
    image[29:32, 27:30] = (150, 120, 190)  # a pale spot inside: a hole to fill
    instances = box_otsu_instances(image, np.array([[14, 16, 44, 46]], np.float32), np.ones(1))
    mask = instances.mask(0)
    assert (mask & disk).sum() / (mask | disk).sum() > 0.95
    empty = box_otsu_instances(image, np.zeros((0, 4), np.float32), np.zeros(0))
    assert len(empty) == 0
