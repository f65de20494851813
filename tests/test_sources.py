"""The mask sources of `dessam eval`: callables read from one encoding and one detection per window;
whether they are prompted with the detections or with given boxes is an argument, not a name."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scenes import make_nuclei_scene, tiny_config

from dessam.evaluation.sources import METHODS, box_as_mask, sam_masks
from dessam.geometry.scale import ModelScale
from dessam.inference.instances import Instances
from dessam.inference.predictor import STUDENT, Predictor, student_masks
from dessam.inference.windowed import MaskSource, image_instances, window_instances
from dessam.training.train import build_model


@pytest.fixture(scope="module")
def predictor():
    config = tiny_config().replace({"model.postprocess.mask_threshold": 0.0, "model.score_threshold": 0.0})
    model, identity = build_model(config, torch.device("cpu"))
    return Predictor(model, model.config, identity, "cpu", ModelScale("fit", 1.0))


def test_the_report_rows_and_their_sources():
    assert list(METHODS) == ["box-as-mask", "box-otsu", "sam", STUDENT, "box-as-mask-gt-boxes", "box-otsu-gt-boxes",
                             "teacher-gt-boxes", f"{STUDENT}-gt-boxes"]
    assert [name for name, source in METHODS.items() if source.given_boxes] == list(METHODS)[4:]
    assert METHODS["teacher-gt-boxes"].masks is sam_masks and METHODS["sam"].masks is sam_masks
    assert METHODS[STUDENT].masks is student_masks and METHODS["box-as-mask-gt-boxes"].masks is box_as_mask


def test_given_boxes_reach_their_source_and_come_back_in_their_order(predictor):
    image = np.concatenate([make_nuclei_scene(np.random.default_rng(k), 128)[0] for k in range(2)], axis=1)
    given = np.array([[200, 10, 230, 40], [10, 90, 40, 120], [120, 50, 150, 80]], np.float32)  # 128 x 256: windows
    found = image_instances(predictor, image, {"filled": MaskSource(box_as_mask, given_boxes=True)},
                            given_boxes=given)["filled"]
    want = Instances.from_boxes(given, np.ones(len(given)), image.shape[:2])
    np.testing.assert_array_equal(found.boxes, given)
    np.testing.assert_array_equal(found.origins, want.origins)
    assert all(np.array_equal(a, b) for a, b in zip(found.crops, want.crops))


def test_detected_boxes_are_the_detectors_and_given_boxes_are_the_given_ones(predictor):
    image = make_nuclei_scene(np.random.default_rng(3), 128)[0]
    seen = {}

    def recorder(name):
        def masks(predictor, encoded, images, boxes, scores, n_images=None):
            seen[name] = [np.asarray(b).copy() for b in boxes]
            return box_as_mask(predictor, encoded, images, boxes, scores, n_images)
        return masks

    given = np.array([[5, 5, 40, 40]], np.float32)
    postprocess = replace(predictor.postprocess, score_threshold=0.0)
    window_instances(predictor, [image], postprocess, {"detected": MaskSource(recorder("detected")),
                                                       "given": MaskSource(recorder("given"), given_boxes=True)},
                     given=[given])
    [(detected, _)] = predictor.detect(predictor.encode([image]), postprocess)
    np.testing.assert_array_equal(seen["detected"][0], detected)
    np.testing.assert_array_equal(seen["given"][0], given)
