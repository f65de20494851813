"""The Segment widget in a real napari viewer: labels and the CSV's columns, Cancel, bad inputs."""

import csv

import dask.array as da
import numpy as np
import pytest

pytest.importorskip("napari", reason="napari is not installed: pip install -e '.[napari]' (make install does)")

from scenes import tiled_field  # noqa: E402
from viewer_support import dock, run, stop_at_first_progress  # noqa: E402

from dessam.data.images import read_image  # noqa: E402
from dessam.geometry.plan import WindowPlan  # noqa: E402
from dessam.inference.loading import load_model  # noqa: E402
from dessam.models.bundled import BUNDLED_MODEL_FILES  # noqa: E402
from dessam.napari.model_choice import MODEL_FILE, ModelSpec, load  # noqa: E402
from dessam.napari.segment import SegmentWidget  # noqa: E402
from dessam.outputs.files import predict_files  # noqa: E402


def _widget(viewer, model_path=None):
    widget = dock(viewer, SegmentWidget(viewer))
    widget.model.source.value = MODEL_FILE
    if model_path is not None:
        widget.model.file.value = model_path
    return widget


def test_segment_adds_labels_whose_features_hold_what_predicts_csv_holds(viewer, qtbot, finding_model, box_dataset,
                                                                          tmp_path):
    _, _, images = box_dataset
    path = images / "scene_000.png"
    image = read_image(path)
    viewer.add_image(image, name="field")
    widget = _widget(viewer, finding_model)
    status = run(qtbot, widget)

    layer = viewer.layers["field nuclei"]
    model = load(ModelSpec("model", str(finding_model)))  # the widget's own model, on its engine
    expected = model.predict(image)
    assert len(expected) >= 5, "the test model finds the scene's nuclei"
    np.testing.assert_array_equal(layer.data, expected.labels)
    ids = np.unique(expected.labels)[1:]
    assert status.startswith(f"{len(ids)} nuclei found in ") and status.endswith("s: layer 'field nuclei'")
    assert widget.progress.value == widget.progress.max

    predict_files(model, [str(path)], tmp_path / "out", formats=("csv",), progress=False)
    with open(tmp_path / "out" / "scene_000_nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = layer.features
    assert list(features["index"]) == list(features["id"]) == [int(row["id"]) for row in rows] == list(ids)
    for column in rows[0]:
        np.testing.assert_allclose(features[column].to_numpy(float), [float(row[column]) for row in rows])
    for k, label in enumerate(ids):
        rr, cc = np.nonzero(layer.data == label)
        assert features["area_px2"][k] == len(rr)
        assert features["centroid_x_px"][k] == pytest.approx(cc.mean() + 0.5, abs=1e-3)
        box = features[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy()[k]
        np.testing.assert_allclose(box, expected.boxes[label - 1], atol=0.01)
        assert features["score"][k] == pytest.approx(expected.scores[label - 1], abs=1e-4)

    run(qtbot, widget)  # segmenting again replaces the layer's contents, adds no layer
    assert [layer.name for layer in viewer.layers] == ["field", "field nuclei"]


def test_cancel_stops_a_large_image_before_its_last_window(viewer, qtbot, finding_model):
    image, _, _ = tiled_field(1024)
    viewer.add_image(image, name="large")
    model = load_model(finding_model)
    windows = len(WindowPlan.for_image(image.shape, model.image_size, model.scale).windows)
    assert windows == 9                                  # 3 x 3 windows of the cpu preset's 512 px
    widget = _widget(viewer, finding_model)
    shown = stop_at_first_progress(widget)
    status = run(qtbot, widget)
    assert status == widget.stopped_message
    assert shown and shown[-1][0] < shown[-1][1] == windows   # not all ran
    assert [layer.name for layer in viewer.layers] == ["large"]
    assert widget.run_button.enabled and not widget.stop_button.enabled


def test_bad_inputs_give_their_message_and_add_nothing(viewer, qtbot, tmp_path):
    widget = _widget(viewer)
    assert run(qtbot, widget).startswith("no image:")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="field")
    assert run(qtbot, widget).startswith("no model file chosen")
    widget.model.file.value = tmp_path / "missing.pt"
    assert "model file not found" in run(qtbot, widget)
    (tmp_path / "notes.pt").write_text("not a model")
    widget.model.file.value = tmp_path / "notes.pt"
    status = run(qtbot, widget)
    assert str(tmp_path / "notes.pt") in status and "\n" not in status
    viewer.add_image(np.zeros((3, 64, 64), np.uint8), name="stack")
    widget.image.value = viewer.layers["stack"]
    assert "3-D image" in run(qtbot, widget)
    slide = [da.zeros((20_000 // f, 20_000 // f, 3), np.uint8, chunks=(1024, 1024, 3)) for f in (1, 16, 64)]
    viewer.add_image(slide, multiscale=True, rgb=True, contrast_limits=(0, 255), name="slide")  # never read whole
    widget.image.value = viewer.layers["slide"]
    assert "20000 x 20000 px is more than dessam holds in memory; predict whole slides with `dessam predict" in run(
        qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["field", "stack", "slide"]


@pytest.mark.skipif(not BUNDLED_MODEL_FILES["pretrained"].is_file(), reason="no bundled pretrained model")
def test_non_commercial_weights_are_named_before_and_after_segmenting(viewer, qtbot, box_dataset):
    _, _, images = box_dataset
    viewer.add_image(read_image(images / "scene_000.png"), name="field")
    widget = dock(viewer, SegmentWidget(viewer))
    assert widget.model.source.value == "bundled: pretrained"     # the default
    note = widget.model.licence.value
    assert "non-commercial (CC BY-NC-SA 4.0" in note and "bundled: pretrained-permissive" in note
    status = run(qtbot, widget)
    assert "nuclei found in" in status and "non-commercial (CC BY-NC-SA 4.0" in status
    widget.model.source.value = "bundled: pretrained-permissive"
    assert widget.model.licence.value == "" and not widget.model.licence.visible
