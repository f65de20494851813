"""The fast inference path: settings, autocast, compile fallback, and masks equal to the reference path."""

import warnings

import numpy as np
import pytest
import torch
from scenes import make_nuclei_scene, tiny_config

from dessam.engine import fastpath
from dessam.engine.fastpath import (InferenceSettings, autocast_for, encode_batch, fast_settings, mask_iou,
                                    maybe_compile, mean_mask_iou, predict_images, reference_settings)
from dessam.engine.predict import DessamModel
from dessam.engine.train import build_model
from dessam.errors import DessamError
from dessam.models.default_teacher import DEFAULT_TEACHER_PATH


def _model(sam="tiny", image_size=128, device="cpu") -> DessamModel:
    config = tiny_config()
    config.model.sam = sam
    config.model.image_size = image_size
    config.model.score_threshold = 0.0  # untrained heads: keep boxes so the decoder has prompts
    config.model.max_detections = 30
    device = torch.device(device)
    model, identity = build_model(config, device)
    return DessamModel(model, config, identity, device)


@pytest.fixture(scope="module")
def tiny():
    return _model()


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    square = [make_nuclei_scene(rng, 128)[0] for _ in range(2)]
    return square + [make_nuclei_scene(rng, 96)[0][:70]]  # a smaller, non-square one too


@pytest.fixture(scope="module")
def nuclei():
    """Scenes and the boxes of their nuclei (what the decoder is prompted with in use)."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    scenes = [make_nuclei_scene(rng, 128) for _ in range(3)]
    boxes = [np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)],
                      np.float32) for _, labels in scenes]
    return [image for image, _ in scenes], boxes


def _agreement(model, images, boxes, settings) -> float:
    reference = predict_images(model, images, reference_settings(), boxes=boxes)
    return mean_mask_iou(reference, predict_images(model, images, settings, boxes=boxes))


needs_teacher = pytest.mark.skipif(not DEFAULT_TEACHER_PATH.is_file(), reason=(
    "needs trained weights (the default teacher): random weights give logits near 0, whose sign any rounding flips"))


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(fastpath, "_warned", [False])


def test_settings_are_checked():
    with pytest.raises(DessamError, match="precision"):
        InferenceSettings(precision="fp8")
    with pytest.raises(DessamError, match="precision"):
        InferenceSettings(decoder_precision="half")
    with pytest.raises(DessamError, match="compile"):
        InferenceSettings(compile="sometimes")
    with pytest.raises(DessamError):
        InferenceSettings(decoder_chunk=0)


def test_reference_and_fast_settings():
    reference = reference_settings()
    assert (reference.batch_size, reference.decoder_chunk, reference.compile) == (1, 50, False)
    assert reference.autocast_dtype("cuda") is None and reference.autocast_dtype("cpu") is None
    assert reference.autocast_dtype("cuda", "decoder") is None
    assert fast_settings("cuda").autocast_dtype("cuda") == torch.bfloat16
    assert fast_settings("cuda").autocast_dtype("cuda", "decoder") == torch.float16
    assert fast_settings("cpu").autocast_dtype("cpu") is None
    assert fast_settings("cpu").autocast_dtype("cpu", "decoder") is None
    assert InferenceSettings(precision="bf16").autocast_dtype("cpu") == torch.bfloat16
    assert InferenceSettings(precision="fp32").autocast_dtype("cuda", "decoder") is None
    assert InferenceSettings(precision="bf16", decoder_precision="bf16").autocast_dtype("cpu", "decoder") == torch.bfloat16
    assert "bf16 encoder, fp16 decoder" in fast_settings("cuda").describe("cuda")
    auto = InferenceSettings(compile="auto")
    assert not auto.compiles("cpu", 10**6)
    assert not auto.compiles("cuda", 10)
    assert auto.compiles("cuda", fastpath.AUTO_COMPILE_MIN_IMAGES)
    assert InferenceSettings(compile=True).compiles("cpu")


def test_autocast_for_switches_matmul_precision():
    a = torch.randn(4, 4)
    with autocast_for(InferenceSettings(precision="fp32"), "cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast_for(InferenceSettings(precision="bf16"), "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_for(InferenceSettings(precision="bf16"), "cpu", "decoder"):
        assert (a @ a).dtype == torch.float16


def test_maybe_compile_off_returns_the_module():
    module = torch.nn.Linear(3, 2)
    assert maybe_compile(module, InferenceSettings(compile=False)) is module
    assert maybe_compile(module, InferenceSettings(compile="auto")) is module  # CPU: never auto-compiled


def test_maybe_compile_without_torch_compile(monkeypatch):
    monkeypatch.delattr(torch, "compile")
    module = torch.nn.Linear(3, 2)
    with pytest.warns(RuntimeWarning, match="not available"):
        assert maybe_compile(module, InferenceSettings(compile=True)) is module


def test_maybe_compile_falls_back_when_compiling_fails(monkeypatch):
    calls = []

    def broken_compile(module, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            raise RuntimeError("backend exploded")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    wrapped = maybe_compile(module, InferenceSettings(compile=True))
    with pytest.warns(RuntimeWarning, match="backend exploded"):
        out = wrapped(x)
    torch.testing.assert_close(out, module(x))
    torch.testing.assert_close(wrapped(x), module(x))  # no second try, no second warning
    assert len(calls) == 1
    assert maybe_compile(module, InferenceSettings(compile=True)) is wrapped  # made once per module


def test_encode_batch_matches_one_call(tiny, images):
    from dessam.engine.inputs import prepare_image

    batch = torch.stack([prepare_image(image, tiny.image_size).normalised for image in images])
    expected = tiny.model.encode(batch)
    got = encode_batch(tiny.model, batch, InferenceSettings(precision="fp32", batch_size=2))
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_reference_path_is_the_predict_pipeline(tiny, images):
    """With reference settings the batched code gives exactly what DessamModel's pieces give."""
    tiny.config.model.decoder_chunk = fastpath.REFERENCE_DECODER_CHUNK
    got = predict_images(tiny, images, reference_settings())
    assert sum(len(boxes) for boxes, _, _ in got) > 0
    for image, (boxes, scores, masks) in zip(images, got):
        want_boxes, want_scores, want_masks = tiny.predict_instances(image)
        np.testing.assert_array_equal(boxes, want_boxes)
        np.testing.assert_array_equal(scores, want_scores)
        np.testing.assert_array_equal(masks, want_masks)
        assert masks.shape[1:] == image.shape[:2]


@pytest.mark.parametrize("settings", [fast_settings("cpu"), InferenceSettings(precision="fp32", batch_size=3,
                                                                              decoder_chunk=7)])
def test_fast_path_masks_agree_with_reference(tiny, images, settings):
    reference = predict_images(tiny, images, reference_settings())
    fast = predict_images(tiny, images, settings)
    assert [len(b) for b, _, _ in fast] == [len(b) for b, _, _ in reference]
    for (boxes_f, _, _), (boxes_r, _, _) in zip(fast, reference):
        np.testing.assert_allclose(boxes_f, boxes_r, atol=1e-3)
    assert mean_mask_iou(reference, fast) >= 0.99


def test_prompting_with_given_boxes(tiny, images):
    boxes = [np.array([[10, 12, 40, 45], [60, 60, 90, 100]], np.float32), np.zeros((0, 4), np.float32),
             np.array([[5, 5, 30, 30]], np.float32)]
    got = predict_images(tiny, images, InferenceSettings(precision="fp32", batch_size=2), boxes=boxes)
    for image, given, (out_boxes, scores, masks) in zip(images, boxes, got):
        np.testing.assert_array_equal(out_boxes, given)
        np.testing.assert_array_equal(scores, np.ones(len(given), np.float32))
        want = tiny.segment(tiny.encode(image), given)
        assert masks.shape == want.shape == (len(given),) + image.shape[:2]
        assert mask_iou(masks, want).min(initial=1.0) >= 0.99


def test_mask_iou():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2] = b[0, :2] = True          # identical
    a[1, :2], b[1, 2:] = True, True     # disjoint
    a[2, :2], b[2, :1] = True, True     # half
    np.testing.assert_allclose(mask_iou(a, b), [1.0, 0.0, 0.5])
    assert mask_iou(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2), bool))[0] == 1.0
    with pytest.raises(ValueError):
        mean_mask_iou([(None, None, a)], [(None, None, b[:2])])


# ----- CUDA only ---------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_teacher
def test_reduced_precision_agrees_with_fp32(nuclei):
    """CUDA's default precisions (bf16 encoder, fp16 decoder), emulated by CPU autocast."""
    settings = InferenceSettings(precision="bf16", decoder_precision="auto", batch_size=2)
    assert _agreement(_model("default", 256), *nuclei, settings) >= 0.99


@pytest.mark.gpu
@needs_cuda
@needs_teacher
def test_fast_path_agrees_with_fp32_reference_on_cuda(nuclei):
    assert _agreement(_model("default", 256, "cuda"), *nuclei, fast_settings("cuda")) >= 0.99


@pytest.mark.gpu
@needs_cuda
def test_compiled_fast_path_agrees_with_eager_on_cuda(nuclei):
    model = _model("default" if DEFAULT_TEACHER_PATH.is_file() else "tiny", 256, "cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a torch.compile failure fails the test
        agreement = _agreement(model, *nuclei, InferenceSettings(precision="fp32", compile=True))
    assert agreement >= 0.99
