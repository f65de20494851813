"""`dessam eval` / `dessam compare` on a tiny model trained once for the module."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dessam.data.coco import load_coco, record_label_map
from dessam.data.images import read_image
from dessam.evaluation.compare import compare_reports
from dessam.evaluation.report import COUNT_COLUMNS, METRIC_COLUMNS
from dessam.evaluation.evaluate import (
    METHODS,
    STUDENT,
    evaluate,
    evaluate_label_maps,
    method_instances,
)
from dessam.config import Postprocess
from dessam.errors import DessamError
from dessam.inference.instances import Instances, clean_masks, masks_to_labels
from dessam.inference.loading import load_model
from dessam.metrics import evaluate_pair
from dessam.training.train import train
from scenes import tiny_config, write_box_dataset

N_TEST = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    train_json, train_images = write_box_dataset(root / "train", n_images=3, seed=0)
    test_json, test_images = write_box_dataset(root / "test", n_images=N_TEST, seed=1, with_masks=True)
    config = tiny_config(max_iters=10)
    config = config.replace({"model.score_threshold": 0.05})  # a barely trained detector: keep some detections
    config = config.replace({"model.min_object_size": 10})
    result = train(config, train_json, train_images, root / "run", progress=False)
    model = load_model(result.model_path)
    report_dir = root / "report"
    report = evaluate(model, test_json, test_images, report_dir, baselines=True, progress=False,
                      model_path=result.model_path)
    return dict(root=root, model=model, model_path=result.model_path, test_json=test_json,
                test_images=test_images, train_json=train_json, report=report, report_dir=report_dir)


def _table_rows(markdown: str, which: int = 0) -> list:
    """The cells of every line of the `which`-th table (header and separator included)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables, current = tables + [current], []
    return tables[which]


def _numbers(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _numbers(value)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield tree


def test_report_files_and_table(setup):
    report_dir = setup["report_dir"]
    table = _table_rows((report_dir / "metrics.md").read_text())
    header, separator, body = table[0], table[1], table[2:]
    assert len(header) == 1 + len(METRIC_COLUMNS) + len(COUNT_COLUMNS)
    assert header[1:] == [title for _, title, _ in METRIC_COLUMNS] + [title for _, title in COUNT_COLUMNS]
    assert len(separator) == len(header)
    assert [row[0] for row in body] == list(METHODS)
    sizes = _table_rows((report_dir / "metrics.md").read_text(), which=1)
    assert sizes[0] == ["Method", "recall <12 px", "recall 12-20 px", "recall 20-30 px", "recall >=30 px"]
    assert [row[0] for row in sizes[2:]] == list(METHODS)
    report = json.loads((report_dir / "metrics.json").read_text())
    for method in METHODS:
        pooled = report["methods"][method]["recall_by_size"]
        assert sum(entry["n"] for entry in pooled.values()) == report["methods"][method]["counts"]["n_gt"]
        assert sum(entry["found"] for entry in pooled.values()) == report["methods"][method]["counts"]["tp"]
    assert all(len(row) == len(header) for row in body)

    saved = json.loads((report_dir / "metrics.json").read_text())
    assert list(saved["methods"]) == list(METHODS)
    assert saved["settings"]["score_threshold"] == pytest.approx(0.05)
    assert saved["settings"]["min_size"] == 10
    assert saved["settings"]["model"] == str(setup["model_path"])
    assert saved["settings"]["sam"]["name"] == "tiny"
    for method, summary in saved["methods"].items():
        for key, _, _ in METRIC_COLUMNS:
            assert isinstance(summary[key], (int, float)) and math.isfinite(summary[key]), (method, key)
        assert summary["n_images"] == N_TEST
        assert all(math.isfinite(value) for value in _numbers(summary))
        assert 0.0 <= summary["aji"] <= 1.0 and 0.0 <= summary["ap"] <= 1.0
    assert saved == json.loads(json.dumps(setup["report"]))


def test_per_image_csv_and_counts(setup):
    report_dir = setup["report_dir"]
    with open(report_dir / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    dataset = load_coco(setup["test_json"], setup["test_images"])
    names = [record.file_name for record in dataset.images]
    assert len(rows) == N_TEST * len(METHODS)
    assert {(row["image"], row["method"]) for row in rows} == {(n, m) for n in names for m in METHODS}
    gt_total = sum(len(record.boxes) for record in dataset.images)
    methods = setup["report"]["methods"]
    for method in METHODS:
        mine = [row for row in rows if row["method"] == method]
        assert methods[method]["counts"]["n_gt"] == gt_total
        assert methods[method]["counts"]["n_pred"] == sum(int(row["n_pred"]) for row in mine)
        assert methods[method]["aji"] == pytest.approx(np.mean([float(row["aji"]) for row in mine]))


def test_overlays_are_the_worst_images(setup):
    report_dir = setup["report_dir"]
    overlays = sorted((report_dir / "overlays").glob("*.png"))
    assert 0 < len(overlays) <= 5 and len(overlays) == min(5, N_TEST)
    with open(report_dir / "per_image.csv", newline="") as handle:
        student = [row for row in csv.DictReader(handle) if row["method"] == STUDENT]
    order = sorted(range(len(student)), key=lambda i: (float(student[i]["aji"]), i))
    expected = Path(student[order[0]]["image"]).stem
    worst = report_dir / "overlays" / f"worst_1_{expected}.png"
    assert worst.is_file()
    image = read_image(worst)
    assert image.shape[:2] == read_image(setup["test_images"] / student[order[0]]["image"]).shape[:2]


def test_student_matches_predict(setup):
    """Without baselines, the des-sam row is the official post-processing of `Predictor.predict`."""
    model = setup["model"]
    report = evaluate(model, setup["test_json"], setup["test_images"], setup["root"] / "plain", progress=False)
    assert list(report["methods"]) == [STUDENT]
    dataset = load_coco(setup["test_json"], setup["test_images"])
    settings = model.postprocess
    raw_settings = Postprocess(score_threshold=settings.score_threshold, remove_holes=False, remove_islands=False)
    rows = []
    for record in dataset.images:
        raw = model.predict(read_image(record.path), raw_settings, tile=False)
        masks = np.array([raw.instances.mask(k) for k in range(len(raw))], bool).reshape(-1, *raw.labels.shape)
        scores = raw.scores
        if len(masks):
            masks, scores, _ = clean_masks(masks, scores, settings=settings)
        rows.append(evaluate_pair(record_label_map(record), masks_to_labels(masks, scores)))
    summary = report["methods"][STUDENT]
    assert summary["aji"] == pytest.approx(np.mean([row["aji"] for row in rows]))
    assert summary["pq"] == pytest.approx(np.mean([row["pq"] for row in rows]))
    assert summary["counts"]["n_pred"] == sum(row["n_pred"] for row in rows)


def test_switching_post_processing_off(setup):
    model = setup["model"]
    before = model.postprocess.score_threshold
    report = evaluate(model, setup["test_json"], setup["test_images"], setup["root"] / "raw", progress=False,
                      score_threshold=0, remove_small=False)
    assert model.postprocess.score_threshold == before
    assert report["settings"]["score_threshold"] == 0 and report["settings"]["remove_small"] is False
    official = setup["report"]["methods"][STUDENT]["counts"]["n_pred"]
    assert report["methods"][STUDENT]["counts"]["n_pred"] >= official
    assert "score threshold: off" in (setup["root"] / "raw" / "metrics.md").read_text()


def test_box_as_mask_masks_are_boxes(setup):
    model = setup["model"]
    record = load_coco(setup["test_json"], setup["test_images"]).images[0]
    image = read_image(record.path)
    keep_all = replace(model.postprocess, score_threshold=0.0)  # every detection of the barely trained detector
    raw = method_instances(model, image, record.boxes, ("box-as-mask", "teacher-gt-boxes"), keep_all)
    [(boxes, _)] = model.detect(model.encode([image]), keep_all)
    filled = raw["box-as-mask"]
    assert len(filled) == len(boxes) > 0
    mask, box = filled.mask(0), boxes[0]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert mask.sum() == rows.size * cols.size  # a filled rectangle
    assert abs(cols[0] - box[0]) <= 1 and abs(cols[-1] + 1 - box[2]) <= 1
    assert abs(rows[0] - box[1]) <= 1 and abs(rows[-1] + 1 - box[3]) <= 1
    teacher = raw["teacher-gt-boxes"]
    assert len(teacher) == len(record.boxes) and teacher.shape == image.shape[:2]
    assert np.all(teacher.scores == 1)


def test_filled_boxes_cover_the_pixel_centres_inside():
    filled = Instances.from_boxes(np.array([[1.2, 2.6, 4.4, 5.5], [-3, -3, 2, 1], [20, 20, 30, 30]]), np.ones(3), (8, 10))
    masks = [filled.mask(k) for k in range(3)]
    expected = np.zeros((8, 10), bool)
    expected[3:6, 1:4] = True
    assert np.array_equal(masks[0], expected)
    clipped = np.zeros((8, 10), bool)
    clipped[0:1, 0:2] = True
    assert np.array_equal(masks[1], clipped)
    assert not masks[2].any()


def test_dataset_without_masks_is_refused(setup, tmp_path):
    out = tmp_path / "report"
    with pytest.raises(DessamError, match="evaluation needs masks") as caught:
        evaluate(setup["model"], setup["train_json"], setup["train_json"].parent / "images", out, progress=False)
    assert str(setup["train_json"]) in str(caught.value)
    assert not out.exists()


def test_failure_midway_writes_nothing(setup, tmp_path):
    json_path, images = write_box_dataset(tmp_path / "data", n_images=2, seed=3, with_masks=True)
    (images / "scene_001.png").write_bytes(b"not a png")
    out = tmp_path / "report"
    with pytest.raises(DessamError, match="scene_001"):
        evaluate(setup["model"], json_path, images, out, progress=False)
    assert not out.exists() or not any(out.rglob("*"))


def test_compare_merges_reports(setup, tmp_path):
    plain = setup["root"] / "plain"
    if not (plain / "metrics.json").is_file():
        evaluate(setup["model"], setup["test_json"], setup["test_images"], plain, progress=False)
    out = tmp_path / "compare.md"
    text = compare_reports([setup["report_dir"], plain / "metrics.json"], out_path=out, names=["full", "student"])
    assert out.read_text() == text
    body = _table_rows(text)[2:]
    assert [row[0] for row in body] == [f"full / {m}" for m in METHODS] + [f"student / {STUDENT}"]
    aji_column = 1 + [key for key, _, _ in METRIC_COLUMNS].index("aji")
    assert float(body[0][aji_column]) == pytest.approx(setup["report"]["methods"]["box-as-mask"]["aji"], abs=1e-4)
    default_names = compare_reports([setup["report_dir"], plain])
    assert "| report / des-sam |" in default_names and "| plain / des-sam |" in default_names


def test_compare_refuses_bad_reports(setup, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DessamError, match="nowhere"):
        compare_reports([setup["report_dir"], missing])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(DessamError, match="broken"):
        compare_reports([broken])
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "metrics.json").write_text(json.dumps({"methods": {"des-sam": {"aji": "high"}}}))
    with pytest.raises(DessamError, match="aji"):
        compare_reports([wrong])
    out = tmp_path / "never.md"
    with pytest.raises(DessamError):
        compare_reports([setup["report_dir"]], out_path=out, names=["a", "b"])
    assert not out.exists()


def test_evaluate_label_maps():
    gt = np.zeros((20, 20), np.uint16)
    gt[2:8, 2:8] = 1
    gt[10:18, 10:18] = 2
    pred = np.zeros_like(gt)
    pred[2:8, 2:8] = 5
    result = evaluate_label_maps([gt, gt], [gt, pred])
    assert result["per_image"][0]["aji"] == 1.0
    assert result["summary"]["aji"] == pytest.approx((1.0 + evaluate_pair(gt, pred)["aji"]) / 2)
    assert result["summary"]["counts"] == {"n_gt": 4, "n_pred": 3, "tp": 3, "fp": 0, "fn": 1}
    with pytest.raises(DessamError, match="2 ground-truth label maps but 1"):
        evaluate_label_maps([gt, gt], [gt])
    with pytest.raises(DessamError, match="pair 0"):
        evaluate_label_maps([gt], [gt[:10]])
