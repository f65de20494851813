"""Mixed supervision: given masks replace the teacher's pseudo-masks of the nuclei they outline."""

import json

import numpy as np
import pytest
import torch
from scenes import tiny_config

from dessam.commands import main
from dessam.data.coco import load_coco, segmentation_to_mask
from dessam.data.validate import validate_coco
from dessam.errors import DessamError
from dessam.models import dessam as dessam_module
from dessam.models.frame_masks import FrameMasks, distillation_targets, rasterise
from dessam.models.prompted_decoder import DecodedMasks
from dessam.training.batches import batch_masks, batch_tensors, encode_training_set
from dessam.training.cache import EmbeddingCache
from dessam.training.train import build_model, train


@pytest.fixture(scope="module")
def mixed_json(box_dataset, tmp_path_factory):
    """The masked file with the masks of every other annotation removed, and all of image 2's."""
    _, masks_json, images = box_dataset
    doc = json.loads(masks_json.read_text())
    for index, annotation in enumerate(doc["annotations"]):
        if index % 2 or annotation["image_id"] == 2:
            annotation.pop("segmentation")
    path = tmp_path_factory.mktemp("mixed") / "mixed.json"
    path.write_text(json.dumps(doc))
    return path


def _frame_reference(mask: np.ndarray, cell: int) -> np.ndarray:
    """A full-size mask in a frame of `cell` x `cell` pixel blocks: set where half a block is covered."""
    h, w = mask.shape
    return mask.reshape(h // cell, cell, w // cell, cell).mean((1, 3)) >= 0.5


def _placed(crop, row, col, shape) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[row:row + crop.shape[0], col:col + crop.shape[1]] = crop
    return out


# ----- rasterising a mask into the low-resolution frame ---------------------------------------
def test_rasterise_at_a_whole_number_scale_is_the_half_covered_blocks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((64, 64), dtype=bool)
        y, x = rng.integers(2, 40, 2)
        mask[y:y + rng.integers(1, 20), x:x + rng.integers(1, 20)] = rng.random() > 0.1
        mask &= rng.random(mask.shape) > 0.2
        rows, cols = np.nonzero(mask)
        if not len(rows):
            continue
        top, left = rows.min(), cols.min()
        crop = mask[top:rows.max() + 1, left:cols.max() + 1]
        # a 64 px image seen at S = 128 (resized x2) in a 32-pixel frame: one frame pixel = 2 x 2 px
        got = _placed(*rasterise(crop, top, left, (2.0, 2.0), 128, 32), (32, 32))
        expected = _frame_reference(mask, 2)
        if expected.any():
            assert np.array_equal(got, expected)


def test_rasterise_at_any_scale_measures_the_exact_covered_area():
    """A 200 x 150 image resized to 128 x 96 in a 64-pixel frame: one frame pixel covers 3.125 x
    3.125 original pixels; 8 x upsampling makes the frame pixels whole blocks of 25 x 25."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:200, :150]
    for _ in range(10):
        cy, cx, ry, rx = rng.uniform(20, 130), rng.uniform(20, 130), rng.uniform(2, 15), rng.uniform(2, 15)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        rows, cols = np.nonzero(mask)
        top, left = rows.min(), cols.min()
        crop = mask[top:rows.max() + 1, left:cols.max() + 1]
        got = _placed(*rasterise(crop, top, left, (128 / 200, 96 / 150), 128, 64), (64, 64))
        fine = np.zeros((1600, 1600), dtype=bool)
        fine[:1600, :1200] = mask.repeat(8, 0).repeat(8, 1)
        assert np.array_equal(got, _frame_reference(fine, 25))


def test_a_mask_smaller_than_half_a_frame_pixel_keeps_its_most_covered_pixel():
    crop = np.ones((1, 2), dtype=bool)  # 2 px of a 4 x 4 px frame pixel
    got, row, col = rasterise(crop, 5, 5, (1.0, 1.0), 64, 16)
    assert got.shape == (1, 1) and got.all() and (row, col) == (1, 1)
    assert rasterise(np.zeros((3, 3), bool), 0, 0, (1.0, 1.0), 64, 16)[0].size == 0


# ----- the targets of the prompts ---------------------------------------------------------------
def test_targets_are_the_given_mask_where_there_is_one_and_the_pseudo_mask_elsewhere():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 8)
    teacher = DecodedMasks(logits, torch.zeros(3, 1), torch.tensor([[0, 0], [4, 2], [10, 10]]), (32, 32))
    crop = torch.ones(3, 5, dtype=torch.bool)
    masks = [FrameMasks([crop, None], torch.tensor([[6, 3], [0, 0]])), None]
    targets, supervised = distillation_targets(teacher, torch.tensor([0, 0, 1]), torch.tensor([1, 0, 0]), masks)
    assert supervised.tolist() == [False, True, False]
    for n in (0, 2):
        assert torch.equal(targets[n], (logits[n] > 0).float())
    expected = torch.zeros(32, 32)
    expected[6:9, 3:8] = 1
    assert torch.equal(targets[1, 0], expected[4:12, 2:10])  # cut to the prompt's window


def _forward_with_capture(monkeypatch, model, items, cache):
    """Run `model` on `items` and capture what the distillation saw."""
    seen = {}
    original_losses = dessam_module.distillation_losses

    def targets_spy(teacher, image_index, matched_index, masks):
        seen.update(teacher=teacher, image_index=image_index, matched_index=matched_index)
        return distillation_targets(teacher, image_index, matched_index, masks)

    def losses_spy(student_logits, teacher_logits, **kwargs):
        seen.update(kwargs)
        return original_losses(student_logits, teacher_logits, **kwargs)

    monkeypatch.setattr(dessam_module, "distillation_targets", targets_spy)
    monkeypatch.setattr(dessam_module, "distillation_losses", losses_spy)
    losses = model(*batch_tensors(model, items, cache, "cpu"), gt_masks=batch_masks(items, "cpu"))
    return losses, seen


@pytest.mark.parametrize("local", [False, True], ids=["whole-frame", "local-windows"])
def test_the_loss_sees_the_given_masks_of_masked_nuclei_and_the_teachers_elsewhere(mixed_json, box_dataset,
                                                                                   monkeypatch, tmp_path, local):
    _, _, images = box_dataset
    config = tiny_config()
    config = config.replace({"model.local_decoding": local, "model.local_margin": 1})
    model, _ = build_model(config, torch.device("cpu"))
    model.train()
    dataset = load_coco(mixed_json, images)
    cache = EmbeddingCache(tmp_path / "cache", "tiny")
    items = encode_training_set(model, dataset.images[:3], cache, "cpu", progress=False, given_masks=True)
    assert items[1].masks is None  # image 2 has boxes only
    torch.manual_seed(0)
    _, seen = _forward_with_capture(monkeypatch, model, items, cache)
    targets, teacher = seen["targets"], seen["teacher"]
    cell = config.model.image_size // teacher.frame[0]  # the scenes are 128 px at S = 128
    kinds = set()
    for n, (image, annotation) in enumerate(zip(seen["image_index"].tolist(), seen["matched_index"].tolist())):
        record = items[image].record
        row, col = teacher.origins[n].tolist()
        window = (slice(row, row + targets.shape[-2]), slice(col, col + targets.shape[-1]))
        if record.segmentations[annotation] is None:
            expected = (teacher.logits[n, 0] > 0).float()
            kinds.add("box")
        else:
            given = segmentation_to_mask(record.segmentations[annotation], record.height, record.width)
            full = _frame_reference(given, cell)
            expected = torch.from_numpy(full[window]).float()
            kinds.add("mask")
        assert torch.equal(targets[n, 0], expected), (image, annotation)
        assert seen["weights"][n] == 1.0
    assert kinds == {"box", "mask"}
    assert (targets.shape[-1] < teacher.frame[1]) == local


def test_a_file_without_masks_computes_the_same_losses_as_before(box_dataset, tmp_path):
    """Images without given masks take DES-SAM's path untouched: the same losses bit for bit."""
    boxes_json, _, images = box_dataset
    model, _ = build_model(tiny_config(), torch.device("cpu"))
    model.train()
    cache = EmbeddingCache(tmp_path / "cache", "tiny")
    items = encode_training_set(model, load_coco(boxes_json, images).images[:2], cache, "cpu", progress=False,
                                given_masks=True)
    assert batch_masks(items, "cpu") is None
    batch = batch_tensors(model, items, cache, "cpu")
    torch.manual_seed(0)
    plain = model(*batch)
    torch.manual_seed(0)
    unmasked = [FrameMasks([None] * len(item.boxes), torch.zeros((len(item.boxes), 2), dtype=torch.long))
                for item in items]
    with_nothing_given = model(*batch, gt_masks=unmasked)
    assert all(torch.equal(plain[name], with_nothing_given[name]) for name in plain)


def test_mask_weight_scales_the_distillation_of_masked_prompts(box_dataset, tmp_path):
    _, masks_json, images = box_dataset
    config = tiny_config()
    model, _ = build_model(config, torch.device("cpu"))
    model.train()
    cache = EmbeddingCache(tmp_path / "cache", "tiny")
    items = encode_training_set(model, load_coco(masks_json, images).images[:2], cache, "cpu", progress=False,
                                given_masks=True)
    batch = batch_tensors(model, items, cache, "cpu")
    results = {}
    for weight in (1.0, 3.0):
        model.config = model.config.replace({"loss.mask_weight": weight})
        torch.manual_seed(0)
        results[weight] = model(*batch, gt_masks=batch_masks(items, "cpu"))
    for name in ("distill_bce", "distill_dice"):
        assert torch.allclose(results[3.0][name], 3 * results[1.0][name])
    assert torch.equal(results[3.0]["rpn_cls"], results[1.0]["rpn_cls"])
    assert torch.equal(results[3.0]["edge_local"], results[1.0]["edge_local"])


# ----- training, reports and validation -------------------------------------------------------------
def test_train_with_some_masks_reports_both_kinds(mixed_json, box_dataset, tmp_path, capsys):
    _, _, images = box_dataset
    doc = json.loads(mixed_json.read_text())
    masked = sum("segmentation" in a for a in doc["annotations"])
    assert 0 < masked < len(doc["annotations"])
    config = tiny_config(max_iters=4)
    (tmp_path / "config.yaml").write_text(__import__("yaml").safe_dump(config.to_dict()))
    code = main(["train", "--train", str(mixed_json), "--images", str(images), "--out", str(tmp_path / "run"),
                 "--config", str(tmp_path / "config.yaml"), "--mask-weight", "2.5", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    boxes = len(doc["annotations"]) - masked
    assert f"annotations supervised with masks: {masked}, with boxes: {boxes}" in out
    report = (tmp_path / "run" / "data_report.txt").read_text()
    assert f"annotations supervised with masks: {masked}\n" in report
    assert f"annotations supervised with boxes: {boxes}\n" in report
    saved = __import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["loss"]["mask_weight"] == 2.5


def test_a_file_with_only_masks_trains(box_dataset, tmp_path):
    _, masks_json, images = box_dataset
    result = train(tiny_config(max_iters=4), masks_json, images, tmp_path / "run", progress=False)
    assert result.iterations == 4 and result.box_annotations == 0 and result.mask_annotations > 0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all("nan" not in row for row in rows)


def test_an_empty_given_mask_is_refused_in_one_line(box_dataset, tmp_path):
    _, masks_json, images = box_dataset
    doc = json.loads(masks_json.read_text())
    doc["annotations"][3]["segmentation"] = [[1, 1, 2, 1, 3, 1]]  # a polygon without area
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DessamError, match=f"annotation {doc['annotations'][3]['id']}: the segmentation is empty"):
        train(tiny_config(max_iters=1), tmp_path / "bad.json", images, tmp_path / "run", progress=False)


def test_validate_counts_annotations_with_masks_and_with_boxes_only(mixed_json, box_dataset, capsys):
    _, _, images = box_dataset
    doc = json.loads(mixed_json.read_text())
    masked = sum("segmentation" in a for a in doc["annotations"])
    report = validate_coco(mixed_json, images, progress=False)
    assert (report.with_masks, report.boxes_only) == (masked, len(doc["annotations"]) - masked)
    assert main(["validate", str(mixed_json), "--images", str(images)]) == 0
    out = capsys.readouterr().out
    assert "annotations with masks" in out and "annotations with boxes only" in out
