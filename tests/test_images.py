import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from dessam.data.images import image_shape, read_image, read_image_raw, to_uint8, write_png
from dessam.errors import DessamError


def _rng_image(shape, dtype=np.uint8, high=256, seed=0):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_png_rgb_round_trip(tmp_path):
    rgb = _rng_image((17, 23, 3))
    write_png(tmp_path / "a.png", rgb)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, rgb)
    assert image_shape(tmp_path / "a.png") == (17, 23)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_gray_and_rgba_and_palette_png(tmp_path):
    gray = _rng_image((9, 11))
    write_png(tmp_path / "g.png", gray)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (9, 11, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    assert read_image_raw(tmp_path / "g.png").shape == (9, 11)

    rgba = _rng_image((9, 11, 4))
    write_png(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[:, :, :3])

    Image.fromarray(_rng_image((9, 11, 3), high=4) * 60).convert("P").save(tmp_path / "p.png")
    expected = np.array(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)


def test_jpeg_reads_as_rgb(tmp_path):
    Image.fromarray(_rng_image((20, 30, 3))).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_16bit_tiff_scaled_by_its_max(tmp_path):
    data = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", data)
    out = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(out[:, :, 0], np.rint(data * 255.0 / 4000).astype(np.uint8))
    raw = read_image_raw(tmp_path / "a.tif")
    assert raw.dtype == np.uint16 and raw.shape == (2, 2)
    np.testing.assert_array_equal(raw, data)


def test_16bit_holding_8bit_values_is_unchanged(tmp_path):
    data = _rng_image((5, 6, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tiff", data, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tiff"), data.astype(np.uint8))


def test_16bit_png_scaled(tmp_path):
    data = np.array([[0, 300], [600, 1200]], dtype=np.uint16)
    write_png(tmp_path / "a.png", data)
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[:, :, 1], np.rint(data * 255.0 / 1200).astype(np.uint8))


def test_float_rule():
    np.testing.assert_array_equal(to_uint8(np.array([0.0, 0.5, 1.0])), [0, 128, 255])
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, np.nan, 510.0])), [0, 0, 255])


def test_tiff_rgba_multipage_and_planar(tmp_path):
    rgba = _rng_image((6, 7, 4))
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif"), rgba[:, :, :3])

    first, second = _rng_image((6, 7, 3), seed=1), _rng_image((6, 7, 3), seed=2)
    with tifffile.TiffWriter(tmp_path / "multi.tif") as tif:
        tif.write(first, photometric="rgb")
        tif.write(second, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "multi.tif"), first)

    planar = np.moveaxis(first, -1, 0).copy()
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), first)
    assert image_shape(tmp_path / "planar.tif") == (6, 7)


@pytest.mark.parametrize("name", ["bad.png", "bad.tif", "bad.jpg"])
def test_corrupt_file_is_a_user_error_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DessamError, match=name):
        read_image(path)


def test_truncated_png(tmp_path):
    write_png(tmp_path / "full.png", _rng_image((64, 64, 3)))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DessamError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_missing_file(tmp_path):
    with pytest.raises(DessamError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DessamError, match="nope.tif"):
        image_shape(tmp_path / "nope.tif")


def test_huge_header_refused_before_decoding(tmp_path):
    # a valid PNG header claiming 50000 x 50000 with almost no pixel data
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 10)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(png)
    for reader in (read_image, read_image_raw, image_shape):
        with pytest.raises(DessamError, match="huge.png.*too large"):
            reader(tmp_path / "huge.png")


def test_max_pixels_applies_to_tiff_and_png(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _rng_image((40, 50)))
    write_png(tmp_path / "a.png", _rng_image((40, 50)))
    for name in ("a.tif", "a.png"):
        with pytest.raises(DessamError, match=f"{name}.*too large.*50 x 40"):
            read_image(tmp_path / name, max_pixels=1999)
        assert read_image(tmp_path / name, max_pixels=2000).shape == (40, 50, 3)


def test_write_png_refuses_other_dtypes(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "x.png", np.zeros((4, 4), dtype=np.float32))
    assert not any(Path(tmp_path).iterdir())
