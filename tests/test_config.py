"""The configuration: composed once (preset, file, overrides), frozen, each section checking its own
choices; keys of earlier layouts and earlier model files keep working; the preset registry."""

import dataclasses

import pytest
import yaml

from dessam.config import ALIASES, Config, Postprocess, parse_set, settings_by_key
from dessam.errors import DessamError
from dessam.models.model_file import with_earlier_behaviour
from dessam.config.presets import REGISTRY, SMALL_CPU, implied_preset, preset_layers


def test_compose_applies_preset_then_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 7, "lr": 0.5}, "model": {"postprocess": {"min_size": 5}}}))
    config = Config.compose("demo", path, {"train.lr": "0.25", "model.score_threshold": 0.4})
    assert config.preset == "demo"
    assert config.model.image_size == 256 and config.model.detector.box_head_fc == 128  # the preset's
    assert config.train.epochs == 7 and config.model.postprocess.min_size == 5           # the file's
    assert config.train.lr == 0.25 and isinstance(config.train.lr, float)               # overrides, coerced
    assert config.model.postprocess.score_threshold == 0.4                              # an earlier key
    assert config.model.postprocess.max_detections == 300                              # the shared base's


def test_a_file_may_name_its_preset_and_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"preset": "clusterseg", "loss": {"edge_aware": False}}))
    config = Config.compose(file=path, overrides={"model.detector.detection_nms": 0.3})
    assert config.preset == "clusterseg" and config.loss.roi_box == 0.1 and config.loss.edge_aware is False
    assert config.model.detector.detection_nms == 0.3 and config.model.detector.rpn_nms_test == 0.5


def test_an_earlier_config_yaml_loads_into_todays_sections(tmp_path):
    earlier = {"model": {"sam": "tiny", "score_threshold": 0.3, "min_object_size": 12, "max_detections": 50,
                         "overlap_winner": "higher-score", "rpn_nms": 0.6, "box_head_fc": 64, "decoder_chunk": 8},
               "loss": {"roi_box": 0.5}, "train": {"epochs": 3}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(earlier))
    config = Config.compose(file=path)
    post, detector = config.model.postprocess, config.model.detector
    assert (post.score_threshold, post.min_size, post.max_detections, post.overlap_winner) == (0.3, 12, 50, "higher-score")
    assert (detector.rpn_nms, detector.box_head_fc) == (0.6, 64)
    assert config.loss.roi_box == 0.5 and config.train.epochs == 3
    assert Config.from_dict(config.to_dict()) == config  # what a run saves reads back the same


def test_every_earlier_key_has_a_home_and_every_key_works_with_set():
    config = Config()
    for earlier, key in ALIASES.items():
        section, name = key.rsplit(".", 1)
        value = getattr(eval(f"config.{section}"), name)  # noqa: S307 - a fixed attribute path
        assert Config.compose(overrides={earlier: value}) == config
    assert set(settings_by_key(config.to_dict())) >= {f"model.postprocess.{f.name}" for f in dataclasses.fields(Postprocess)}


def test_a_config_is_never_edited_after_composition():
    config = Config.compose("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 3
    changed = config.replace({"train.epochs": 3, "model.rpn_nms": 0.6})
    assert changed.train.epochs == 3 and changed.model.detector.rpn_nms == 0.6
    assert config.train.epochs == 50 and config.model.detector.rpn_nms == 0.7 and changed.preset == "tiny"


@pytest.mark.parametrize("key, value, message", [
    ("model.input_scaling", "stretch", "model.input_scaling: unknown 'stretch'; use fit or fixed"),
    ("model.prompt_token_init", "zeros", "model.prompt_token_init: unknown 'zeros'"),
    ("model.box_head_norm", "batchnorm", "model.detector.box_head_norm: unknown 'batchnorm'; use none or layernorm"),
    ("model.connectivity", 6, "model.postprocess.connectivity: unknown 6; use 8 or 4"),
    ("model.overlap_winner", "first", "model.postprocess.overlap_winner: unknown 'first'"),
    ("loss.edge_crop_box", "image", "loss.edge_crop_box: unknown 'image'; use annotated or proposal"),
    ("loss.edge_global_image", "lab", "loss.edge_global_image: unknown 'lab'; use rgb or normalised"),
    ("train.optimizer", "lion", "train.optimizer: unknown 'lion'; use sgd or adamw"),
])
def test_each_section_checks_its_choices_once_naming_where_the_value_came_from(tmp_path, key, value, message):
    with pytest.raises(DessamError, match=f"^command line: {message}"):
        Config.compose(overrides={key: value})
    section, name = key.split(".")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({section: {name: value}}))
    with pytest.raises(DessamError, match=f"^{path}: {message}"):
        Config.compose(file=path)


def test_unknown_settings_and_bad_values_are_one_line_errors(tmp_path):
    with pytest.raises(DessamError, match="command line: unknown setting 'train.learning_rate'; known: .*lr"):
        Config.compose(overrides={"train.learning_rate": 0.1})
    with pytest.raises(DessamError, match="unknown section 'optim'"):
        Config.compose(overrides={"optim.lr": 0.1})
    with pytest.raises(DessamError, match="train.epochs: expected a int, got 'many'"):
        Config.compose(overrides={"train.epochs": "many"})
    with pytest.raises(DessamError, match="section 'model.detector' must be a mapping"):
        Config.from_dict({"model": {"detector": 3}})
    with pytest.raises(DessamError, match="--set train.lr: expected SECTION.KEY=VALUE"):
        parse_set(["train.lr"])
    assert parse_set(["train.lr=0.001", "model.prompt_token=false"]) == {"train.lr": 0.001, "model.prompt_token": False}
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n")
    with pytest.raises(DessamError, match=f"{path}: expected a mapping"):
        Config.compose(file=path)


def test_an_earlier_model_file_config_keeps_its_earlier_behaviour():
    earlier = {"model": {"sam": "default", "rpn_nms": 0.6, "score_threshold": 0.5, "nucleus_score_threshold": 0.25},
               "loss": {"edge_dilation": 1}}
    config = Config.from_dict(with_earlier_behaviour(earlier))
    assert config.model.postprocess.connectivity == 4 and config.model.postprocess.overlap_winner == "higher-score"
    assert config.model.detector.box_head_norm == "layernorm" and config.model.postprocess.mask_threshold == 0.0
    assert config.model.detector.rpn_nms_test == 0.6 and config.model.detector.roi_finest_scale == 28.0
    assert config.loss.edge_mask_dilation == 1 and config.loss.roi_box == 0.1
    assert config.model.postprocess.score_threshold == 0.5
    # read-out settings that lived in `model` before are read where they live now
    assert config.model.postprocess.nucleus_score_threshold == 0.25
    assert Config().replace({"model.mask_threshold": 0.0}).model.postprocess.mask_threshold == 0.0
    today = Config.compose("demo").to_dict()  # a file of today's layout keeps every value it has
    assert Config.from_dict(with_earlier_behaviour(today)).to_dict() == today


def test_the_preset_registry():
    assert set(REGISTRY) == {"patchseg", "clusterseg", "demo", "cpu", "tiny"}
    assert REGISTRY["demo"].base is SMALL_CPU and REGISTRY["cpu"].base is SMALL_CPU
    assert preset_layers("demo") == [SMALL_CPU.overlay, REGISTRY["demo"].overlay]
    demo, cpu = Config.compose("demo"), Config.compose("cpu")
    for config in (demo, cpu):  # the shared base
        assert config.model.neck_channels == 32
        assert config.train.optimizer == "adamw" and config.train.lr == 2e-4 and config.train.grad_clip == 5.0
    assert (demo.model.sam, cpu.model.sam) == ("default-v1", "default")  # the demo keeps the first teacher
    assert (demo.model.local_margin, cpu.model.local_margin) == (10, 4)   # 10 tokens of 8 px, 4 of 4 px
    assert (demo.model.image_size, demo.model.input_scaling, demo.train.epochs, demo.train.init) == (256, "fit", 24, "scratch")
    assert (cpu.model.image_size, cpu.model.input_scaling, cpu.train.epochs, cpu.train.init) == (512, "nucleus", 12, "auto")
    assert (cpu.model.nucleus_px, cpu.train.copies, cpu.model.neck_convs) == (24.0, 4, 2)
    assert implied_preset("default") == "cpu" and implied_preset("vit_b") is None
    with pytest.raises(DessamError, match="--preset: unknown preset 'vit'; choose one of clusterseg, cpu, demo"):
        Config.compose("vit")


def test_a_saved_configuration_is_read_as_written_not_through_todays_preset():
    """A model file names its preset; settings it lacks take the defaults (what dessam did before they
    existed), never what the preset holds today."""
    saved = Config.compose("cpu").to_dict()
    del saved["model"]["neck_convs"]
    saved["model"]["detector"]["anchor_scale"] = 4.0
    loaded = Config.from_dict(saved)
    assert loaded.preset == "cpu"
    assert loaded.model.neck_convs == 0 and loaded.model.detector.anchor_scale == 4.0


def test_dessam_train_composes_its_flags_in_order(monkeypatch, tmp_path):
    """--sam default brings the cpu preset unless a preset or a config file is named; flags come after
    the file, --set after the flags."""
    from types import SimpleNamespace

    from dessam.commands import main
    from dessam.training import train as train_module

    seen = []

    def fake_train(config, *args, **kwargs):
        seen.append(config)
        return SimpleNamespace(model_path="m.pt", iterations=0, epochs_done=0, clipped_boxes=0, dropped_boxes=0,
                               skipped_nonfinite=0, mask_annotations=0, box_annotations=0, start="")

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr("dessam.commands.train._write_card", lambda result, train_json: None)  # no model file to describe
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 4, "seed": 9}}))
    common = ["train", "--train", "t.json", "--images", "i", "--out", str(tmp_path / "run"), "--skip-validation"]
    assert main(common + ["--sam", "default"]) == 0
    assert main(common + ["--sam", "default", "--config", str(path), "--seed", "0"]) == 0
    assert main(common + ["--set", "model.sam=default", "--epochs", "3", "--set", "train.epochs=5"]) == 0
    assert main(common + ["--preset", "demo", "--sam", "tiny", "--no-prompt-token", "--set", "model.min_object_size=3"]) == 0
    implied, from_file, by_set, demo = seen
    assert implied.preset == "cpu" and implied.model.input_scaling == "nucleus"
    assert from_file.preset is None and from_file.train.epochs == 4 and from_file.train.seed == 0
    assert by_set.preset is None and by_set.model.sam == "default" and by_set.train.epochs == 5
    assert demo.preset == "demo" and demo.model.sam == "tiny" and demo.model.prompt_token is False
    assert demo.model.postprocess.min_size == 3
