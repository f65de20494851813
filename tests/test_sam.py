"""Loading SAM checkpoints: bit-exact weights, one-line refusals, no code run on load, other sizes.

The ``vit_b`` checkpoint here has the key names and shapes of `segment_anything`'s own ``vit_b``
(built on the meta device, so nothing is initialised) filled with seeded random numbers: loading it
through `build_sam` checks that dessam's architecture is exactly the official one. Checkpoints of
other shapes are made of expanded zero tensors, which `torch.save` stores as a single element.
"""

from __future__ import annotations

import pytest
import torch
from segment_anything import sam_model_registry

from dessam.errors import DessamError
from dessam.models.sam import VIT_SPECS, build_sam, recognise_variant

SEED = 7


def _official_shapes(variant: str) -> dict:
    with torch.device("meta"):
        official = sam_model_registry[variant]()
    return {key: value.shape for key, value in official.state_dict().items()}


def _zeros_like_shapes(shapes: dict) -> dict:
    return {key: torch.zeros(()).expand(shape) for key, shape in shapes.items()}


@pytest.fixture(scope="module")
def vit_b_file(tmp_path_factory):
    """(path, state dict) of a random checkpoint shaped like Meta's sam_vit_b_01ec64.pth (~360 MB)."""
    generator = torch.Generator().manual_seed(SEED)
    state = {key: torch.randn(shape, generator=generator) for key, shape in _official_shapes("vit_b").items()}
    path = tmp_path_factory.mktemp("vit_b") / "sam_vit_b_random.pth"
    torch.save(state, path)
    yield path, state
    path.unlink()


def _assert_same_weights(sam, state):
    loaded = sam.state_dict()
    assert set(loaded) == set(state)
    different = [key for key, value in state.items() if not torch.equal(loaded[key], value)]
    assert different == []


def test_vit_b_checkpoint_loads_bit_exactly(vit_b_file):
    path, state = vit_b_file
    sam = build_sam("vit_b", path)
    _assert_same_weights(sam, state)
    assert not sam.training


def test_a_checkpoint_path_alone_recognises_its_variant(vit_b_file):
    path, state = vit_b_file
    sam = build_sam(str(path))
    assert sam.image_encoder.patch_embed.proj.out_channels == VIT_SPECS["vit_b"].embed_dim
    assert len(sam.image_encoder.blocks) == VIT_SPECS["vit_b"].depth
    _assert_same_weights(sam, state)


def test_vit_b_at_another_image_size_interpolates_position_tables(vit_b_file):
    path, state = vit_b_file
    sam = build_sam("vit_b", path, image_size=512)
    loaded = sam.state_dict()
    spec = VIT_SPECS["vit_b"]
    head_dim = spec.embed_dim // spec.num_heads
    assert loaded["image_encoder.pos_embed"].shape == (1, 32, 32, spec.embed_dim)
    for index in range(spec.depth):
        span = 2 * 32 - 1 if index in spec.global_attn_indexes else 2 * spec.window_size - 1
        for axis in ("h", "w"):
            assert loaded[f"image_encoder.blocks.{index}.attn.rel_pos_{axis}"].shape == (span, head_dim)
    resized = {"image_encoder.pos_embed"} | {
        f"image_encoder.blocks.{i}.attn.rel_pos_{axis}" for i in spec.global_attn_indexes for axis in ("h", "w")
    }
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if key not in resized)
    # Resampled from the checkpoint, not left at SAM's zero initialisation: a 2x bicubic reduction of
    # the 64 x 64 table follows the 2 x 2 block means closely.
    pooled = torch.nn.functional.avg_pool2d(state["image_encoder.pos_embed"].permute(0, 3, 1, 2), 2)
    resampled = loaded["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    assert torch.corrcoef(torch.stack([pooled.flatten(), resampled.flatten()]))[0, 1] > 0.9
    for key in resized - {"image_encoder.pos_embed"}:
        assert loaded[key].std() > 0.3  # randn resampled; SAM initialises these tables to zeros
    assert sam.prompt_encoder.image_embedding_size == (32, 32)
    with torch.no_grad():
        embedding = sam.image_encoder(torch.zeros(1, 3, 512, 512))
    assert embedding.shape == (1, 256, 32, 32) and torch.isfinite(embedding).all()


def test_a_vit_l_checkpoint_given_as_vit_b_says_it_looks_like_vit_l(tmp_path):
    path = tmp_path / "vit_l.pth"
    torch.save(_zeros_like_shapes(_official_shapes("vit_l")), path)
    assert path.stat().st_size < 2_000_000  # shapes only: the real file is 1.2 GB
    with pytest.raises(DessamError) as info:
        build_sam("vit_b", path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "it looks like vit_l" in message and "use --sam vit_l" in message
    assert recognise_variant(path) == "vit_l"


def test_a_missing_key_is_named_with_the_variant_it_looks_like(tmp_path):
    state = _zeros_like_shapes(_official_shapes("vit_b"))
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(DessamError) as info:
        build_sam("vit_b", path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "1 missing keys (mask_decoder.iou_token.weight)" in message
    assert "looks like" in message and "vit_b" in message.split("looks like")[1]


def test_an_unexpected_key_is_named(tmp_path):
    state = dict(build_sam("tiny").state_dict())
    state["mask_decoder.extra_token.weight"] = torch.zeros(1, 32)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(DessamError, match=r"1 unexpected keys \(mask_decoder\.extra_token\.weight\)"):
        build_sam("tiny", path)


class _RunsCode:
    """Unpickling this creates `marker` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name_or_path", ["tiny", None], ids=["as-tiny", "path-only"])
def test_a_checkpoint_that_runs_code_on_load_is_refused(tmp_path, name_or_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    state = dict(build_sam("tiny").state_dict())
    state["image_encoder.pos_embed"] = _RunsCode(marker)
    torch.save(state, path)
    with pytest.raises(DessamError, match="refused to load") as info:
        if name_or_path is None:
            build_sam(str(path))
        else:
            build_sam(name_or_path, path)
    assert "\n" not in str(info.value) and "weights_only` set to `False" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:1000], lambda data: b"\x80\x02 not a pickle either" * 10, lambda data: b"junk" * 100],
    ids=["truncated", "bad-pickle", "junk"],
)
def test_a_damaged_checkpoint_is_called_unreadable(tmp_path, damage):
    path = tmp_path / "damaged.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DessamError, match="not a readable PyTorch checkpoint") as info:
        build_sam("tiny", path)
    assert "\n" not in str(info.value) and "weights_only` set to `False" not in str(info.value)


def test_tiny_is_deterministic_and_round_trips(tmp_path):
    torch.manual_seed(1)
    expected_draw = torch.rand(4)
    torch.manual_seed(1)
    first = build_sam("tiny").state_dict()
    assert torch.equal(torch.rand(4), expected_draw)  # the caller's random stream is left alone
    _assert_same_weights(build_sam("tiny"), first)
    path = tmp_path / "tiny.pth"
    torch.save(first, path)
    _assert_same_weights(build_sam("tiny", path), first)


def test_a_tiny_checkpoint_path_alone_is_not_guessed_as_official(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    with pytest.raises(DessamError, match="could not recognise the SAM variant"):
        build_sam(str(path))
