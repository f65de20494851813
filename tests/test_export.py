import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from dessam.errors import DessamError
from dessam.geometry.outlines import labels_to_geojson
from dessam.inference.instances import Instances, labels_to_masks
from dessam.metrics.measurements import nucleus_measurements
from dessam.outputs.writers import (instances_to_coco_results, overlay_image, summary_row, write_geojson, write_json,
                                    write_label_tiff, write_measurements_csv, write_overlay_png, write_summary_csv,
                                    write_summary_markdown)

shapely = pytest.importorskip("shapely")
from shapely.geometry import shape  # noqa: E402


def _awkward_labels():
    """Nuclei with holes, diagonal pixel contacts, split pieces and edge contact."""
    rng = np.random.default_rng(1)
    labels = np.zeros((64, 72), dtype=np.uint16)
    yy, xx = np.mgrid[:64, :72]
    labels[(yy - 16) ** 2 + (xx - 16) ** 2 < 100] = 1  # disk
    labels[(yy - 16) ** 2 + (xx - 16) ** 2 < 9] = 0  # ... with a hole
    labels[12, 15] = 0  # a hole touching that hole at a corner only
    labels[13, 14] = 0
    labels[0:8, 40:50] = 2  # touches the image border
    labels[3, 43] = 0  # one-pixel hole
    labels[4, 44] = 0  # diagonal to it
    labels[6, 48] = 0  # a hole touching the outside at a corner ...
    labels[7, 49] = 0  # ... through this notch
    labels[30:40, 30:34] = 3  # two pieces of one label ...
    labels[40:45, 34:40] = 3  # ... meeting at a corner
    labels[50:60, 5:15] = 4  # checkerboard-like blob: many saddle corners
    labels[50:60, 5:15][rng.random((10, 10)) < 0.35] = 0
    labels[20:30, 50:70] = 5
    labels[22:28, 55:65] = 6  # a nucleus inside another's hole
    labels[24:26, 58:62] = 0
    labels[63, 71] = 7  # single pixel in the corner
    return labels


def test_geojson_polygons_are_valid_closed_and_match_pixel_counts(tmp_path):
    labels = _awkward_labels()
    path = write_geojson(tmp_path / "nuclei.geojson", labels)
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    ids = [int(i) for i in np.unique(labels) if i]
    assert len(collection["features"]) == len(ids)
    tiff = write_label_tiff(tmp_path / "labels.tif", labels)
    counts = np.bincount(tifffile.imread(tiff).ravel())
    for feature, label in zip(collection["features"], ids):
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": "Nucleus"}
        assert props["measurements"]["id"] == label
        geometry = shape(feature["geometry"])
        assert geometry.is_valid, (label, shapely.validation.explain_validity(geometry))
        polygons = [geometry] if geometry.geom_type == "Polygon" else list(geometry.geoms)
        for polygon in polygons:
            for ring in [polygon.exterior, *polygon.interiors]:
                assert ring.is_closed and ring.coords[0] == ring.coords[-1]
        assert abs(geometry.area - counts[label]) <= 0.02 * counts[label]
    # The pieces of label 3 make a MultiPolygon; label 1 keeps its holes.
    geometries = {f["properties"]["measurements"]["id"]: f["geometry"] for f in collection["features"]}
    assert geometries[3]["type"] == "MultiPolygon"
    assert len(geometries[1]["coordinates"]) > 1


def test_geojson_outline_lies_in_image_pixel_coordinates():
    labels = np.zeros((10, 12), dtype=np.uint16)
    labels[2:5, 7:11] = 9  # rows 2..4, columns 7..10
    (feature,) = labels_to_geojson(labels)["features"]
    xs, ys = zip(*feature["geometry"]["coordinates"][0])
    assert (min(xs), max(xs), min(ys), max(ys)) == (7, 11, 2, 5)
    assert len(xs) == 5  # four corners and the closing point


def test_geojson_carries_measurements_and_score():
    labels = np.zeros((20, 20), dtype=np.uint16)
    labels[2:8, 2:8] = 1
    labels[10:18, 10:18] = 2
    rows = nucleus_measurements(labels, np.full((20, 20), 100, np.uint8), scores=[0.9, 0.7])
    features = labels_to_geojson(labels, rows)["features"]
    assert [f["properties"]["score"] for f in features] == [0.9, 0.7]
    assert features[1]["properties"]["measurements"]["area_px2"] == 64


@pytest.mark.parametrize("top", [300, 70000])
def test_label_tiff_round_trip(tmp_path, top):
    labels = np.zeros((16, 16), dtype=np.int64)
    labels[1:4, 1:4] = 1
    labels[5:9, 5:9] = top
    labels[10:15, 2:7] = top - 1
    path = write_label_tiff(tmp_path / "labels.tif", labels)
    back = tifffile.imread(path)
    assert back.dtype == (np.uint16 if top <= 65535 else np.uint32)
    assert np.array_equal(back, labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]  # no temporary left


def test_label_tiff_rejects_bad_input_without_writing(tmp_path):
    with pytest.raises(DessamError):
        write_label_tiff(tmp_path / "bad.tif", np.full((4, 4), -1))
    with pytest.raises(DessamError):
        write_label_tiff(tmp_path / "bad.tif", np.zeros((4, 4, 2), np.uint16))
    assert list(tmp_path.iterdir()) == []


def test_coco_results_decode_back_to_the_masks():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    masks = rng.random((4, 23, 31)) < 0.3
    masks[3] = False
    masks[3, 5:9, 10:20] = True
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    boxes = np.array([[c.min(), r.min(), c.max() + 1, r.max() + 1] for r, c in (np.nonzero(m) for m in masks)])
    results = instances_to_coco_results(5, Instances.from_masks(boxes, scores, masks), category_id=2)
    assert json.loads(json.dumps(results)) == results  # plain JSON types
    for result, mask, score in zip(results, masks, scores):
        assert result["image_id"] == 5 and result["category_id"] == 2
        assert isinstance(result["segmentation"]["counts"], str)
        rle = dict(result["segmentation"], counts=result["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)
        assert result["score"] == pytest.approx(float(score))
    assert results[3]["bbox"] == [10, 5, 10, 4]
    assert instances_to_coco_results(1, Instances.empty((4, 4))) == []


def _two_nuclei():
    labels = np.zeros((30, 40), dtype=np.uint16)
    labels[5:15, 5:15] = 1  # 10 x 10 square
    yy, xx = np.mgrid[:30, :40]
    labels[((yy - 20) / 4) ** 2 + ((xx - 28) / 8) ** 2 <= 1] = 2  # an ellipse
    return labels


def test_measurements_in_pixels_for_rgb_images():
    labels = _two_nuclei()
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    image[..., 0] = 200
    image[..., 2][labels == 2] = 50
    rows = nucleus_measurements(labels, image, scores=[0.95, 0.6])
    assert [r["id"] for r in rows] == [1, 2]
    square, ellipse = rows
    assert set(square) == {
        "id", "centroid_x_px", "centroid_y_px", "area_px2", "perimeter_px", "equivalent_diameter_px",
        "eccentricity", "solidity", "mean_intensity_red", "mean_intensity_green", "mean_intensity_blue", "score",
    }
    assert square["area_px2"] == 100
    assert (square["centroid_x_px"], square["centroid_y_px"]) == (10.0, 10.0)
    assert square["equivalent_diameter_px"] == pytest.approx(2 * np.sqrt(100 / np.pi), abs=1e-3)
    assert square["eccentricity"] == pytest.approx(0, abs=1e-6) and square["solidity"] == 1
    assert square["mean_intensity_red"] == 200 and square["mean_intensity_blue"] == 0
    assert ellipse["mean_intensity_blue"] == 50
    assert 0.7 < ellipse["eccentricity"] < 0.95
    assert (square["score"], ellipse["score"]) == (0.95, 0.6)


def test_measurements_in_microns_for_16_bit_gray_images():
    labels = _two_nuclei()
    image = np.full((30, 40), 40000, dtype=np.uint16)
    pixels = nucleus_measurements(labels, image)
    microns = nucleus_measurements(labels, image, pixel_size_um=0.5)
    assert "score" not in microns[0] and "area_px2" not in microns[0]
    for px, um in zip(pixels, microns):
        assert um["area_um2"] == pytest.approx(px["area_px2"] * 0.25, abs=1e-3)
        assert um["perimeter_um"] == pytest.approx(px["perimeter_px"] * 0.5, abs=1e-3)
        assert um["equivalent_diameter_um"] == pytest.approx(px["equivalent_diameter_px"] * 0.5, abs=1e-3)
        assert um["centroid_x_um"] == pytest.approx(px["centroid_x_px"] * 0.5, abs=1e-3)
        assert um["mean_intensity"] == 40000
    assert nucleus_measurements(np.zeros((5, 5), np.uint16), np.zeros((5, 5))) == []


def test_measurements_reject_mismatched_image():
    with pytest.raises(DessamError):
        nucleus_measurements(np.zeros((10, 10), np.uint16), np.zeros((10, 12, 3), np.uint8))


def test_csv_and_summary_files(tmp_path):
    labels = _two_nuclei()
    rows = nucleus_measurements(labels, np.zeros((30, 40, 3), np.uint8), scores=[0.9, 0.7], pixel_size_um=0.25)
    with open(write_measurements_csv(tmp_path / "m.csv", rows), newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in read] == [1, 2]
    assert float(read[0]["area_um2"]) == pytest.approx(rows[0]["area_um2"])
    summary = [summary_row("a.png", rows), summary_row("b.png", [])]
    assert summary[0]["nuclei"] == 2
    assert summary[0]["mean_area_um2"] == pytest.approx((rows[0]["area_um2"] + rows[1]["area_um2"]) / 2, abs=1e-3)
    assert summary[0]["mean_score"] == pytest.approx(0.8)
    with open(write_summary_csv(tmp_path / "summary.csv", summary), newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [(r["image"], r["nuclei"]) for r in read] == [("a.png", "2"), ("b.png", "0")]
    text = write_summary_markdown(tmp_path / "summary.md", summary).read_text()
    assert "| a.png | 2 |" in text and "| b.png | 0 |" in text


def test_overlay_draws_prediction_and_ground_truth_outlines(tmp_path):
    image = np.full((30, 40, 3), 128, dtype=np.uint8)
    labels = np.zeros((30, 40), dtype=np.uint16)
    labels[5:15, 5:15] = 1
    gt = np.zeros_like(labels)
    gt[18:28, 20:35] = 4
    overlay = overlay_image(image, labels, gt)
    assert overlay.dtype == np.uint8 and overlay.shape == (30, 40, 3)
    assert tuple(overlay[5, 10]) == (255, 255, 0)  # prediction outline
    assert tuple(overlay[18, 25]) == (0, 255, 0)  # ground-truth outline
    assert tuple(overlay[10, 10]) == (128, 128, 128)  # interior untouched
    path = write_overlay_png(tmp_path / "overlay.png", np.full((30, 40), 3000, np.uint16), labels)
    png = np.asarray(Image.open(path))
    assert png.shape == (30, 40, 3) and tuple(png[5, 10]) == (255, 255, 0)


def test_write_json_handles_numpy_values(tmp_path):
    path = write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None}


def test_geojson_of_random_labels_round_trips_pixel_counts():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=(24, 24)).astype(np.uint16)
    masks, ids = labels_to_masks(labels)
    features = labels_to_geojson(labels)["features"]
    assert [f["properties"]["measurements"]["id"] for f in features] == ids.tolist()
    for feature, mask in zip(features, masks):
        geometry = shape(feature["geometry"])
        assert geometry.is_valid
        assert geometry.area == mask.sum()
