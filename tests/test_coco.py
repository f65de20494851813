import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mu

from dessam.data.coco import (
    dataset_has_masks,
    has_masks,
    label_map_to_annotations,
    load_coco,
    mask_to_rle,
    record_label_map,
    record_masks,
    rle_to_mask,
    write_coco,
)
from dessam.data.images import write_png
from dessam.errors import DessamError


def _make_images(folder, *names, shape=(20, 30)):
    folder.mkdir(exist_ok=True)
    for name in names:
        write_png(folder / name, np.zeros(shape + (3,), np.uint8))


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def _doc(annotations, images=None):
    images = images or [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "nucleus"}]}


def test_boxes_only_file_with_clipping_and_dropping(tmp_path):
    _make_images(tmp_path / "img", "a.png")
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 4, 5]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [25, -2, 10, 6]},  # partly outside
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 3]},  # zero width
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [40, 5, 3, 3]},  # fully outside
    ]
    ds = load_coco(_write(tmp_path / "a.json", _doc(anns)), tmp_path / "img")
    (rec,) = ds.images
    assert rec.path == tmp_path / "img" / "a.png" and (rec.height, rec.width) == (20, 30)
    np.testing.assert_allclose(rec.boxes, [[2, 3, 6, 8], [25, 0, 30, 4]])
    assert rec.boxes.dtype == np.float32
    assert rec.annotation_ids == [1, 2]
    assert rec.segmentations == [None, None]
    assert (ds.clipped_boxes, ds.dropped_boxes) == (1, 2)
    assert not has_masks(rec) and not dataset_has_masks(ds)
    with pytest.raises(DessamError, match="a.png"):
        record_masks(rec)


def test_image_size_read_from_file_when_missing_in_json(tmp_path):
    _make_images(tmp_path / "img", "a.png", shape=(11, 13))
    doc = _doc([], images=[{"id": 5, "file_name": "a.png"}])
    (rec,) = load_coco(_write(tmp_path / "a.json", doc), tmp_path / "img").images
    assert (rec.height, rec.width) == (11, 13) and rec.boxes.shape == (0, 4)


@pytest.mark.parametrize(
    "doc, pattern",
    [
        ({"images": []}, "annotations"),
        (_doc([{"id": 1, "bbox": [0, 0, 1, 1]}]), "image_id"),
        (_doc([], images=[{"id": 1}]), "file_name"),
        (_doc([{"id": 1, "image_id": 9, "bbox": [0, 0, 1, 1]}]), "unknown image id 9"),
        (_doc([], images=[{"id": 1, "file_name": "../a.png"}]), "outside the images folder"),
        (_doc([], images=[{"id": 1, "file_name": "/etc/a.png"}]), "outside the images folder"),
        (_doc([], images=[{"id": 1, "file_name": "missing.png"}]), "not found"),
        (_doc([{"id": 1, "image_id": 1, "bbox": [0, 0, "x", 1]}]), "bbox"),
    ],
)
def test_user_errors_name_the_file(tmp_path, doc, pattern):
    _make_images(tmp_path / "img", "a.png")
    path = _write(tmp_path / "bad.json", doc)
    with pytest.raises(DessamError, match=pattern) as info:
        load_coco(path, tmp_path / "img")
    assert "bad.json" in str(info.value) and "\n" not in str(info.value)


def test_invalid_json_reports_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "images": [,\n}')
    with pytest.raises(DessamError, match=r"broken.json.*line 2 column 14"):
        load_coco(path, tmp_path)
    with pytest.raises(DessamError, match="absent.json"):
        load_coco(tmp_path / "absent.json", tmp_path)


def test_label_map_round_trip_through_coco(tmp_path):
    labels = np.zeros((20, 30), np.uint16)
    labels[2:6, 3:9] = 7
    labels[10:15, 10:12] = 300
    labels[0, 29] = 2  # single pixel at the corner
    anns = label_map_to_annotations(labels, image_id=1, first_ann_id=10)
    assert [a["id"] for a in anns] == [10, 11, 12]
    assert [a["bbox"] for a in anns] == [[29, 0, 1, 1], [3, 2, 6, 4], [10, 10, 2, 5]]
    assert [a["area"] for a in anns] == [1, 24, 10]
    _make_images(tmp_path / "img", "a.png")
    write_coco(tmp_path / "out.json", [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}], anns)
    ds = load_coco(tmp_path / "out.json", tmp_path / "img")
    rec = ds.images[0]
    assert has_masks(rec) and dataset_has_masks(ds)
    out = record_label_map(rec)
    assert out.dtype == np.uint16
    # same partition of the pixels, labels renumbered 1..N in annotation order
    for k, original in enumerate([2, 7, 300], start=1):
        np.testing.assert_array_equal(out == k, labels == original)
    np.testing.assert_allclose(rec.boxes[1], [3, 2, 9, 6])


def test_polygons_decode_and_later_annotations_paint_over(tmp_path):
    _make_images(tmp_path / "img", "a.png")
    square = [[2, 2, 12, 2, 12, 12, 2, 12]]
    anns = [
        {"id": 1, "image_id": 1, "bbox": [2, 2, 10, 10], "segmentation": square},
        {"id": 2, "image_id": 1, "bbox": [8, 8, 10, 10], "segmentation": mask_to_rle(_box_mask(8, 8, 18, 18))},
    ]
    rec = load_coco(_write(tmp_path / "p.json", _doc(anns)), tmp_path / "img").images[0]
    masks = record_masks(rec)
    assert masks.shape == (2, 20, 30) and masks.dtype == bool
    assert abs(int(masks[0].sum()) - 100) <= 25  # polygon rasterisation convention differs slightly
    labels = record_label_map(rec)
    assert labels[10, 10] == 2 and labels[4, 4] == 1


def test_rle_size_mismatch_names_the_image(tmp_path):
    _make_images(tmp_path / "img", "a.png")
    anns = [{"id": 1, "image_id": 1, "bbox": [0, 0, 2, 2], "segmentation": mask_to_rle(np.ones((5, 5), bool))}]
    rec = load_coco(_write(tmp_path / "m.json", _doc(anns)), tmp_path / "img").images[0]
    with pytest.raises(DessamError, match="a.png.*differs"):
        record_masks(rec)


def _box_mask(x1, y1, x2, y2, shape=(20, 30)):
    m = np.zeros(shape, bool)
    m[y1:y2, x1:x2] = True
    return m


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_rle_round_trip_is_exact_and_json_safe(h, w, seed):
    mask = np.random.default_rng(seed).random((h, w)) < 0.5
    rle = mask_to_rle(mask)
    rle = json.loads(json.dumps(rle))
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    # uncompressed (list counts) RLE decodes too
    counts, flat, current, run = [], mask.T.ravel(), False, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    np.testing.assert_array_equal(rle_to_mask({"size": [h, w], "counts": counts}), mask)
    assert mu.area(mu.encode(np.asfortranarray(mask.astype(np.uint8)))) == mask.sum()


def test_write_coco_is_atomic_and_valid_json(tmp_path):
    write_coco(tmp_path / "x.json", [{"id": np.int64(1), "file_name": "a.png"}], [], None)
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["images"][0]["id"] == 1 and doc["categories"][0]["name"] == "nucleus"
    with pytest.raises(TypeError):
        write_coco(tmp_path / "y.json", [{"id": object()}], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_rle_from_a_crop_is_the_rle_of_the_full_mask():
    """Instances encode their masks from crops; the string must be what pycocotools gives for the
    full mask, including runs that continue from one column into the next."""
    from dessam.data.coco import crop_to_rle, mask_to_rle

    rng = np.random.default_rng(0)
    cases = [((5, 4), np.ones((5, 2), bool), (0, 1)), ((5, 4), np.ones((5, 4), bool), (0, 0)),
             ((6, 3), np.zeros((2, 2), bool), (4, 1)), ((1, 1), np.ones((1, 1), bool), (0, 0))]
    for _ in range(500):
        height, width = rng.integers(1, 30, 2)
        h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        crop = rng.random((h, w)) < rng.choice([0.0, 0.4, 0.8, 1.0])
        cases.append(((height, width), crop, (rng.integers(0, height - h + 1), rng.integers(0, width - w + 1))))
    for shape, crop, (y0, x0) in cases:
        full = np.zeros(shape, bool)
        full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        assert crop_to_rle(crop, (y0, x0), shape) == mask_to_rle(full)
