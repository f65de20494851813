"""The ONNX engine: exported graphs against PyTorch, both engines' results, the cache, start-up without torch."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scenes import make_nuclei_scene

from dessam.commands import main
from dessam.config import Config
from dessam.errors import DessamError
from dessam.geometry.scale import ModelScale
from dessam.inference import engines
from dessam.inference.box_masks import box_masks
from dessam.inference.export import check_export, export_model
from dessam.inference.instances import mask_ious
from dessam.inference.loading import load_model, load_teacher
from dessam.inference.predictor import Predictor
from dessam.config.runtime import Runtime, fast_settings
from dessam.models.default_teacher import build_default_architecture
from dessam.models.dessam import DESSAM
from test_box_views import TINY_VIEWS
from test_inference import _model

pytest.importorskip("onnxruntime")
from dessam.inference.onnx_predictor import OnnxPredictor  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
KEEP_ALL = dict(score_threshold=0.0, max_detections=40)


def _view_model(detector_encoder: str = "own") -> Predictor:
    """A DES-SAM (the cpu preset's detector, random weights; by default reading the image through an
    encoder of its own, as the preset's) on a tiny teacher that decodes each box on a view of its own, as
    the bundled models do."""
    torch.manual_seed(0)
    sam = build_default_architecture(128, TINY_VIEWS).eval()
    config = Config.compose("cpu").replace({"model.sam": "default", "model.image_size": 128, "model.postprocess.mask_threshold": 0.0,
                                            "model.detector_encoder": detector_encoder})
    model = DESSAM(sam, config).eval()
    return Predictor(model, config, {"name": "default", "checkpoint": None, "sha256": "0" * 64}, torch.device("cpu"),
                     ModelScale("fixed", 1.0), fast_settings("cpu"))


def _scene(size=128, seed=1):
    return make_nuclei_scene(np.random.default_rng(seed), size)[0]


def _agree(torch_engine, onnx_engine, images, postprocess):
    """Both engines detect the same boxes, and prompted with the same boxes draw the same masks."""
    a, b = torch_engine.encode(images), onnx_engine.encode(images)
    found, got = torch_engine.detect(a, postprocess), onnx_engine.detect(b, postprocess)
    for (boxes, scores), (other_boxes, other_scores) in zip(found, got):
        assert len(boxes) == len(other_boxes) and len(boxes) > 0
        np.testing.assert_allclose(other_boxes, boxes, atol=1e-3)
        np.testing.assert_allclose(other_scores, scores, atol=1e-4)
    boxes = [b for b, _ in found]
    for use_token in (True, False):
        for first, second in zip(torch_engine.segment(a, boxes, use_token=use_token),
                                 onnx_engine.segment(b, boxes, use_token=use_token)):
            assert mask_ious(first, second).mean() > 0.99


@pytest.mark.parametrize("kind", ["views", "views-teacher-embedding", "vit-local", "vit-whole"])
def test_exported_graphs_agree_with_pytorch(kind, tmp_path):
    if kind.startswith("views"):
        predictor = _view_model("teacher" if kind == "views-teacher-embedding" else "own")
    else:
        predictor = _model(local_decoding=kind == "vit-local", local_margin=2)
    manifest = json.loads(export_model(predictor, tmp_path / "export").read_text())
    assert manifest["graphs"]["decoder"]["reads"] == ("images" if kind.startswith("views") else "embeddings")
    assert manifest["graphs"]["detector"]["reads"] == ("images" if kind == "views" else "embeddings")
    images = [_scene(128, seed) for seed in (1, 2)]
    rows = check_export(predictor, tmp_path / "export", images[0])
    assert {row[0] for row in rows} == {"encoder", "detector", "decoder"}
    assert all(row[2] < 1e-3 for row in rows), rows
    onnx_engine = OnnxPredictor(tmp_path / "export", threads=1)
    postprocess = replace(predictor.postprocess, **KEEP_ALL)
    _agree(predictor, onnx_engine, images, postprocess)
    wide = _scene(300, 5)  # several windows, merged by the code both engines share
    predictor.scale = onnx_engine.scale = ModelScale("fixed", 1.0)
    first, second = predictor.predict(wide, postprocess), onnx_engine.predict(wide, postprocess)
    assert abs(len(first) - len(second)) <= max(1, len(first) // 100)


def test_a_small_image_is_encoded_only_as_far_as_it_reaches_on_both_engines(tmp_path):
    """The bundled kind of model (a convolutional encoder, a decoder of per-box views) encodes the
    square that holds a small image, not the input's zero padding; both engines alike."""
    predictor = _view_model("teacher")  # the detector reads SAM's embedding
    assert predictor.trim_multiple == 32 and _model().trim_multiple is None  # a ViT reads whole inputs
    small = _scene(128, 6)[:70, :90]
    seen = []
    hook = predictor.model.sam.image_encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    encoded = predictor.encode([small])
    hook.remove()
    assert seen == [(1, 3, 96, 96)] and encoded.side == 96
    assert tuple(encoded.embeddings.shape[-2:]) == (32, 32) and not encoded.embeddings[..., 24:, :].any()
    own = _view_model("own")  # nothing reads SAM's embedding: SAM's encoder does not run, the detector's reads the square
    seen.clear()
    hooks = [encoder.register_forward_hook(lambda module, args, out, name=name: seen.append((name, args[0].shape)))
             for name, encoder in (("sam", own.model.sam.image_encoder), ("own", own.model.detector_encoder))]
    own.detect(own.encode([small]))
    for hook in hooks:
        hook.remove()
    assert seen == [("own", (1, 3, 96, 96))]
    assert predictor.encode([_scene(128, 6)]).side is None  # an image that fills the input
    predictor.settings = replace(predictor.settings, trim_inputs=False)  # the authors' padded input
    assert predictor.trim_multiple is None and predictor.encode([small]).side is None
    predictor.settings = replace(predictor.settings, trim_inputs=True)
    manifest = json.loads(export_model(predictor, tmp_path / "export").read_text())
    assert manifest["graphs"]["encoder"]["trim_multiple"] == 32
    onnx_engine = OnnxPredictor(tmp_path / "export", threads=1)
    assert onnx_engine.encode([small]).side == 96
    assert OnnxPredictor(tmp_path / "export", replace(onnx_engine.settings, trim_inputs=False)).encode([small]).side is None
    _agree(predictor, onnx_engine, [small], replace(predictor.postprocess, **KEEP_ALL))
    export_model(own, tmp_path / "own")
    own_onnx = OnnxPredictor(tmp_path / "own", threads=1)
    assert not own_onnx.reads_embeddings and own_onnx.encoder is None and own_onnx.encode([small]).side == 96
    _agree(own, own_onnx, [small], replace(own.postprocess, **KEEP_ALL))


def test_sam_alone_segments_given_boxes_on_both_engines(tmp_path):
    teacher = load_teacher("tiny", image_size=128, settings=fast_settings("cpu"))
    export_model(teacher, tmp_path / "teacher")
    onnx_teacher = OnnxPredictor(tmp_path / "teacher", threads=1)
    assert onnx_teacher.detector is None and onnx_teacher.manifest["prompt_token"] is None
    onnx_teacher.scale = teacher.scale
    image = _scene(200, 3)
    boxes = np.float32([[10, 12, 40, 44], [100, 90, 130, 140], [150, 20, 190, 60]])
    first, second = box_masks(teacher, image, boxes, use_token=False), box_masks(onnx_teacher, image, boxes, use_token=False)
    assert mask_ious(first.instances, second.instances).mean() > 0.99
    np.testing.assert_allclose(second.predicted_iou, first.predicted_iou, atol=1e-4)


def test_export_command_writes_graphs_a_manifest_and_checks_them(trained_tiny, tmp_path, capsys):
    Image.fromarray(_scene(128)).save(tmp_path / "field.png")
    code = main(["export", str(trained_tiny), "--out", str(tmp_path / "graphs"), "--check", str(tmp_path / "field.png")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| encoder |" in printed and "| detector |" in printed and "| decoder |" in printed
    manifest = json.loads((tmp_path / "graphs" / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == engines.file_sha256(trained_tiny)
    assert manifest["image_size"] == 128 and manifest["readout"]["score_threshold"] is not None
    assert sorted(p.name for p in (tmp_path / "graphs").glob("*.onnx")) == ["decoder.onnx", "detector.onnx", "encoder.onnx"]
    assert main(["export", "--out", str(tmp_path / "none")]) == 2


def test_predict_exports_once_into_the_cache_and_starts_without_torch(trained_tiny, tmp_path, dessam_home):
    Image.fromarray(_scene(128)).save(tmp_path / "field.png")
    args = ["predict", "--model", str(trained_tiny), str(tmp_path / "field.png"), "--engine", "onnx", "--quiet",
            "--score-threshold", "0"]
    assert main(args + ["--out", str(tmp_path / "onnx")]) == 0
    manifest = engines.export_folder(engines.file_sha256(trained_tiny)) / "manifest.json"
    assert manifest.is_file() and Path(dessam_home) in manifest.parents
    written = manifest.stat().st_mtime_ns
    probe = ("import sys; from dessam.commands import main; "
             f"code = main({args + ['--out', str(tmp_path / 'again')]!r}); "
             "sys.exit(code or 10 * ('torch' in sys.modules or 'torchvision' in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(SRC), "DESSAM_HOME": str(dessam_home)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # 10: torch was imported
    assert manifest.stat().st_mtime_ns == written  # not exported again
    assert main(args + ["--out", str(tmp_path / "torch"), "--engine", "torch", "--device", "cpu"]) == 0
    onnx_labels = np.asarray(Image.open(tmp_path / "onnx" / "field_labels.tif"))
    torch_labels = np.asarray(Image.open(tmp_path / "torch" / "field_labels.tif"))
    assert ((onnx_labels > 0) == (torch_labels > 0)).mean() > 0.99  # (masks: see the tests above)


def test_the_engine_is_onnx_on_a_cpu_only_with_the_extra(monkeypatch):
    monkeypatch.setattr(engines, "cuda_visible", lambda: False)
    assert engines.choose_engine(Runtime()) == "onnx" and engines.choose_engine(Runtime(device="cuda")) == "torch"
    assert engines.choose_engine(Runtime(engine="torch", device="cpu")) == "torch"
    monkeypatch.setattr(engines, "onnx_installed", lambda: False)
    assert engines.choose_engine(Runtime(device="cpu")) == "torch"
    with pytest.raises(DessamError, match=r'pip install "dessam\[onnx\]"'):
        engines.choose_engine(Runtime(engine="onnx", device="cpu"))
    with pytest.raises(DessamError, match="ONNX engine runs fp32 or int8"):
        Runtime(precision="bf16").onnx_precision()
    assert Runtime().onnx_precision() == "fp32" and Runtime(precision="int8").onnx_precision() == "int8"


def test_int8_graphs_are_made_once_and_run(tmp_path):
    pytest.importorskip("onnx")
    predictor = _view_model()
    export_model(predictor, tmp_path / "export")
    quantized = OnnxPredictor(tmp_path / "export", threads=1, precision="int8")
    assert (tmp_path / "export" / "detector.int8.onnx").is_file()  # the graphs that run (not the encoder: unread)
    found = quantized.detect(quantized.encode([_scene()]), replace(predictor.postprocess, **KEEP_ALL))
    assert len(found[0][0]) > 0


def test_a_trained_model_runs_on_the_onnx_engine_as_on_pytorch(trained_tiny):
    import dessam

    torch_engine = dessam.load_model(trained_tiny, runtime=dessam.Runtime(engine="torch", device="cpu"))
    onnx_engine = dessam.load_model(trained_tiny, runtime=dessam.Runtime(engine="onnx", threads=1))
    assert isinstance(torch_engine, Predictor) and isinstance(onnx_engine, OnnxPredictor)
    _agree(torch_engine, onnx_engine, [_scene(128, 7)], replace(torch_engine.postprocess, **KEEP_ALL))


def test_a_whole_slide_streams_through_the_onnx_engine_as_through_pytorch(finding_model, tmp_path):
    from test_slide_predict import blob_field, write_slide

    from dessam.outputs.slides import SlideOptions, predict_slide

    slide = write_slide(tmp_path / "field.ome.tif", blob_field(640, seed=2)[0])
    options = SlideOptions(skip_glass=False, overlap=32, formats=("labels",))
    found = []
    for name, engine in (("torch", load_model(finding_model, input_scale=1.0)),
                         ("onnx", engines.onnx_model(finding_model, threads=1, input_scale=1.0, progress=False))):
        run = predict_slide(engine, slide, tmp_path / name, options, progress=False)
        found.append(run.nuclei)
    assert found[0] > 0 and abs(found[0] - found[1]) <= max(1, found[0] // 100)


@pytest.mark.parametrize("kind", ["trained", "own-encoder"])
def test_the_example_of_docs_onnx_runs_on_an_export(kind, trained_tiny, tmp_path, monkeypatch):
    """docs/onnx.md's example for a host (ONNX Runtime, numpy and Pillow, nothing of dessam but the
    manifest) runs as written and finds what dessam finds: on a model whose detector reads SAM's
    embedding, and on one whose detector reads the image through an encoder of its own (as today's
    `pretrained`, its decoder on per-box views)."""
    import re

    text = (SRC.parent / "docs" / "onnx.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    if kind == "trained":
        predictor = load_model(trained_tiny)
    else:
        predictor = _view_model("own")
        predictor.config = predictor.config.replace({"model.postprocess.score_threshold": 0.0,
                                                     "model.postprocess.max_detections": 40})
    export_model(predictor, tmp_path / "pretrained_onnx", model_path=trained_tiny if kind == "trained" else None)
    image = _scene(128, 4)
    Image.fromarray(image).save(tmp_path / "tile.png")
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(compile(example, "docs/onnx.md", "exec"), names)
    found = predictor.detect(predictor.encode([image]))[0][0]
    assert len(names["boxes"]) == len(found) > 0 and names["labels"].shape == image.shape[:2]
