"""The inference pipeline: settings, acceleration, batching, local decoding and masks as crops."""

import argparse
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scenes import make_nuclei_scene, tiny_config
from scipy import ndimage

from dessam.errors import DessamError
from dessam.geometry.inputs import prepare_image
from dessam.inference import acceleration
from dessam.inference.acceleration import autocast_for, maybe_compile
from dessam.inference.instances import mask_ious
from dessam.inference.masks import instance_crop
from dessam.inference.predictor import STUDENT, Predictor, student_masks
from dessam.config.runtime import AUTO_COMPILE_MIN_IMAGES, InferenceSettings, Runtime, fast_settings, reference_settings
from dessam.inference.windowed import MaskSource, window_instances
from dessam.models.default_teacher import DEFAULT_TEACHER_PATH
from dessam.training.train import build_model


def _model(sam="tiny", image_size=128, device="cpu", settings=None, **model_settings) -> Predictor:
    config = tiny_config().replace({"model.sam": sam, "model.image_size": image_size,
                                    "model.postprocess.mask_threshold": 0.0,  # random heads: their logits rarely pass the official 0.5
                                    **{f"model.{key}": value for key, value in model_settings.items()}})
    device = torch.device(device)
    model, identity = build_model(config, device)
    return Predictor(model, model.config, identity, device, settings=settings or reference_settings())


KEEP_ALL = dict(score_threshold=0.0, max_detections=30)


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
    rng = np.random.default_rng(5)
    scenes = [make_nuclei_scene(rng, 128) for _ in range(3)]
    boxes = [np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)],
                      np.float32) for _, labels in scenes]
    return [image for image, _ in scenes], boxes


def _segment(predictor, images, boxes, use_token=True):
    return predictor.segment(predictor.encode(images), boxes, use_token=use_token)


def _raw_instances(predictor, images, postprocess):
    """The student's instances of images that each fit one input, before post-processing."""
    found = window_instances(predictor, images, postprocess, {STUDENT: MaskSource(student_masks)})
    return [result[STUDENT] for result in found]


def _agreement(first, second, images, boxes) -> float:
    ious = [mask_ious(a, b) for a, b in zip(_segment(first, images, boxes), _segment(second, images, boxes))]
    return float(np.concatenate(ious).mean())


needs_teacher = pytest.mark.skipif(not DEFAULT_TEACHER_PATH.is_file(), reason=(
    "needs trained weights (the default teacher): random weights give logits near 0, whose sign any rounding flips"))


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(acceleration, "_warned", [False])


def test_settings_are_checked():
    with pytest.raises(DessamError, match="precision"):
        InferenceSettings(precision="fp8")
    with pytest.raises(DessamError, match="precision"):
        InferenceSettings(decoder_precision="half")
    with pytest.raises(DessamError, match="compile"):
        InferenceSettings(compile="sometimes")
    with pytest.raises(DessamError):
        InferenceSettings(decoder_chunk=0)
    with pytest.raises(DessamError, match="proposal"):
        InferenceSettings(test_proposals=0)


def test_the_runtime_flags_compose_into_one_runtime():
    args = argparse.Namespace(engine="torch", device="cpu", precision="auto", threads=None, compile=True)
    runtime = Runtime.from_args(args)
    assert runtime == Runtime(engine="torch", device="cpu", compile=True)
    assert Runtime.from_args(argparse.Namespace(engine="onnx", device="auto")) == Runtime(engine="onnx")  # flags a command lacks
    settings = runtime.torch_settings()
    assert settings.compile is True and settings.batch_size == fast_settings("cpu").batch_size
    assert Runtime(device="cpu").torch_settings().compile is False  # the device's fast path decides
    with pytest.raises(DessamError, match="--precision int8 is the ONNX engine's"):
        Runtime(precision="int8").torch_settings()
    for bad, match in (({"engine": "tensorrt"}, "--engine tensorrt"), ({"precision": "fp8"}, "--precision fp8"),
                       ({"threads": 0}, "--threads 0")):
        with pytest.raises(DessamError, match=match):
            Runtime(**bad)


def test_threads_given_to_the_pytorch_engine_are_used(monkeypatch):
    from dessam.inference import engines

    asked = []
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    monkeypatch.setattr("dessam.inference.loading.load_model", lambda model, **kwargs: kwargs)
    loaded = engines.load_predictor("model.pt", Runtime(engine="torch", device="cpu", threads=3, precision="fp32"))
    assert asked == [3] and loaded["device"] == "cpu" and loaded["settings"].precision == "fp32"
    engines.load_predictor("model.pt", Runtime(engine="torch", device="cpu"))
    assert asked == [3]  # none given: torch's own


def test_reference_and_fast_settings():
    reference = reference_settings()
    assert (reference.batch_size, reference.decoder_chunk, reference.compile) == (1, 50, False)
    assert reference.local_decoding is False and reference.test_proposals == 1000
    assert reference.autocast_dtype("cuda") is None and reference.autocast_dtype("cpu") is None
    assert reference.autocast_dtype("cuda", "decoder") is None
    assert fast_settings("cuda").autocast_dtype("cuda") == torch.bfloat16
    assert fast_settings("cuda").autocast_dtype("cuda", "decoder") == torch.float16
    assert fast_settings("cpu").autocast_dtype("cpu", "decoder") is None
    assert InferenceSettings(precision="bf16").autocast_dtype("cpu") == torch.bfloat16
    assert InferenceSettings(precision="fp32").autocast_dtype("cuda", "decoder") is None
    assert InferenceSettings(precision="bf16", decoder_precision="bf16").autocast_dtype("cpu", "decoder") == torch.bfloat16
    assert "bf16 encoder, fp16 decoder" in fast_settings("cuda").describe("cuda")
    assert "full decoding, 1000 test proposals" in reference.describe("cpu")
    auto = InferenceSettings(compile="auto")
    assert not auto.compiles("cpu", 10**6)
    assert not auto.compiles("cuda", 10)
    assert auto.compiles("cuda", AUTO_COMPILE_MIN_IMAGES)
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


def test_batched_encoder_matches_one_call(tiny, images):
    inputs = [prepare_image(image, tiny.image_size) for image in images]
    expected = tiny.model.encode(torch.from_numpy(np.stack([item.normalised for item in inputs])))
    batched = _model(settings=InferenceSettings(precision="fp32", batch_size=2))
    batched.model.load_trainable_state_dict(tiny.model.trainable_state_dict())
    got = batched.encode(images).embeddings
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_predict_is_predict_batch_of_one(tiny, images):
    postprocess = replace(tiny.postprocess, **KEEP_ALL, min_size=0)
    together = tiny.predict_batch(images, postprocess)
    assert sum(len(p) for p in together) > 0
    for image, batched in zip(images, together):
        alone = tiny.predict(image, postprocess)
        np.testing.assert_array_equal(alone.labels, batched.labels)
        np.testing.assert_array_equal(alone.boxes, batched.boxes)
        np.testing.assert_array_equal(alone.scores, batched.scores)
        assert alone.labels.shape == image.shape[:2]


@pytest.mark.parametrize("settings", [replace(fast_settings("cpu"), precision="fp32"),
                                      InferenceSettings(precision="fp32", batch_size=3, decoder_chunk=7)])
def test_fast_path_masks_agree_with_reference(tiny, images, settings):
    """Batching and chunking change nothing (random weights: reduced precision is tested with the teacher)."""
    fast = _model(settings=settings)
    fast.model.load_trainable_state_dict(tiny.model.trainable_state_dict())
    postprocess = replace(tiny.postprocess, **KEEP_ALL)
    reference = _raw_instances(tiny, images, postprocess)
    got = _raw_instances(fast, images, postprocess)
    assert [len(i) for i in got] == [len(i) for i in reference] and sum(map(len, got)) > 0
    for a, b in zip(got, reference):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert mask_ious(a, b).mean() >= 0.99


def test_prompting_with_given_boxes(tiny, images):
    boxes = [np.array([[10, 12, 40, 45], [60, 60, 90, 100]], np.float32), np.zeros((0, 4), np.float32),
             np.array([[5, 5, 30, 30]], np.float32)]
    got = _segment(tiny, images, boxes)
    for image, given, instances in zip(images, boxes, got):
        np.testing.assert_array_equal(instances.boxes, given)
        assert instances.shape == image.shape[:2] and len(instances) == len(given)


def _old_masks(logits, inputs, threshold):
    """The earlier whole-image computation: upsample to S x S, cut the valid part, resize, threshold."""
    size = inputs.rgb.shape[-1]
    h, w = inputs.resized_hw
    part = F.interpolate(logits.float(), (size, size), mode="bilinear", align_corners=False)[..., :h, :w]
    part = F.interpolate(part, tuple(inputs.original_hw), mode="bilinear", align_corners=False)
    return (part[:, 0] > threshold).numpy()


@pytest.mark.parametrize("height, width, size, frame", [(128, 128, 128, 64), (200, 150, 128, 64), (90, 60, 256, 64)])
def test_mask_crops_equal_whole_image_masks(height, width, size, frame):
    torch.manual_seed(0)
    inputs = prepare_image(np.zeros((height, width, 3), np.uint8), size)
    yy, xx = torch.meshgrid(torch.arange(frame), torch.arange(frame), indexing="ij")
    centres, radii = torch.rand(12, 2) * frame, 1 + torch.rand(12) * 6
    distance = ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2).sqrt()
    logits = (radii[:, None, None] - distance)[:, None] + 0.3 * torch.randn(12, 1, frame, frame)
    for threshold in (0.0, 0.5):
        want = _old_masks(logits, inputs, threshold)
        for k in range(len(logits)):
            crop, y0, x0 = instance_crop(logits[k, 0].numpy(), (0, 0), (frame, frame), inputs, threshold)
            got = np.zeros((height, width), bool)
            got[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
            np.testing.assert_array_equal(got, want[k])
            rows, cols = np.flatnonzero(want[k].any(1)), np.flatnonzero(want[k].any(0))
            assert crop.shape == ((rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) if rows.size else (0, 0))


def test_local_decoding_places_each_window_where_its_box_is(tiny, nuclei):
    """With a margin as large as the grid, local decoding is full decoding; with a small margin, each
    prompt's logits come from its own window and its mask stays near its box."""
    images, boxes = nuclei
    local = _model(settings=InferenceSettings(precision="fp32", local_decoding=True), local_margin=2)
    local.model.load_trainable_state_dict(tiny.model.trainable_state_dict())
    inputs = [prepare_image(image, local.image_size) for image in images[:1]]
    prompts = torch.from_numpy(boxes[0] * inputs[0].scale)
    origins, size = local.model.decoder.windows(prompts, 2)
    assert size < local.model.decoder.grid
    stride = local.model.decoder.stride
    assert ((origins[:, 1] * stride <= prompts[:, 0]) & ((origins[:, 1] + size) * stride >= prompts[:, 2])).all()
    assert ((origins[:, 0] * stride <= prompts[:, 1]) & ((origins[:, 0] + size) * stride >= prompts[:, 3])).all()
    [instances] = _segment(local, images[:1], boxes[:1])  # one decoder call: the same windows
    assert sum(crop.size > 0 for crop in instances.crops) > 0
    for crop, (y0, x0), (row, col) in zip(instances.crops, instances.origins, origins.tolist()):
        if crop.size:  # the image is the model's input size: window pixels are image pixels
            assert row * stride <= y0 and y0 + crop.shape[0] <= (row + size) * stride
            assert col * stride <= x0 and x0 + crop.shape[1] <= (col + size) * stride
    wide = _model(settings=InferenceSettings(precision="fp32", local_decoding=True), local_margin=1000)
    wide.model.load_trainable_state_dict(tiny.model.trainable_state_dict())
    assert _agreement(tiny, wide, images, boxes) == 1.0


def test_memory_of_a_prediction_does_not_hold_nuclei_x_area(tiny):
    """A 512 x 512 field of 16 windows: every mask is a crop no larger than its window, and the
    arrays allocated at the peak (numpy's, traced: the raw crops and their cleaned copies, both held
    while the instances are cleaned) stay far below nuclei x field area."""
    import tracemalloc

    rng = np.random.default_rng(0)
    field = np.concatenate([np.concatenate([make_nuclei_scene(rng, 128)[0] for _ in range(4)], 1) for _ in range(4)], 0)
    unknown = tiny.scale
    tiny.scale = replace(unknown, input_scale=1.0)
    tracemalloc.start()
    try:
        prediction = tiny.predict(field, replace(tiny.postprocess, **KEEP_ALL, min_size=0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        tiny.scale = unknown
    assert len(prediction) > 100 and prediction.labels.shape == field.shape[:2]
    assert all(crop.shape[0] <= 128 and crop.shape[1] <= 128 for crop in prediction.instances.crops)
    assert peak < len(prediction) * field.shape[0] * field.shape[1] / 5


def test_cpu_fast_path_is_fp32_on_every_cpu(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)  # even with AMX
    assert fast_settings("cpu").autocast_dtype("cpu") is None
    assert fast_settings("cpu").autocast_dtype("cpu", "decoder") is None


@needs_teacher
def test_cpu_fast_path_agrees_with_the_reference_on_the_teacher(nuclei):
    reference = _model("default", 256, mask_threshold=0.5)
    fast = _model("default", 256, mask_threshold=0.5, local_decoding=True,
                  settings=replace(fast_settings("cpu"), precision="bf16"))
    fast.model.load_trainable_state_dict(reference.model.trainable_state_dict())
    assert _agreement(reference, fast, *nuclei) >= 0.98


@needs_teacher
def test_reduced_precision_agrees_with_fp32(nuclei):
    """CUDA's default precisions (bf16 encoder, fp16 decoder), emulated by CPU autocast."""
    reference = _model("default", 256, mask_threshold=0.5)
    reduced = _model("default", 256, mask_threshold=0.5,
                     settings=InferenceSettings(precision="bf16", decoder_precision="auto", batch_size=2))
    reduced.model.load_trainable_state_dict(reference.model.trainable_state_dict())
    assert _agreement(reference, reduced, *nuclei) >= 0.99


# ----- CUDA only ---------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@needs_teacher
def test_fast_path_agrees_with_fp32_reference_on_cuda(nuclei):
    reference = _model("default", 256, "cuda", mask_threshold=0.5)
    fast = _model("default", 256, "cuda", settings=fast_settings("cuda"), mask_threshold=0.5)
    fast.model.load_trainable_state_dict(reference.model.trainable_state_dict())
    assert _agreement(reference, fast, *nuclei) >= 0.99


@pytest.mark.gpu
@needs_cuda
def test_compiled_fast_path_agrees_with_eager_on_cuda(nuclei):
    name = "default" if DEFAULT_TEACHER_PATH.is_file() else "tiny"
    reference = _model(name, 256, "cuda")
    compiled = _model(name, 256, "cuda", settings=InferenceSettings(precision="fp32", compile=True))
    compiled.model.load_trainable_state_dict(reference.model.trainable_state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a torch.compile failure fails the test
        agreement = _agreement(reference, compiled, *nuclei)
    assert agreement >= 0.99


def test_the_predictor_runs_a_model_through_its_own_calls(images, monkeypatch):
    """Detection is `model.detect` and decoding `model.decode`: the Predictor does not reach into the
    neck, the detector or the decoder's windows."""
    predictor = _model()
    model = predictor.model
    found = (torch.tensor([[10.0, 12.0, 40.0, 44.0]]), torch.tensor([0.9]))
    monkeypatch.setattr(model, "detect", lambda embeddings, sizes, side, threshold, limit: ([found[0]] * len(sizes),
                                                                                           [found[1]] * len(sizes)))
    decoded = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda *args, **kwargs: decoded.append(len(args[1])) or decode(*args, **kwargs))
    image = images[0]  # 128 px: the model's own input size, so boxes come back as they were found
    encoded = predictor.encode([image])
    (boxes, scores), = predictor.detect(encoded)
    np.testing.assert_array_equal(boxes, found[0].numpy())
    np.testing.assert_array_equal(scores, [np.float32(0.9)])
    result = predictor.predict(image, replace(predictor.postprocess, **KEEP_ALL))
    np.testing.assert_array_equal(result.boxes, found[0].numpy())
    assert decoded and sum(decoded) >= 1
    # a ViT reads whole inputs, so nothing is trimmed
    assert model.trim_multiple is None and predictor.trimmable is None
