"""The Masks from boxes widget in a real napari viewer: a mask per rectangle as `dessam label`
draws it, the least certain first in the features table, Cancel, bad inputs."""

import numpy as np
import pytest

pytest.importorskip("napari", reason="napari is not installed: pip install -e '.[napari]' (make install does)")

from scenes import label_boxes, make_nuclei_scene, tiled_field  # noqa: E402
from viewer_support import dock, run, stop_at_first_progress  # noqa: E402

from dessam.inference.loading import load_model, load_teacher  # noqa: E402
from dessam.inference.box_masks import box_masks  # noqa: E402
from dessam.labeling.label import mask_flags  # noqa: E402
from dessam.napari.layers import box_rectangles  # noqa: E402
from dessam.napari.masks_from_boxes import MasksFromBoxesWidget  # noqa: E402
from dessam.napari.model_choice import MODEL_FILE, TEACHER  # noqa: E402


def _open(viewer, image, boxes, name="field"):
    viewer.add_image(image, name=name)
    viewer.add_shapes(box_rectangles(boxes), shape_type="rectangle", name=f"{name} boxes")
    return dock(viewer, MasksFromBoxesWidget(viewer))


def test_teacher_masks_of_every_rectangle_with_scores_flags_and_review_order(viewer, qtbot):
    image, truth = make_nuclei_scene(np.random.default_rng(7), 256, count=14)
    boxes = label_boxes(truth)
    widget = _open(viewer, image, boxes)
    assert widget.model.source.value == TEACHER + "default"
    status = run(qtbot, widget)
    assert status.startswith(f"{len(boxes)} masks in 'field masks'")

    layer = viewer.layers["field masks"]
    expected = box_masks(load_teacher("default"), image, boxes, use_token=False)
    np.testing.assert_array_equal(layer.data, expected.instances.paint())
    features = layer.features
    assert list(features["id"]) == list(range(1, len(boxes) + 1))
    np.testing.assert_allclose(features[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy(), boxes, atol=1e-4)
    np.testing.assert_allclose(features["predicted_iou"], expected.predicted_iou, atol=1e-4)
    np.testing.assert_allclose(features["stability_score"], expected.stability, atol=1e-4)
    np.testing.assert_array_equal(features["area_px2"], expected.instances.areas())
    flags = [" ".join(mask_flags(c, o, b)[1]) for c, o, b in zip(expected.instances.crops, expected.instances.origins,
                                                                   boxes)]
    assert list(features["flags"]) == flags

    by_rank = features.sort_values("review_rank")
    assert sorted(by_rank["review_rank"]) == list(range(1, len(boxes) + 1))
    flagged = by_rank["flags"] != ""
    assert not (flagged.to_numpy()[1:] & ~flagged.to_numpy()[:-1]).any()  # flagged masks come first
    sure = by_rank.loc[~flagged, "certainty"].to_numpy()
    assert np.all(np.diff(sure) >= 0)  # then the least certain
    np.testing.assert_allclose(features["certainty"], np.minimum(features["predicted_iou"],
                                                                 features["stability_score"]), atol=1e-4)

    ious = []   # the masks are the nuclei's
    for k in range(len(boxes)):
        mine, true = layer.data == k + 1, truth == np.unique(truth)[k + 1]
        ious.append((mine & true).sum() / max((mine | true).sum(), 1))
    assert np.median(ious) > 0.5


def test_a_trained_models_token_draws_the_masks(viewer, qtbot, finding_model):
    image, truth = make_nuclei_scene(np.random.default_rng(8), 128)
    boxes = label_boxes(truth)
    widget = _open(viewer, image, boxes)
    widget.model.source.value = MODEL_FILE
    widget.model.file.value = finding_model
    run(qtbot, widget)
    expected = box_masks(load_model(finding_model), image, boxes, use_token=True)
    np.testing.assert_array_equal(viewer.layers["field masks"].data, expected.instances.paint())


def test_cancel_stops_before_the_last_window(viewer, qtbot):
    image, _, boxes = tiled_field(1024)
    widget = _open(viewer, image, boxes, "large")
    shown = stop_at_first_progress(widget)
    assert run(qtbot, widget) == widget.stopped_message
    assert shown and shown[-1][0] < shown[-1][1]
    assert [layer.name for layer in viewer.layers] == ["large", "large boxes"]


def test_bad_inputs_give_their_message_and_add_nothing(viewer, qtbot):
    image, truth = make_nuclei_scene(np.random.default_rng(9), 128)
    viewer.add_image(image, name="field")
    widget = dock(viewer, MasksFromBoxesWidget(viewer))
    assert run(qtbot, widget).startswith("no boxes:")
    outside = np.array([[300, 300, 320, 330]], np.float32)   # drawn past the 128 px image
    viewer.add_shapes(box_rectangles(np.concatenate([label_boxes(truth), outside])), shape_type="rectangle",
                      name="field boxes")
    widget.boxes.value = viewer.layers["field boxes"]
    status = run(qtbot, widget)
    assert status.startswith("shapes layer 'field boxes': rectangle 11 (x 300 to 320, y 300 to 330) lies outside "
                             "image 'field' (128 x 128 px)")
    viewer.add_shapes([np.array([[10, 10], [40, 60], [20, 70]])], shape_type="polygon", name="outlines")
    widget.boxes.value = viewer.layers["outlines"]
    assert "holds no rectangles" in run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["field", "field boxes", "outlines"]
