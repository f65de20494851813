"""`dessam convert --from dsb` and `--from aperio-xml`: the layouts public nucleus sets ship in."""

import json

import numpy as np
import pytest
from PIL import Image
from public_layouts import aperio_xml, write_aperio, write_dsb

from dessam.commands import main
from dessam.data.coco import load_coco, record_label_map
from dessam.data.convert import convert
from dessam.errors import DessamError


def test_dsb_folders_become_one_image_each_with_a_mask_per_nucleus(tmp_path):
    root = tmp_path / "stage1_train"
    maps = write_dsb(root)
    summary = convert("dsb", root, None, tmp_path / "out.json")
    assert (summary.images, summary.annotations, summary.with_masks) == (3, 6, 6)
    dataset = load_coco(tmp_path / "out.json", root)
    assert [r.file_name for r in dataset.images] == [f"img{i:02d}/images/img{i:02d}.png" for i in range(3)]
    for record, labels in zip(dataset.images, maps):
        np.testing.assert_array_equal(record_label_map(record), labels)
        assert record.boxes.shape == (int(labels.max()), 4)


def test_dsb_images_may_be_named_from_a_folder_above(tmp_path):
    root = tmp_path / "data" / "stage1_train"
    write_dsb(root, count=1)
    convert("dsb", root, tmp_path / "data", tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["images"][0]["file_name"] == "stage1_train/img00/images/img00.png"
    with pytest.raises(DessamError, match="not inside --images"):
        convert("dsb", root, tmp_path / "elsewhere", tmp_path / "bad.json")


@pytest.mark.parametrize("breakage, message", [
    ("no_masks_folder", "expected images/ and masks/"),
    ("two_images", "holds 2 images"),
    ("mask_of_other_size", "belongs to another image"),
    ("empty", "no image folders"),
])
def test_broken_dsb_folders_are_named_in_one_line(tmp_path, breakage, message):
    root = tmp_path / "dsb"
    if breakage == "empty":
        root.mkdir()
    else:
        write_dsb(root, count=2)
        if breakage == "no_masks_folder":
            for mask in (root / "img01" / "masks").iterdir():
                mask.unlink()
            (root / "img01" / "masks").rmdir()
        elif breakage == "two_images":
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "img01" / "images" / "extra.png")
        else:
            Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "img01" / "masks" / "m0.png")
    with pytest.raises(DessamError, match=message) as raised:
        convert("dsb", root, None, tmp_path / "out.json")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out.json").exists()


def test_aperio_xml_polygons_become_masks_and_the_pixel_size_is_reported(tmp_path):
    xml_dir, images = write_aperio(tmp_path)
    summary = convert("aperio-xml", xml_dir, images, tmp_path / "out.json")
    assert (summary.images, summary.annotations, summary.with_masks) == (1, 2, 2)
    assert any("fewer than 3 vertices" in note for note in summary.notes)
    assert any("0.2527 um/px" in note for note in summary.notes)
    labels = record_label_map(load_coco(tmp_path / "out.json", images).images[0])
    # vertices lie on pixel centres: the 5..14 square covers pixels 5 to 14 inclusive
    assert (labels == 1).sum() == 100 and labels[5, 5] == 1 and labels[14, 14] == 1 and labels[4, 5] == 0
    assert (labels == 2).sum() == 10 * 16


@pytest.mark.parametrize("content, message", [
    ("<Annotations><Region", "invalid XML"),
    ("<GeoJSON/>", "not an Aperio ImageScope file"),
    ('<Annotations><Annotation><Regions><Region Id="7"><Vertices><Vertex X="a" Y="1"/></Vertices></Region>'
     "</Regions></Annotation></Annotations>", "region 7 has a vertex without numeric X and Y"),
])
def test_broken_aperio_xml_is_named_in_one_line(tmp_path, content, message):
    xml_dir, images = write_aperio(tmp_path)
    (xml_dir / "tissue.xml").write_text(content)
    with pytest.raises(DessamError, match=message):
        convert("aperio-xml", xml_dir, images, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_aperio_xml_without_its_image_and_the_cli_exit_status(tmp_path, capsys):
    xml_dir, images = write_aperio(tmp_path)
    (xml_dir / "orphan.xml").write_text(aperio_xml([[(1, 1), (5, 1), (5, 5)]]))
    code = main(["convert", "--from", "aperio-xml", str(xml_dir), "--images", str(images),
                 "--out", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert code == 2 and "orphan.xml: no image with stem 'orphan'" in err and "Traceback" not in err
    assert main(["convert", "--from", "aperio-xml", str(xml_dir), "--out", str(tmp_path / "out.json")]) == 2
    assert "needs --images FOLDER" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
