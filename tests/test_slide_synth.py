"""`dessam synth --slide`: a pyramidal synthetic slide with its ground truth, and the glass skipped."""

import csv
import json

import numpy as np
import pytest
import tifffile
import tiffslide

from dessam.commands import main
from dessam.data.slide import open_slide
from dessam.data.synth_slide import make_synthetic_slide
from dessam.data.tissue import parse_roi, select_tiles, tile_grid, tissue_mask, write_mask_png
from dessam.errors import DessamError

WIDTH, HEIGHT = 3072, 2560


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slide")
    path = folder / "smear.svs"
    assert main(["synth", "--slide", str(path), "--slide-size", str(WIDTH), str(HEIGHT), "--pixel-size", "0.5",
                 "--cell-fraction", "0.04", "--seed", "2"]) == 0
    return path


def test_pyramid_opens_in_tiffslide_with_size_levels_and_pixel_size(slide):
    with tiffslide.TiffSlide(slide) as ts:
        assert ts.dimensions == (WIDTH, HEIGHT)
        assert ts.level_count >= 2 and ts.level_dimensions[1] == (WIDTH // 4, HEIGHT // 4)
        assert float(ts.properties["tiffslide.mpp-x"]) == pytest.approx(0.5)
        assert ts.properties["tiffslide.level[0].tile-width"] == 512
    with tifffile.TiffFile(slide) as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].compression == tifffile.COMPRESSION.JPEG


def test_ground_truth_agrees_with_the_image(slide):
    labels = tifffile.imread(slide.with_name("smear_labels.ome.tif"))
    boxes = list(csv.DictReader(open(slide.with_name("smear_boxes.csv"), encoding="utf-8")))
    features = json.loads(slide.with_name("smear.geojson").read_text())["features"]
    n = int(labels.max())
    assert labels.shape == (HEIGHT, WIDTH) and labels.dtype == np.uint32
    assert n > 30 and len(boxes) == len(features) == n == len(np.unique(labels)) - 1
    with open_slide(slide) as s:
        image = s.read_region((0, 0), 0, s.dimensions).mean(axis=2)
    glass = np.median(image[labels == 0])
    for row in boxes:
        x1, y1, x2, y2 = (int(row[k]) for k in ("x1", "y1", "x2", "y2"))
        nucleus = labels[y1:y2, x1:x2] == int(row["id"])
        assert nucleus[[0, -1]].any() and nucleus[:, [0, -1]].any()  # the box is the mask's box
        assert image[y1:y2, x1:x2][nucleus].mean() < glass - 40  # stained where the labels say
    assert (labels > 0).mean() < 0.02  # mostly glass


def test_tissue_mask_keeps_every_nucleus_and_skips_most_tiles(slide, tmp_path):
    boxes = [[int(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in csv.DictReader(open(slide.with_name("smear_boxes.csv")))]
    with open_slide(slide) as s:
        tissue = tissue_mask(s)
        tiles = tile_grid(*s.dimensions, 256)
    keep = select_tiles(tissue, tiles)
    chosen = [t for t, k in zip(tiles, keep) if k]
    for x1, y1, x2, y2 in boxes:  # every pixel of every nucleus is in a chosen tile
        for px, py in ((x1, y1), (x2 - 1, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)):
            assert any(x <= px < x + w and y <= py < y + h for x, y, w, h in chosen)
    assert keep.mean() < 0.5, f"{keep.sum()} of {len(tiles)} tiles kept"
    write_mask_png(tmp_path / "mask.png", tissue, chosen)
    assert (tmp_path / "mask.png").stat().st_size > 0


def test_an_empty_slide_keeps_no_tile(tmp_path):
    path = tmp_path / "glass.svs"
    make_synthetic_slide(path, 1024, 1024, cell_fraction=0.0)
    with open_slide(path) as s:
        tissue = tissue_mask(s)
    assert not select_tiles(tissue, tile_grid(1024, 1024, 256)).any()


def test_ome_layout_same_seed_same_slide(tmp_path):
    a, b = tmp_path / "a.ome.tif", tmp_path / "b.ome.tif"
    for path in (a, b):
        make_synthetic_slide(path, 1100, 900, pixel_size_um=0.25, cell_fraction=0.1, seed=5)
    with tifffile.TiffFile(a) as tif:
        assert tif.is_ome and len(tif.series[0].levels) == 2
    with open_slide(a) as s:
        assert s.pixel_size_um == pytest.approx(0.25) and s.dimensions == (1100, 900)
    assert a.with_name("a_boxes.csv").read_text().replace("a.ome.tif", "") == \
        b.with_name("b_boxes.csv").read_text().replace("b.ome.tif", "")
    np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
    assert a.read_bytes() == b.read_bytes()  # the OME UUID follows from the settings too
    assert a.with_name("a_labels.ome.tif").read_bytes() == b.with_name("b_labels.ome.tif").read_bytes()


def test_tile_grid_and_roi():
    assert tile_grid(1000, 600, 512) == [(0, 0, 512, 512), (488, 0, 512, 512), (0, 88, 512, 512), (488, 88, 512, 512)]
    roi = parse_roi("100, 50,300,200", (1000, 600))
    assert roi == (100, 50, 300, 200)
    assert tile_grid(1000, 600, 256, overlap=64, roi=roi) == [(100, 50, 256, 200), (144, 50, 256, 200)]
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,10", "900,0,200,10", "-1,0,5,5"):
        with pytest.raises(DessamError, match="--roi"):
            parse_roi(bad, (1000, 600))


def test_cli_refuses_bad_slide_arguments(tmp_path, capsys):
    assert main(["synth", "--slide", str(tmp_path / "s.svs"), "--slide-size", "1", "2", "3"]) == 2
    assert main(["synth", "--slide", str(tmp_path / "s.svs"), "--out", str(tmp_path)]) == 2
    assert main(["synth"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
