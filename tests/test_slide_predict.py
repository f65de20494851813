"""Whole slides through `dessam predict`: streamed windows merged seam-free, glass skipped, runs
resumed after kill -9, GeoJSON that QuPath and the geojson converter read back.

The tiny model draws no real nuclei, so the detector + decoder of each window is replaced by
`dark_blobs` (each dark blob is a nucleus): the slide reading, windows, merge, decisions, part files,
resume and every writer are the real ones.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import shapely.geometry
import tifffile
from scipy import ndimage

from dessam.commands import main
from dessam.data.pyramid_tiff import write_pyramid_tiff
from dessam.inference import windowed
from dessam.inference.instances import Instances
from dessam.inference.loading import load_model
from dessam.outputs.slides import SlideOptions, predict_slide

TESTS = Path(__file__).parent


def dark_blobs(image):
    """Stand-in detector + decoder of one window: every dark 4-connected blob, scored by darkness."""
    gray = image.astype(np.float32).mean(axis=2)
    components, count = ndimage.label(gray < 150)
    ids = np.arange(1, count + 1)
    found = ndimage.find_objects(components)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in found], np.float32).reshape(-1, 4)
    scores = 1.0 - np.asarray(ndimage.mean(gray, components, ids)).reshape(-1) / 255.0
    crops = [components[s] == k for k, s in zip(ids, found)]
    return Instances(boxes, scores, crops, [(s[0].start, s[1].start) for s in found], image.shape[:2])


STAND_INS = {}  # id of a stand-in predictor -> seconds it takes per window


def stand_in(model, delay: float = 0.0):
    """`model`, whose windows `dark_blobs` segments (once `dark_windows` replaces `window_instances`)."""
    STAND_INS[id(model)] = delay
    return model


def dark_windows(real):
    """A `window_instances` that runs `dark_blobs` on the windows of stand-in predictors, `real` on others'."""

    def window_instances(predictor, images, postprocess=None, sources=None, given=None, n_images=None, read_if=None,
                         size_threshold=None):
        if id(predictor) not in STAND_INS:
            return real(predictor, images, postprocess, sources, given, n_images, read_if, size_threshold)
        time.sleep(STAND_INS[id(predictor)] * len(images))
        return [{name: dark_blobs(image) for name in sources or ("des-sam",)} for image in images]

    return window_instances


@pytest.fixture(autouse=True)
def stand_ins_run_dark_blobs(monkeypatch):
    monkeypatch.setattr(windowed, "window_instances", dark_windows(windowed.window_instances))


def blob_field(size: int, seed: int = 0, fill: float = 0.5, empty_fraction: float = 0.0):
    """A pale field with dark disks (radius 4-9 px) on a jittered 24 px grid, `fill` of the cells
    taken, many across any tiling; `empty_fraction` of the field (its right part) is left as glass.
    Returns the image and the number of disks."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 236, np.uint8)
    cell = 24
    yy, xx = np.mgrid[:cell, :cell]
    count = 0
    for top in range(cell, size - 2 * cell, cell):
        for left in range(cell, int(size * (1 - empty_fraction)) - 2 * cell, cell):
            if rng.random() > fill:
                continue
            r = rng.uniform(4, 9)
            cy, cx = cell / 2 + rng.uniform(-1, 1) * (cell / 2 - r - 1.5), cell / 2 + rng.uniform(-1, 1) * (cell / 2 - r - 1.5)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image[top:top + cell, left:left + cell][disk] = rng.integers(30, 110)
            count += 1
    return image, count


def write_slide(path: Path, image: np.ndarray, pixel_size=0.5, tile=256):
    bands = (image[y:y + tile] for y in range(0, image.shape[0], tile))
    write_pyramid_tiff(path, bands, image.shape[1], image.shape[0], tile=tile, layout="ome", pixel_size_um=pixel_size)
    return path


@pytest.fixture
def model(trained_tiny):
    predictor = load_model(trained_tiny, image_size=256, input_scale=1.0)  # 256 px windows, slides at their own pixels
    return stand_in(predictor)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps hold the same regions, whatever their ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_streamed_windows_give_the_label_map_of_one_in_memory_pass(model, tmp_path):
    image, placed = blob_field(4096, seed=1)
    slide = write_slide(tmp_path / "field.ome.tif", image, tile=512)
    run = predict_slide(model, slide, tmp_path / "out", SlideOptions(skip_glass=False, overlap=32, formats=("labels",)),
                        progress=False)
    streamed = tifffile.imread(run.outputs["labels"], level=0)
    in_memory = model.predict(image, overlap=32, tile=True)
    assert run.nuclei == len(in_memory) >= 0.99 * placed
    assert streamed.shape == in_memory.labels.shape
    assert same_partition(streamed, in_memory.labels)  # identical label maps, up to the ids
    assert not list((tmp_path / "out").glob(".*parts"))  # part files are gone


def test_glass_is_skipped_with_the_same_nuclei(model, tmp_path):
    image, _ = blob_field(1024, seed=2, fill=0.3, empty_fraction=0.7)
    slide = write_slide(tmp_path / "sparse.ome.tif", image)
    every = predict_slide(model, slide, tmp_path / "all", SlideOptions(skip_glass=False), progress=False)
    skipping = predict_slide(model, slide, tmp_path / "skip", SlideOptions(), progress=False)
    assert every.windows_run == every.windows and skipping.windows_run < 0.6 * every.windows_run
    assert skipping.nuclei == every.nuclei
    a = tifffile.imread(every.outputs["labels"], level=0)
    b = tifffile.imread(skipping.outputs["labels"], level=0)
    assert same_partition(a, b)
    assert (tmp_path / "skip" / "sparse_tissue.png").is_file()


def test_region_of_interest_limits_the_work(model, tmp_path):
    image, _ = blob_field(768, seed=3)
    slide = write_slide(tmp_path / "roi.ome.tif", image)
    whole = predict_slide(model, slide, tmp_path / "whole", SlideOptions(skip_glass=False), progress=False)
    part = predict_slide(model, slide, tmp_path / "part", SlideOptions(skip_glass=False, roi="100,200,300,250"),
                         progress=False)
    labels = tifffile.imread(part.outputs["labels"], level=0)
    assert labels.shape == image.shape[:2]
    ys, xs = np.nonzero(labels)
    assert ys.min() >= 200 and ys.max() < 450 and xs.min() >= 100 and xs.max() < 400
    assert 0 < part.nuclei < whole.nuclei


def test_geojson_is_valid_in_level0_pixels_and_converts_back(model, tmp_path):
    image, _ = blob_field(640, seed=4, fill=0.3)
    slide = write_slide(tmp_path / "smear.ome.tif", image)
    run = predict_slide(model, slide, tmp_path / "out",
                        SlideOptions(skip_glass=False, compress_geojson=True), progress=False)
    import gzip

    collection = json.loads(gzip.decompress(run.outputs["geojson"].read_bytes()))
    labels = tifffile.imread(run.outputs["labels"], level=0)
    areas = np.bincount(labels.ravel())
    assert len(collection["features"]) == run.nuclei > 0
    for feature in collection["features"]:
        polygon = shapely.geometry.shape(feature["geometry"])
        assert polygon.is_valid and feature["properties"]["objectType"] == "detection"
        nucleus = feature["properties"]["measurements"]["id"]
        assert abs(polygon.area - areas[nucleus]) <= 0.02 * areas[nucleus]
        x, y = polygon.representative_point().coords[0]
        assert labels[int(y), int(x)] == nucleus  # level-0 pixel coordinates
        assert {"area_um2", "centroid_x_um"} <= set(feature["properties"]["measurements"])
    csv_rows = run.outputs["csv"].read_text().splitlines()
    assert len(csv_rows) == run.nuclei + 1
    # the geojson converter reads back what predict wrote: one mask per nucleus, the same pixels
    (tmp_path / "images").mkdir()
    image_path = tmp_path / "images" / "smear.png"
    from PIL import Image

    Image.fromarray(image).save(image_path)
    plain = tmp_path / "smear.geojson"
    plain.write_text(json.dumps(collection))
    assert main(["convert", "--from", "geojson", str(plain), "--images", str(tmp_path / "images"),
                 "--out", str(tmp_path / "back.json")]) == 0
    from dessam.data.coco import load_coco, record_label_map

    [record] = load_coco(tmp_path / "back.json", tmp_path / "images").images
    assert len(record.boxes) == run.nuclei
    assert same_partition(record_label_map(record), labels)


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from test_slide_predict import dark_windows, stand_in
from dessam.inference import windowed
from dessam.inference.loading import load_model
from dessam.outputs.slides import SlideOptions, predict_slide
windowed.window_instances = dark_windows(windowed.window_instances)
model = stand_in(load_model({model!r}, image_size=256, input_scale=1.0), delay=0.1)
predict_slide(model, {slide!r}, {out!r}, SlideOptions(skip_glass=False, resume={resume}), progress=False)
"""


def _child(trained_tiny, slide, out, resume):
    code = CHILD.format(tests=str(TESTS), model=str(trained_tiny), slide=str(slide), out=str(out), resume=resume)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def test_kill_9_then_resume_gives_the_uninterrupted_outputs(model, trained_tiny, tmp_path):
    image, _ = blob_field(1024, seed=5)
    slide = write_slide(tmp_path / "killed.ome.tif", image)
    reference = predict_slide(model, slide, tmp_path / "reference", SlideOptions(skip_glass=False), progress=False)
    out = tmp_path / "out"
    child = _child(trained_tiny, slide, out, resume=False)
    parts = out / ".killed.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("row_*.npz"))) < 3 and child.poll() is None:
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = len(list(parts.glob("row_*.npz")))
    assert 3 <= finished < 9 and not list(out.glob("killed*")), "outputs only appear complete, at the end"
    resumed = predict_slide(model, slide, out, SlideOptions(skip_glass=False, resume=True), progress=False)
    assert resumed.nuclei == reference.nuclei
    for name in ("geojson", "csv"):
        assert resumed.outputs[name].read_bytes() == reference.outputs[name].read_bytes()
    np.testing.assert_array_equal(tifffile.imread(resumed.outputs["labels"], level=0),
                                  tifffile.imread(reference.outputs["labels"], level=0))


def test_shards_split_a_list_of_slides(trained_tiny, tmp_path, capsys, monkeypatch):
    from dessam.inference import loading

    real = loading.load_model
    monkeypatch.setattr("dessam.inference.loading.load_model", lambda *a, **k: stand_in(real(*a, **k)))
    for index in range(5):
        write_slide(tmp_path / "slides" / f"s{index}.ome.tif" if (tmp_path / "slides").mkdir(exist_ok=True) is None
                    else None, blob_field(300, seed=index, fill=0.2)[0])
    for k in (1, 2):
        assert main(["predict", "--model", str(trained_tiny), str(tmp_path / "slides"), "--out", str(tmp_path / "out"),
                     "--shard", f"{k}/2", "--quiet", "--no-skip-glass", "--device", "cpu"]) == 0
    done = sorted(p.name for p in (tmp_path / "out").glob("*.geojson"))
    assert done == [f"s{i}.geojson" for i in range(5)]
    assert main(["predict", "--model", str(trained_tiny), str(tmp_path / "slides"), "--out", str(tmp_path / "x"),
                 "--shard", "3/2"]) == 2
    assert "--shard 3/2" in capsys.readouterr().err
