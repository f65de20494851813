"""The plugin's reader, writer and sample data, through a real napari viewer: the files it writes
are those `dessam predict` writes, and `dessam predict`'s files open as Shapes and Labels."""

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

pytest.importorskip("napari", reason="napari is not installed: pip install -e '.[napari]' (make install does)")

from scenes import label_boxes  # noqa: E402
from viewer_support import dock, run  # noqa: E402

from dessam.data.images import read_image  # noqa: E402
from dessam.data.synth import make_scene  # noqa: E402
from dessam.napari import sample  # noqa: E402
from dessam.napari.layers import shape_boxes  # noqa: E402
from dessam.napari.model_choice import MODEL_FILE, ModelSpec, load  # noqa: E402
from dessam.napari.segment import SegmentWidget  # noqa: E402
from dessam.outputs.files import predict_files  # noqa: E402


@pytest.fixture(scope="module")
def predicted(finding_model, box_dataset, tmp_path_factory):
    """`dessam predict`'s files for one scene (by the model on the engine the widgets load it on)."""
    _, _, images = box_dataset
    out = tmp_path_factory.mktemp("predicted")
    predict_files(load(ModelSpec("model", str(finding_model))), [str(images / "scene_001.png")], out, progress=False)
    return images / "scene_001.png", out


def test_saving_segmented_nuclei_writes_what_dessam_predict_writes(viewer, qtbot, predicted, finding_model, tmp_path):
    image_path, out = predicted
    viewer.add_image(read_image(image_path), name="scene_001")
    widget = dock(viewer, SegmentWidget(viewer))
    widget.model.source.value, widget.model.file.value = MODEL_FILE, finding_model
    run(qtbot, widget)
    layer = viewer.layers["scene_001 nuclei"]
    written = layer.save(str(tmp_path / "scene_001.tif"), plugin="dessam")

    assert sorted(written) == sorted(str(tmp_path / name) for name in
                                     ("scene_001_labels.tif", "scene_001.geojson", "scene_001_nuclei.csv"))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "scene_001_labels.tif"),
                                  tifffile.imread(out / "scene_001_labels.tif"))
    assert (tmp_path / "scene_001_nuclei.csv").read_text() == (out / "scene_001_nuclei.csv").read_text()
    assert json.loads((tmp_path / "scene_001.geojson").read_text()) == json.loads((out / "scene_001.geojson").read_text())
    assert len(list(tmp_path.iterdir())) == 3


def test_a_corrected_labels_layer_is_saved_as_it_is_now(viewer, tmp_path):
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:20], labels[25:35, 30:45] = 1, 2
    layer = viewer.add_labels(labels, name="drawn", features={"index": [1], "id": [1], "score": [0.9]})
    layer.data[25:30, 30:35] = 3   # a nucleus painted in by hand, no score
    layer.save(str(tmp_path / "drawn_labels.tif"), plugin="dessam")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "drawn_labels.tif"), layer.data)
    rows = (tmp_path / "drawn_nuclei.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["id", "centroid_x_px"] and "mean_intensity" not in rows[0]  # no image known
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2", "3"]
    assert rows[1].endswith(",0.9") and rows[3].endswith(",nan")
    features = json.loads((tmp_path / "drawn.geojson").read_text())["features"]
    assert [f["properties"]["measurements"]["area_px2"] for f in features] == [150.0, 125.0, 25.0]


def test_dessam_predicts_files_open_as_shapes_and_labels(viewer, predicted):
    _, out = predicted
    (shapes,) = viewer.open(out / "scene_001.geojson", plugin=None)  # as File > Open: only dessam reads GeoJSON
    labels = tifffile.imread(out / "scene_001_labels.tif")
    ids = np.unique(labels)[1:]
    assert shapes.name == "scene_001" and len(shapes.data) == len(ids) and set(shapes.shape_type) == {"polygon"}
    np.testing.assert_allclose(shapes.features["area_px2"], [(labels == k).sum() for k in ids])
    for vertices, k in zip(shapes.data, ids):  # outlines on the nuclei's pixel edges (of its largest piece)
        rows, cols = np.nonzero(labels == k)
        extent = [rows.min() - 0.5, cols.min() - 0.5, rows.max() + 0.5, cols.max() + 0.5]
        outline = [*vertices.min(axis=0), *vertices.max(axis=0)]
        if ndimage.label(labels == k)[1] == 1:
            assert outline == extent
        else:
            assert np.all(np.array(extent[:2]) <= outline[:2]) and np.all(np.array(outline[2:]) <= extent[2:])

    (layer,) = viewer.open(out / "scene_001_labels.tif", plugin="dessam")
    assert type(layer).__name__ == "Labels" and layer.name == "scene_001 nuclei"
    np.testing.assert_array_equal(layer.data, labels)
    assert list(layer.features["id"]) == list(ids) and "score" in layer.features


def test_rectangles_from_qupath_open_as_boxes_to_train_from(viewer, tmp_path):
    squares = [[10, 20, 18, 30], [40, 5, 52, 15]]
    features = [{"type": "Feature", "properties": {"objectType": "annotation"},
                 "geometry": {"type": "Polygon", "coordinates": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]}}
                for x1, y1, x2, y2 in squares]
    (tmp_path / "field.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (layer,) = viewer.open(tmp_path / "field.geojson", plugin="dessam")
    assert list(layer.shape_type) == ["rectangle", "rectangle"]
    np.testing.assert_array_equal(shape_boxes(layer, (64, 64)).boxes, squares)


def test_sample_is_a_synthetic_pap_field_with_a_box_per_nucleus(viewer):
    image_layer, boxes_layer = viewer.open_sample("dessam", "pap_field")
    image, truth = make_scene(np.random.default_rng(sample.SEED), "cluster", size=(sample.SIZE, sample.SIZE))
    np.testing.assert_array_equal(image_layer.data, image)
    assert image_layer.rgb and boxes_layer.name == f"{image_layer.name} boxes"
    np.testing.assert_array_equal(shape_boxes(boxes_layer, image.shape).boxes, label_boxes(truth))
