"""Every number a user may want to change, with the official DES-SAM default.

A run's configuration is one frozen `Config` of sections: `model` (with its `detector` and its
`postprocess`), `loss` and `train`, composed in one place, `Config.compose(preset, file, overrides)`:
the defaults (the authors' PatchSeg configuration), a named preset (`dessam.config.presets`), a YAML
file (`--config`, any subset of keys), then single settings (`--set section.key=value`, the flags); it
is saved with the run. Each section (`dessam.config.sections`) checks its choices once, when it is
made; a composed config is never edited: `config.replace({"train.epochs": 1})` gives a new one. Keys of earlier layouts keep
working (`ALIASES`: `model.score_threshold` is `model.postprocess.score_threshold`, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, get_type_hints

import yaml

from ..errors import DessamError
from .sections import DetectorConfig, LossConfig, ModelConfig, Postprocess, TrainConfig, choices

__all__ = ["ALIASES", "Config", "DetectorConfig", "LossConfig", "ModelConfig", "Postprocess", "TrainConfig", "choices",
           "coerce_setting", "load_config", "parse_set", "save_config", "settings_by_key"]


# Keys of earlier layouts, where each setting lives now.
ALIASES = {f"model.{f.name}": f"model.detector.{f.name}" for f in dataclasses.fields(DetectorConfig)}
ALIASES.update({f"model.{name}": f"model.postprocess.{name}" for name in (
    "score_threshold", "max_detections", "connectivity", "fill_border_holes", "keep_largest_island", "overlap_winner")})
ALIASES["model.min_object_size"] = "model.postprocess.min_size"
ALIASES.update({f"model.{name}": f"model.postprocess.{name}" for name in ("mask_threshold", "nucleus_score_threshold")})

# Settings that older model files carry and that are now chosen at prediction time: read, then ignored.
RETIRED = {"model.decoder_chunk"}


@dataclass(frozen=True)
class Config:
    preset: Optional[str] = None       # the named preset the run started from (see `dessam.config.presets`)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def compose(cls, preset: Optional[str] = None, file=None, overrides: Optional[Mapping[str, Any]] = None) -> "Config":
        """The defaults, then `preset`'s values (`dessam.config.presets`), then the YAML `file`'s, then
        `overrides` ({"section.key": value}, in order)."""
        composer = _Composer()
        if preset is not None:
            composer.apply_preset(preset, "--preset")
        if file is not None:
            from ..yaml_file import read_yaml

            composer.apply(read_yaml(file, "config file") or {}, str(file))
        composer.apply(overrides or {}, "command line")
        return composer.build()

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "config") -> "Config":
        """The defaults with `data` ({"model": {...}, ...} or {"model.key": value}) on top: a saved
        configuration (a model file's) as it was written. The preset it names is recorded, not applied
        again: today's preset may hold other values than the one the model was trained with."""
        data = dict(data or {})
        preset = data.pop("preset", None)
        composer = _Composer()
        composer.apply(data, source)
        composer.values["preset"] = preset
        return composer.build()

    def replace(self, overrides: Mapping[str, Any], source: str = "replace") -> "Config":
        """A new config: this one with `overrides` ({"section.key": value}) on top."""
        composer = _Composer(self)
        composer.apply(overrides, source)
        return composer.build()

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def settings_by_key(data: Mapping) -> dict:
    """A configuration mapping of any layout (nested or dotted, keys of earlier layouts too) as
    {"section.key": value} in today's keys, "preset" kept and retired settings left out."""
    sections = _section_paths(_values(Config()))
    out = {}

    def walk(prefix: str, mapping: Mapping) -> None:
        for key, value in mapping.items():
            dotted = f"{prefix}{key}"
            if dotted in RETIRED:
                continue
            canonical = ALIASES.get(dotted, dotted)
            if isinstance(value, Mapping) and canonical in sections:
                walk(canonical + ".", value)
            else:
                out[canonical] = value

    walk("", {key: value for key, value in data.items() if key != "preset"})
    if data.get("preset") is not None:
        out = {"preset": data["preset"], **out}
    return out


def _section_paths(values: dict, prefix: str = "") -> set:
    return {path for key, value in values.items() if isinstance(value, dict)
            for path in {prefix + key} | _section_paths(value, f"{prefix}{key}.")}


def parse_set(items) -> dict:
    """`--set SECTION.KEY=VALUE` items as {"section.key": value} (values read as YAML)."""
    overrides = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise DessamError(f"--set {item}: expected SECTION.KEY=VALUE, e.g. --set train.lr=0.01")
        overrides[key] = yaml.safe_load(value)
    return overrides


class _Composer:
    """Settings applied one layer after another to a nested dict of values, each coerced to the type
    of the value it replaces, then turned into a `Config` once."""

    def __init__(self, base: Optional[Config] = None):
        self.values = _values(base or Config())
        self.sources = {}   # setting -> where its value came from

    def apply_preset(self, name: str, source: str) -> None:
        from .presets import preset_layers

        for layer in preset_layers(name, source):
            self.apply(layer, f"preset {name}")
        self.values["preset"] = name

    def apply(self, data: Mapping, source: str) -> None:
        """Set values from a nested mapping such as {'train': {'lr': 0.01}} (or dotted keys such as
        {'train.lr': 0.01}); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise DessamError(f"{source}: expected a mapping with sections model, loss, train")
        if data.get("preset") is not None:
            self.apply_preset(data["preset"], source)
        for key, value in data.items():
            if key != "preset":
                self._apply_key(key.split("."), value, source)

    def _apply_key(self, path: list, value: Any, source: str) -> None:
        dotted = ".".join(path)
        if dotted in RETIRED:
            return
        dotted = ALIASES.get(dotted, dotted)
        path = dotted.split(".")
        if path[0] not in ("model", "loss", "train"):
            raise DessamError(f"{source}: unknown section '{path[0]}' (use model, loss or train)")
        section = self.values
        for depth, name in enumerate(path[:-1]):
            if name not in section or not isinstance(section[name], dict):
                raise DessamError(f"{source}: unknown setting '{'.'.join(path[:depth + 1])}'; "
                                  f"known: {', '.join(sorted(section))}")
            section = section[name]
        key = path[-1]
        if len(path) == 1 or isinstance(section.get(key), dict):  # a whole section
            if not isinstance(value, Mapping):
                raise DessamError(f"{source}: section '{dotted}' must be a mapping")
            for name, item in value.items():
                self._apply_key(path + str(name).split("."), item, source)
            return
        if key not in section:
            raise DessamError(f"{source}: unknown setting '{dotted}'; known: {', '.join(sorted(section))}")
        section[key] = coerce_setting(value, section[key], f"{source}: {dotted}")
        self.sources[dotted] = source

    def build(self) -> Config:
        try:
            return _build(Config, self.values)
        except DessamError as exc:
            setting = getattr(exc, "setting", None)
            if setting in self.sources:
                raise DessamError(f"{self.sources[setting]}: {exc}") from None
            raise


def _values(config) -> dict:
    """A dataclass as a nested dict of its values (sections as dicts, tuples kept)."""
    return {f.name: _values(getattr(config, f.name)) if dataclasses.is_dataclass(getattr(config, f.name))
            else getattr(config, f.name) for f in dataclasses.fields(config)}


def _build(cls, values: dict):
    hints = get_type_hints(cls)
    return cls(**{name: _build(hints[name], value) if isinstance(value, dict) else value
                  for name, value in values.items()})


def coerce_setting(value: Any, default: Any, where: str) -> Any:
    """`value` (from YAML or `--set`) as the type of the `default` it replaces; `where` names it in errors."""
    if value is None or default is None:
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise DessamError(f"{where}: expected a list")
        return tuple(value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise DessamError(f"{where}: expected true or false, got {value!r}")
        return value
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        raise DessamError(f"{where}: expected a {type(default).__name__}, got {value!r}") from None


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def load_config(path: str | Path) -> Config:
    """The YAML file's settings on top of the defaults."""
    return Config.compose(file=path)


def save_config(config: Config, path: str | Path) -> None:
    from ..atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
