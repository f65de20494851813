"""`dessam convert --from csv`: box tables in either header style, per image or with an image column."""

import json

import numpy as np
import pytest

from dessam.commands import main
from dessam.data.convert import convert
from dessam.data.images import write_png
from dessam.data.synth_slide import make_synthetic_slide
from dessam.errors import DessamError


@pytest.fixture
def images(tmp_path):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "images" / name, np.full((50, 60, 3), 200, np.uint8))
    return tmp_path / "images"


def _boxes(path):
    doc = json.loads(path.read_text())
    names = {img["id"]: img["file_name"] for img in doc["images"]}
    return sorted((names[a["image_id"]], a["bbox"]) for a in doc["annotations"])


def test_both_header_styles_give_the_same_boxes(tmp_path, images):
    (tmp_path / "sizes").mkdir()
    (tmp_path / "sizes" / "a.csv").write_text("X,Y,Width,Height,label\n1,2,10,20,nucleus\n30,5,4.5,6,nucleus\n")
    (tmp_path / "corners.csv").write_text(" image ; x1 ; y1 ; x2 ; y2\na.png;1;2;11;22\nsub/a.png;30;5;34.5;11\n"
                                          "b.png;0;0;5;5\n")
    convert("csv", tmp_path / "sizes", images, tmp_path / "sizes.json")
    convert("csv", tmp_path / "corners.csv", images, tmp_path / "corners.json")
    expected = [("a.png", [1.0, 2.0, 10.0, 20.0]), ("a.png", [30.0, 5.0, 4.5, 6.0])]
    assert _boxes(tmp_path / "sizes.json") == expected
    assert _boxes(tmp_path / "corners.json") == expected + [("b.png", [0.0, 0.0, 5.0, 5.0])]


@pytest.mark.parametrize("text, message", [
    ("a,b,c\n1,2,3\n", r"names the columns \['a', 'b', 'c'\].*needs x, y, width, height or x1, y1, x2, y2"),
    ("", "the box table is empty"),
    ("x,y,w,h\n1,2,three,4\n", "line 2: the box is not four numbers"),
    ("x,y,w,h\n1,2,3\n", "line 2: the row has 3 cells"),
    ("x1,y1,x2,y2\n5,5,1,1\n", "line 2: the box has a negative"),
    ("image,x,y,w,h\n,1,2,3,4\n", "line 2: the image column is empty"),
    ("image,x,y,w,h\nnowhere.png,1,2,3,4\n", "no image with stem 'nowhere'"),
])
def test_table_errors_name_the_file_and_the_fix(tmp_path, images, text, message):
    table = tmp_path / "a.csv"
    table.write_text(text)
    with pytest.raises(DessamError, match=message) as err:
        convert("csv", table, images, tmp_path / "out.json")
    assert str(table) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_table_and_cli_exit_status(tmp_path, images, capsys):
    table = tmp_path / "a.csv"
    table.write_bytes(b"\xff\xfe\x00binary")
    assert main(["convert", "--from", "csv", str(table), "--images", str(images), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dessam: error: ") and "a.csv: cannot read the box table" in err and err.count("\n") == 1
    assert not (tmp_path / "o.json").exists()


def test_slide_box_table_becomes_training_tiles(tmp_path):
    slide = tmp_path / "slides" / "smear.svs"
    make_synthetic_slide(slide, 1536, 1280, cell_fraction=0.08, seed=7)
    boxes = slide.with_name("smear_boxes.csv")
    truth = len(boxes.read_text().splitlines()) - 1
    summary = convert("csv", boxes, slide.parent, tmp_path / "train.json")
    assert summary.annotations >= truth and summary.with_masks == 0
    doc = json.loads((tmp_path / "train.json").read_text())
    assert all((img["width"], img["height"]) == (512, 512) for img in doc["images"])
    assert all(0 <= a["bbox"][0] and a["bbox"][0] + a["bbox"][2] <= 512 for a in doc["annotations"])
    assert (tmp_path / "train_tiles" / doc["images"][0]["file_name"]).is_file()
    assert "1 image(s)" in "\n".join(summary.notes)  # the label image beside the slide is not annotated
