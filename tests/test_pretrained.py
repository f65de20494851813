"""The bundled pretrained model: where training starts from it, predict and eval without --model."""

import json

import pytest
import torch
from scenes import tiny_config

import dessam.models.bundled as bundled
from dessam.commands import main
from dessam.errors import DessamError
from dessam.inference.loading import load_model
from dessam.models.model_file import read_model_file
from dessam.training.train import train


@pytest.fixture
def as_bundled(trained_tiny, monkeypatch):
    """The tiny trained model stands in for the bundled pretrained model."""
    monkeypatch.setitem(bundled.BUNDLED_MODEL_FILES, bundled.PRETRAINED_NAME, trained_tiny)
    return trained_tiny


def _same_weights(a, b) -> bool:
    first, second = read_model_file(a).state_dict, read_model_file(b).state_dict
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_training_starts_from_the_model_it_is_told(box_dataset, trained_tiny, tmp_path):
    boxes_json, _, images = box_dataset
    config = tiny_config(max_iters=0)
    config = config.replace({"train.init": str(trained_tiny)})
    result = train(config, boxes_json, images, tmp_path / "run", progress=False)
    assert _same_weights(result.model_path, trained_tiny) and str(trained_tiny) in result.start
    config = config.replace({"train.init": "scratch"})
    scratch = train(config, boxes_json, images, tmp_path / "scratch", progress=False)
    assert not _same_weights(scratch.model_path, trained_tiny) and "random weights" in scratch.start


def test_a_detector_with_its_own_encoder_starts_from_a_model_whose_detector_read_the_teacher(box_dataset, trained_tiny,
                                                                                           tmp_path):
    """`model.detector_encoder: own` started from a model whose detector read SAM's embedding: neck,
    detector and token come from that model, the detector's encoder starts as SAM's, so the model starts
    out detecting exactly what the other one detects."""
    boxes_json, _, images = box_dataset
    config = tiny_config(max_iters=0).replace({"train.init": str(trained_tiny), "model.detector_encoder": "own"})
    result = train(config, boxes_json, images, tmp_path / "own", progress=False)
    assert "the detector's own image encoder from the teacher's" in result.start
    started, source = read_model_file(result.model_path).state_dict, read_model_file(trained_tiny).state_dict
    assert all(torch.equal(started[k], v) for k, v in source.items())
    model = load_model(result.model_path).model
    own, sam = model.detector_encoder.state_dict(), model.sam.image_encoder.state_dict()
    assert own and own.keys() == sam.keys() and all(torch.equal(own[k], sam[k]) for k in own)


def test_auto_starts_from_the_bundled_model_only_when_it_fits(box_dataset, as_bundled, tmp_path):
    boxes_json, _, images = box_dataset
    result = train(tiny_config(max_iters=0), boxes_json, images, tmp_path / "auto", progress=False)
    assert _same_weights(result.model_path, as_bundled) and "bundled pretrained model" in result.start
    other = tiny_config(max_iters=0)
    other = other.replace({"model.neck_channels": 16})  # another detector shape
    result = train(other, boxes_json, images, tmp_path / "other", progress=False)
    assert "differs from the bundled pretrained model's" in result.start
    other = other.replace({"train.init": "pretrained"})
    with pytest.raises(DessamError, match="another detector shape"):
        train(other, boxes_json, images, tmp_path / "refused", progress=False)


def test_no_bundled_model_means_random_weights_or_a_clear_refusal(box_dataset, monkeypatch, tmp_path):
    for name in list(bundled.BUNDLED_MODEL_FILES):  # an installation without any bundled model
        monkeypatch.setitem(bundled.BUNDLED_MODEL_FILES, name, tmp_path / "absent.pt")
    boxes_json, _, images = box_dataset
    assert "no bundled pretrained model" in train(tiny_config(max_iters=0), boxes_json, images, tmp_path / "a",
                                                  progress=False).start
    config = tiny_config(max_iters=0)
    config = config.replace({"train.init": "pretrained"})
    with pytest.raises(DessamError, match="no bundled pretrained model"):
        train(config, boxes_json, images, tmp_path / "b", progress=False)
    config = config.replace({"train.init": str(tmp_path / "nope.pt")})
    with pytest.raises(DessamError, match="--init model file not found"):
        train(config, boxes_json, images, tmp_path / "c", progress=False)


def test_predict_without_model_uses_the_bundled_one_and_says_so(box_dataset, as_bundled, tmp_path, capsys):
    _, _, images = box_dataset
    code = main(["predict", str(images / "scene_000.png"), "--out", str(tmp_path / "out"), "--quiet",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "out" / "scene_000_labels.tif").is_file()
    lines = [line for line in err.splitlines() if "bundled pretrained model" in line]
    assert len(lines) == 1 and "--model RUN/model.pt" in lines[0]


def test_predict_without_model_and_nothing_bundled_is_one_line(box_dataset, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(bundled.BUNDLED_MODEL_FILES, bundled.PRETRAINED_NAME, tmp_path / "absent.pt")
    _, _, images = box_dataset
    assert main(["predict", str(images / "scene_000.png"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "pass --model RUN/model.pt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_with_baselines_has_a_row_for_the_bundled_model(box_dataset, as_bundled, tmp_path):
    boxes_json, masks_json, images = box_dataset
    config = tiny_config(max_iters=2)
    config = config.replace({"train.init": "scratch"})
    model = train(config, boxes_json, images, tmp_path / "run", progress=False).model_path
    assert main(["eval", "--model", str(model), "--data", str(masks_json), "--images", str(images),
                 "--out", str(tmp_path / "report"), "--baselines", "--quiet", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert "pretrained (bundled)" in report["methods"] and "des-sam" in report["methods"]
    assert report["settings"]["reference"] == str(as_bundled)
    assert "| pretrained (bundled) |" in (tmp_path / "report" / "metrics.md").read_text()
    assert main(["eval", "--model", str(as_bundled), "--data", str(masks_json), "--images", str(images),
                 "--out", str(tmp_path / "self"), "--baselines", "--quiet", "--device", "cpu"]) == 0
    assert "pretrained (bundled)" not in json.loads((tmp_path / "self" / "metrics.json").read_text())["methods"]


def test_bundled_models_are_named_on_the_command_line(as_bundled, monkeypatch, tmp_path):
    from dessam.inference.loading import load_model
    from dessam.models.default_teacher import TEACHER_FILES
    from dessam.config.presets import DEFAULT_TEACHERS

    assert bundled.resolve_model("pretrained") == as_bundled
    assert str(bundled.resolve_model("runs/x/model.pt")) == "runs/x/model.pt"
    assert load_model("pretrained").path == as_bundled
    assert tuple(TEACHER_FILES) == DEFAULT_TEACHERS  # the presets know every bundled teacher's name


def test_a_teacher_not_bundled_is_one_line(tmp_path, monkeypatch):
    from dessam.models import default_teacher
    from dessam.models.sam import build_sam

    monkeypatch.setitem(default_teacher.TEACHER_FILES, "default-permissive", tmp_path / "absent.pt")
    with pytest.raises(DessamError, match="not bundled with this installation"):
        build_sam("default-permissive")
