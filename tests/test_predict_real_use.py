"""Prediction as users run it: large fields (automatic tiling), every input kind, the exported
files agreeing with one another, and the batch behaviour of `dessam predict`.

The tiny test model (`trained_tiny`) is real but untrained in the parts that draw instances:
its detector scores stay under its threshold after five epochs and its random SAM decoder
draws speckle whose logits rarely pass the official 0.5, so it predicts no nucleus.
Where a test needs nuclei, `window_instances` (the batched detector + decoder of whole windows) is
replaced by `dark_nuclei`, a deterministic local stand-in that, like a model, sees only its window
and returns nuclei cut by the window edge. Loading, automatic tiling, merging, post-processing,
label painting, file reading and every export stay the real ones.
"""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import shapely.geometry
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils
from scenes import make_nuclei_scene
from scipy import ndimage

from dessam.commands import main
from dessam.config import Postprocess
from dessam.geometry.plan import WindowPlan
from dessam.inference import windowed
from dessam.inference.instances import Instances, clean_masks
from dessam.inference.loading import load_model
from dessam.metrics import detection_scores

FIELD = 128  # the tiny model's input size, and the side of one synthetic field


def mosaic(rows: int, cols: int, seed: int = 0):
    """A large field tiled from 128 px synthetic fields, and its ground-truth label map."""
    rng = np.random.default_rng(seed)
    image = np.zeros((rows * FIELD, cols * FIELD, 3), dtype=np.uint8)
    truth = np.zeros(image.shape[:2], dtype=np.uint32)
    for r in range(rows):
        for c in range(cols):
            field, labels = make_nuclei_scene(rng, FIELD)
            window = np.s_[r * FIELD:(r + 1) * FIELD, c * FIELD:(c + 1) * FIELD]
            image[window] = field
            truth[window] = np.where(labels > 0, labels + truth.max(), 0)
    return image, truth


def dark_nuclei(window: np.ndarray):
    """Stand-in for one window's detector + decoder: each dark 4-connected blob is a nucleus,
    scored by its darkness. Returns (boxes x1y1x2y2, scores, masks) in window pixels."""
    gray = window.astype(np.float32).mean(axis=2)
    components, count = ndimage.label(gray < 150)
    ids = np.arange(1, count + 1)
    boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(components)]
    scores = 1.0 - np.asarray(ndimage.mean(gray, components, ids)) / 255.0
    masks = components[None] == ids[:, None, None]
    return np.array(boxes, np.float32).reshape(-1, 4), scores.astype(np.float32).reshape(-1), masks


def recording(windows: list = None):
    """A `window_instances` replacement (the detector + decoder of whole windows): `dark_nuclei` on each
    window, whose shape it records."""

    def window_instances(predictor, images, postprocess=None, sources=None, given=None, n_images=None, read_if=None,
                         size_threshold=None):
        if windows is not None:
            windows.extend(image.shape[:2] for image in images)
        return [{name: Instances.from_masks(*dark_nuclei(image)) for name in sources or ("des-sam",)}
                for image in images]

    return window_instances


def in_windows(model, image) -> bool:
    """Whether `model` predicts `image` in windows."""
    return WindowPlan.for_image(image.shape, model.image_size, model.scale).tiled


def full_masks(prediction):
    """The prediction's instance masks as full-size arrays (small test images only)."""
    instances = prediction.instances
    return np.array([instances.mask(k) for k in range(len(instances))], bool).reshape(-1, *prediction.labels.shape)


def assert_no_duplicates(prediction):
    """No pixel is claimed by two kept instances, and each instance is visible in the label map."""
    assert full_masks(prediction).sum(axis=0).max() <= 1
    painted = np.unique(prediction.labels)
    assert painted[0] == 0 and len(painted) - 1 == len(prediction)


def f1(reference: np.ndarray, labels: np.ndarray) -> float:
    return detection_scores(reference, labels, iou=0.5)["f1"]


# ---------------------------------------------------------------- 1. tiled field vs one pass


def test_tiled_field_matches_one_pass_at_the_same_scale(trained_tiny, monkeypatch):
    side = 8  # 1024 x 1024 keeps the suite fast; 2048 x 2048 behaves the same (about 1 min, 8 GB)
    image, truth = mosaic(side, side, seed=1)
    tiled_model = load_model(trained_tiny)
    whole_model = load_model(trained_tiny, image_size=side * FIELD)
    assert tiled_model.scale.input_scale == 1.0 and tiled_model.image_size == FIELD
    assert whole_model.image_size == side * FIELD
    assert in_windows(tiled_model, image) and not in_windows(whole_model, image)

    tiled_windows, whole_windows = [], []
    recorders = {id(tiled_model): recording(tiled_windows), id(whole_model): recording(whole_windows)}
    monkeypatch.setattr(windowed, "window_instances", lambda model, *a, **k: recorders[id(model)](model, *a, **k))
    tiled = tiled_model.predict(image, overlap=64)  # automatic: tiles
    whole = whole_model.predict(image)              # automatic: one pass

    steps = len(range(0, side * FIELD - FIELD, FIELD - 64)) + 1
    assert tiled_windows == [(FIELD, FIELD)] * steps**2
    assert whole_windows == [image.shape[:2]]
    assert f1(truth, whole.labels) == 1.0  # the stand-in finds every nucleus in one pass
    assert len(whole) == truth.max()

    assert f1(whole.labels, tiled.labels) >= 0.98
    assert_no_duplicates(tiled)
    assert len(tiled) == len(whole)
    assert np.all(np.diff(tiled.scores) <= 0)
    # Boxes are in image pixels: each one encloses its own mask.
    for box, mask in zip(tiled.boxes, full_masks(tiled)):
        rows, cols = np.nonzero(mask)
        assert tuple(box) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_tiles_are_cut_at_the_training_scale_and_mapped_back(trained_tiny, monkeypatch):
    """A model trained on images shrunk by half tiles a half-size copy and maps the nuclei back."""
    small, _ = mosaic(4, 4, seed=2)
    image = small.repeat(2, axis=0).repeat(2, axis=1)  # nuclei twice as large as in training
    model = load_model(trained_tiny)
    model.scale = replace(model.scale, input_scale=0.5)
    windows = []
    monkeypatch.setattr(windowed, "window_instances", recording(windows))
    prediction = model.predict(image)
    assert windows == [(FIELD, FIELD)] * 7**2  # tiles of the 512 px working copy
    assert prediction.labels.shape == image.shape[:2]
    reference = ndimage.label(dark_nuclei(image)[2].any(axis=0))[0]
    assert f1(reference, prediction.labels) >= 0.98
    assert_no_duplicates(prediction)


def test_post_processing_of_a_tiled_field_is_the_official_one(trained_tiny, monkeypatch):
    """Pale blobs under the score threshold go; a dark speck under 70 px stays (it is all its mask
    has: the authors keep the largest island), or goes when `keep_largest_island` is off; more than
    one chunk of masks."""
    image, truth = mosaic(4, 4, seed=7)
    rng = np.random.default_rng(0)
    dark = 0
    for y, x in rng.integers(4, image.shape[0] - 8, (40, 2)):
        if not truth[y - 3:y + 6, x - 3:x + 6].any():
            speck_is_dark = rng.random() < 0.5
            image[y:y + 3, x:x + 3] = 30 if speck_is_dark else 140  # dark or pale speck
            dark += speck_is_dark
    model = load_model(trained_tiny)
    model.config = model.config.replace({"model.score_threshold": 0.5})
    monkeypatch.setattr(windowed, "window_instances", recording())
    raw = model.predict(image, Postprocess(score_threshold=None, remove_holes=False, remove_islands=False))
    cleaned = model.predict(image)
    assert len(raw) > len(cleaned) == truth.max() + dark > 64 + dark > 64
    settings = model.postprocess
    masks, scores, keep = clean_masks(full_masks(raw), raw.scores, settings=settings)
    assert np.array_equal(full_masks(cleaned), masks) and np.array_equal(cleaned.scores, scores)
    assert np.array_equal(cleaned.boxes, raw.boxes[keep])
    model.config = model.config.replace({"model.keep_largest_island": False})
    without_specks = model.predict(image)
    assert len(without_specks) == truth.max()
    assert f1(truth, without_specks.labels) == 1.0


def test_score_threshold_set_on_the_model_reaches_the_detector(trained_tiny):
    """Lowering `config.model.score_threshold` (what `--score-threshold` does) below the value the
    model was trained with lets lower-scoring detections through: the real detector runs."""
    model = load_model(trained_tiny)
    trained_threshold = model.postprocess.score_threshold
    model.config = model.config.replace({"model.score_threshold": 0.0})
    model.config = model.config.replace({"model.min_object_size": 0})
    model.config = model.config.replace({"model.postprocess.mask_threshold": 0.0})  # the tiny random decoder's logits rarely pass 0.5
    image, _ = mosaic(1, 1, seed=3)
    prediction = model.predict(image)
    assert len(prediction) > 0
    assert (prediction.scores < trained_threshold).any()
    strict = model.predict(image, replace(model.postprocess, score_threshold=trained_threshold, min_size=0))
    assert not (strict.scores < trained_threshold).any()  # nothing of the model itself was changed


# ---------------------------------------------------------------- 2. exported files agree


@pytest.fixture
def stand_in(monkeypatch):
    """Every model that `dessam predict` loads uses `dark_nuclei` for its windows."""
    monkeypatch.setattr(windowed, "window_instances", recording())


def predict_cli(model, *args):
    return main(["predict", "--model", str(model), "--quiet", "--device", "cpu", *map(str, args)])


def test_geojson_tiff_and_coco_describe_the_same_nuclei(trained_tiny, stand_in, tmp_path):
    image, truth = mosaic(2, 3, seed=4)  # 256 x 384: larger than the model input, so tiled
    Image.fromarray(image).save(tmp_path / "field.png")
    assert predict_cli(trained_tiny, tmp_path / "field.png", "--out", tmp_path / "out") == 0

    labels = tifffile.imread(tmp_path / "out" / "field_labels.tif")
    assert f1(truth, labels) == 1.0
    areas = np.bincount(labels.ravel())
    ids = set(np.unique(labels)) - {0}

    features = json.loads((tmp_path / "out" / "field.geojson").read_text())["features"]
    assert {f["properties"]["measurements"]["id"] for f in features} == ids
    for feature in features:
        rings = feature["geometry"]["coordinates"]
        assert feature["geometry"]["type"] == "Polygon"
        assert all(ring[0] == ring[-1] and len(ring) >= 4 for ring in rings)  # closed as written
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.is_valid
        label = feature["properties"]["measurements"]["id"]
        assert abs(polygon.area - areas[label]) <= 0.02 * areas[label]
        assert feature["properties"]["measurements"]["area_px2"] == areas[label]

    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert len(results) == len(ids)
    seen = set()
    for result in results:
        assert result["file_name"] == "field.png"
        rle = dict(result["segmentation"], counts=result["segmentation"]["counts"].encode())
        mask = mask_utils.decode(rle).astype(bool)
        under = np.unique(labels[mask])
        assert len(under) == 1 and under[0] != 0
        assert mask.sum() == areas[under[0]]  # exactly the pixels of one label
        x, y, w, h = result["bbox"]
        rows, cols = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        seen.add(int(under[0]))
    assert seen == ids


# ---------------------------------------------------------------- 3. every input kind


def _gray(image):
    return np.rint(image.astype(np.float64) @ (0.299, 0.587, 0.114)).astype(np.uint8)


def _write_kind(path, kind, image):
    if kind == "rgb8":
        tifffile.imwrite(path, image)
    elif kind == "rgb16":
        tifffile.imwrite(path, image.astype(np.uint16) * 257)
    elif kind == "gray8":
        tifffile.imwrite(path, _gray(image))
    elif kind == "gray16":
        tifffile.imwrite(path, _gray(image).astype(np.uint16) * 200)
    elif kind == "rgba":
        alpha = np.full(image.shape[:2], 255, np.uint8)
        alpha[:, : image.shape[1] // 2] = 0  # a transparent half must not hide nuclei
        tifffile.imwrite(path, np.dstack([image, alpha]), photometric="rgb", extrasamples=["unassalpha"])
    elif kind == "pages":
        other, _ = mosaic(2, 2, seed=99)
        with tifffile.TiffWriter(path) as writer:
            writer.write(image)
            writer.write(other[: image.shape[0], : image.shape[1]])


@pytest.mark.parametrize("kind", ["rgb8", "rgb16", "gray8", "gray16", "rgba", "pages"])
def test_every_tiff_kind_is_predicted(trained_tiny, stand_in, tmp_path, kind):
    image, truth = mosaic(1, 2, seed=5)
    _write_kind(tmp_path / f"{kind}.tif", kind, image)
    assert predict_cli(trained_tiny, tmp_path / f"{kind}.tif", "--out", tmp_path / "out",
                       "--formats", "labels,csv") == 0
    labels = tifffile.imread(tmp_path / "out" / f"{kind}_labels.tif")
    assert labels.shape == truth.shape and labels.dtype == np.uint16
    assert f1(truth, labels) == 1.0  # for "pages": the nuclei of the first page
    with open(tmp_path / "out" / f"{kind}_nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == truth.max()
    # Intensities are measured in the stored values: 16-bit files keep their 16-bit scale.
    column = "mean_intensity" if kind.startswith("gray") else "mean_intensity_red"
    intensities = np.array([float(row[column]) for row in rows])
    assert (intensities > 255).all() if kind.endswith("16") else (intensities <= 255).all()


# ---------------------------------------------------------------- 4. batch behaviour


def _summary(out):
    with open(out / "summary.csv", newline="") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def _fields(folder, names, seed=6):
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        image, _ = mosaic(1, 1, seed=seed + index)
        Image.fromarray(image).save(folder / name)


def test_a_corrupt_file_is_named_and_the_others_are_written(trained_tiny, stand_in, tmp_path, capsys):
    _fields(tmp_path / "in", ["a.png", "c.png"])
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 20)
    (tmp_path / "in" / "d.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    out = tmp_path / "out"
    assert predict_cli(trained_tiny, tmp_path / "in", "--out", out) == 1
    err = capsys.readouterr().err
    assert "2 images failed" in err and "b.png" in err and "d.tif" in err
    for stem in ("a", "c"):
        assert (out / f"{stem}_labels.tif").is_file() and (out / f"{stem}.geojson").is_file()
    assert not list(out.glob("b_*")) and not list(out.glob("d_*")) and not (out / "b.geojson").exists()
    summary = _summary(out)
    assert summary["a.png"]["status"] == "ok" and int(summary["a.png"]["nuclei"]) > 0
    assert summary["b.png"]["status"].startswith("failed") and "b.png" in summary["b.png"]["status"]
    assert summary["d.tif"]["status"].startswith("failed")
    files = {r["file_name"] for r in json.loads((out / "coco_results.json").read_text())}
    assert files == {"a.png", "c.png"}


def test_existing_outputs_are_kept_unless_overwrite(trained_tiny, stand_in, tmp_path, capsys):
    _fields(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    assert predict_cli(trained_tiny, tmp_path / "in", "--out", out) == 0
    predicted = tifffile.imread(out / "a_labels.tif")
    results = json.loads((out / "coco_results.json").read_text())
    assert predicted.max() > 0 and results
    tifffile.imwrite(out / "a_labels.tif", np.zeros_like(predicted))  # stands for a hand-edited file
    capsys.readouterr()

    _fields(tmp_path / "in", ["b.png"], seed=20)  # a new image joins the folder
    assert predict_cli(trained_tiny, tmp_path / "in", "--out", out) == 0
    assert "1 kept existing outputs" in capsys.readouterr().out
    assert not tifffile.imread(out / "a_labels.tif").any()
    assert (out / "b_labels.tif").is_file()
    summary = _summary(out)
    assert summary["a.png"]["status"] == "kept existing outputs" and summary["b.png"]["status"] == "ok"
    assert int(summary["a.png"]["nuclei"]) == len(results) > 0  # the earlier count is kept too
    # The run-wide COCO file still holds the kept image's nuclei.
    after = json.loads((out / "coco_results.json").read_text())
    assert [r for r in after if r["file_name"] == "a.png"] == [dict(r, file_name="a.png") for r in results]
    assert {r["image_id"] for r in after if r["file_name"] == "b.png"}.isdisjoint({r["image_id"] for r in results})

    assert predict_cli(trained_tiny, tmp_path / "in", "--out", out, "--overwrite") == 0
    assert np.array_equal(tifffile.imread(out / "a_labels.tif"), predicted)
    assert {row["status"] for row in _summary(out).values()} == {"ok"}


def test_globs_formats_and_pixel_size(trained_tiny, stand_in, tmp_path, capsys):
    _fields(tmp_path / "in", ["one.png", "two.png", "three.jpg"])
    out = tmp_path / "out"
    assert predict_cli(trained_tiny, str(tmp_path / "in" / "*.png"), "--out", out,
                       "--formats", "labels,csv", "--pixel-size", "0.5") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "coco_results.json", "one_labels.tif", "one_nuclei.csv", "summary.csv", "two_labels.tif", "two_nuclei.csv",
    ]
    assert predict_cli(trained_tiny, tmp_path / "in" / "one.png", "--out", tmp_path / "px",
                       "--formats", "csv") == 0
    assert sorted(p.name for p in (tmp_path / "px").iterdir()) == ["coco_results.json", "one_nuclei.csv", "summary.csv"]

    def rows(path):
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    in_um, in_px = rows(out / "one_nuclei.csv"), rows(tmp_path / "px" / "one_nuclei.csv")
    assert in_um and len(in_um) == len(in_px)
    assert {"area_um2", "perimeter_um", "centroid_x_um", "equivalent_diameter_um"} <= set(in_um[0])
    assert not any(key.endswith("_px") or key.endswith("_px2") for key in in_um[0])
    for um, px in zip(in_um, in_px):
        assert float(um["area_um2"]) == pytest.approx(0.25 * float(px["area_px2"]), abs=1e-3)
        assert float(um["centroid_x_um"]) == pytest.approx(0.5 * float(px["centroid_x_px"]), abs=1e-3)
    assert "mean_area_um2" in _summary(out)["one.png"]

    capsys.readouterr()
    assert predict_cli(trained_tiny, str(tmp_path / "in" / "*.tiff"), "--out", out) == 2
    assert "matches no image" in capsys.readouterr().err
    assert predict_cli(trained_tiny, tmp_path / "in", "--out", out, "--formats", "labels,pdf") == 2
