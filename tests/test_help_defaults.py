"""Every default `dessam COMMAND --help` shows is the one the command uses.

Each number in a help text's "(default ...)" clause must be the option's argparse default or the
value, read here from its source, of the setting the option stands for: the bundled pretrained
model's stored post-processing, the presets, pre-training's recipe, or the function the option
feeds. A number with no known source fails the test: add its source below.
"""

import argparse
import dataclasses
import inspect
import re

import pytest

from dessam.commands import build_parser
from dessam.config import Config
from dessam.models.bundled import BUNDLED_MODEL_FILES
from dessam.models.model_file import read_model_file
from dessam.config.presets import REGISTRY

NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w])")


def _commands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _help(parser, action) -> str:
    return parser._get_formatter()._expand_help(action)


def _default_clause(text: str) -> str:
    """The text from "(default" (or "default:" / "default ") to the closing parenthesis or the end."""
    found = re.search(r"\bdefault[:\s]", text)
    if found is None:
        return ""
    rest = text[found.start():]
    return rest.split(")")[0]


def _parameter_default(function, name):
    return inspect.signature(function).parameters[name].default


def _sources() -> dict:
    """(command, option) -> the values its help may name as defaults."""
    from dessam.data.convert_shapes import add_shapes
    from dessam.data.tissue import tissue_mask
    from dessam.inference.loading import load_teacher
    from dessam.labeling.label import label_dataset
    from dessam.pretrain.model import pretrain_model
    from dessam.pretrain.size_head import FURTHER_LR
    from dessam.pretrain.teacher import Recipe

    cpu, patchseg = Config.compose("cpu"), Config.compose("patchseg")
    sources = {}
    if BUNDLED_MODEL_FILES["pretrained"].is_file():
        stored = read_model_file(BUNDLED_MODEL_FILES["pretrained"]).config.model.postprocess
        sources.update({("predict", "--score-threshold"): {stored.score_threshold},
                        ("eval", "--score-threshold"): {stored.score_threshold},
                        ("predict", "--max-detections"): {stored.max_detections},
                        ("eval", "--min-size"): {stored.min_size}})
    for option, get in (("--epochs", lambda c: c.train.epochs), ("--batch-size", lambda c: c.train.batch_size),
                        ("--lr", lambda c: c.train.lr), ("--image-size", lambda c: c.model.image_size),
                        ("--mask-weight", lambda c: c.loss.mask_weight)):
        sources[("train", option)] = {get(cpu), get(patchseg)} - {None}
    recipe = {f.name: f.default for f in dataclasses.fields(Recipe)}
    for option in ("steps", "batch_size", "crop", "max_prompts", "lr", "eval_every", "view_size", "view_context"):
        sources[("pretrain-teacher", "--" + option.replace("_", "-"))] = {recipe[option]}
    sources[("pretrain-model", "--epochs")] = {cpu.train.epochs}
    sources[("predict", "--tissue-threshold")] = {_parameter_default(tissue_mask, "min_od")}
    sources[("convert", "--tile-size")] = {_parameter_default(add_shapes, "tile_size")}
    sources[("label", "--review-count")] = {_parameter_default(label_dataset, "review_count")}
    sources[("label", "--outside-fraction")] = {_parameter_default(label_dataset, "outside_limit")}
    sources[("label", "--outside-margin")] = {_parameter_default(label_dataset, "outside_margin")}
    sources[("label", "--input-scale")] = {_parameter_default(load_teacher, "input_scale")}
    sources[("pretrain-model", "--size-steps")] = {_parameter_default(pretrain_model, "size_steps")}
    sources[("train-size-head", "--lr")] = {FURTHER_LR}
    return sources


def _argparse_defaults(action) -> set:
    values = action.default if isinstance(action.default, list) else [action.default]
    return {v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_every_default_in_help_is_the_one_the_command_uses():
    sources = _sources()
    checked, wrong = 0, []
    for command, parser in _commands().items():
        for action in parser._actions:
            if not action.help or not action.option_strings:
                continue
            option = action.option_strings[-1]
            text = _help(parser, action)
            shown = {float(n) for n in NUMBER.findall(_default_clause(text))}
            if not shown:
                continue
            allowed = {float(v) for v in sources.get((command, option), set()) | _argparse_defaults(action)}
            checked += 1
            if shown - allowed:
                wrong.append(f"dessam {command} {option}: help shows {sorted(shown)}, the defaults are "
                             f"{sorted(allowed) or 'unknown (add its source to this test)'}: {text!r}")
    assert not wrong, "\n".join(wrong)
    assert checked >= 25   # the check reached the options that state defaults


@pytest.mark.skipif(not BUNDLED_MODEL_FILES["pretrained"].is_file(), reason="no bundled pretrained model")
def test_predict_help_shows_the_bundled_models_stored_post_processing():
    stored = read_model_file(BUNDLED_MODEL_FILES["pretrained"]).config.model.postprocess
    parser = _commands()["predict"]
    action = next(a for a in parser._actions if "--score-threshold" in a.option_strings)
    assert f"{stored.score_threshold:g})" in _help(parser, action)


def test_every_number_in_a_presets_description_is_one_of_its_settings():
    def values(tree) -> set:
        out = set()
        for value in tree.values():
            if isinstance(value, dict):
                out |= values(value)
            elif isinstance(value, (list, tuple)):
                out |= {float(v) for v in value if isinstance(v, (int, float))}
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out.add(float(value))
        return out

    for name, preset in REGISTRY.items():
        numbers = {float(n) for n in NUMBER.findall(preset.help)}
        assert numbers <= values(Config.compose(name).to_dict()), (name, preset.help)
