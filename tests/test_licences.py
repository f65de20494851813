"""Licences: how terms pass from data and weights on to models, what files record, what commands say."""

import pytest
import torch
from scenes import tiny_config

from dessam.commands import main
from dessam.licences import PERMISSIVE, Terms, from_data, inherited, spoken
from dessam.models.bundled import BUNDLED_MODEL_FILES
from dessam.models.default_teacher import TEACHER_FILES
from dessam.models.model_file import read_model_file
from dessam.models.weights_terms import model_terms, sam_terms
from dessam.training.train import train

NC = "non-commercial (CC BY-NC-SA 4.0)"
# the bundled pretrained model's detector also learnt from CoNSeP, whose source states no licence
PRETRAINED_NC = "non-commercial (CC BY-NC-SA 4.0 and unstated terms)"


def test_non_commercial_terms_pass_on_and_permissive_ones_leave_apache():
    assert spoken("CC-BY-NC-SA-4.0") == "CC BY-NC-SA 4.0" and spoken("Apache-2.0") == "Apache-2.0"
    mixed = from_data({"dsb": "CC0-1.0", "monuseg": "CC-BY-NC-SA-4.0", "pap": "Apache-2.0"}, "the teacher")
    assert mixed.licence == "CC-BY-NC-SA-4.0" and mixed.words == NC and "monuseg" in mixed.sources[0]
    permissive = from_data({"dsb": "CC0-1.0", "pap": "Apache-2.0"}, "the teacher")
    assert permissive.licence == PERMISSIVE and not permissive.non_commercial
    assert inherited(permissive, mixed) == Terms("CC-BY-NC-SA-4.0", mixed.sources)   # either way round
    assert inherited(mixed, permissive).licence == "CC-BY-NC-SA-4.0"
    assert inherited(permissive, permissive).licence == PERMISSIVE
    assert Terms.from_dict(mixed.to_dict()) == mixed
    assert inherited(mixed, mixed, permissive).sources == mixed.sources  # a source named by two parts is listed once
    assert inherited(permissive, permissive).sources == permissive.sources
    unstated = from_data({"consep": "LicenseRef-unstated-NC"}, "the model")
    assert unstated.non_commercial and unstated.words == "non-commercial (unstated terms)"


@pytest.mark.skipif(not all(path.is_file() for path in BUNDLED_MODEL_FILES.values()), reason="no bundled models")
def test_the_bundled_files_carry_the_terms_of_their_data():
    assert model_terms(read_model_file(BUNDLED_MODEL_FILES["pretrained"])).words == PRETRAINED_NC
    assert model_terms(read_model_file(BUNDLED_MODEL_FILES["pretrained-permissive"])).licence == PERMISSIVE
    present = [name for name, path in TEACHER_FILES.items() if path.is_file()]
    words = {name: sam_terms(name).words for name in present}
    assert words == {name: NC if name == "default" else PERMISSIVE for name in present}


def _marked_non_commercial(model_path, tmp_path):
    """A copy of a model file whose record says its weights are CC BY-NC-SA."""
    payload = torch.load(model_path, weights_only=True)
    payload["licence"] = Terms("CC-BY-NC-SA-4.0", ("the teacher x.pt: trained on monuseg (CC-BY-NC-SA-4.0)",)).to_dict()
    path = tmp_path / "nc_model.pt"
    torch.save(payload, path)
    return path


def test_a_model_records_what_it_inherits_from_its_start_and_teacher(box_dataset, trained_tiny, tmp_path):
    boxes_json, _, images = box_dataset
    assert model_terms(read_model_file(trained_tiny)).licence == PERMISSIVE
    start = _marked_non_commercial(trained_tiny, tmp_path)
    config = tiny_config(max_iters=0).replace({"train.init": str(start)})
    result = train(config, boxes_json, images, tmp_path / "run", progress=False)
    recorded = model_terms(read_model_file(result.model_path))
    assert recorded.words == NC and "monuseg" in recorded.sources[0] and recorded == result.terms


def test_commands_name_non_commercial_weights_in_one_line(box_dataset, trained_tiny, tmp_path, capsys):
    boxes_json, masks_json, images = box_dataset
    model = _marked_non_commercial(trained_tiny, tmp_path)
    image = str(images / "scene_000.png")
    assert main(["predict", "--model", str(model), image, "--out", str(tmp_path / "p"), "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if NC in line]
    assert len(lines) == 1 and "--model pretrained-permissive" in lines[0]
    assert main(["eval", "--model", str(model), "--data", str(masks_json), "--images", str(images),
                 "--out", str(tmp_path / "e"), "--quiet"]) == 0
    assert sum(NC in line for line in capsys.readouterr().err.splitlines()) == 1
    if BUNDLED_MODEL_FILES["pretrained"].is_file():   # the reference row of --baselines is the bundled model's
        assert main(["eval", "--model", str(trained_tiny), "--data", str(masks_json), "--images", str(images),
                     "--out", str(tmp_path / "b"), "--baselines", "--quiet"]) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if PRETRAINED_NC in line]
        assert len(lines) == 1 and "pretrained (bundled)" in lines[0]
    assert main(["label", "--model", str(model), "--data", str(boxes_json), "--images", str(images),
                 "--out", str(tmp_path / "l.json"), "--quiet"]) == 0
    assert sum(NC in line for line in capsys.readouterr().err.splitlines()) == 1
    assert main(["predict", "--model", str(trained_tiny), image, "--out", str(tmp_path / "q"), "--quiet"]) == 0
    assert "non-commercial" not in capsys.readouterr().err   # permissive weights: nothing to say


def test_train_says_what_its_model_inherits_and_writes_it_into_the_card(box_dataset, trained_tiny, tmp_path, capsys):
    boxes_json, _, images = box_dataset
    start = _marked_non_commercial(trained_tiny, tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(f"preset: tiny\ntrain:\n  max_iters: 1\n  init: {start}\n")
    assert main(["train", "--train", str(boxes_json), "--images", str(images), "--config", str(config),
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("licence of "))
    assert NC in line and "--sam default-permissive" in line
    card = (tmp_path / "run" / "model.md").read_text()
    assert "CC-BY-NC-SA-4.0" in card and "monuseg" in card and str(boxes_json.name) in card


@pytest.mark.skipif(not TEACHER_FILES["default"].is_file(), reason="no bundled default teacher")
def test_the_non_commercial_teacher_is_named_before_training_or_labelling(capsys):
    from dessam.commands.shared import say_teacher_terms as _say_teacher_terms

    _say_teacher_terms("default", None)
    line = capsys.readouterr().err.strip()
    assert NC in line and "--sam default-permissive" in line and len(line.splitlines()) == 1
    _say_teacher_terms("default-permissive", None)
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not BUNDLED_MODEL_FILES["pretrained"].is_file(), reason="no bundled pretrained model")
def test_predict_without_model_says_the_default_is_non_commercial(box_dataset, tmp_path, capsys):
    _, _, images = box_dataset
    assert main(["predict", str(images / "scene_000.png"), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and PRETRAINED_NC in lines[0] and "--model pretrained-permissive" in lines[0], lines
