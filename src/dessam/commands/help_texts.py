"""Help texts that read their defaults from the configuration they describe, and the parser class
that shows them (`FromConfig`): `--help` cannot disagree with what a command does."""

from __future__ import annotations

import argparse

class FromConfig:
    """A help text whose defaults are read, when help is shown, from the configuration they describe
    (the bundled model's stored settings, a preset, the pre-training recipe), so that `--help` cannot
    disagree with what a command does."""

    def __init__(self, text):
        self.text = text   # a function giving the text

    def __str__(self) -> str:
        return self.text().replace("%", "%%")

    def strip(self) -> str:
        return str(self).strip()


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):
        return str(action.help)


class Parser(argparse.ArgumentParser):
    """argparse with help texts that may be `FromConfig` (sub-commands' parsers are of this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def shown(value) -> str:
    """A default as help shows it."""
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(shown(item) for item in value)
    return format(value, "g") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def bundled_setting(key: str) -> str:
    """A setting stored in the bundled pretrained model ("section.key"), as help shows it: read from
    its model card's statement of the stored post-processing, which a test holds to the file (reading
    the file itself means importing PyTorch, seconds for a help text), else from the file."""
    from ..models.bundled import PRETRAINED_NAME, bundled_models, model_card
    from ..training.model_card import stated_settings

    path = bundled_models().get(PRETRAINED_NAME)
    if path is None:
        return "none bundled"
    card = model_card(path)
    stated = stated_settings(card.read_text(encoding="utf-8")) if card.is_file() else {}
    if key not in stated:
        from ..config import settings_by_key
        from ..models.model_file import read_model_file

        stated = settings_by_key(read_model_file(path).config.to_dict())
    return shown(stated[key])


def preset_setting(preset: str, key: str) -> str:
    from ..config import Config, settings_by_key

    return shown(settings_by_key(Config.compose(preset).to_dict())[key])


def model_default(text: str, key: str, unit: str = "") -> FromConfig:
    """`text` with the default of a setting a model file stores: the model's own, and the bundled one's."""
    return FromConfig(lambda: f"{text} (default: the model's own; the bundled pretrained model's: "
                              f"{bundled_setting(key)}{unit})")


def preset_default(text: str, key: str) -> FromConfig:
    """`text` with a training setting's default in the preset `--sam` implies (`dessam.config.presets`)."""
    return FromConfig(lambda: f"{text} (default: {preset_setting('cpu', key)} with --sam default, the cpu preset; "
                              f"{preset_setting('patchseg', key)} with SAM ViT, patchseg)")


def recipe_default(text: str, name: str) -> FromConfig:
    """`text` with the default of a field of pretrain-teacher's `Recipe`."""
    def build() -> str:
        import dataclasses

        from ..pretrain.teacher import Recipe

        default = next(f.default for f in dataclasses.fields(Recipe) if f.name == name)
        return text.format(default=shown(default))
    return FromConfig(build)


def constant_default(text: str, module: str, name: str) -> FromConfig:
    """`text` with a default that lives as the constant `name` of the dessam module `module`."""
    def build() -> str:
        import importlib

        return text.format(default=shown(getattr(importlib.import_module(f"dessam.{module}"), name)))
    return FromConfig(build)
