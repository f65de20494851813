import pytest
import torch

from dessam.errors import DessamError
from dessam.models.checkpoints import file_sha256, read_sam_state_dict
from dessam.models.default_teacher import (
    CONV_ARCH,
    DEFAULT_TEACHER_PATH,
    build_default_architecture,
    full_arch,
    is_teacher_file,
    load_default_teacher,
    teacher_architecture,
    teacher_file,
    teacher_for_digest,
)
from dessam.models.neck import SimpleFeaturePyramid

SMALL = {"widths": [8, 16, 16, 16], "depths": [1, 1, 1, 1], "prompt_dim": 32, "decoder_mlp_dim": 64,
         "decoder_heads": 2, "iou_hidden": 32, "mask_in_chans": 8}
SMALL_CONV = {**SMALL, "encoder": "conv", "widths": [8, 16, 16], "depths": [1, 1, 1]}


@pytest.mark.parametrize("arch, stride", [(SMALL, 4), (SMALL_CONV, 8)])
@pytest.mark.parametrize("size", [64, 96])
def test_architecture_output_shapes(arch, stride, size):
    sam = build_default_architecture(size, arch).eval()
    assert sam.image_encoder.img_size == size
    grid = size // stride
    with torch.no_grad():
        embedding = sam.image_encoder(torch.zeros(2, 3, size, size))
        assert embedding.shape == (2, 32, grid, grid)
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([[4.0, 4, 30, 40], [0, 0, 10, 10]]), masks=None)
        low, iou = sam.mask_decoder(embedding[:1], sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
    assert low.shape == (2, 1, 4 * grid, 4 * grid) and iou.shape == (2, 1)


def test_default_architecture_builds_and_rejects_bad_sizes():
    sam = build_default_architecture(None)
    assert sam.image_encoder.img_size == 512 and sam.prompt_encoder.image_embedding_size == (128, 128)
    with pytest.raises(DessamError, match="multiple of 16"):
        build_default_architecture(100)
    with pytest.raises(DessamError, match="unknown teacher encoder"):
        full_arch({"encoder": "vit"})


def test_state_dict_round_trip_and_files_from_before_the_unet_teacher(tmp_path):
    torch.manual_seed(0)
    sam = build_default_architecture(64, SMALL)
    path = tmp_path / "teacher.pt"
    torch.save(teacher_file(sam, SMALL), path)
    state = read_sam_state_dict(path)
    assert all(torch.equal(state[key], value) for key, value in sam.state_dict().items())
    assert is_teacher_file(path) and teacher_architecture(path)["encoder"] == "unet"
    loaded = load_default_teacher(None, path)  # arch and size come from the file
    assert loaded.image_encoder.img_size == 64
    assert load_default_teacher(128, path).prompt_encoder.image_embedding_size == (32, 32)
    # a file written before the encoder was named: the stride-8 convolutional teacher
    legacy = build_default_architecture(64, SMALL_CONV)
    old = teacher_file(legacy, SMALL_CONV)
    del old["arch"]["encoder"], old["arch"]["local_margin"]
    torch.save(old, tmp_path / "old.pt")
    assert teacher_architecture(tmp_path / "old.pt")["stride"] == 8
    assert load_default_teacher(None, tmp_path / "old.pt").prompt_encoder.image_embedding_size == (8, 8)
    assert CONV_ARCH["local_margin"] is None


def test_bundled_teachers_are_found_by_their_digest(tmp_path):
    assert teacher_for_digest(file_sha256(DEFAULT_TEACHER_PATH)) == DEFAULT_TEACHER_PATH
    assert teacher_for_digest("0" * 64) is None
    assert not is_teacher_file(tmp_path / "missing.pt")


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(DessamError, match="pretrain-teacher --corpus"):
        load_default_teacher(None, tmp_path / "nope.pt")


def test_pyramid_levels_follow_the_embedding_or_the_chosen_finest_stride():
    vit = SimpleFeaturePyramid(64, 16, 16)
    assert vit.strides == [4, 8, 16, 32]
    fine = SimpleFeaturePyramid(64, 16, 4, finest_stride=4)
    assert fine.strides == [4, 8, 16, 32]
    levels = fine(torch.zeros(1, 64, 32, 32))
    assert [tuple(level.shape[-2:]) for level in levels.values()] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    demo = SimpleFeaturePyramid(64, 16, 4, finest_stride=2)
    assert [tuple(v.shape[-2:]) for v in demo(torch.zeros(1, 64, 8, 8)).values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with pytest.raises(ValueError):
        SimpleFeaturePyramid(64, 16, 4, finest_stride=3)
