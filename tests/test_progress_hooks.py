"""The callbacks a viewer uses for progress and to stop: per window of prediction and of box masks,
per iteration of training. Without them everything runs as before."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scenes import make_nuclei_scene, tiled_field, tiny_config

from dessam.geometry.plan import WindowPlan
from dessam.inference.box_masks import box_masks
from dessam.inference.loading import load_model, load_teacher
from dessam.config.runtime import fast_settings
from dessam.training.train import train


class Stop(Exception):
    pass


def test_predict_reports_every_window_and_stops_when_the_callback_raises(trained_tiny):
    model = load_model(trained_tiny)
    image, _, _ = tiled_field(300)
    assert WindowPlan.for_image(image.shape, model.image_size, model.scale).tiled
    calls = []
    with_callback = model.predict(image, on_window=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert total == 16 and calls[-1] == (16, 16)  # 4 x 4 windows of 128 px overlapping by 64
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})
    np.testing.assert_array_equal(with_callback.labels, model.predict(image).labels)

    seen = []

    def stop(done, total):
        seen.append(done)
        raise Stop()

    ran = []
    encode = model.encode
    model.encode = lambda images, *args, **kwargs: ran.append(len(images)) or encode(images, *args, **kwargs)
    with pytest.raises(Stop):
        model.predict(image, on_window=stop)
    assert len(seen) == 1 and sum(ran) == seen[0] < total  # the windows after the first batch never ran


def test_predict_counts_an_image_predicted_whole_as_one_window(trained_tiny):
    calls = []
    load_model(trained_tiny).predict(make_nuclei_scene(np.random.default_rng(1))[0],
                                     on_window=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]


def test_box_masks_reports_the_windows_that_hold_boxes_and_stops_when_asked():
    teacher = load_teacher("default", settings=replace(fast_settings("cpu"), batch_size=1))  # a report per window
    image, _, boxes = tiled_field(600)
    calls = []
    reported = box_masks(teacher, image, boxes, use_token=False, on_window=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] > 1
    plain = box_masks(teacher, image, boxes, use_token=False)
    np.testing.assert_array_equal(reported.predicted_iou, plain.predicted_iou)
    assert all(np.array_equal(a, b) for a, b in zip(reported.instances.crops, plain.instances.crops))

    seen = []

    def stop(done, total):
        seen.append((done, total))
        raise Stop()

    with pytest.raises(Stop):
        box_masks(teacher, image, boxes, use_token=False, on_window=stop)
    assert len(seen) == 1 and seen[0][0] < seen[0][1]


def _weights(path):
    return torch.load(path, weights_only=True)


def test_training_reports_each_iteration_and_stops_early_then_resumes_exactly(box_dataset, tmp_path):
    boxes_json, _, images = box_dataset
    reference = train(tiny_config(epochs=2), boxes_json, images, tmp_path / "reference", progress=False)

    seen = []
    watched = train(tiny_config(epochs=2), boxes_json, images, tmp_path / "watched", progress=False,
                    on_iteration=lambda i, total, loss: seen.append((i, total, loss)) and False)
    assert [(i, total) for i, total, _ in seen] == [(i, 12) for i in range(1, 13)]
    assert all(np.isfinite(loss) for _, _, loss in seen) and not watched.stopped
    for key, value in _weights(reference.model_path)["state_dict"].items():
        assert torch.equal(value, _weights(watched.model_path)["state_dict"][key]), key

    stopped = train(tiny_config(epochs=2), boxes_json, images, tmp_path / "stopped", progress=False,
                    on_iteration=lambda i, total, loss: i == 4)
    assert stopped.stopped and stopped.iterations == 4
    assert _weights(stopped.model_path)["iteration"] == 4  # the model as trained so far, written whole
    resumed = train(tiny_config(epochs=2), boxes_json, images, tmp_path / "stopped", resume=True, progress=False)
    assert resumed.iterations == 12 and not resumed.stopped
    expected, got = _weights(reference.model_path)["state_dict"], _weights(resumed.model_path)["state_dict"]
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
