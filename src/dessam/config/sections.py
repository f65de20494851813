"""The sections of a `Config`: `model` (with its `detector` and its `postprocess`), `loss` and `train`,
each a frozen dataclass with the official DES-SAM defaults that checks its own choices when it is made."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Literal, Optional, get_args, get_origin, get_type_hints

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
    """How results are read: which detections are kept, where their masks are cut (`mask_threshold`), how
    the raw instance masks become the label map that is scored and written (the authors' way by default:
    see `dessam.inference.instances`), and above which score the passes that size an image read nuclei."""

    score_threshold: Optional[float] = 0.55  # official test threshold; None keeps every detection
    max_detections: int = 120          # per image (or window); official; dense clusters need more
    min_size: int = 70                 # holes and islands under this many pixels are removed
    remove_holes: bool = True
    remove_islands: bool = True
    connectivity: Literal[8, 4] = 8    # of holes and islands: 8 (official, OpenCV) | 4
    fill_border_holes: bool = True     # official: background pieces cut off by the image border are holes too
    keep_largest_island: bool = True   # official: when every island is small, the largest stays
    overlap_winner: Literal["lower-score", "higher-score"] = "lower-score"  # official: masks painted by descending score, the lower overwrites
    mask_threshold: float = 0.5        # test-time masks: logit > this (official 0.5; SAM's own is 0)
    nucleus_score_threshold: Optional[float] = None  # nucleus scaling: the score above which the passes that correct the size read their nuclei (null: score_threshold; the lower of the two is used)

    def __post_init__(self):
        check_choices(self, "model.postprocess")
        if self.score_threshold is not None and not 0 <= self.score_threshold <= 1:
            raise DessamError(f"score threshold {self.score_threshold}: use a value between 0 and 1 (0 keeps every detection)")
        if int(self.max_detections) < 1:
            raise DessamError(f"max detections {self.max_detections}: keep at least 1 detection per image")
        if int(self.min_size) < 0:
            raise DessamError(f"minimum size {self.min_size}: use 0 or a positive number of pixels")
        if self.nucleus_score_threshold is not None and not 0 <= self.nucleus_score_threshold <= 1:
            error = DessamError(f"model.postprocess.nucleus_score_threshold {self.nucleus_score_threshold}: use a value "
                                "between 0 and 1")
            error.setting = "model.postprocess.nucleus_score_threshold"
            raise error


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
    pixel_size_um: Optional[float] = None  # fixed scaling: the pixel size the model works at (null: the training images')
    neck_channels: int = 256
    neck_finest_stride: Optional[int] = None  # stride of the finest pyramid level (null: the embedding's / 4, ViTDet's)
    neck_convs: int = 0                # extra 3x3 conv layers on every pyramid level (official: 0)
    detector_encoder: Literal["teacher", "own"] = "teacher"  # what the detector reads: the frozen SAM's embedding (official) | an image encoder of its own, started as a copy of SAM's and trained with the detector
    prompt_token: bool = True          # False drops the learnable token (ablation)
    prompt_token_init: Literal["not-a-point", "normal"] = "not-a-point"  # not-a-point (SAM's padding token; dessam: measured far better on the demo) | normal (official N(0, 1))
    local_decoding: bool = False       # decode each box on a window of the embedding around it (training and prediction)
    local_margin: int = 10             # the window: the box plus this many embedding tokens on every side
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    postprocess: Postprocess = field(default_factory=Postprocess)

    def __post_init__(self):
        check_choices(self, "model")


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
