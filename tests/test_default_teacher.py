import numpy as np
import pytest
import torch

from dessam.errors import DessamError
from dessam.models.default_teacher import (
    DEFAULT_STRIDE,
    build_default_architecture,
    load_default_teacher,
    teacher_file,
)
from dessam.models.checkpoints import read_sam_state_dict

SMALL = {"widths": [8, 16, 16], "depths": [1, 1, 1], "prompt_dim": 32, "decoder_mlp_dim": 64,
         "decoder_heads": 2, "iou_hidden": 32, "mask_in_chans": 8}


@pytest.mark.parametrize("size", [64, 96])
def test_architecture_output_shapes(size):
    sam = build_default_architecture(size, SMALL).eval()
    assert sam.image_encoder.img_size == size
    grid = size // DEFAULT_STRIDE
    with torch.no_grad():
        embedding = sam.image_encoder(torch.zeros(2, 3, size, size))
        assert embedding.shape == (2, 32, grid, grid)
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([[4.0, 4, 30, 40], [0, 0, 10, 10]]), masks=None)
        low, iou = sam.mask_decoder(embedding[:1], sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
    assert low.shape == (2, 1, 4 * grid, 4 * grid) and iou.shape == (2, 1)


def test_default_architecture_builds_and_rejects_bad_size():
    sam = build_default_architecture(None)
    assert sam.image_encoder.img_size == 256
    with pytest.raises(DessamError):
        build_default_architecture(100)


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    sam = build_default_architecture(64, SMALL)
    path = tmp_path / "teacher.pt"
    torch.save(teacher_file(sam, SMALL), path)
    state = read_sam_state_dict(path)
    for key, value in sam.state_dict().items():
        assert torch.equal(state[key], value)
    loaded = load_default_teacher(None, path)  # arch and size come from the file
    assert loaded.image_encoder.img_size == 64
    loaded_at_other_size = load_default_teacher(128, path)
    assert loaded_at_other_size.prompt_encoder.image_embedding_size == (16, 16)


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(DessamError, match="pretrain-teacher --out"):
        load_default_teacher(None, tmp_path / "nope.pt")


def test_tiny_pretraining_writes_a_loadable_file(tmp_path):
    from dessam.training.pretrain_teacher import evaluate_box_prompt_iou, held_out_anything_scenes, pretrain_teacher

    path = tmp_path / "t.pt"
    result = pretrain_teacher(path, steps=3, image_size=64, batch_size=2, max_prompts=4, arch=SMALL,
                              eval_scenes=2, warmup=1, progress=False)
    assert result["steps_done"] == 3 and np.isfinite(result["final_loss"])
    assert 0.0 <= result["held_out_anything_iou"] <= 1.0
    sam = load_default_teacher(None, path)
    assert read_sam_state_dict(path).keys() == sam.state_dict().keys()
    assert evaluate_box_prompt_iou(sam, held_out_anything_scenes(2, size=64)) == pytest.approx(
        result["held_out_anything_iou"], abs=1e-6)
    again = pretrain_teacher(tmp_path / "u.pt", steps=3, image_size=64, batch_size=2, max_prompts=4, arch=SMALL,
                             eval_scenes=0, warmup=1, progress=False)
    assert again["final_loss"] == pytest.approx(result["final_loss"], rel=1e-5)  # same seed, same run


def test_evaluation_scores_a_perfect_and_an_empty_mask(monkeypatch):
    from dessam.training import pretrain_teacher as pt


    sam = build_default_architecture(64, SMALL).eval()
    labels = np.zeros((64, 64), np.uint16)
    labels[8:24, 16:40] = 1  # a rectangle: its box is its mask
    image = np.zeros((64, 64, 3), np.uint8)

    def fake_decode(model, embedding, boxes, value):
        grid = 4 * model.prompt_encoder.image_embedding_size[0]
        yy, xx = torch.meshgrid(torch.arange(grid) + 0.5, torch.arange(grid) + 0.5, indexing="ij")
        scale = model.image_encoder.img_size / grid
        inside = [(xx * scale > b[0]) & (xx * scale < b[2]) & (yy * scale > b[1]) & (yy * scale < b[3]) for b in boxes]
        logits = torch.stack(inside)[:, None].float() * 20 - 10
        return (logits if value else -10 * torch.ones_like(logits)), torch.zeros(len(boxes), 1)

    monkeypatch.setattr(pt, "decode_boxes", lambda m, e, b: fake_decode(m, e, b, True))
    assert pt.evaluate_box_prompt_iou(sam, [(image, labels)]) > 0.95
    monkeypatch.setattr(pt, "decode_boxes", lambda m, e, b: fake_decode(m, e, b, False))
    assert pt.evaluate_box_prompt_iou(sam, [(image, labels)]) == 0.0


def test_box_regions_and_jitter():
    from dessam.training.pretrain_teacher import BOX_NOISE_MAX, box_regions, jitter_boxes

    near = box_regions(torch.tensor([[16.0, 8.0, 32.0, 24.0]]), (1, 1, 32, 32), 64, margin=0.0)[0, 0]
    rows, cols = np.nonzero(near.numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 11, 8, 15)  # low-res pixel centres inside
    boxes = np.array([[10, 10, 200, 200], [5, 5, 12, 9]], np.float32)
    jittered = jitter_boxes(np.repeat(boxes, 50, 0), np.random.default_rng(0), 64)
    assert jittered.min() >= 0 and jittered.max() <= 64
    assert (jittered[:, 2:] > jittered[:, :2]).all()
    small = jittered[50:]
    assert np.abs(small - boxes[1]).max() <= BOX_NOISE_MAX and np.abs(small - boxes[1]).std() > 0


def test_cytology_test_scenes_are_seeded_and_unseen():
    from dessam.data.synth import make_scene
    from dessam.training.pretrain_teacher import cytology_test_scenes

    first = cytology_test_scenes("cluster", n=2, seed=0, size=64)
    again = cytology_test_scenes("cluster", n=2, seed=0, size=64)
    other = cytology_test_scenes("cluster", n=1, seed=1, size=64)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    dataset_scene = make_scene(np.random.default_rng([0, 2, 0]), scene="cluster", size=(64, 64))  # a test split
    assert not np.array_equal(first[0][0], dataset_scene[0])
    with pytest.raises(ValueError):
        cytology_test_scenes("nope", n=1)


def test_evaluate_on_cytology_reports_each_scene_kind(monkeypatch):
    from dessam.training import pretrain_teacher as pt

    seen = []
    monkeypatch.setattr(pt, "evaluate_box_prompt_iou", lambda sam, scenes, progress=False: seen.append(scenes) or 0.5)
    sam = build_default_architecture(64, SMALL).eval()
    result = pt.evaluate_on_cytology(sam, n=2, seed=3)
    assert result == {"mixed": 0.5, "cluster": 0.5, "patch": 0.5}
    assert [len(s) for s in seen] == [2, 2, 2] and seen[0][0][0].shape == (64, 64, 3)


def test_point_prompts_fall_inside_their_objects_and_train_the_encoder():
    from dessam.training import pretrain_teacher as pt

    rng = np.random.default_rng(0)
    images, prompts = pt.sample_batch(rng, 2, 64, 6, point_fraction=0.5)
    assert any(p.is_point.any() for p in prompts) and any((~p.is_point).any() for p in prompts)
    for p in prompts:
        for (x, y), mask in zip(p.points[p.is_point].numpy(), p.masks[p.is_point].numpy()):
            assert mask[int(y), int(x)]  # a pixel centre of the object itself
    none = pt.sample_batch(np.random.default_rng(0), 2, 64, 6, point_fraction=0.0)[1]
    assert not any(p.is_point.any() for p in none)

    sam = build_default_architecture(64, SMALL).train()
    embedding = sam.image_encoder(sam.preprocess(images[:1]))
    only_points = pt.Prompts(**{**vars(prompts[0]), "is_point": torch.ones_like(prompts[0].is_point)})
    loss, box_ious = pt.prompt_losses(sam, embedding, only_points, 64)
    loss.backward()
    assert torch.isfinite(loss) and len(box_ious) == 0
    assert sam.image_encoder.stages[0][0][0].weight.grad.abs().sum() > 0
    heads = sam.mask_decoder.output_hypernetworks_mlps
    assert any(heads[i].layers[-1].weight.grad.abs().sum() > 0 for i in (1, 2, 3))  # a best multimask output
    assert not heads[0].layers[-1].weight.grad.any()  # the single-mask (box) output is not what points train


def test_multimask_loss_counts_only_the_best_output():
    from dessam.training.pretrain_teacher import multimask_losses

    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 4:12, 4:12] = True
    good = torch.where(mask[:, None], 10.0, -10.0)
    bad = -good
    box = torch.tensor([[4.0, 4.0, 12.0, 12.0]])
    iou_pred = torch.tensor([[1.0, 0.0]])
    best_first, ious = multimask_losses(torch.cat([good, bad], 1), iou_pred, mask, box, 16)
    alone, _ = multimask_losses(good, iou_pred[:, :1], mask, box, 16)
    assert ious[0, 0] == 1.0 and ious[0, 1] == 0.0
    # the bad output adds nothing to the mask loss; the IoU head is scored on both (exactly right here)
    assert best_first.item() == pytest.approx(alone.item(), abs=1e-6)
    swapped, _ = multimask_losses(torch.cat([bad, good], 1), iou_pred, mask, box, 16)
    assert swapped.item() == pytest.approx(alone.item() + 1.0, abs=1e-6)  # IoU head now wrong on both


def test_a_second_stage_starts_from_the_given_teacher(tmp_path):
    from dessam.training.pretrain_teacher import pretrain_teacher

    arch = {**SMALL, "widths": [8, 16, 24]}
    first = tmp_path / "first.pt"
    pretrain_teacher(first, steps=2, image_size=64, batch_size=1, max_prompts=3, arch=arch, eval_scenes=0,
                     warmup=1, progress=False)
    same = tmp_path / "same.pt"
    result = pretrain_teacher(same, steps=0, image_size=64, init=first, eval_scenes=0, progress=False)
    assert result["init"] == "first.pt"
    a, b = read_sam_state_dict(first), read_sam_state_dict(same)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # its weights and its widths
    later = tmp_path / "later.pt"
    pretrain_teacher(later, steps=2, image_size=64, batch_size=1, max_prompts=3, init=first, point_fraction=1.0,
                     eval_scenes=0, warmup=1, progress=False)
    c = read_sam_state_dict(later)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert load_default_teacher(None, later).image_encoder.stages[2][0][0].out_channels == 24
