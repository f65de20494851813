"""`dessam label`: a mask for every annotated box, with scores, flags and a review sheet."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from scenes import make_nuclei_scene, tiny_config
from scipy import ndimage

from dessam.commands import main
from dessam.data.coco import load_coco, read_record_image, rle_to_mask
from dessam.geometry.plan import WindowPlan
from dessam.geometry.tiling import Window, best_windows
from dessam.inference.box_masks import box_masks
from dessam.inference.instances import clean_crop
from dessam.inference.loading import load_model, load_teacher
from dessam.labeling import label as label_module
from dessam.labeling.label import label_dataset, outside_fraction
from dessam.training.train import train


def _label(*argv):
    return main(["label", "--quiet", "--device", "cpu", *map(str, argv)])


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_output(data_json, out_json):
    """Every box has an RLE mask at its image's size; ids, boxes and categories are kept."""
    given, written = json.loads(data_json.read_text()), json.loads(out_json.read_text())
    assert written["images"] == given["images"] and written["categories"] == given["categories"]
    assert [a["id"] for a in written["annotations"]] == [a["id"] for a in given["annotations"]]
    sizes = {image["id"]: (image["height"], image["width"]) for image in given["images"]}
    for before, after in zip(given["annotations"], written["annotations"]):
        assert (after["bbox"], after["image_id"], after["category_id"]) == (
            before["bbox"], before["image_id"], before["category_id"])
        mask = rle_to_mask(after["segmentation"])
        assert mask.shape == sizes[after["image_id"]]
        assert after["area"] == int(mask.sum())
        assert np.isfinite(after["predicted_iou"]) and 0 <= after["stability_score"] <= 1
        assert after["label_flags"] == (["empty"] if not mask.any() else after["label_flags"])
    return written


@pytest.fixture(scope="module")
def default_model(box_dataset, tmp_path_factory):
    """A model file on the bundled teacher, trained two iterations: its student draws real masks."""
    boxes_json, _, images = box_dataset
    config = tiny_config(max_iters=2)
    config = config.replace({"model.sam": "default"})
    return train(config, boxes_json, images, tmp_path_factory.mktemp("default_run"), progress=False).model_path


def test_label_with_the_teacher_writes_masks_scores_and_a_review_sheet(box_dataset, tmp_path, capsys):
    boxes_json, masks_json, images = box_dataset
    assert _label("--data", boxes_json, "--images", images, "--out", tmp_path / "masks.json", "--sam", "default",
                  "--review", tmp_path / "review") == 0
    written = _check_output(boxes_json, tmp_path / "masks.json")
    out = capsys.readouterr().out
    assert f"{len(written['annotations'])} boxes of 6 images labelled" in out and "teacher masks" in out
    # the teacher finds the nuclei: its masks overlap the ground truth well
    truth = {a["id"]: a["segmentation"] for a in json.loads(masks_json.read_text())["annotations"]}
    ious = []
    for annotation in written["annotations"]:
        a, b = rle_to_mask(annotation["segmentation"]), rle_to_mask(truth[annotation["id"]])
        ious.append((a & b).sum() / (a | b).sum())
    assert np.mean(ious) > 0.6
    rows = _read_csv(tmp_path / "review" / "review.csv")
    assert sorted(int(r["annotation_id"]) for r in rows) == sorted(truth)
    certainty = [min(float(r["predicted_iou"]), float(r["stability_score"])) for r in rows if not r["flags"]]
    assert certainty == sorted(certainty)  # the least certain first
    sheet = Image.open(tmp_path / "review" / "review.png")
    assert sheet.format == "PNG" and sheet.size[0] > 0


def test_label_with_a_model_uses_the_students_token_through_the_pipeline(default_model, box_dataset, tmp_path):
    boxes_json, _, images = box_dataset
    assert _label("--data", boxes_json, "--images", images, "--out", tmp_path / "cli.json",
                  "--model", default_model) == 0
    _check_output(boxes_json, tmp_path / "cli.json")
    # a token moved far from the teacher's: the labels are the pipeline's student masks, not the teacher's
    predictor = load_model(default_model, device="cpu")
    with torch.no_grad():
        predictor.model.decoder.prompt_token.weight.mul_(-4)
    label_dataset(predictor, boxes_json, images, tmp_path / "masks.json", use_token=True, progress=False)
    written = json.loads((tmp_path / "masks.json").read_text())["annotations"]
    labelled = {a["id"]: rle_to_mask(a["segmentation"]) for a in written}
    record = load_coco(boxes_json, images).images[0]
    encoded = predictor.encode([read_record_image(record)])
    postprocess = replace(predictor.postprocess, score_threshold=None)
    same = {}
    for use_token in (True, False):
        [segmented] = predictor.segment(encoded, [record.boxes], use_token=use_token)
        same[use_token] = []
        for k, annotation_id in enumerate(record.annotation_ids):
            crop, y0, x0 = clean_crop(segmented.crops[k], *segmented.origins[k], segmented.shape, postprocess)
            expected = np.zeros(segmented.shape, dtype=bool)
            expected[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
            same[use_token].append(np.array_equal(labelled[annotation_id], expected))
    assert all(same[True]) and not all(same[False])


def test_label_with_a_tiny_model_and_its_empty_masks(trained_tiny, box_dataset, tmp_path, capsys):
    """The tiny random SAM's masks rarely pass the threshold: each empty one keeps its box and an
    empty RLE, is flagged and counted."""
    boxes_json, _, images = box_dataset
    assert _label("--data", boxes_json, "--images", images, "--out", tmp_path / "masks.json", "--model", trained_tiny,
                  "--review", tmp_path / "review") == 0
    written = _check_output(boxes_json, tmp_path / "masks.json")
    empty = sum(a["label_flags"] == ["empty"] for a in written["annotations"])
    assert f"; {empty} empty," in capsys.readouterr().out
    assert sum(r["flags"] == "empty" for r in _read_csv(tmp_path / "review" / "review.csv")) == empty


def test_empty_and_zero_size_boxes_are_flagged_never_dropped(box_dataset, tmp_path, monkeypatch):
    boxes_json, _, images = box_dataset
    doc = json.loads(boxes_json.read_text())
    first = doc["annotations"][0]
    doc["annotations"].append({**first, "id": 9001, "bbox": [5, 5, 0, 4]})                      # zero size
    doc["annotations"].append({**first, "id": 9002, "iscrowd": 1, "segmentation": [[1, 1, 9, 1, 9, 9]]})
    (tmp_path / "boxes.json").write_text(json.dumps(doc))
    real = label_module.box_masks

    def first_mask_empty(*args, **kwargs):
        result = real(*args, **kwargs)
        result.instances.crops[0] = np.zeros((0, 0), dtype=bool)
        return result

    monkeypatch.setattr(label_module, "box_masks", first_mask_empty)
    predictor = load_teacher("default", device="cpu")
    run = label_dataset(predictor, tmp_path / "boxes.json", images, tmp_path / "masks.json", tmp_path / "review",
                        use_token=False, progress=False)
    written = {a["id"]: a for a in json.loads((tmp_path / "masks.json").read_text())["annotations"]}
    assert len(written) == len(doc["annotations"])
    assert written[first["id"]]["label_flags"] == ["empty"] and written[first["id"]]["bbox"] == first["bbox"]
    assert not rle_to_mask(written[first["id"]]["segmentation"]).any()
    assert written[9001]["label_flags"] == ["empty"] and written[9001]["area"] == 0
    assert written[9002] == doc["annotations"][-1]  # crowd: unchanged
    assert run.crowd == 1 and run.labelled == len(doc["annotations"]) - 1
    # the first box of each of the six images and the zero-size one, at least
    assert run.empty == sum(a.get("label_flags") == ["empty"] for a in written.values()) >= 6 + 1
    rows = _read_csv(tmp_path / "review" / "review.csv")
    flagged = sum(bool(r["flags"]) for r in rows)
    assert all(r["flags"] for r in rows[:flagged])  # flagged ones (empty, outside) first
    assert sum(r["flags"] == "empty" for r in rows[:flagged]) == run.empty


def test_outside_fraction_counts_mask_pixels_beyond_the_grown_box():
    crop = np.ones((10, 10), dtype=bool)
    assert outside_fraction(crop, (0, 0), np.array([0, 0, 10, 10])) == 0
    # a 10 x 10 box at (20, 20) grown by 2 px: a mask 4 columns wider on the right has 20 of 140 pixels past x = 32
    assert outside_fraction(np.ones((10, 14), bool), (20, 20), np.array([20, 20, 30, 30])) == pytest.approx(20 / 140)
    assert outside_fraction(np.zeros((0, 0), bool), (0, 0), np.array([0, 0, 5, 5])) == 0


def test_each_box_is_prompted_in_the_window_where_it_lies_farthest_from_inner_edges():
    windows = [Window(0, 0, 100, 100, (False, False, False, True)),
               Window(0, 60, 100, 160, (False, False, True, False))]
    boxes = np.array([[10, 10, 30, 30], [75, 10, 92, 30], [85, 10, 95, 30], [140, 10, 150, 30]], np.float32)
    assert best_windows(boxes, windows).tolist() == [0, 1, 1, 1]


def test_large_images_are_labelled_in_windows(tmp_path):
    """Fields four times the input side, at scale 1: every nucleus, near a seam or not, gets its mask."""
    rng = np.random.default_rng(4)
    image, labels = make_nuclei_scene(rng, 256, count=40)
    record_boxes = [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in ndimage.find_objects(labels)]
    predictor = load_teacher("default", device="cpu", image_size=128)
    assert WindowPlan.for_image(image.shape, predictor.image_size, predictor.scale).tiled
    result = box_masks(predictor, image, np.array(record_boxes, np.float32), use_token=False, overlap=48)
    ious = []
    for k in range(len(record_boxes)):
        a, b = result.instances.mask(k), labels == k + 1
        ious.append((a & b).sum() / (a | b).sum())
    assert min(ious) > 0.3 and np.mean(ious) > 0.6


def test_label_needs_a_model_or_a_sam_in_one_line(box_dataset, tmp_path, capsys, monkeypatch):
    boxes_json, _, images = box_dataset
    monkeypatch.setenv("DESSAM_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert _label("--data", boxes_json, "--images", images, "--out", tmp_path / "masks.json", "--sam", "vit_b") == 2
    assert "dessam fetch-sam vit_b" in capsys.readouterr().err
    assert _label("--data", boxes_json, "--images", images, "--out", tmp_path / "masks.json") == 2
    err = capsys.readouterr().err
    assert "--model" in err and "--sam" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "masks.json").exists()
    assert _label("--data", tmp_path / "none.json", "--images", images, "--out", tmp_path / "masks.json",
                  "--sam", "default") == 2
    assert "none.json" in capsys.readouterr().err and not (tmp_path / "masks.json").exists()
