"""The default teacher that ships with dessam: a small promptable segmenter of SAM's design.

Official SAM weights cannot always be downloaded, so `--sam default` uses this model: a small
convolutional image encoder (`ConvEncoder`, stride 8) in front of the *official*
`segment_anything` prompt encoder, two-way transformer and mask decoder, at a narrower width.
It is pre-trained on generic synthetic scenes by `dessam.training.pretrain_teacher` and stored in
`assets/default_teacher.pt` as ``{"format": "dessam-sam", "arch": {...}, "state_dict": {...}}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import DessamError
from .checkpoints import read_sam_state_dict, safe_torch_load
from .conv_encoder import STRIDE, ConvEncoder
from .pixels import PIXEL_MEAN, PIXEL_STD

DEFAULT_TEACHER_PATH = Path(__file__).resolve().parent.parent / "assets" / "default_teacher.pt"
DEFAULT_IMAGE_SIZE = 256
DEFAULT_STRIDE = STRIDE
DEFAULT_ARCH = {
    "image_size": DEFAULT_IMAGE_SIZE,
    "stride": STRIDE,
    "widths": [24, 48, 96],
    "depths": [1, 2, 3],
    "prompt_dim": 64,
    "decoder_mlp_dim": 256,
    "decoder_heads": 4,
    "iou_hidden": 64,
    "mask_in_chans": 16,
}


def build_default_architecture(image_size: Optional[int] = None, arch: Optional[dict] = None) -> Sam:
    """The default teacher's `Sam` with random weights; `image_size` must be a multiple of 8.

    `arch` overrides entries of `DEFAULT_ARCH` (checkpoint files carry theirs).
    """
    spec = {**DEFAULT_ARCH, **(arch or {})}
    size = int(image_size or spec["image_size"])
    if size <= 0 or size % STRIDE:
        raise DessamError(f"image size {size} is not a positive multiple of the default teacher's stride {STRIDE}")
    dim = int(spec["prompt_dim"])
    grid = size // STRIDE
    return Sam(
        image_encoder=ConvEncoder(
            img_size=size, out_chans=dim, widths=tuple(spec["widths"]), depths=tuple(spec["depths"])
        ),
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


def teacher_file(sam: Sam, arch: Optional[dict] = None, **extra) -> dict:
    """The object saved to a default-teacher file (plain tensors and containers only)."""
    spec = {**DEFAULT_ARCH, **(arch or {}), "image_size": int(sam.image_encoder.img_size)}
    state = {key: value.detach().cpu().clone() for key, value in sam.state_dict().items()}
    return {"format": "dessam-sam", "arch": spec, "state_dict": state, **extra}


def teacher_architecture(path: str | Path) -> dict:
    """The architecture entries stored in a default-teacher file (`DEFAULT_ARCH` where absent)."""
    obj = safe_torch_load(path)
    arch = obj.get("arch") if isinstance(obj, dict) and isinstance(obj.get("arch"), dict) else {}
    return {**DEFAULT_ARCH, **arch}


def load_default_teacher(image_size: Optional[int] = None, path: Optional[str | Path] = None) -> Sam:
    """Build the default teacher at `image_size` (default: the file's) and load its weights, in eval mode."""
    path = Path(path) if path is not None else DEFAULT_TEACHER_PATH
    if not path.is_file():
        raise DessamError(
            f"{path}: the default teacher's weights are missing; create them with "
            f"`dessam pretrain-teacher --out {path}`"
        )
    arch = teacher_architecture(path)
    sam = build_default_architecture(image_size or arch["image_size"], arch)
    state = read_sam_state_dict(path)
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DessamError(
            f"{path}: not a default-teacher file ({len(missing)} missing, {len(unexpected)} unexpected keys); "
            f"re-create it with `dessam pretrain-teacher --out {path}`"
        )
    sam.eval()
    return sam
