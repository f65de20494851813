"""Reading slides: pixel sizes from metadata, regions at every level, padding, plain images."""

import numpy as np
import pytest
import tifffile

from dessam.data.images import write_png
from dessam.data.pixel_size import tiff_pixel_size_um
from dessam.data.pyramid_tiff import write_pyramid_tiff
from dessam.data.slide import is_slide, open_slide, openslide_available
from dessam.errors import DessamError

TILE = 128


def _image(height=700, width=900, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _bands(image, rows=TILE):
    for y in range(0, image.shape[0], rows):
        yield image[y:y + rows]


def _pyramid(path, image, **options):
    return write_pyramid_tiff(path, _bands(image), image.shape[1], image.shape[0], tile=TILE, **options)


@pytest.mark.parametrize("layout", ["svs", "ome"])
def test_pixel_size_and_levels_of_written_pyramids(tmp_path, layout):
    image = _image()
    path = _pyramid(tmp_path / f"slide.{layout}.tif", image, layout=layout, pixel_size_um=0.2527)
    with open_slide(path) as slide:
        assert slide.reader == "tiffslide"
        assert slide.dimensions == (900, 700)
        assert slide.level_dimensions == ((900, 700), (225, 175), (57, 44))
        assert slide.level_downsamples[1] == pytest.approx(4.0)
        assert slide.pixel_size_um == pytest.approx(0.2527)
    assert is_slide(path)


def test_aperio_description_written_by_hand(tmp_path):
    """An SVS as scanners write it: the pixel size is only in the description."""
    path = tmp_path / "scanner.svs"
    image = _image(256, 256)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), photometric="rgb", metadata=None,
                  description="Aperio Image Library v12.0.16\r\n256x256 [0,0 256x256] (128x128) JPEG/RGB Q=70"
                              "|AppMag = 40|MPP = 0.2498|Filename = x")
    with open_slide(path) as slide:
        assert slide.pixel_size_um == pytest.approx(0.2498)


@pytest.mark.parametrize("unit, factor", [("µm", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_ome_xml_physical_size_with_unit(tmp_path, unit, factor):
    path = tmp_path / "img.ome.tif"
    metadata = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": unit, "PhysicalSizeY": 0.25,
                "PhysicalSizeYUnit": unit}
    tifffile.imwrite(path, _image(64, 64), photometric="rgb", ome=True, metadata=metadata)
    with tifffile.TiffFile(path) as tif:
        assert tiff_pixel_size_um(tif) == pytest.approx((0.5 * factor, 0.25 * factor))
    with open_slide(path) as slide:
        assert slide.pixel_size_xy_um == pytest.approx((0.5 * factor, 0.25 * factor))
        assert slide.pixel_size_um == pytest.approx(np.sqrt(0.125) * factor)


@pytest.mark.parametrize("unit, per_unit, expected", [("CENTIMETER", 40000.0, 0.25), ("INCH", 101600.0, 0.25),
                                                      ("INCH", 72.0, None), ("NONE", 4.0, None)])
def test_resolution_tags(tmp_path, unit, per_unit, expected):
    """cm and inch tags count; desktop defaults (72 dpi) and unit-less tags do not."""
    path = tmp_path / "tags.tif"
    tifffile.imwrite(path, _image(32, 32), photometric="rgb", resolution=(per_unit, per_unit), resolutionunit=unit)
    with open_slide(path) as slide:
        assert slide.pixel_size_um == (pytest.approx(expected) if expected else None)


def test_imagej_calibration(tmp_path):
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(path, _image(32, 32)[..., 0], imagej=True, resolution=(2.0, 2.0), metadata={"unit": "micron"})
    with open_slide(path) as slide:
        assert slide.pixel_size_um == pytest.approx(0.5)


def test_unknown_pixel_size_is_none(tmp_path):
    tiff, png = tmp_path / "plain.tif", tmp_path / "plain.png"
    tifffile.imwrite(tiff, _image(32, 32), photometric="rgb")
    write_png(png, _image(32, 32))
    for path in (tiff, png):
        with open_slide(path) as slide:
            assert slide.pixel_size_um is None
            assert not is_slide(path)


def test_read_region_matches_the_stored_levels_and_pads_white(tmp_path):
    image = _image()
    path = _pyramid(tmp_path / "slide.ome.tif", image, layout="ome", labels=False, quality=100)
    with tifffile.TiffFile(path) as tif:
        level1 = tif.series[0].levels[1].asarray()
    with open_slide(path) as slide:
        # level 1 from level-0 coordinates: level pixel (i, j) starts at level-0 4 * (i, j)
        np.testing.assert_array_equal(slide.read_region((4 * 30, 4 * 20), 1, (50, 40)), level1[20:60, 30:80])
        corner = slide.read_region((-10, -20), 0, (30, 40))
        assert corner.shape == (40, 30, 3) and corner.dtype == np.uint8
        assert (corner[:20] == 255).all() and (corner[:, :10] == 255).all()
        np.testing.assert_array_equal(corner[20:, 10:], slide.read_region((0, 0), 0, (20, 20)))
        assert (slide.read_region((5000, 5000), 0, (8, 8)) == 255).all()
        assert slide.best_level_for_downsample(3.9) == 0 and slide.best_level_for_downsample(5) == 1
        assert slide.best_level_for_downsample(100) == 2


def test_read_scaled_and_thumbnail(tmp_path):
    image = np.zeros((512, 768, 3), np.uint8)
    image[:, 384:] = 200
    path = tmp_path / "halves.png"
    write_png(path, image)
    with open_slide(path) as slide:
        assert slide.reader == "image" and slide.level_count == 1
        half = slide.read_scaled((0, 0), (384, 256), 2.0)
        np.testing.assert_array_equal(half, image[::2, ::2])
        thumb = slide.thumbnail(96)
        assert thumb.shape == (64, 96, 3)
        assert (thumb[:, :47] == 0).all() and (thumb[:, 49:] == 200).all()
        assert slide.thumbnail(5000).shape == image.shape  # never enlarged


def test_gray_and_16_bit_tiffs_are_read_as_rgb(tmp_path):
    gray, deep = tmp_path / "gray.tif", tmp_path / "deep.tif"
    tifffile.imwrite(gray, np.full((40, 50), 90, np.uint8))
    tifffile.imwrite(deep, np.full((40, 50), 4000, np.uint16))
    with open_slide(gray) as slide:
        assert slide.read_region((0, 0), 0, (5, 5))[0, 0].tolist() == [90, 90, 90]
    with open_slide(deep) as slide:  # read whole, scaled by its maximum like any dessam image
        assert slide.reader == "image" and slide.read_region((0, 0), 0, (5, 5))[0, 0].tolist() == [255, 255, 255]


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DessamError, match="not found"):
        open_slide(tmp_path / "missing.svs")
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a tiff at all")
    with pytest.raises(DessamError, match="broken.svs.*not a readable TIFF"):
        open_slide(broken)
    unknown = tmp_path / "slide.xyz"
    unknown.write_bytes(b"x")
    with pytest.raises(DessamError, match="unknown image or slide format"):
        open_slide(unknown)


@pytest.mark.skipif(openslide_available(), reason="OpenSlide is installed here")
def test_vendor_formats_name_the_openslide_extra(tmp_path):
    mrxs = tmp_path / "slide.mrxs"
    mrxs.write_bytes(b"")
    assert is_slide(mrxs)
    with pytest.raises(DessamError, match=r"slide.mrxs.*pip install 'dessam\[slides-openslide\]'") as err:
        open_slide(mrxs)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not openslide_available(), reason="the optional OpenSlide extra is not installed")
def test_openslide_reads_the_same_svs(tmp_path):
    from pathlib import Path

    from dessam.data.slide import Slide, _OpenSlideReader

    image = _image()
    path = _pyramid(tmp_path / "slide.svs", image, layout="svs", pixel_size_um=0.5)
    with open_slide(path) as ours, Slide(Path(path), _OpenSlideReader(Path(path))) as theirs:
        assert theirs.level_dimensions == ours.level_dimensions
        assert theirs.pixel_size_um == pytest.approx(0.5)
        a, b = (s.read_region((-5, 100), 1, (60, 30)).astype(int) for s in (theirs, ours))
        assert np.abs(a - b).max() <= 3  # two JPEG decoders


def test_pixel_size_notes_for_the_command_line(tmp_path):
    from dessam.data.slide import resolve_pixel_size

    known, unknown = tmp_path / "known.ome.tif", tmp_path / "unknown.png"
    _pyramid(known, _image(), layout="ome", pixel_size_um=0.25)
    write_png(unknown, _image(32, 32))
    with open_slide(known) as slide:
        assert resolve_pixel_size(slide) == (pytest.approx(0.25), None)
        assert resolve_pixel_size(slide, 0.251) == (0.251, None)
        size, note = resolve_pixel_size(slide, 0.5)
        assert size == 0.5 and "overrides the 0.25 um" in note
        with pytest.raises(DessamError, match="--pixel-size"):
            resolve_pixel_size(slide, -1)
    with open_slide(unknown) as slide:
        size, note = resolve_pixel_size(slide)
        assert size is None and "unknown.png: the file does not say its pixel size" in note and "\n" not in note
