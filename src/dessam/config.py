"""Every number a user may want to change, with the official DES-SAM default.

A run's configuration is one `Config` made of three sections (`model`, `loss`, `train`). It starts
from the defaults (the authors' PatchSeg configuration) or a named preset (`--preset`), is read from
YAML (`--config FILE.yaml`, any subset of keys), then overridden by command-line flags, and saved
with the run so a model always knows how it was built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import DessamError


@dataclass
class ModelConfig:
    sam: str = "vit_b"                 # vit_b | vit_l | vit_h | tiny | default
    sam_checkpoint: Optional[str] = None
    image_size: Optional[int] = None   # longest side S; None = the SAM's own (1024 for ViT)
    input_scaling: str = "fit"         # fit: every image resized to S (official) | fixed: one scale, large images in windows
    pixel_size_um: Optional[float] = None  # fixed scaling: the pixel size the model works at (null: the training images')
    neck_channels: int = 256
    neck_finest_stride: Optional[int] = None  # stride of the finest pyramid level (null: the embedding's / 4, ViTDet's)
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
    box_head_norm: str = "none"        # none (official: convs with bias) | layernorm
    roi_batch_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    roi_min_pos_iou: Optional[float] = 0.5   # low-quality matching of the RoI sampler (null: off)
    score_threshold: float = 0.55      # official test threshold
    detection_nms: float = 0.5         # official PatchSeg; ClusterSeg 0.2
    max_detections: int = 120          # official; dense clusters need more
    prompt_token: bool = True          # False drops the learnable token (ablation)
    prompt_token_init: str = "not-a-point"  # not-a-point (SAM's padding token; dessam: measured far better on the demo) | normal (official N(0, 1))
    local_decoding: bool = False       # decode each box on a window of the embedding around it (training and prediction)
    local_margin: int = 10             # the window: the box plus this many embedding tokens on every side
    mask_threshold: float = 0.5        # test-time masks: logit > this (official 0.5; SAM's own is 0)
    min_object_size: int = 70          # post-processing: holes and islands under this are removed
    connectivity: int = 8              # of holes and islands: 8 (official, OpenCV) | 4
    fill_border_holes: bool = True     # official: background pieces cut off by the image border are holes too
    keep_largest_island: bool = True   # official: when every island is small, the largest stays
    overlap_winner: str = "lower-score"  # official: masks painted by descending score, the lower overwrites | higher-score


@dataclass
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
    edge_crop_box: str = "annotated"   # annotated | proposal
    edge_global_image: str = "rgb"     # rgb (official: raw 0-255) | normalised (SAM-normalised; 3,300x weaker)
    edge_bottom_rows: int = 10         # official: the bottom 10 rows (at S = 1024) and the padding are left out


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 1                # images per step per process
    optimizer: str = "sgd"             # sgd (official) | adamw (robust for short schedules)
    lr: float = 0.02                   # at lr_reference_batch images per step (official: 8 GPUs x 1)
    lr_reference_batch: int = 8        # lr is scaled linearly to the real batch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    lr_steps: tuple = (30, 36)         # epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    max_iters: Optional[int] = None    # stop after this many iterations (all epochs together)
    init: str = "auto"                 # where training starts: auto | pretrained | scratch | a model.pt (dessam.training.init)
    seed: int = 0
    pixel_size_um: Optional[float] = None  # of the training images, in microns (recorded; drives fixed scaling)
    device: str = "auto"               # auto | cpu | cuda
    cache_dir: Optional[str] = None    # embedding cache; default RUN/cache
    max_nonfinite: int = 10            # consecutive non-finite losses before training stops
    grad_clip: Optional[float] = None


# The authors' two training configurations (configs/_des_sam_/PatchSeg/vitdet_sam_patch.py and
# ClusterSeg/vitdet_sam_cluster.py): everything else in them is the same and is dessam's default.
PRESETS = {
    "patchseg": {
        "model": {"rpn_nms_test": 0.7, "detection_nms": 0.5},
        "loss": {"roi_box": 1.0},
    },
    "clusterseg": {
        "model": {"rpn_nms_test": 0.5, "detection_nms": 0.2},
        "loss": {"roi_box": 0.1},
    },
}
PRESETS["demo"] = {  # DES-SAM's structure sized for a few CPU minutes on 256 px synthetic fields (`dessam demo`)
    "model": {
        "sam": "default", "image_size": 256,
        "neck_channels": 32,             # official 256
        "neck_finest_stride": 2,         # pyramid at strides 2-16: these nuclei are 8-20 px
        "rpn_convs": 1,                  # official 2
        "box_head_convs": 2,             # official 4
        "box_head_fc": 128,              # official 1024
        "roi_batch_per_image": 256,      # official 512
        "rpn_pre_nms_train": 1000, "rpn_post_nms_train": 500,
        "max_detections": 300,           # crowded clusters hold more than the official 120
        "min_object_size": 10,           # the official 70 px is for nuclei of 30-60 px; these are 8-20 px
        "anchor_scale": 4.0,             # anchors 8-64 px: these nuclei are 8-20 px (official 8 x stride)
        "local_decoding": True,          # the default teacher decodes each box on a window around it
        "local_margin": 4,
    },
    "loss": {"distill_max_prompts": 16},
    "train": {
        "epochs": 24,                    # 12 epochs: the detector misses more (patch AJI 0.62 vs 0.67)
        "lr_steps": [20], "warmup_iters": 50, "batch_size": 1,
        "optimizer": "adamw",            # official SGD needs the 50-epoch schedule; AdamW copes with a short one
        "lr": 2e-4, "lr_reference_batch": 1, "weight_decay": 0.05, "grad_clip": 5.0, "device": "cpu", "seed": 0,
        "init": "scratch",               # the demo shows training from boxes, not the pretrained model
    },
}
PRESETS["cpu"] = {  # `--sam default` on a CPU: the bundled teacher at native resolution, in an hour or less
    "model": {
        "sam": "default", "image_size": 512,
        "input_scaling": "fixed",        # images at their own resolution, cut into 512 px windows
        "neck_channels": 32, "neck_finest_stride": 4, "rpn_convs": 1, "box_head_convs": 2, "box_head_fc": 128,
        "roi_batch_per_image": 256, "rpn_pre_nms_train": 1000, "rpn_post_nms_train": 500,
        "max_detections": 300, "min_object_size": 10, "anchor_scale": 4.0,
        "local_decoding": True, "local_margin": 4,
    },
    "loss": {"distill_max_prompts": 32},
    "train": {
        "epochs": 12, "lr_steps": [10], "warmup_iters": 100, "batch_size": 1,
        "optimizer": "adamw", "lr": 2e-4, "lr_reference_batch": 1, "weight_decay": 0.05, "grad_clip": 5.0,
    },
}
PRESETS["tiny"] = {  # the tests' model: a tiny random SAM at 128 px, a narrow detector, a few iterations
    "model": {
        "sam": "tiny", "image_size": 128, "neck_channels": 32, "box_head_fc": 64, "anchor_scale": 4.0,
        "rpn_batch_per_image": 64, "roi_batch_per_image": 64, "rpn_pre_nms_train": 300, "rpn_post_nms_train": 100,
        "rpn_pre_nms_test": 300, "rpn_post_nms_test": 100, "score_threshold": 0.3,
    },
    "train": {
        "device": "cpu", "warmup_iters": 20, "lr": 0.02, "lr_reference_batch": 1,
        "grad_clip": 5.0,                # keeps the small random model's RoI head from diverging early
    },
}
PRESET_HELP = {
    "patchseg": "the authors' PatchSeg config (the default): box L1 weight 1.0, test NMS 0.7 (RPN) / 0.5",
    "clusterseg": "the authors' ClusterSeg config: box L1 weight 0.1, test NMS 0.5 (RPN) / 0.2",
    "demo": "the CPU demo: the bundled teacher at 256 px, a narrow detector, 24 epochs of AdamW from random weights",
    "cpu": "--sam default's own (applied when no preset or config is given): native resolution in 512 px "
           "windows, a narrow detector, 12 epochs of AdamW, from the bundled pretrained model",
    "tiny": "for tests only: a tiny random SAM at 128 px",
}


# Settings that older model files carry and that are now chosen at prediction time: read, then ignored.
RETIRED = {"model.decoder_chunk"}


@dataclass
class Config:
    preset: Optional[str] = None       # the named preset the run started from (see PRESETS)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "Config":
        config = cls()
        config.update(data or {}, source)
        return config

    def update(self, data: dict, source: str = "config") -> "Config":
        """Set values from a nested dict such as {'train': {'lr': 0.01}}; unknown keys are errors."""
        if not isinstance(data, dict):
            raise DessamError(f"{source}: expected a mapping with sections model, loss, train")
        if data.get("preset") is not None:
            self.apply_preset(data["preset"], source)
        for section_name, values in data.items():
            if section_name == "preset":
                continue
            if isinstance(values, dict):
                values = {k: v for k, v in values.items() if f"{section_name}.{k}" not in RETIRED}
            section = getattr(self, section_name, None)
            if section is None or not dataclasses.is_dataclass(section):
                raise DessamError(f"{source}: unknown section '{section_name}' (use model, loss or train)")
            if not isinstance(values, dict):
                raise DessamError(f"{source}: section '{section_name}' must be a mapping")
            known = {f.name: f for f in dataclasses.fields(section)}
            for key, value in values.items():
                if key not in known:
                    raise DessamError(
                        f"{source}: unknown setting '{section_name}.{key}'; known: {', '.join(sorted(known))}"
                    )
                default = getattr(section, key)
                setattr(section, key, _coerce(value, default, f"{source}: {section_name}.{key}"))
        return self

    def apply_preset(self, name: str, source: str = "--preset") -> "Config":
        """Set the values of the named preset (see `PRESETS`) and remember its name."""
        if name not in PRESETS:
            raise DessamError(f"{source}: unknown preset '{name}'; choose one of {', '.join(sorted(PRESETS))}")
        self.preset = name
        return self.update(PRESETS[name], f"preset {name}")

    def set(self, dotted: str, value: Any, source: str = "command line") -> None:
        section, _, key = dotted.partition(".")
        self.update({section: {key: value}}, source)


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


def load_config(path: str | Path, base: Optional[Config] = None) -> Config:
    """The YAML file's settings on top of `base` (default: the defaults)."""
    from .yaml_file import read_yaml

    data = read_yaml(path, "config file")
    return (base or Config()).update(data or {}, str(path))


def save_config(config: Config, path: str | Path) -> None:
    from .atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
