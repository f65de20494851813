"""Streamed whole-slide outputs: label pyramid, QuPath GeoJSON and measurement CSV, nucleus by nucleus."""

import csv
import gzip
import json
import re
import uuid

import numpy as np
import pytest
import tifffile
from shapely.geometry import shape
from skimage.draw import ellipse

from dessam.data.label_pyramid import LabelPyramidWriter
from dessam.data.nucleus import Nucleus
from dessam.data.pixel_size import tiff_pixel_size_um
from dessam.metrics.measurements import nucleus_measurements
from dessam.outputs.slide_writers import GeoJSONWriter, MeasurementsCSVWriter, measure_nucleus, nucleus_feature


def _label_map(height, width, n, seed=0, radius=(4, 14)):
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint32)
    for k in range(1, n + 1):
        rr, cc = ellipse(rng.integers(0, height), rng.integers(0, width), *rng.integers(*radius, 2), shape=labels.shape)
        labels[rr, cc] = k
    return labels


def _tiles(labels, tile):
    """The nuclei of each tile of a label map, as a tiled predictor would hand them over (ids global)."""
    for y in range(0, labels.shape[0], tile):
        for x in range(0, labels.shape[1], tile):
            crop = labels[y:y + tile, x:x + tile]
            for k in np.unique(crop[crop > 0]):
                rows, cols = np.nonzero(crop == k)
                box = (x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1)
                yield Nucleus(int(k), box, crop[rows.min():rows.max() + 1, cols.min():cols.max() + 1] == k)


def test_label_pyramid_level0_equals_the_map_fed_tile_by_tile(tmp_path):
    labels = _label_map(900, 1300, 300)
    labels[5, 7] = 70000  # ids past uint16
    path = tmp_path / "labels.ome.tif"
    with LabelPyramidWriter(path, 1300, 900, pixel_size_um=0.25, tile=256) as writer:
        pieces = list(_tiles(labels, 200))  # a nucleus cut by a tile edge comes in pieces
        for k in np.random.default_rng(1).permutation(len(pieces)):  # in any order
            writer.add(pieces[k])
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert tif.is_ome and series.dtype == np.uint32
        assert [level.shape for level in series.levels] == [(900, 1300), (225, 325), (57, 82)]
        np.testing.assert_array_equal(series.levels[0].asarray(), labels)
        np.testing.assert_array_equal(series.levels[1].asarray(), labels[::4, ::4])  # nearest: ids stay exact
        assert tiff_pixel_size_um(tif) == pytest.approx((0.25, 0.25))


def test_the_same_nuclei_write_the_same_label_file_byte_for_byte(tmp_path):
    """The OME-XML's UUID follows from the nuclei, so a re-run gives an identical file; other
    nuclei give another UUID."""
    labels = _label_map(300, 400, 40, seed=2)
    written = []
    for name, chosen in (("a", labels), ("b", labels), ("c", _label_map(300, 400, 40, seed=3))):
        path = tmp_path / f"{name}.ome.tif"
        with LabelPyramidWriter(path, 400, 300, pixel_size_um=0.5, tile=128) as writer:
            for nucleus in _tiles(chosen, 128):
                writer.add(nucleus)
        written.append(path.read_bytes())
    assert written[0] == written[1] and written[0] != written[2]
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as first, tifffile.TiffFile(tmp_path / "c.ome.tif") as other:
        uuids = [re.search(r'UUID="urn:uuid:([0-9a-f-]+)"', tif.ome_metadata).group(1) for tif in (first, other)]
    assert uuids[0] != uuids[1] and all(uuid.UUID(u).version == 5 for u in uuids)


def test_label_pyramid_clips_nuclei_at_the_slide_edge_and_later_ones_paint_over(tmp_path):
    path = tmp_path / "edge.ome.tif"
    with LabelPyramidWriter(path, 50, 40, tile=16) as writer:
        writer.add(Nucleus(1, (-5, -5, 10, 10), np.ones((15, 15), bool)))
        writer.add(Nucleus(2, (8, 8, 60, 45), np.ones((37, 52), bool)))
    out = tifffile.imread(path)
    assert out.shape == (40, 50)
    assert (out[:8, :8] == 1).all() and (out[8:, 8:] == 2).all() and out[12, 0] == 0 and out[9, 9] == 2


def test_label_pyramid_writes_nothing_after_an_error(tmp_path):
    path = tmp_path / "labels.ome.tif"
    with pytest.raises(RuntimeError):
        with LabelPyramidWriter(path, 100, 100) as writer:
            writer.add(Nucleus(1, (0, 0, 2, 2), np.ones((2, 2), bool)))
            raise RuntimeError("prediction failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["nuclei.geojson", "nuclei.geojson.gz"])
def test_streamed_geojson_is_valid_polygons_in_level0_coordinates(tmp_path, name):
    labels = _label_map(300, 400, 40, seed=2).astype(np.uint16)
    labels[100:140, 100:140] = 41
    labels[115:125, 115:125] = 0  # a nucleus with a hole
    nuclei = Nucleus.from_labels(labels, x0=120_000, y0=80_000)
    path = tmp_path / name
    with GeoJSONWriter(path) as writer:
        for nucleus in nuclei:
            writer.add(nucleus)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        doc = json.load(handle)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(nuclei) == writer.count
    for feature, nucleus in zip(doc["features"], nuclei):
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and geometry.area == nucleus.mask.sum()
        x1, y1, x2, y2 = geometry.bounds
        assert (x1, y1, x2, y2) == nucleus.box  # outlines on pixel edges, level-0 coordinates
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["measurements"]["id"] == nucleus.id
    holed = shape(doc["features"][-1]["geometry"])
    assert len(holed.interiors) == 1 and holed.area == 40 * 40 - 10 * 10


def test_measurements_match_whole_image_measurements(tmp_path):
    labels = _label_map(200, 260, 12, seed=3).astype(np.uint16)
    image = np.random.default_rng(4).integers(0, 256, labels.shape + (3,), dtype=np.uint8)
    expected = {row["id"]: row for row in nucleus_measurements(labels, image, np.full(12, 0.9), pixel_size_um=0.5)}
    x0, y0 = 3000, 5000  # the field's place in a slide
    path = tmp_path / "nuclei.csv"
    with MeasurementsCSVWriter(path) as writer:
        for nucleus in Nucleus.from_labels(labels, x0, y0):
            nucleus.score = 0.9
            (x1, y1, x2, y2) = nucleus.box
            nucleus.measurements = measure_nucleus(nucleus, image[y1 - y0:y2 - y0, x1 - x0:x2 - x0], pixel_size_um=0.5)
            writer.add(nucleus)
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    ids = [int(k) for k in np.unique(labels[labels > 0])]
    assert len(rows) == len(ids)
    for row, label in zip(rows, ids):
        want = expected[label]
        assert float(row["centroid_x_um"]) == pytest.approx(want["centroid_x_um"] + x0 * 0.5, abs=1e-3)
        assert float(row["centroid_y_um"]) == pytest.approx(want["centroid_y_um"] + y0 * 0.5, abs=1e-3)
        for key in ("area_um2", "perimeter_um", "eccentricity", "solidity", "mean_intensity_green", "score"):
            assert float(row[key]) == pytest.approx(want[key], abs=1e-3)


def test_an_empty_mask_has_no_feature_and_nan_is_not_written(tmp_path):
    assert nucleus_feature(Nucleus(3, (0, 0, 2, 2), np.zeros((2, 2), bool))) is None
    path = tmp_path / "one.geojson"
    with GeoJSONWriter(path) as writer:
        writer.add(Nucleus(3, (0, 0, 2, 2), np.zeros((2, 2), bool)))
        writer.add(Nucleus(4, (0, 0, 2, 2), np.ones((2, 2), bool), measurements={"solidity": float("nan"), "x": 1}))
    feature = json.loads(path.read_text())["features"][0]
    assert feature["properties"]["measurements"] == {"id": 4, "score": 1.0, "x": 1}
