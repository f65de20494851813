import json

import numpy as np
import pytest

from dessam.data.images import write_png
from dessam.data.synth import make_dataset
from dessam.data.validate import WARN_CLIPPED, WARN_ZERO, raise_on_errors, validate_coco
from dessam.errors import DessamError


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    write_png(tmp_path / "img" / "a.png", np.zeros((20, 30, 3), np.uint8))
    write_png(tmp_path / "img" / "b.png", np.zeros((20, 30, 3), np.uint8))
    return tmp_path


def _doc(images=None, annotations=None, categories=None):
    return {
        "images": images if images is not None else [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": annotations if annotations is not None else [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": categories if categories is not None else [{"id": 1, "name": "nucleus"}],
    }


def _validate(folder, doc, name="ann.json"):
    (folder / name).write_text(json.dumps(doc))
    return validate_coco(folder / name, folder / "img")


def _single_error(report, *parts):
    assert len(report.errors) == 1, report.errors
    for part in parts:
        assert part in report.errors[0], (part, report.errors[0])
    with pytest.raises(DessamError) as info:
        raise_on_errors(report)
    assert "\n" not in str(info.value)


def test_clean_file_passes(folder):
    report = _validate(folder, _doc())
    assert report.ok and report.images == 1 and report.annotations == 1
    raise_on_errors(report)  # does not raise


def test_missing_image(folder):
    report = _validate(folder, _doc(images=[{"id": 1, "file_name": "gone.png", "height": 20, "width": 30}]))
    _single_error(report, "ann.json", "gone.png", "not found")


def test_unreadable_image(folder):
    (folder / "img" / "junk.png").write_bytes(b"not a png" * 20)
    report = _validate(folder, _doc(images=[{"id": 1, "file_name": "junk.png", "height": 20, "width": 30}]))
    _single_error(report, "ann.json", "junk.png", "unreadable")


def test_truncated_image_caught_only_when_decoding(folder):
    write_png(folder / "img" / "big.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = (folder / "img" / "big.png").read_bytes()
    (folder / "img" / "big.png").write_bytes(data[: len(data) // 2])
    doc = _doc(images=[{"id": 1, "file_name": "big.png", "height": 64, "width": 64}])
    _single_error(_validate(folder, doc), "big.png", "unreadable")
    assert validate_coco(folder / "ann.json", folder / "img", decode=False).ok


def test_size_differs_from_file(folder):
    report = _validate(folder, _doc(images=[{"id": 1, "file_name": "a.png", "height": 25, "width": 30}]))
    _single_error(report, "ann.json", "a.png", "30 x 25", "30 x 20")


def test_duplicate_image_ids(folder):
    images = [{"id": 1, "file_name": n, "height": 20, "width": 30} for n in ("a.png", "b.png")]
    _single_error(_validate(folder, _doc(images=images)), "ann.json", "duplicate image id", "[1]")


def test_duplicate_annotation_ids(folder):
    anns = [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}] * 2
    _single_error(_validate(folder, _doc(annotations=anns)), "ann.json", "duplicate annotation id", "[4]")


def test_unknown_category(folder):
    anns = [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]}]
    _single_error(_validate(folder, _doc(annotations=anns)), "ann.json", "annotation 1", "category_id 9")


def test_unknown_image_id(folder):
    anns = [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 2]}]
    _single_error(_validate(folder, _doc(annotations=anns)), "ann.json", "unknown image id 3")


@pytest.mark.parametrize("bbox", [[1, 1, -2, 2], [1, 1, 2, -0.5]])
def test_negative_box_size(folder, bbox):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}]
    _single_error(_validate(folder, _doc(annotations=anns)), "ann.json", "negative width or height")


@pytest.mark.parametrize("bbox", [[float("nan"), 1, 2, 2], [1, 1, float("inf"), 2], [1, 1, 2], "x"])
def test_non_finite_or_malformed_box(folder, bbox):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}]
    _single_error(_validate(folder, _doc(annotations=anns)), "ann.json", "four finite numbers")


@pytest.mark.parametrize("name", ["../a.png", "/tmp/a.png", "..\\a.png", "C:\\data\\a.png"])
def test_file_name_escaping_the_folder(folder, name):
    report = _validate(folder, _doc(images=[{"id": 1, "file_name": name, "height": 20, "width": 30}]))
    _single_error(report, "ann.json", "outside the images folder")


def test_rle_of_wrong_size(folder):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "segmentation": {"size": [5, 5], "counts": "25"}}]
    _single_error(_validate(folder, _doc(annotations=anns)), "ann.json", "RLE mask of size [5, 5]")


def test_invalid_json_and_missing_file(folder):
    (folder / "broken.json").write_text("{]")
    _single_error(validate_coco(folder / "broken.json", folder / "img"), "broken.json", "line 1")
    _single_error(validate_coco(folder / "none.json", folder / "img"), "none.json", "not found")
    _single_error(_validate(folder, {"images": []}), "ann.json", "'annotations'")


def test_warnings_are_counted_not_errors(folder):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [-3, 1, 5, 5]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [25, 15, 10, 10]},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [2, 2, 0, 4]},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [40, 2, 3, 4]},
    ]
    report = _validate(folder, _doc(annotations=anns))
    assert report.ok
    assert (report.warnings[WARN_CLIPPED], report.warnings[WARN_ZERO]) == (2, 2)
    table = report.table()
    assert table.startswith("| check | count |")
    assert f"| {WARN_CLIPPED} | 2 |" in table and "| errors | 0 |" in table
    assert "ann.json" in report.text() and "OK" in report.text()


def test_many_errors_are_all_listed_and_summarised(folder):
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]}] * 3
    report = _validate(folder, _doc(annotations=anns))
    assert len(report.errors) == 4  # duplicate id + three unknown categories
    assert "| errors | 4 |" in report.table()
    with pytest.raises(DessamError, match="and 3 more"):
        raise_on_errors(report)


def test_synthetic_dataset_is_valid(tmp_path):
    out = make_dataset(tmp_path / "ds", n_train=2, n_val=1, n_test=1, size=96)
    for name in ("train.json", "train_full.json", "val.json", "test.json"):
        report = validate_coco(out / name, out / "images")
        assert report.ok, report.errors
        assert report.annotations > 0
    assert validate_coco(out / "train.json", out / "images").with_masks == 0
