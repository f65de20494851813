"""Build Meta's Segment Anything Model and load its checkpoints safely.

`build_sam(name, checkpoint=None, image_size=None)` returns the official
`segment_anything.modeling.Sam` class for:

- ``vit_b``, ``vit_l``, ``vit_h``: the official architectures. An official ``.pth`` (a plain state
  dict) loads with ``torch.load(weights_only=True)``; a checkpoint that does not fit is refused with
  one line naming the missing/unexpected keys and the variant it looks like.
- ``tiny``: a few layers and small widths, deterministic random weights; for tests only.
- ``default``: the small CPU-friendly teacher that ships with dessam (see
  `dessam.models.default_teacher`).

Nothing here changes SAM's modules: at another input size the absolute position embedding and the
global-attention relative-position tables are interpolated in the state dict before loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ..errors import DessamError
from ..geometry.inputs import PIXEL_MEAN, PIXEL_STD
from .checkpoints import read_sam_state_dict
from .default_teacher import (TEACHER_FILES, build_default_architecture, is_default_teacher, load_default_teacher,
                              teacher_path)



@dataclass(frozen=True)
class VitSpec:
    """Hyper-parameters of one ViT-SAM architecture."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple
    prompt_dim: int = 256
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_hidden: int = 256
    mask_in_chans: int = 16


VIT_SPECS = {
    "vit_b": VitSpec(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": VitSpec(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": VitSpec(1280, 32, 16, (7, 15, 23, 31)),
    # Tests only: two encoder blocks, 32-wide prompts, random weights from a fixed seed.
    "tiny": VitSpec(
        embed_dim=48, depth=2, num_heads=2, global_attn_indexes=(1,), prompt_dim=32, image_size=256, patch_size=8,
        window_size=4, mlp_dim=64, decoder_heads=2, iou_hidden=32, mask_in_chans=8,
    ),
}
OFFICIAL_VARIANTS = ("vit_b", "vit_l", "vit_h")
SAM_NAMES = ("vit_b", "vit_l", "vit_h", "tiny", *TEACHER_FILES)
TINY_SEED = 20240601


def build_sam_architecture(name: str, image_size: Optional[int] = None) -> Sam:
    """The named SAM with freshly initialised weights (no checkpoint)."""
    if is_default_teacher(name):
        return build_default_architecture(image_size)
    if name not in VIT_SPECS:
        raise DessamError(f"unknown SAM '{name}': choose one of {', '.join(SAM_NAMES)} or give a checkpoint path")
    spec = VIT_SPECS[name]
    size = int(image_size or spec.image_size)
    if size % spec.patch_size:
        raise DessamError(f"image size {size} is not a multiple of SAM's patch size {spec.patch_size}")
    grid = size // spec.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.depth,
            embed_dim=spec.embed_dim,
            img_size=size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=spec.num_heads,
            patch_size=spec.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=spec.global_attn_indexes,
            window_size=spec.window_size,
            out_chans=spec.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=spec.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=spec.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=spec.prompt_dim, mlp_dim=spec.mlp_dim, num_heads=spec.decoder_heads
            ),
            transformer_dim=spec.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=spec.iou_hidden,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def build_sam(name: str, checkpoint: Optional[str | Path] = None, image_size: Optional[int] = None) -> Sam:
    """Build SAM `name` and load `checkpoint` (a path) if given; the result is in eval mode.

    `name` may also be a checkpoint path when the file is an official checkpoint whose variant is
    recognised. ``tiny`` without a checkpoint gets deterministic random weights; ``default`` without a
    checkpoint loads the bundled teacher (with one: that default-teacher file).
    """
    if name not in SAM_NAMES and Path(str(name)).suffix in (".pth", ".pt") and checkpoint is None:
        checkpoint, name = name, recognise_variant(name)
    if checkpoint is None and name == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            sam = build_sam_architecture(name, image_size)
    elif is_default_teacher(name):  # a bundled teacher, or a teacher file written by `dessam pretrain-teacher`
        sam = load_default_teacher(image_size, checkpoint or teacher_path(name))
    else:
        state = None
        if checkpoint is not None:  # refuse a wrong file before allocating the model (ViT-H: 2.5 GB)
            state = read_sam_state_dict(checkpoint)
            with torch.device("meta"):
                check_state_dict(build_sam_architecture(name, image_size), state, name, checkpoint)
        sam = build_sam_architecture(name, image_size)
        if state is not None:
            sam.load_state_dict(adapt_to_image_size(state, sam))
    sam.eval()
    return sam


def sam_input_size(name: str, checkpoint: Optional[str | Path] = None) -> int:
    """The input size of the SAM `--sam NAME [--sam-checkpoint PATH]` names, without building it."""
    from .default_teacher import is_default_teacher, teacher_path

    if is_default_teacher(name) or (checkpoint and Path(checkpoint).suffix == ".pt"):
        from .checkpoints import safe_torch_load

        payload = safe_torch_load(checkpoint or teacher_path(name))
        if isinstance(payload, dict) and payload.get("format") == "dessam-sam":
            return int(payload["arch"]["image_size"])
    spec = VIT_SPECS.get(name)
    return int(spec.image_size) if spec is not None else 1024


def guess_variant(state: dict) -> Optional[str]:
    """Which SAM architecture a state dict belongs to, from its encoder width and depth."""
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, spec in VIT_SPECS.items():
        if weight.shape[0] == spec.embed_dim and depth == spec.depth:
            return name
    return None


def recognise_variant(path: str | Path) -> str:
    """The official variant of the checkpoint at `path`, or a `DessamError`."""
    variant = guess_variant(read_sam_state_dict(path))
    if variant not in OFFICIAL_VARIANTS:
        raise DessamError(
            f"{path}: could not recognise the SAM variant of this checkpoint; pass --sam vit_b|vit_l|vit_h "
            f"with --sam-checkpoint {path}"
        )
    return variant


def _resizable(key: str) -> bool:
    return key == "image_encoder.pos_embed" or key.endswith(("attn.rel_pos_h", "attn.rel_pos_w"))


def check_state_dict(sam: Sam, state: dict, name: str, path: str | Path) -> None:
    """Refuse a checkpoint that does not fit `sam`, in one line."""
    expected = sam.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        k for k in expected
        if k in state and state[k].shape != expected[k].shape and not _resizable(k)
    ]
    if not (missing or unexpected or wrong_shape):
        return

    def first(keys):
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({first(unexpected)})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} keys of another shape ({first(wrong_shape)})")
    looks = guess_variant(state)
    if looks == name:
        hint = f"it looks like an incomplete or modified {looks} checkpoint: re-download or re-create it"
    elif looks:
        hint = f"it looks like {looks}: use --sam {looks}"
    else:
        hint = "it does not look like any SAM variant"
    raise DessamError(f"{path}: checkpoint does not match SAM '{name}': {'; '.join(parts)}; {hint}")


def adapt_to_image_size(state: dict, sam: Sam) -> dict:
    """Interpolate position tables stored for another input size to `sam`'s size."""
    expected = sam.state_dict()
    state = dict(state)
    for key, value in state.items():
        target = expected.get(key)
        if target is None or value.shape == target.shape or not _resizable(key):
            continue
        if key == "image_encoder.pos_embed":  # (1, H, W, C)
            grid = value.permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=target.shape[1:3], mode="bicubic", align_corners=False)
            state[key] = grid.permute(0, 2, 3, 1).to(value.dtype)
        else:  # relative positions (2 * size - 1, head_dim)
            table = value.t().unsqueeze(0).float()
            table = F.interpolate(table, size=target.shape[0], mode="linear", align_corners=False)
            state[key] = table.squeeze(0).t().to(value.dtype)
    return state
