"""Nucleus scaling: training images brought to one nucleus size, the size head, prediction by it."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scenes import label_boxes, make_nuclei_scene, tiny_config

from dessam.config import Config, Postprocess
from dessam.data.coco import label_map_to_annotations, load_coco, record_label_map, write_coco
from dessam.data.images import write_png
from dessam.errors import DessamError
from dessam.geometry.scale import ModelScale, median_box_side
from dessam.models.size_head import NucleusSizeHead
from dessam.training.prepared import _transform_boxes, prepare_training_set


def _scenes(folder, count=3, size=128, with_masks=True):
    rng = np.random.default_rng(3)
    images, annotations = [], []
    for index in range(count):
        image, labels = make_nuclei_scene(rng, size)
        write_png(folder / "images" / f"s{index}.png", image)
        images.append({"id": index + 1, "file_name": f"s{index}.png", "height": size, "width": size})
        annotations += label_map_to_annotations(labels, index + 1, len(annotations) + 1, with_masks=with_masks)
    write_coco(folder / "train.json", images, annotations)
    return folder / "train.json", folder / "images"


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("flip", [False, True])
def test_boxes_follow_the_quarter_turns_and_flips_of_their_image(turns, flip):
    labels = np.zeros((20, 30), np.int32)
    labels[2:7, 3:12] = 1
    labels[10:19, 20:28] = 2
    moved = np.rot90(labels, turns)
    moved = moved[:, ::-1] if flip else moved
    np.testing.assert_allclose(_transform_boxes(label_boxes(labels), labels.shape, turns, flip),
                               label_boxes(np.ascontiguousarray(moved)))


def test_prepared_copies_bring_the_median_nucleus_to_the_model_size_and_keep_masks_on_their_boxes(tmp_path):
    train_json, images = _scenes(tmp_path)
    prepared = prepare_training_set(train_json, images, tmp_path / "prepared", nucleus_px=30, copies=3,
                                    zoom=(0.8, 1.25), colour=True, seed=1, progress=False)
    dataset = load_coco(prepared.json_path, prepared.images_dir)
    assert len(dataset.images) == 9
    exact = dataset.images[::3]  # the first copy of each image is at exactly the nucleus size
    for record in exact:
        assert median_box_side(record.boxes) == pytest.approx(30, rel=0.06)
    for record in dataset.images:
        labels = record_label_map(record)
        assert labels.max() == len(record.boxes)
        np.testing.assert_allclose(label_boxes(labels), record.boxes, atol=1.5)
    zoomed = [median_box_side(r.boxes) / 30 for i, r in enumerate(dataset.images) if i % 3]
    assert all(0.75 < z < 1.33 for z in zoomed) and max(abs(np.log(zoomed))) > 0.01
    assert prepared.median_nucleus == pytest.approx(median_box_side(
        np.concatenate([r.boxes for r in load_coco(train_json, images).images])), rel=1e-6)
    again = prepare_training_set(train_json, images, tmp_path / "prepared", nucleus_px=30, copies=3,
                                 zoom=(0.8, 1.25), colour=True, seed=1, progress=False)
    assert again == prepared  # made once, reused


def test_nucleus_scale_factor_follows_the_nucleus_size_and_refuses_nonsense():
    scale = ModelScale("nucleus", input_scale=0.8, nucleus_px=24.0)
    assert scale.factor(nucleus_size=12) == pytest.approx(2.0)
    assert scale.factor() == pytest.approx(0.8)  # neither given nor estimated: the training set's
    assert scale.needs_windows((300, 300), 512, nucleus_size=12)
    with pytest.raises(DessamError, match="--nucleus-size 0.5"):
        scale.factor(nucleus_size=0.5)


def test_the_size_head_reads_only_the_image_not_its_padding():
    torch.manual_seed(0)
    head = NucleusSizeHead(8).eval()
    embedding = torch.randn(1, 8, 16, 16)
    padded = torch.zeros(1, 8, 32, 32)
    padded[..., :16, :16] = embedding
    with torch.no_grad():
        own = head(embedding, torch.tensor([[16.0, 16.0]]))
        inside = head(padded, torch.tensor([[16.0, 16.0]]))
    assert own.item() == pytest.approx(inside.item(), abs=1e-5)
    assert not head.is_trained


def test_a_nucleus_scaled_model_trains_learns_its_size_head_and_predicts_by_the_size(tmp_path):
    from dessam.inference.loading import load_model
    from dessam.inference.nucleus_size import estimation_crops
    from dessam.training.size_head import SizeSource, fit_size_head
    from dessam.training.train import train

    train_json, images = _scenes(tmp_path, count=2, with_masks=False)
    config = tiny_config(max_iters=3).replace({"model.input_scaling": "nucleus", "model.nucleus_px": 20,
                                               "train.copies": 2, "train.zoom": [0.8, 1.2]})
    result = train(config, train_json, images, tmp_path / "run", progress=False)
    predictor = load_model(result.model_path)
    assert predictor.scale.mode == "nucleus" and predictor.scale.nucleus_px == 20
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(images / "s0.png"))
    assert predictor.nucleus_size(image) is None  # its head was never trained: the training set's scale
    assert predictor.plan(image).factor == pytest.approx(predictor.scale.input_scale)
    assert predictor.plan(image, nucleus_size=10).factor == pytest.approx(2.0)
    predictor.predict(image, nucleus_size=10)

    rng_scene = np.random.default_rng(5)
    scenes = [make_nuclei_scene(rng_scene, 128) for _ in range(3)]
    source = SizeSource("scenes", lambda rng: scenes[int(rng.integers(len(scenes)))])
    losses = fit_size_head(predictor.model, [source], steps=4, batch=2, progress=False)
    assert len(losses) == 4 and all(np.isfinite(losses))
    estimate = predictor.estimate_nucleus_size(image)
    assert estimate is not None and 5 <= estimate <= 100
    used = predictor.nucleus_size(image)  # the estimate, corrected by what the detector finds there
    assert 5 <= used <= 100 and predictor.plan(image).factor == pytest.approx(20 / used)
    from dessam.inference import windowed
    from dessam.inference.pipeline import STUDENT, student_masks

    sources = {STUDENT: windowed.MaskSource(student_masks)}
    planned = windowed.image_instances(predictor, image, sources, plan=predictor.plan(image))[STUDENT]
    direct = predictor.sized_instances(image, sources)[STUDENT]  # without the pass that planning repeats
    assert np.array_equal(direct.boxes, planned.boxes) and len(direct.crops) == len(planned.crops)
    assert all(np.array_equal(a, b) for a, b in zip(direct.crops, planned.crops))
    refining = predictor.config
    predictor.config = refining.replace({"model.nucleus_refinements": 0})
    assert predictor.nucleus_size(image) == estimate
    predictor.config = refining
    assert len(estimation_crops(np.zeros((1000, 600, 3), np.uint8))) == 4

    # the ONNX engine estimates the same size from its exported size graph
    pytest.importorskip("onnxruntime")
    from dessam.inference.export import export_model
    from dessam.inference.onnx_predictor import OnnxPredictor

    export_model(predictor, tmp_path / "onnx", result.model_path)
    onnx = OnnxPredictor(tmp_path / "onnx", threads=1)
    large = np.tile(image, (3, 2, 1))
    assert onnx.estimate_nucleus_size(image) == pytest.approx(estimate, rel=1e-3)
    assert onnx.estimate_nucleus_size(large) == pytest.approx(predictor.estimate_nucleus_size(large), rel=1e-3)
    assert onnx.nucleus_size(image) == pytest.approx(used, rel=1e-3)
    assert onnx.plan(image).factor == pytest.approx(predictor.plan(image).factor, rel=1e-3)


class _SizedPipeline:
    """A stand-in engine whose head reads `estimate` and whose detector finds `count` nuclei of `found`
    pixels (image pixels) at any size it is run at; it records the sizes it was run at, and whether
    each pass decoded masks."""

    image_size = 512

    def __init__(self, estimate, found, count=20, refinements=3):
        from dessam.inference.pipeline import Pipeline

        for name in ("nucleus_size", "refines_size", "plan", "plan_at", "sized_instances", "size_threshold"):
            setattr(self, name, getattr(Pipeline, name).__get__(self))
        self.scale = ModelScale("nucleus", nucleus_px=24.0)
        self.config = SimpleNamespace(model=SimpleNamespace(nucleus_refinements=refinements, postprocess=Postprocess()))
        self.postprocess = Postprocess()
        self.estimate, self.found, self.count, self.runs, self.decoded = estimate, found, count, [], []

    def estimate_nucleus_size(self, image):
        return self.estimate

    def detected(self, predictor, image, sources, postprocess=None, nucleus_size=None, plan=None, read_if=None,
                 **ignored):
        size = nucleus_size if plan is None else self.scale.nucleus_px / plan.factor
        self.runs.append(size)
        boxes = np.array([[i * 30.0, 0.0, i * 30.0 + self.found, self.found] for i in range(self.count)])
        reading = read_if is None or read_if([boxes * plan.factor])
        self.decoded.append(reading and any(s.decodes for s in sources.values()))
        return {name: SimpleNamespace(boxes=boxes) for name, source in sources.items() if reading or not source.decodes}


@pytest.mark.parametrize("estimate, found, count, refinements, expected, runs", [
    (30.0, 12.0, 20, 3, 12.0, [30.0, 12.0]),   # the head 2.5x too large: one pass corrects it, the next agrees
    (12.5, 12.0, 20, 3, 12.5, [12.5]),         # within 5 %: the size detected at, no further pass
    (30.0, 12.0, 3, 3, 30.0, [30.0]),          # too few nuclei found to say: the head's estimate
    (30.0, 12.0, 20, 0, 30.0, []),             # no refinement asked: the head alone
])
def test_an_estimated_nucleus_size_is_corrected_by_the_nuclei_detected_at_it(monkeypatch, estimate, found, count,
                                                                               refinements, expected, runs):
    from dessam.inference import pipeline

    engine = _SizedPipeline(estimate, found, count, refinements)
    monkeypatch.setattr(pipeline.windowed, "image_instances", engine.detected)
    image = np.zeros((64, 64, 3), np.uint8)
    assert engine.nucleus_size(image) == pytest.approx(expected)
    assert engine.runs == pytest.approx(runs)
    assert engine.nucleus_size(image, nucleus_size=9.0) == 9.0 and engine.runs == pytest.approx(runs)  # given: kept


@pytest.mark.parametrize("side, passes", [
    (64, [(30.0, False), (12.0, True)]),                 # one window: the pass that settles is the result
    (2000, [(30.0, False), (12.0, False), (12.0, True)]),  # several windows: detections first, then the masks
])
def test_the_pass_that_settles_the_size_of_one_window_is_the_prediction(monkeypatch, side, passes):
    from dessam.inference import pipeline
    from dessam.inference.windowed import MaskSource

    engine = _SizedPipeline(30.0, 12.0)
    monkeypatch.setattr(pipeline.windowed, "image_instances", engine.detected)
    image = np.zeros((side, side, 3), np.uint8)
    found = engine.sized_instances(image, {"masks": MaskSource(lambda *a: None)})
    assert set(found) == {"masks"}
    assert list(zip(engine.runs, engine.decoded)) == [(pytest.approx(s, rel=0.01), d) for s, d in passes]
    engine.runs.clear()
    assert engine.nucleus_size(image) == pytest.approx(12.0)  # what planning first gives: the same size
    assert engine.runs == pytest.approx([30.0, 12.0], rel=0.01)


def test_refinement_stops_after_its_passes_even_when_the_size_keeps_moving(monkeypatch):
    from dessam.inference import pipeline

    engine = _SizedPipeline(40.0, 12.0, refinements=2)
    sizes = iter([20.0, 10.0, 5.0])
    monkeypatch.setattr(pipeline.windowed, "image_instances", lambda *a, nucleus_size, **kw: (
        engine.runs.append(nucleus_size),
        {pipeline.SIZE_PASS: SimpleNamespace(boxes=np.array([[0, 0, s, s] for s in [next(sizes)] * 6]))})[1])
    assert engine.nucleus_size(np.zeros((8, 8, 3), np.uint8)) == pytest.approx(10.0)
    assert engine.runs == pytest.approx([40.0, 20.0])


class _ScoredDetector:
    """A stand-in engine whose detector finds four boxes of scores 0.9, 0.5, 0.4 and 0.3, keeping those
    above the threshold it is asked for, as `Predictor.detect` does."""

    settings = SimpleNamespace(batch_size=4)
    scores = np.array([0.9, 0.5, 0.4, 0.3])

    def encode(self, images, n_images=None):
        return SimpleNamespace(inputs=[SimpleNamespace(original_hw=image.shape[:2]) for image in images])

    def detect(self, encoded, postprocess):
        keep = self.scores > postprocess.score_threshold
        boxes = np.float32([[i * 10, 0, i * 10 + 8, 8] for i in range(4)])
        return [(boxes[keep], self.scores[keep]) for _ in encoded.inputs]


def test_the_size_passes_read_nuclei_above_their_own_lower_threshold_and_the_result_only_the_read_outs():
    from dessam.inference.pipeline import SIZE_BOXES, SIZE_PASS, filled_boxes
    from dessam.inference.windowed import MaskSource, window_instances

    masks = MaskSource(lambda predictor, encoded, images, boxes, scores, n: [np.asarray(s) for s in scores])
    sources = {SIZE_PASS: SIZE_BOXES, "masks": masks}
    seen = []
    image = np.zeros((32, 48, 3), np.uint8)
    found = window_instances(_ScoredDetector(), [image], Postprocess(score_threshold=0.45), sources,
                             read_if=lambda boxes: seen.append(len(boxes[0])) or True, size_threshold=0.35)[0]
    assert seen == [3] and len(found[SIZE_PASS].boxes) == 3  # 0.9, 0.5, 0.4 measure the size
    assert found["masks"].tolist() == [0.9, 0.5]              # only the read-out's nuclei are segmented
    plain = window_instances(_ScoredDetector(), [image], Postprocess(score_threshold=0.45), sources)[0]
    assert len(plain[SIZE_PASS].boxes) == 2 and plain["masks"].tolist() == [0.9, 0.5]
    assert filled_boxes is SIZE_BOXES.masks


def test_a_model_reads_its_size_passes_at_its_nucleus_score_threshold_only_below_the_read_outs():
    from dessam.inference.pipeline import Pipeline

    engine = SimpleNamespace(config=SimpleNamespace(model=SimpleNamespace(postprocess=Postprocess(nucleus_score_threshold=0.35))))
    threshold = Pipeline.size_threshold.__get__(engine)
    assert threshold(Postprocess(score_threshold=0.45)) == 0.35
    assert threshold(Postprocess(score_threshold=0.3)) is None and threshold(Postprocess(score_threshold=None)) is None
    engine.config.model.postprocess = Postprocess()
    assert threshold(Postprocess(score_threshold=0.45)) is None
    with pytest.raises(DessamError, match="nucleus_score_threshold"):
        Config.compose("cpu").replace({"model.postprocess.nucleus_score_threshold": 1.5})
