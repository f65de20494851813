"""`dessam convert --from geojson`: QuPath objects to COCO, round trips with dessam's own GeoJSON, slides to tiles."""

import json

import numpy as np
import pytest
import tifffile
from skimage.draw import ellipse

from dessam.commands import main
from dessam.data.coco import load_coco, record_label_map
from dessam.data.convert import convert
from dessam.data.images import read_image, write_png
from dessam.data.nucleus import Nucleus
from dessam.data.qupath_geojson import read_qupath_geojson
from dessam.data.synth_slide import make_synthetic_slide
from dessam.errors import DessamError
from dessam.outputs.slide_writers import GeoJSONWriter


def _labels(height=120, width=160, n=9, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint16)
    for k in range(1, n + 1):
        rr, cc = ellipse(rng.integers(10, height - 10), rng.integers(10, width - 10), *rng.integers(3, 9, 2),
                         rotation=rng.uniform(0, np.pi), shape=labels.shape)
        labels[rr, cc] = k
    return labels


def _renumbered(labels):
    """Ids 1..N in ascending order of the original ids (as a converted COCO file numbers them)."""
    ids = np.unique(labels[labels > 0])
    out = np.zeros_like(labels)
    for k, original in enumerate(ids, start=1):
        out[labels == original] = k
    return out


def _feature(geometry, object_type="annotation", name=None, **extra):
    properties = {"objectType": object_type}
    if name:
        properties["classification"] = {"name": name, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": properties, **extra}


def _square(x, y, size):
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}


@pytest.mark.parametrize("name", ["field.geojson", "field.geojson.gz", "field.png.geojson"])
def test_round_trip_of_dessams_geojson(tmp_path, name):
    labels = _labels()
    write_png(tmp_path / "images" / "field.png", np.full(labels.shape + (3,), 230, np.uint8))
    with GeoJSONWriter(tmp_path / "ann" / name) as writer:
        for nucleus in Nucleus.from_labels(labels):
            writer.add(nucleus)
    summary = convert("geojson", tmp_path / "ann", tmp_path / "images", tmp_path / "out.json")
    assert summary.annotations == summary.with_masks == labels.max()
    (record,) = load_coco(tmp_path / "out.json", tmp_path / "images").images
    np.testing.assert_array_equal(record_label_map(record), _renumbered(labels))


def test_qupath_objects_rectangles_polygons_cells_and_the_rest(tmp_path):
    write_png(tmp_path / "images" / "case.png", np.full((100, 100, 3), 230, np.uint8))
    nucleus = {"type": "Polygon", "coordinates": [[[60, 60], [70, 60], [70, 66], [66, 70], [60, 70], [60, 60]]]}
    features = [
        _feature(_square(10, 20, 8)),  # a rectangle drawn in QuPath: a box for training
        _feature(nucleus, "detection", "Tumor"),
        _feature({"type": "MultiPolygon", "coordinates": [[[[0, 0], [4, 0], [2, 3], [0, 0]]],
                                                           [[[90, 90], [96, 90], [93, 95], [90, 90]]]]}),
        _feature(_square(0, 0, 100), "cell", nucleusGeometry={  # a cell's nucleus
            "type": "Polygon", "coordinates": [[[40, 40], [45, 40], [45, 45], [42, 48], [40, 45], [40, 40]]]}),
        _feature({"type": "Point", "coordinates": [5, 5]}),
        _feature({"type": "LineString", "coordinates": [[5, 5], [9, 9]]}),
        _feature(_square(30, 30, 6), name="Ignore*"),
        _feature(_square(0, 0, 50), name="Region*"),
        _feature(_square(0, 0, 100), "tile"),
    ]
    (tmp_path / "case.geojson").write_text(json.dumps(features))  # a list of features, not a collection
    summary = convert("geojson", tmp_path / "case.geojson", tmp_path / "images", tmp_path / "out.json")
    assert (summary.annotations, summary.with_masks) == (4, 3)  # the rectangle is a box without a mask
    notes = "\n".join(summary.notes)
    for skipped in ("1 Point geometries", "1 LineString geometries", "1 Ignore* objects", "1 tile objects",
                    "1 Region* annotations are only used on slides"):
        assert skipped in notes
    doc = json.loads((tmp_path / "out.json").read_text())
    box, polygon, multi, cell = doc["annotations"]
    assert box["bbox"] == [10, 20, 8, 8] and "segmentation" not in box
    # the corner cut off from (70, 66) to (66, 70): 6 pixel centres beyond it, 4 on it (a bottom-right edge: out)
    assert polygon["area"] == 100 - 10 and polygon["bbox"] == [60, 60, 10, 10]
    assert multi["bbox"][:3] == [0, 0, 96] and multi["bbox"][3] > 90  # one mask of both parts
    assert cell["bbox"][:3] == [40, 40, 5] and cell["area"] > 25

    convert("geojson", tmp_path / "case.geojson", tmp_path / "images", tmp_path / "tumour.json", classes=["Tumor"])
    assert len(json.loads((tmp_path / "tumour.json").read_text())["annotations"]) == 1


def test_measurements_of_qupath_objects_are_read_in_both_of_its_layouts(tmp_path):
    features = [_feature(_square(x, 20, 8)) for x in (10, 40, 60)]
    features[0]["properties"]["measurements"] = {"Area": 64, "Name": "text", "Flag": True}   # QuPath 0.4 on
    features[1]["properties"]["measurements"] = [{"name": "Area", "value": 64.5}, {"name": "Score"}]  # earlier
    (tmp_path / "case.geojson").write_text(json.dumps(features))
    found = read_qupath_geojson(tmp_path / "case.geojson")
    assert [shape.measurements for shape in found.shapes] == [{"Area": 64.0}, {"Area": 64.5}, None]


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slide")
    path = folder / "slides" / "smear.svs"
    path.parent.mkdir()
    truth = []
    make_synthetic_slide(path, 2048, 1792, pixel_size_um=0.5, cell_fraction=0.06, seed=4, on_nucleus=truth.append)
    with GeoJSONWriter(folder / "smear.geojson") as writer:
        for nucleus in truth:
            writer.add(nucleus)
    return path, folder / "smear.geojson", truth


def test_slide_annotations_become_tiles_that_match_the_truth(slide, tmp_path):
    path, geojson, truth = slide
    assert main(["convert", "--from", "geojson", str(geojson), "--images", str(path.parent),
                 "--out", str(tmp_path / "test.json")]) == 0
    tiles = tmp_path / "test_tiles"
    dataset = load_coco(tmp_path / "test.json", tiles)
    truth_labels = tifffile.imread(path.with_name("smear_labels.ome.tif"))
    seen = set()
    for record in dataset.images:
        x, y = (int(part[1:]) for part in record.path.stem.split("_")[1:])
        assert (record.height, record.width) == (512, 512)
        window = truth_labels[y:y + 512, x:x + 512]
        labels = record_label_map(record)
        np.testing.assert_array_equal(labels > 0, window > 0)  # every nucleus, nothing else, in place
        seen.update(np.unique(window[window > 0]).tolist())
        assert read_image(record.path).shape == (512, 512, 3)
    assert seen == {n.id for n in truth}  # each nucleus is in some tile


def test_slide_tiles_resampled_to_another_pixel_size(slide, tmp_path):
    path, geojson, truth = slide
    summary = convert("geojson", geojson, path.parent, tmp_path / "coarse.json", pixel_size_um=1.0, tile_size=256)
    assert "at 1.0 um per pixel" in "\n".join(summary.notes)
    truth_labels = tifffile.imread(path.with_name("smear_labels.ome.tif")) > 0
    tile_area = window_area = 0
    for record in load_coco(tmp_path / "coarse.json", tmp_path / "coarse_tiles").images:
        x, y = (int(part[1:]) for part in record.path.stem.split("_")[1:])
        assert (record.height, record.width) == (256, 256)
        tile_area += int(record_label_map(record).astype(bool).sum())
        window_area += int(truth_labels[y:y + 512, x:x + 512].sum())  # the tile's 512 level-0 pixels a side
    assert tile_area == pytest.approx(window_area / 4, rel=0.1)  # pixels twice as large


def test_region_annotations_choose_the_tiles_and_hide_the_rest(slide, tmp_path):
    path, _, truth = slide
    inside = [n for n in truth if n.box[0] >= 300 and n.box[2] <= 1300 and n.box[1] >= 200 and n.box[3] <= 700]
    features = [_feature({"type": "Polygon", "coordinates": [[[300, 200], [1300, 200], [1300, 700], [300, 700],
                                                               [300, 200]]]}, name="Region*")]
    features += [_feature(_square(n.box[0], n.box[1], 4)) for n in truth]
    (tmp_path / "smear.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    summary = convert("geojson", tmp_path / "smear.geojson", path.parent, tmp_path / "train.json")
    assert summary.images == 2  # 1000 x 500 px region: two 512 px tiles across, one down
    assert summary.annotations >= len(inside)
    assert f"{len(truth) - summary.annotations} annotations outside every Region*" in "\n".join(summary.notes)
    image = read_image(tmp_path / "train_tiles" / "smear_x812_y200.png")
    assert (image[:, 1300 - 812:] == 255).all() and (image[500:] == 255).all()  # outside the region: glass


def test_errors_are_one_line_and_name_the_file(tmp_path, slide):
    write_png(tmp_path / "images" / "a.png", np.full((20, 20, 3), 200, np.uint8))
    (tmp_path / "b.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(DessamError, match="b.geojson: no image with stem 'b'"):
        convert("geojson", tmp_path / "b.geojson", tmp_path / "images", tmp_path / "out.json")
    (tmp_path / "a.geojson").write_text("{not json")
    with pytest.raises(DessamError, match="a.geojson: invalid JSON at line 1"):
        convert("geojson", tmp_path / "a.geojson", tmp_path / "images", tmp_path / "out.json")
    (tmp_path / "a.geojson").write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(DessamError, match="a.geojson: not GeoJSON features"):
        convert("geojson", tmp_path / "a.geojson", tmp_path / "images", tmp_path / "out.json")
    (tmp_path / "a.geojson").write_text(json.dumps([_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})]))
    with pytest.raises(DessamError, match="a.geojson feature 0: a polygon ring needs at least 3"):
        convert("geojson", tmp_path / "a.geojson", tmp_path / "images", tmp_path / "out.json")
    (tmp_path / "a.geojson").write_text(json.dumps([]))
    with pytest.raises(DessamError, match="resampling is for whole slides"):
        convert("geojson", tmp_path / "a.geojson", tmp_path / "images", tmp_path / "out.json", pixel_size_um=1.0)

    path, geojson, _ = slide
    mixed = tmp_path / "mixed"
    (mixed / "images").mkdir(parents=True)
    (mixed / "images" / "smear.svs").symlink_to(path)
    write_png(mixed / "images" / "a.png", np.full((20, 20, 3), 200, np.uint8))
    (mixed / "ann").mkdir()
    (mixed / "ann" / "smear.geojson").write_text(geojson.read_text())
    (mixed / "ann" / "a.geojson").write_text("[]")
    assert main(["convert", "--from", "geojson", str(mixed / "ann"), "--images", str(mixed / "images"),
                 "--out", str(mixed / "out.json")]) == 2
    assert not (mixed / "out.json").exists()


def test_a_slide_without_pixel_size_cannot_be_resampled_and_nothing_is_written(tmp_path, slide):
    _, geojson, _ = slide
    image = np.full((1200, 1400, 3), 230, np.uint8)
    (tmp_path / "images").mkdir()
    with tifffile.TiffWriter(tmp_path / "images" / "smear.tif") as tif:  # a pyramid without a pixel size
        tif.write(image, tile=(256, 256), photometric="rgb", subifds=1)
        tif.write(image[::4, ::4], tile=(256, 256), photometric="rgb", subfiletype=1)
    with pytest.raises(DessamError, match="smear.tif: the slide's file does not say its pixel size"):
        convert("geojson", geojson, tmp_path / "images", tmp_path / "out.json", pixel_size_um=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
