"""Every number a user may want to change, with the official DES-SAM default.

A run's configuration is one frozen `Config` of sections: `model` (with its `detector` and its
`postprocess`), `loss` and `train`, composed in one place, `Config.compose(preset, file, overrides)`:
the defaults (the authors' PatchSeg configuration), a named preset (`dessam.config.presets`), a YAML
file (`--config`, any subset of keys), then single settings (`--set section.key=value`, the flags); it
is saved with the run. Each section checks its choices once, when it is made; a composed config is
never edited: `config.replace({"train.epochs": 1})` gives a new one. Keys of earlier layouts keep
working (`ALIASES`: `model.score_threshold` is `model.postprocess.score_threshold`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, get_args, get_origin, get_type_hints

import yaml

from ..errors import DessamError


def check_choices(section, prefix: str) -> None:
    """A one-line error when a `Literal` field of the dataclass `section` holds a value it does not
    list; the error's `setting` names the key."""
    for name, choices in _literal_fields(type(section)).items():
        value = getattr(section, name)
        if value not in choices:
            error = DessamError(f"{prefix}.{name}: unknown {value!r}; use {' or '.join(map(str, choices))}")
            error.setting = f"{prefix}.{name}"
            raise error


def choices(cls, name: str) -> tuple:
    """The values the `Literal` field `name` of the section class `cls` allows."""
    return _literal_fields(cls)[name]


@functools.lru_cache(maxsize=None)
def _literal_fields(cls) -> dict:
    hints = get_type_hints(cls)
    return {f.name: get_args(hints[f.name]) for f in dataclasses.fields(cls) if get_origin(hints[f.name]) is Literal}


@dataclass(frozen=True)
class Postprocess:
    """How raw instance masks become the label map that is scored and written (the authors' way by
    default: see `dessam.inference.instances`)."""

    score_threshold: Optional[float] = 0.55  # official test threshold; None keeps every detection
    max_detections: int = 120          # per image (or window); official; dense clusters need more
    min_size: int = 70                 # holes and islands under this many pixels are removed
    remove_holes: bool = True
    remove_islands: bool = True
    connectivity: Literal[8, 4] = 8    # of holes and islands: 8 (official, OpenCV) | 4
    fill_border_holes: bool = True     # official: background pieces cut off by the image border are holes too
    keep_largest_island: bool = True   # official: when every island is small, the largest stays
    overlap_winner: Literal["lower-score", "higher-score"] = "lower-score"  # official: masks painted by descending score, the lower overwrites

    def __post_init__(self):
        check_choices(self, "model.postprocess")
        if self.score_threshold is not None and not 0 <= self.score_threshold <= 1:
            raise DessamError(f"score threshold {self.score_threshold}: use a value between 0 and 1 (0 keeps every detection)")
        if int(self.max_detections) < 1:
            raise DessamError(f"max detections {self.max_detections}: keep at least 1 detection per image")
        if int(self.min_size) < 0:
            raise DessamError(f"minimum size {self.min_size}: use 0 or a positive number of pixels")


@dataclass(frozen=True)
class DetectorConfig:
    """The Faster R-CNN on the feature pyramid: anchors, RPN, RoI head, their sampling, test-time NMS."""

    anchor_scale: float = 8.0          # anchor side = anchor_scale x level stride
    anchor_octave_scales: tuple = (1.0,)  # extra sizes per level, x anchor side (e.g. 1, 1.41: two per octave)
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_convs: int = 2
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_train: int = 2000
    rpn_post_nms_train: int = 1000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    rpn_nms: float = 0.7               # NMS of the proposals in training
    rpn_nms_test: float = 0.7          # ... and at test time (official ClusterSeg: 0.5)
    rpn_min_pos_iou: Optional[float] = 0.3   # an annotated box's best anchor is positive from this IoU (null: never)
    roi_size: int = 7
    roi_align_aligned: bool = True     # RoIAlign's half-pixel offset (MMCV's default, used by the authors)
    roi_finest_scale: float = 56.0     # RoIs of side < 2 x this pool from the finest level (MMDetection's rule)
    box_head_convs: int = 4
    box_head_fc: int = 1024
    box_head_norm: Literal["none", "layernorm"] = "none"  # none (official: convs with bias) | layernorm
    roi_batch_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_min_pos_iou: Optional[float] = 0.5   # low-quality matching of the RoI sampler (null: off)
    detection_nms: float = 0.5         # official PatchSeg; ClusterSeg 0.2

    def __post_init__(self):
        check_choices(self, "model.detector")


@dataclass(frozen=True)
class ModelConfig:
    sam: str = "vit_b"                 # vit_b | vit_l | vit_h | tiny | default | default-permissive
    sam_checkpoint: Optional[str] = None
    image_size: Optional[int] = None   # longest side S; None = the SAM's own (1024 for ViT)
    input_scaling: Literal["fit", "fixed", "nucleus"] = "fit"  # fit: every image resized to S (official) | fixed: one scale, large images in windows | nucleus: every image resampled to nucleus_px nuclei, then as fixed
    nucleus_px: float = 24.0           # nucleus scaling: the typical nucleus side (box sqrt(w x h)) every image is brought to
    nucleus_refinements: int = 3       # nucleus scaling: detection passes that correct an estimated nucleus size by the median side of the nuclei found there (0: the size head's estimate alone)
    nucleus_score_threshold: Optional[float] = None  # nucleus scaling: the score above which the correcting passes' nuclei measure the size (null: the read-out's score threshold; the lower of the two is used)
    pixel_size_um: Optional[float] = None  # fixed scaling: the pixel size the model works at (null: the training images')
    neck_channels: int = 256
    neck_finest_stride: Optional[int] = None  # stride of the finest pyramid level (null: the embedding's / 4, ViTDet's)
    neck_convs: int = 0                # extra 3x3 conv layers on every pyramid level (official: 0)
    prompt_token: bool = True          # False drops the learnable token (ablation)
    prompt_token_init: Literal["not-a-point", "normal"] = "not-a-point"  # not-a-point (SAM's padding token; dessam: measured far better on the demo) | normal (official N(0, 1))
    local_decoding: bool = False       # decode each box on a window of the embedding around it (training and prediction)
    local_margin: int = 10             # the window: the box plus this many embedding tokens on every side
    mask_threshold: float = 0.5        # test-time masks: logit > this (official 0.5; SAM's own is 0)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    postprocess: Postprocess = field(default_factory=Postprocess)

    def __post_init__(self):
        check_choices(self, "model")
        if self.nucleus_score_threshold is not None and not 0 <= self.nucleus_score_threshold <= 1:
            raise DessamError(f"model.nucleus_score_threshold {self.nucleus_score_threshold}: use a value between 0 and 1")


@dataclass(frozen=True)
class LossConfig:
    rpn_cls: float = 1.0
    rpn_box: float = 1.0
    roi_cls: float = 1.0
    roi_box: float = 1.0               # L1 on decoded boxes: official PatchSeg 1.0, ClusterSeg 0.1
    distill_bce: float = 0.5
    distill_dice: float = 0.01
    distill_max_prompts: int = 128     # positive proposals distilled per image (the RoI sampler keeps <= 128)
    mask_weight: float = 1.0           # distillation weight of prompts whose annotation has a given mask
    edge_aware: bool = True            # False turns the edge-aware loss off (ablation)
    edge_local: float = 1.0
    edge_global: float = 0.001
    edge_crop: int = 72
    # The authors' code compares colours at dilation 2 but probabilities at dilation 1 (so a colour edge
    # two pixels away gates the difference of adjacent pixels). dessam uses 2 for both, as BoxInst whose
    # pairwise term this is; edge_mask_dilation: 1 gives the authors' mix (see docs/fidelity.md).
    edge_dilation: int = 2             # colour similarity between a pixel and its 8 neighbours at this distance
    edge_mask_dilation: int = 2        # probability differences at this distance
    edge_tau: float = 0.0              # pairs of colour similarity < tau are ignored; official code: never applied (0)
    # The authors crop the student's mask at the proposal box but the colours at the annotated box, so the
    # two crops show different pixels; dessam crops both at the annotated box ("proposal" = the authors').
    edge_crop_box: Literal["annotated", "proposal"] = "annotated"
    edge_global_image: Literal["rgb", "normalised"] = "rgb"  # rgb (official: raw 0-255) | normalised (SAM-normalised; 3,300x weaker)
    edge_bottom_rows: int = 10         # official: the bottom 10 rows (at S = 1024) and the padding are left out

    def __post_init__(self):
        check_choices(self, "loss")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 1                # images per step per process
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (official) | adamw (robust for short schedules)
    lr: float = 0.02                   # at lr_reference_batch images per step (official: 8 GPUs x 1)
    lr_reference_batch: int = 8        # lr is scaled linearly to the real batch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    lr_steps: tuple = (30, 36)         # epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    max_iters: Optional[int] = None    # stop after this many iterations (all epochs together)
    min_iters: Optional[int] = None    # a small training set gets more epochs, up to this many iterations
    init: str = "auto"                 # where training starts: auto | pretrained | scratch | a model.pt (dessam.training.init)
    seed: int = 0
    pixel_size_um: Optional[float] = None  # of the training images, in microns (recorded; drives fixed scaling)
    copies: int = 1                    # nucleus scaling: versions of each training image (the first as it is, the others augmented)
    zoom: tuple = (1.0, 1.0)           # nucleus scaling: the augmented copies' extra zoom, drawn log-uniformly from this range
    recolour: bool = False             # nucleus scaling: the augmented copies' stain jitter, grey, blur and noise
    device: str = "auto"               # auto | cpu | cuda
    cache_dir: Optional[str] = None    # embedding cache; default RUN/cache
    max_nonfinite: int = 10            # consecutive non-finite losses before training stops
    grad_clip: Optional[float] = None

    def __post_init__(self):
        check_choices(self, "train")
        if int(self.copies) < 1:
            raise DessamError(f"train.copies {self.copies}: give 1 or more versions of each training image")
        if len(self.zoom) != 2 or not 0 < float(self.zoom[0]) <= float(self.zoom[1]):
            raise DessamError(f"train.zoom {list(self.zoom)}: give [low, high] with 0 < low <= high, e.g. [0.7, 1.4]")


# Keys of earlier layouts, where each setting lives now.
ALIASES = {f"model.{f.name}": f"model.detector.{f.name}" for f in dataclasses.fields(DetectorConfig)}
ALIASES.update({f"model.{name}": f"model.postprocess.{name}" for name in (
    "score_threshold", "max_detections", "connectivity", "fill_border_holes", "keep_largest_island", "overlap_winner")})
ALIASES["model.min_object_size"] = "model.postprocess.min_size"

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
        section[key] = _coerce(value, section[key], f"{source}: {dotted}")
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


def _coerce(value: Any, default: Any, where: str) -> Any:
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
