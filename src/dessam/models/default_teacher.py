"""The default teacher that ships with dessam: a small promptable nucleus segmenter of SAM's design.

Official SAM weights cannot always be downloaded, so `--sam default` uses this model: a small
convolutional image encoder in front of the *official* `segment_anything` prompt encoder, two-way
transformer and mask decoder, at a narrower width. It is pre-trained on a corpus of public nucleus
data and dessam's synthetic scenes by `dessam.pretrain.teacher` and stored in
`assets/default_teacher.pt` as ``{"format": "dessam-sam", "arch": {...}, "state_dict": {...}}``,
with its model card beside it (`default_teacher.md`).

Two encoders exist (`arch["encoder"]`):
- ``unet`` (`UNetEncoder`, stride 4): today's teacher. One token per 4 pixels, so SAM's decoder
  draws each mask at one logit per input pixel; it decodes every box on a window of the embedding
  around it (`arch["local_margin"]` tokens on each side), so the cost of a box does not grow with
  the image.
- ``conv`` (`ConvEncoder`, stride 8): the first bundled teacher, pre-trained on synthetic shapes
  only (`assets/default_teacher_v1.pt`, `--sam default-v1`); the synthetic demo runs on it, and models
  trained on it still load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import DessamError
from ..geometry.inputs import PIXEL_MEAN, PIXEL_STD
from .checkpoints import file_sha256, read_sam_state_dict, safe_torch_load
from .conv_encoder import ConvEncoder
from .unet_encoder import UNetEncoder

from .bundled import ASSETS, DEFAULT_TEACHER_PATH, TEACHER_FILES  # noqa: F401 (imported from here elsewhere)
ENCODERS = {"unet": UNetEncoder, "conv": ConvEncoder}
STRIDES = {"unet": 4, "conv": 8}
DEFAULT_ARCH = {
    "encoder": "unet",
    "image_size": 512,
    "widths": [16, 32, 64, 128],
    "depths": [1, 2, 2, 2],
    "prompt_dim": 64,
    "decoder_mlp_dim": 256,
    "decoder_heads": 4,
    "iou_hidden": 64,
    "mask_in_chans": 16,
    "local_margin": 4,       # tokens of context around each box when decoding
    "views": None,           # per-box views (`dessam.models.box_views`): VIEW_ARCH, or None
}
# A teacher that decodes every box on a view of its own: `size` px across, `context` x the box's longer
# side (at least `min_side` px), encoded by a second U-Net of these widths and depths. The whole-image
# encoder stays: the detector reads its embedding.
VIEW_ARCH = {"size": 64, "context": 2.0, "min_side": 12.0, "widths": [16, 32, 64, 128], "depths": [1, 2, 2, 2]}
# What a teacher file without an "encoder" entry was built as (the first bundled teacher).
CONV_ARCH = {
    "encoder": "conv",
    "image_size": 256,
    "widths": [24, 48, 96],
    "depths": [1, 2, 3],
    "prompt_dim": 64,
    "decoder_mlp_dim": 256,
    "decoder_heads": 4,
    "iou_hidden": 64,
    "mask_in_chans": 16,
    "local_margin": None,    # decoded over the whole embedding unless a model says otherwise
    "views": None,
}


def full_arch(arch: Optional[dict] = None) -> dict:
    """`arch` completed with the defaults of its encoder (default: unet)."""
    arch = dict(arch or {})
    base = CONV_ARCH if arch.get("encoder", "unet") == "conv" else DEFAULT_ARCH
    spec = {**base, **arch}
    if spec["encoder"] not in ENCODERS:
        raise DessamError(f"unknown teacher encoder '{spec['encoder']}'; use {' or '.join(ENCODERS)}")
    spec["stride"] = STRIDES[spec["encoder"]]
    if spec["views"] is not None:
        spec["views"] = {**VIEW_ARCH, **spec["views"]}
        if int(spec["views"]["size"]) % 16:
            raise DessamError(f"view size {spec['views']['size']} is not a multiple of 16, as the view encoder needs")
    return spec


def build_default_architecture(image_size: Optional[int] = None, arch: Optional[dict] = None) -> Sam:
    """The default teacher's `Sam` with random weights; `image_size` must be a multiple of 16.

    `arch` overrides entries of `DEFAULT_ARCH` (checkpoint files carry theirs).
    """
    spec = full_arch(arch)
    size = int(image_size or spec["image_size"])
    multiple = 16 if spec["encoder"] == "unet" else spec["stride"]
    if size <= 0 or size % multiple:
        raise DessamError(f"image size {size} is not a positive multiple of {multiple}, as the default teacher needs")
    dim = int(spec["prompt_dim"])
    grid = size // spec["stride"]
    encoder = ENCODERS[spec["encoder"]](img_size=size, out_chans=dim, widths=tuple(spec["widths"]),
                                        depths=tuple(spec["depths"]))
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=int(spec["mask_in_chans"]),
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=dim, mlp_dim=int(spec["decoder_mlp_dim"]), num_heads=int(spec["decoder_heads"])
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=int(spec["iou_hidden"]),
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    # Trained on windows of the embedding around each box: decoding it over the whole embedding is
    # another function (on synthetic nuclei its masks agreed with the windowed ones at a mean IoU of 0.67).
    sam.decodes_locally = spec["local_margin"] is not None or spec["views"] is not None
    if spec["views"] is not None:
        views = spec["views"]
        sam.view_encoder = UNetEncoder(img_size=int(views["size"]), out_chans=dim, widths=tuple(views["widths"]),
                                       depths=tuple(views["depths"]))
        sam.view_spec = {key: views[key] for key in ("size", "context", "min_side")}
    return sam


def teacher_file(sam: Sam, arch: Optional[dict] = None, **extra) -> dict:
    """The object saved to a default-teacher file (plain tensors and containers only)."""
    spec = {**full_arch(arch), "image_size": int(sam.image_encoder.img_size)}
    spec.pop("stride")
    state = {key: value.detach().cpu().clone() for key, value in sam.state_dict().items()}
    return {"format": "dessam-sam", "arch": spec, "state_dict": state, **extra}


def is_teacher_file(path: str | Path) -> bool:
    """True when `path` is a default-teacher file (not an official SAM checkpoint)."""
    try:
        obj = safe_torch_load(path)
    except DessamError:
        return False
    return isinstance(obj, dict) and obj.get("format") == "dessam-sam"


def teacher_architecture(path: str | Path) -> dict:
    """The complete architecture of a default-teacher file."""
    obj = safe_torch_load(path)
    arch = obj.get("arch") if isinstance(obj, dict) and isinstance(obj.get("arch"), dict) else {}
    return full_arch({"encoder": "conv", **arch})  # files from before the unet teacher name no encoder


def is_default_teacher(name) -> bool:
    """True for the names of dessam's own teachers (`default`, `default-permissive`, `default-v1`)."""
    return name in TEACHER_FILES


def teacher_path(name: str) -> Path:
    """The file of the bundled teacher `name`, or a one-line error when this installation lacks it."""
    path = TEACHER_FILES[name]
    if not path.is_file():
        raise DessamError(f"{path}: the teacher '{name}' is not bundled with this installation; use --sam default, "
                          "or create one with `dessam pretrain-teacher` and pass --sam-checkpoint")
    return path


def teacher_for_digest(sha256: str) -> Optional[Path]:
    """The bundled teacher file (today's or an earlier one) whose SHA-256 is `sha256`, if any."""
    for path in TEACHER_FILES.values():
        if path.is_file() and file_sha256(path) == sha256:
            return path
    return None


def load_default_teacher(image_size: Optional[int] = None, path: Optional[str | Path] = None) -> Sam:
    """Build the default teacher at `image_size` (default: the file's) and load its weights, in eval mode."""
    path = Path(path) if path is not None else DEFAULT_TEACHER_PATH
    if not path.is_file():
        raise DessamError(
            f"{path}: the default teacher's weights are missing; create them with "
            f"`dessam pretrain-teacher --corpus CORPUS.yaml --out DIR` and pass DIR/teacher.pt"
        )
    arch = teacher_architecture(path)
    sam = build_default_architecture(image_size or arch["image_size"], arch)
    state = read_sam_state_dict(path)
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DessamError(
            f"{path}: not a default-teacher file ({len(missing)} missing, {len(unexpected)} unexpected keys); "
            f"re-create it with `dessam pretrain-teacher`"
        )
    sam.eval()
    return sam
