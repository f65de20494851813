import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import io as sio
from shapely.geometry import Polygon

from dessam.data.coco import load_coco, record_label_map, record_masks
from dessam.data.convert import convert
from dessam.data.images import write_png
from dessam.errors import DessamError


def _image(folder: Path, name: str, hw=(24, 32)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / name, np.full(hw + (3,), 200, np.uint8))
    return folder / name


def _assert_same_partition(out: np.ndarray, labels: np.ndarray) -> None:
    """out numbers instances 1..N in ascending order of the original ids."""
    ids = np.unique(labels[labels > 0])
    assert out.max() == len(ids)
    for k, original in enumerate(ids, start=1):
        np.testing.assert_array_equal(out == k, labels == original)
    np.testing.assert_array_equal(out == 0, labels == 0)


WRITERS = {
    "png8": (np.uint8, lambda p, a: write_png(p.with_suffix(".png"), a)),
    "png16": (np.uint16, lambda p, a: write_png(p.with_suffix(".png"), a)),
    "tif16": (np.uint16, lambda p, a: tifffile.imwrite(p.with_suffix(".tif"), a)),
    "tif32": (np.uint32, lambda p, a: tifffile.imwrite(p.with_suffix(".tif"), a)),
}


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(sorted(WRITERS)),
    seed=st.integers(0, 2**32 - 1),
    n_ids=st.integers(1, 6),
    hw=st.tuples(st.integers(1, 20), st.integers(1, 20)),
)
def test_label_images_round_trip_exactly(kind, seed, n_ids, hw):
    dtype, write = WRITERS[kind]
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    ids = rng.choice(np.arange(1, min(top, 10**6)), size=n_ids, replace=False).astype(dtype)
    if kind == "tif32":
        ids[0] = top  # the largest 32-bit id survives
    labels = np.where(rng.random(hw) < 0.3, 0, rng.choice(ids, size=hw)).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _image(tmp / "img", "cell.png", hw)
        (tmp / "lab").mkdir()
        write(tmp / "lab" / "cell_label", labels)
        convert("labels", tmp / "lab", tmp / "img", tmp / "out.json", label_suffix="_label")
        ds = load_coco(tmp / "out.json", tmp / "img")
        (rec,) = ds.images
        if labels.any():
            _assert_same_partition(record_label_map(rec), labels)
        else:
            assert len(rec.boxes) == 0


def _star(seed: int, radius: float, n: int, centre=(100.0, 100.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = radius * rng.uniform(0.7, 1.0, n)
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], axis=1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), radius=st.floats(30, 80), n=st.integers(6, 40))
def test_polygon_to_rle_area_within_one_percent(seed, radius, n):
    pts = _star(seed, radius, n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _image(tmp / "img", "a.png", (200, 200))
        (tmp / "lm").mkdir()
        shapes = [{"label": "nucleus", "points": pts.tolist(), "shape_type": "polygon"}]
        doc = {"imagePath": "../img/a.png", "imageHeight": 200, "imageWidth": 200, "shapes": shapes}
        (tmp / "lm" / "a.json").write_text(json.dumps(doc))
        convert("labelme", tmp / "lm", tmp / "img", tmp / "out.json")
        (rec,) = load_coco(tmp / "out.json", tmp / "img").images
        area = record_masks(rec)[0].sum()
    assert abs(area - Polygon(pts).area) <= 0.01 * Polygon(pts).area


def test_label_size_mismatch_names_both_files(tmp_path):
    _image(tmp_path / "img", "x.png", (24, 32))
    (tmp_path / "lab").mkdir()
    write_png(tmp_path / "lab" / "x.png", np.zeros((20, 32), np.uint8))
    with pytest.raises(DessamError, match=r"lab/x\.png.*img/x\.png"):
        convert("labels", tmp_path / "lab", tmp_path / "img", tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()


def test_label_without_image_and_rgb_labels(tmp_path):
    _image(tmp_path / "img", "x.png", (8, 8))
    (tmp_path / "lab").mkdir()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[1:3, 1:3] = (255, 0, 0)
    rgb[5:7, 5:8] = (0, 10, 200)
    write_png(tmp_path / "lab" / "x.png", rgb)
    summary = convert("labels", tmp_path / "lab", tmp_path / "img", tmp_path / "o.json")
    assert (summary.images, summary.annotations, summary.with_masks) == (1, 2, 2)
    labels = record_label_map(load_coco(tmp_path / "o.json", tmp_path / "img").images[0])
    assert sorted(np.bincount(labels.ravel())[1:].tolist()) == [4, 6]
    write_png(tmp_path / "lab" / "orphan.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DessamError, match="orphan.png.*no image"):
        convert("labels", tmp_path / "lab", tmp_path / "img", tmp_path / "o2.json")


def test_mat_with_default_and_custom_key(tmp_path):
    _image(tmp_path / "img", "m.png", (6, 7))
    (tmp_path / "mat").mkdir()
    inst = np.zeros((6, 7))
    inst[1:4, 2:5] = 3.0  # MATLAB doubles
    sio.savemat(tmp_path / "mat" / "m.mat", {"inst_map": inst, "other": inst.T})
    convert("mat", tmp_path / "mat", tmp_path / "img", tmp_path / "a.json")
    rec = load_coco(tmp_path / "a.json", tmp_path / "img").images[0]
    np.testing.assert_allclose(rec.boxes, [[2, 1, 5, 4]])
    with pytest.raises(DessamError, match=r"m\.mat.*'nope'.*inst_map"):
        convert("mat", tmp_path / "mat", tmp_path / "img", tmp_path / "b.json", mat_key="nope")
    with pytest.raises(DessamError, match=r"m\.mat.*differs.*m\.png"):
        convert("mat", tmp_path / "mat", tmp_path / "img", tmp_path / "c.json", mat_key="other")


def test_npy_instance_maps_as_consep_ships_them(tmp_path):
    _image(tmp_path / "images", "test_1_000.jpg", (8, 9))
    (tmp_path / "inst").mkdir()
    inst = np.zeros((8, 9), np.int32)
    inst[1:4, 2:5] = 7
    inst[5:8, 0:2] = 2
    np.save(tmp_path / "inst" / "test_1_000.npy", inst)
    convert("npy", tmp_path / "inst", tmp_path / "images", tmp_path / "a.json")
    rec = load_coco(tmp_path / "a.json", tmp_path / "images").images[0]
    np.testing.assert_allclose(sorted(rec.boxes.tolist()), [[0, 5, 2, 8], [2, 1, 5, 4]])
    np.save(tmp_path / "inst" / "test_1_000.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DessamError, match=r"test_1_000\.npy: cannot read"):
        convert("npy", tmp_path / "inst", tmp_path / "images", tmp_path / "b.json")


def test_labelme_shapes(tmp_path):
    _image(tmp_path / "img", "s.png", (50, 60))
    shapes = [
        {"label": "nucleus", "points": [[10, 10], [20, 30]], "shape_type": "rectangle"},
        {"label": "nucleus", "points": [[40, 25], [45, 25]], "shape_type": "circle"},
        {"label": "neutrophil", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"},
        {"label": "nucleus", "points": [[3, 3]], "shape_type": "point"},
    ]
    (tmp_path / "s.json").write_text(json.dumps({"imagePath": "s.png", "shapes": shapes}))
    summary = convert("labelme", tmp_path / "s.json", tmp_path / "img", tmp_path / "o.json", classes=["nucleus"])
    assert (summary.annotations, summary.with_masks) == (2, 1)
    assert any("point" in note for note in summary.notes)
    doc = json.loads((tmp_path / "o.json").read_text())
    rect, circle = doc["annotations"]
    assert rect["bbox"] == [10, 10, 10, 20] and "segmentation" not in rect
    assert abs(circle["area"] - np.pi * 25) < 0.15 * np.pi * 25
    (tmp_path / "bad.json").write_text(json.dumps({"imagePath": "s.png", "imageHeight": 10, "imageWidth": 60, "shapes": []}))
    with pytest.raises(DessamError, match=r"bad\.json.*s\.png"):
        convert("labelme", tmp_path / "bad.json", tmp_path / "img", tmp_path / "p.json")


def test_voc_boxes_are_one_based_inclusive(tmp_path):
    _image(tmp_path / "img", "v.png", (40, 50))
    xml = """<annotation><filename>v.png</filename><size><width>50</width><height>40</height><depth>3</depth></size>
    <object><name>nucleus</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
    <object><name>rbc</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
    </annotation>"""
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "v.xml").write_text(xml)
    convert("voc", tmp_path / "voc", tmp_path / "img", tmp_path / "o.json", classes=["nucleus"])
    rec = load_coco(tmp_path / "o.json", tmp_path / "img").images[0]
    np.testing.assert_allclose(rec.boxes, [[0, 1, 10, 20]])
    (tmp_path / "voc" / "v.xml").write_text("<annotation><object>")
    with pytest.raises(DessamError, match=r"v\.xml.*invalid XML"):
        convert("voc", tmp_path / "voc", tmp_path / "img", tmp_path / "o.json")


def test_yolo_boxes_and_segments(tmp_path):
    _image(tmp_path / "img", "y.png", (100, 200))
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "y.txt").write_text("0 0.5 0.5 0.1 0.2\n\n0 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n")
    summary = convert("yolo", tmp_path / "yolo", tmp_path / "img", tmp_path / "o.json")
    assert (summary.annotations, summary.with_masks) == (2, 1)
    rec = load_coco(tmp_path / "o.json", tmp_path / "img").images[0]
    np.testing.assert_allclose(rec.boxes[0], [90, 40, 110, 60], atol=1e-4)
    np.testing.assert_allclose(rec.boxes[1], [20, 10, 61, 51], atol=1.01)
    (tmp_path / "yolo" / "y.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(DessamError, match=r"y\.txt.*line 1"):
        convert("yolo", tmp_path / "yolo", tmp_path / "img", tmp_path / "o.json")


def test_coco_polygons_become_rle(tmp_path):
    _image(tmp_path / "img", "c.png", (30, 30))
    doc = {
        "images": [{"id": 7, "file_name": "c.png", "height": 30, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
            {"id": 2, "image_id": 7, "bbox": [20, 20, 4, 4]},
        ],
    }
    (tmp_path / "in.json").write_text(json.dumps(doc))
    convert("coco", tmp_path / "in.json", tmp_path / "img", tmp_path / "out.json")
    out = json.loads((tmp_path / "out.json").read_text())
    seg = out["annotations"][0]["segmentation"]
    assert isinstance(seg["counts"], str) and seg["size"] == [30, 30]
    assert "segmentation" not in out["annotations"][1]
    assert out["images"][0]["id"] == 1 and out["annotations"][0]["image_id"] == 1


def test_unknown_format_and_missing_source(tmp_path):
    with pytest.raises(DessamError, match="unknown format"):
        convert("xlsx", tmp_path, tmp_path, tmp_path / "o.json")
    with pytest.raises(DessamError, match="nowhere"):
        convert("labels", tmp_path / "nowhere", tmp_path, tmp_path / "o.json")
