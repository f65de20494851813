"""Pre-training the default teacher on a corpus: prompts, targets, the run, its card and resuming."""

import csv

import numpy as np
import pytest
import torch
import yaml

from dessam.commands import main
from dessam.models.checkpoints import read_sam_state_dict
from dessam.models.default_teacher import load_default_teacher
from dessam.models.sam import build_sam
from dessam.pretrain import crops
from dessam.pretrain import teacher as pt

TINY = {"widths": [4, 8, 8, 8], "depths": [1, 1, 1, 1], "prompt_dim": 16, "decoder_mlp_dim": 32, "decoder_heads": 2,
        "iou_hidden": 16, "mask_in_chans": 4, "image_size": 128, "local_margin": 2}


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(pt.ARCH_SIZES, "tiny", TINY)


def _recipe(**changes):
    return pt.Recipe(**{"steps": 4, "batch_size": 2, "crop": 32, "max_prompts": 3, "warmup": 2, "arch": "tiny",
                        "eval_every": 2, "val_limit": 2, **changes})


def test_jittered_boxes_stay_in_the_image_and_err_like_detections():
    boxes = np.repeat(np.array([[10, 10, 40, 30]], np.float32), 2000, 0)
    out = crops.jitter_boxes(boxes, np.random.default_rng(0), (48, 64), noise=0.08, wide_noise=0.2, wide_share=0.15)
    assert out.min() >= 0 and out[:, 2].max() <= 64 and out[:, 3].max() <= 48
    assert (out[:, 2:] >= out[:, :2] + 1).all()
    errors = (out - boxes)[:, 0] / 30
    assert 0.08 < errors.std() < 0.12  # the mixture of the two error sizes
    assert np.abs(errors).max() <= 0.4 + 1e-6


def test_nucleus_boxes_skip_tiny_pieces_and_window_targets_cut_each_nucleus():
    labels = np.zeros((20, 20), np.uint32)
    labels[2:6, 3:8] = 1
    labels[10:12, 10:11] = 2  # 2 pixels: too small to prompt
    ids, boxes = crops.nucleus_boxes(labels, min_area=4)
    assert ids.tolist() == [1] and boxes.tolist() == [[3, 2, 8, 6]]
    target = crops.window_targets(labels, np.array([1]), np.array([[-2, 1]]), 8)
    assert target.shape == (1, 1, 8, 8)
    np.testing.assert_array_equal(target[0, 0].numpy(), np.pad(labels == 1, ((2, 0), (0, 0)))[0:8, 1:9])


def test_crop_losses_train_the_encoder_through_windows_placed_in_the_frame(tiny_arch):
    sam = pt.build_default_architecture(128, pt.full_arch(TINY))
    decoder = pt.PromptedMaskDecoder(sam, prompt_token=False)
    labels = np.zeros((32, 32), np.uint32)
    labels[4:14, 6:18] = 1
    prompted = crops.Prompted(np.array([[5, 3, 19, 15]], np.float32), np.array([[6, 4, 18, 14]], np.float32),
                           np.array([1]))
    image = torch.rand(1, 3, 32, 32) * 255
    embedding = sam.image_encoder(pt.normalise(sam, image))
    assert embedding.shape[-2:] == (8, 8)
    loss, iou = crops.crop_losses(decoder, embedding, labels, prompted, margin=1, offset=(3, 5))
    loss.backward()
    assert torch.isfinite(loss) and 0 <= float(iou[0]) <= 1
    assert sam.image_encoder.stages[0][0][0].weight.grad.abs().sum() > 0
    frame = crops.in_frame(embedding.detach(), 16, (3, 5))
    assert torch.equal(frame[:, :, 3:11, 5:13], embedding.detach()) and frame[:, :, :3].abs().sum() == 0


def test_a_run_writes_a_loadable_teacher_its_card_and_log(tmp_path, corpus, tiny_arch):
    result = pt.pretrain_teacher(corpus, tmp_path / "run", _recipe(), progress=False, command="dessam pretrain-teacher")
    assert result.steps_done == 4 and set(result.validation) == {"dsb", "pap"}
    assert all(0 <= v <= 1 for v in result.validation.values())
    sam = load_default_teacher(None, result.teacher_path)
    assert sam.image_encoder.img_size == 128 and sam.prompt_encoder.image_embedding_size == (32, 32)
    assert build_sam("default", result.teacher_path).prompt_encoder.embed_dim == 16
    card = result.card_path.read_text()
    assert "Apache-2.0, like dessam" in card and "| dsb | dsb | fluorescence |" in card
    assert "dessam pretrain-teacher" in card and "| 4 |" in card  # the last validation row
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"] and rows[1]["val_dsb"] and not rows[0]["val_dsb"]


def test_a_resumed_run_is_the_run_that_was_not_interrupted(tmp_path, corpus, tiny_arch):
    whole = pt.pretrain_teacher(corpus, tmp_path / "whole", _recipe(), progress=False)
    pt.pretrain_teacher(corpus, tmp_path / "cut", _recipe(steps=2), progress=False)
    state = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    state["recipe"]["steps"] = 4  # as if the first run had been asked for 4 steps and stopped after 2
    torch.save(state, tmp_path / "cut" / "checkpoints" / "last.pt")
    resumed = pt.pretrain_teacher(corpus, tmp_path / "cut", resume=True, progress=False)
    assert resumed.steps_done == 4
    a, b = read_sam_state_dict(whole.teacher_path), read_sam_state_dict(resumed.teacher_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]


def test_command_line_mistakes_are_one_line(tmp_path, corpus, capsys):
    assert main(["pretrain-teacher", "--corpus", str(corpus), "--out", str(tmp_path / "r"), "--resume"]) == 2
    assert "nothing to resume from" in capsys.readouterr().err
    assert main(["pretrain-teacher", "--corpus", str(corpus), "--out", str(tmp_path / "r"), "--crop", "40"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["pretrain-teacher", "--corpus", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "corpus manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_pretrain_model_trains_from_boxes_only_and_writes_its_card(tmp_path, corpus, tiny_arch):
    from dessam.data.coco import load_coco
    from dessam.pretrain.model import pretrain_model

    teacher = pt.pretrain_teacher(corpus, tmp_path / "teacher", _recipe(steps=1), progress=False).teacher_path
    manifest = yaml.safe_load(corpus.read_text())
    manifest["datasets"].append({"name": "shapes", "format": "synthetic", "generator": "anything",
                                 "licence": "Apache-2.0", "use": ["teacher"]})
    corpus.write_text(yaml.safe_dump(manifest))
    result = pretrain_model(corpus, teacher, tmp_path / "model", max_iters=2, synthetic_images=2, progress=False, size_steps=2,
                            command="dessam pretrain-model")
    train = load_coco(tmp_path / "model" / "corpus" / "train.json", tmp_path / "model" / "corpus" / "images")
    assert all(segmentation is None for record in train.images for segmentation in record.segmentations)
    names = {record.file_name.split("/")[0] for record in train.images}
    assert names == {"dsb", "pap"}  # the shapes teach the teacher only
    assert set(result.validation) == {"dsb", "pap"} and "aji" in result.validation["dsb"]
    card = result.card_path.read_text()
    assert "boxes only" in card and "| dsb |" in card and "dessam pretrain-model" in card
    from dessam.models.model_file import read_model_file
    from dessam.training.model_card import stated_settings, stored_settings

    stored = read_model_file(result.model_path)
    assert stated_settings(card) == stored_settings(stored.config)   # the card states what the file stores
    assert stored.licence["licence"] == "Apache-2.0" and "Apache-2.0, like dessam" in card
    from dessam.inference.loading import load_model

    model = load_model(result.model_path, sam_checkpoint=teacher)
    assert model.config.model.neck_finest_stride == 4 and model.config.train.init == "scratch"

    # without its size head's training, the held-out sets are not scored at a scale nobody would use
    unsized = pretrain_model(corpus, teacher, tmp_path / "unsized", max_iters=1, synthetic_images=2, progress=False,
                             size_steps=0)
    assert unsized.validation == {} and "size head is untrained" in unsized.unscored
    assert "Not scored: the model brings every image to a nucleus size" in unsized.card_path.read_text()

    # the size head trained further: a new file in which the head alone changed, with the corpus's terms
    further = tmp_path / "further" / "model.pt"
    assert main(["train-size-head", str(result.model_path), "--corpus", str(corpus), "--out", str(further),
                 "--steps", "2", "--teacher", str(teacher), "--quiet"]) == 0
    before, after = (torch.load(p, map_location="cpu", weights_only=False) for p in (result.model_path, further))
    changed = {k for k in before["state_dict"] if not torch.equal(before["state_dict"][k], after["state_dict"][k])}
    assert changed and all(k.startswith("size_head.") for k in changed)
    assert after["config"] == before["config"] and after["licence"]["licence"] == "Apache-2.0"
    assert any("size head's corpus" in source for source in after["licence"]["sources"])
    assert main(["train-size-head", str(result.model_path), "--corpus", str(corpus), "--out",
                 str(result.model_path), "--steps", "2"]) == 2   # never over the model itself
    assert main(["train-size-head", str(result.model_path), "--corpus", str(corpus), "--out", str(further),
                 "--steps", "0"]) == 2

    fixed = dict(before, config={**before["config"], "model": {**before["config"]["model"], "input_scaling": "fit"}})
    torch.save(fixed, tmp_path / "fixed.pt")   # a model at its own scale has no size head to train
    assert main(["train-size-head", str(tmp_path / "fixed.pt"), "--corpus", str(corpus), "--out",
                 str(tmp_path / "m.pt"), "--steps", "2"]) == 2 and not (tmp_path / "m.pt").exists()


def test_a_recipe_is_composed_from_a_file_then_set_then_flags_and_saved_with_the_run(tmp_path, corpus, tiny_arch):
    from dessam.errors import DessamError
    from dessam.pretrain.recipe import compose_recipe

    file = tmp_path / "recipe.yaml"
    file.write_text("steps: 4\nbatch_size: 2\ncrop: 32\nmax_prompts: 3\nwarmup: 2\narch: tiny\neval_every: 2\n"
                    "val_limit: 2\nmargins: [1, 3]\nlr: 0.01\n")
    recipe = compose_recipe(file, {"lr": "0.005", "seed": 3})
    assert recipe.steps == 4 and recipe.margins == (1, 3) and recipe.lr == 0.005 and recipe.seed == 3
    with pytest.raises(DessamError, match="unknown recipe setting 'stepz'; known: steps"):
        compose_recipe(None, {"stepz": 1})
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("steps: many\n")
    with pytest.raises(DessamError, match=f"{wrong}: steps: expected a int"):
        compose_recipe(wrong)
    with pytest.raises(Exception):  # composed once, never edited
        recipe.steps = 5
    file.write_text(yaml.safe_dump({**{k: v for k, v in vars(recipe).items()}, "margins": [1, 3]}))
    out = tmp_path / "run"
    assert main(["pretrain-teacher", "--corpus", str(corpus), "--out", str(out), "--config", str(file),
                 "--set", "lr=0.002", "--seed", "5", "--quiet"]) == 0
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["lr"] == 0.002 and saved["seed"] == 5 and saved["steps"] == 4 and saved["margins"] == [1, 3]
    assert compose_recipe(out / "recipe.yaml") == compose_recipe(file, {"lr": 0.002, "seed": 5})


def test_resume_refuses_a_recipe_given_again(tmp_path, corpus, capsys):
    assert main(["pretrain-teacher", "--corpus", str(corpus), "--out", str(tmp_path / "r"), "--resume",
                 "--set", "lr=0.1"]) == 2
    assert "leave out --set" in capsys.readouterr().err
