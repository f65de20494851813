"""Bad inputs through the command line: one `dessam: error:` line, exit status 2, no traceback, nothing written.

Run with `pytest -s tests/test_bad_inputs.py` to print the table of messages.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image
from scenes import tiny_config, write_box_dataset

from dessam.commands import main
from dessam.models.sam import build_sam


@dataclass
class World:
    """Shared inputs: a 2-image box dataset, a tiny SAM checkpoint and a model trained with it."""

    root: Path
    boxes_json: Path
    images: Path
    config: Path
    sam: Path          # root/sam/tiny_sam.pth, the weights the model was trained on
    other_sam: Path    # root/other/tiny_sam.pth, same name, other weights
    model: Path

    def coco(self) -> dict:
        return json.loads(self.boxes_json.read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dessam.training.train import train

    root = tmp_path_factory.mktemp("bad_inputs")
    boxes_json, images = write_box_dataset(root, n_images=2)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(epochs=1, max_iters=1).to_dict()))
    sam_path = root / "sam" / "tiny_sam.pth"
    sam_path.parent.mkdir()
    state = build_sam("tiny").state_dict()
    torch.save(state, sam_path)
    other = root / "other" / "tiny_sam.pth"
    other.parent.mkdir()
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other)
    config = tiny_config(epochs=1, max_iters=1)
    config = config.replace({"model.sam_checkpoint": str(sam_path)})
    model = train(config, boxes_json, images, root / "run", progress=False).model_path
    return World(root, boxes_json, images, config_path, sam_path, other, model)


# ----- building the bad inputs ---------------------------------------------------------------
def _train(w: World, tmp: Path, coco=None, images=None, *extra) -> list:
    """`dessam train` argv on `coco` (a dict written to tmp, or a path) with the tiny config."""
    if isinstance(coco, dict):
        path = tmp / "bad.json"
        path.write_text(json.dumps(coco))
        coco = path
    return ["train", "--train", str(coco or w.boxes_json), "--images", str(images or w.images), "--sam", "tiny",
            "--config", str(w.config), "--out", str(tmp / "out"), "--quiet", *extra]


def _predict(w: World, tmp: Path, model=None, sam_checkpoint="") -> list:
    """`dessam predict` argv; the SAM checkpoint is passed unless `sam_checkpoint` is None."""
    argv = ["predict", "--model", str(model or w.model), str(w.images / "scene_000.png"), "--out", str(tmp / "pred"),
            "--device", "cpu", "--quiet"]
    if sam_checkpoint is not None:
        argv += ["--sam-checkpoint", str(sam_checkpoint or w.sam)]
    return argv


def _images_copy(w: World, tmp: Path) -> Path:
    folder = tmp / "images"
    shutil.copytree(w.images, folder)
    return folder


def _one_image(w: World, tmp: Path, file_name: str, size: tuple) -> dict:
    """The dataset reduced to its first image, renamed and resized in the JSON only."""
    coco = w.coco()
    coco["images"] = [dict(coco["images"][0], file_name=file_name, height=size[0], width=size[1])]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    return coco


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def _tiff_header_claiming(path: Path, width: int, height: int) -> None:
    """A small TIFF whose ImageWidth / ImageLength tags are rewritten to claim width x height."""
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        spots = [(tags[name].valueoffset, tags[name].dtype, value)
                 for name, value in (("ImageWidth", width), ("ImageLength", height))]
    for offset, dtype, value in spots:
        fmt = "<H" if int(dtype) == 3 else "<I"  # SHORT or LONG
        data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def missing_file(w, tmp):
    return _train(w, tmp, tmp / "nope.json"), ["nope.json", "not found"]


def missing_image(w, tmp):
    images = _images_copy(w, tmp)
    (images / "scene_001.png").unlink()
    return _train(w, tmp, None, images), ["scene_001.png", "not found"]


def corrupt_png(w, tmp):
    images = _images_copy(w, tmp)
    (images / "scene_001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return _train(w, tmp, None, images), ["scene_001.png", "cannot read image"]


def truncated_tiff(w, tmp):
    images = _images_copy(w, tmp)
    tifffile.imwrite(images / "cut.tif", np.array(Image.open(w.images / "scene_000.png")), compression="zlib")
    data = (images / "cut.tif").read_bytes()
    (images / "cut.tif").write_bytes(data[: len(data) // 2])
    coco = w.coco()
    coco["images"][1]["file_name"] = "cut.tif"
    return _train(w, tmp, coco, images), ["cut.tif", "cannot read image"]


def json_syntax_error(w, tmp):
    (tmp / "broken.json").write_text('{"images": [{"id": 1,}]}')
    return _train(w, tmp, tmp / "broken.json"), ["broken.json", "invalid JSON at line 1"]


def coco_without_annotations_key(w, tmp):
    return _train(w, tmp, {"images": w.coco()["images"]}), ["bad.json", "'annotations'"]


def coco_image_without_file_name(w, tmp):
    coco = w.coco()
    del coco["images"][0]["file_name"]
    return _train(w, tmp, coco), ["bad.json", "lack 'file_name'"]


def size_in_json_differs(w, tmp):
    return _train(w, tmp, _one_image(w, tmp, "scene_000.png", (128, 200))), ["scene_000.png", "200 x 128", "128 x 128"]


def label_image_of_another_size(w, tmp):
    labels = tmp / "labels"
    labels.mkdir()
    Image.fromarray(np.eye(64, dtype=np.uint8)).save(labels / "scene_000.png")
    argv = ["convert", "--from", "labels", str(labels), "--images", str(w.images), "--out", str(tmp / "out.json")]
    return argv, ["scene_000.png", "64 x 64", "128 x 128"]


def empty_dataset(w, tmp):
    return _train(w, tmp, dict(w.coco(), annotations=[])), ["bad.json", "no images with boxes"]


def model_as_sam_checkpoint(w, tmp):
    return _train(w, tmp, None, None, "--sam-checkpoint", str(w.model)), ["model.pt", "not a SAM checkpoint"]


def sam_checkpoint_as_model(w, tmp):
    return _predict(w, tmp, w.sam, None), ["tiny_sam.pth", "not a dessam model file"]


def checkpoint_of_another_variant(w, tmp):
    argv = _train(w, tmp, None, None, "--sam-checkpoint", str(w.sam))
    argv[argv.index("tiny")] = "vit_b"
    return argv, ["tiny_sam.pth", "does not match SAM 'vit_b'", "looks like tiny"]


def model_sam_checkpoint_missing(w, tmp):
    (tmp / "moved").mkdir()
    shutil.copy(w.model, tmp / "moved" / "model.pt")
    argv = _predict(w, tmp, tmp / "moved" / "model.pt", sam_checkpoint=None)
    return argv, ["needs the SAM checkpoint tiny_sam.pth", "--sam-checkpoint"]


def model_sam_checkpoint_other_hash(w, tmp):
    return _predict(w, tmp, None, w.other_sam), ["tiny_sam.pth", "SAM weights differ"]


def png_claiming_50000_squared(w, tmp):
    images = _images_copy(w, tmp)
    _png_header_only(images / "huge.png", 50000, 50000)
    return _train(w, tmp, _one_image(w, tmp, "huge.png", (50000, 50000)), images), ["huge.png", "too large"]


def tiff_claiming_50000_squared(w, tmp):
    images = _images_copy(w, tmp)
    _tiff_header_claiming(images / "huge.tif", 50000, 50000)
    coco = _one_image(w, tmp, "huge.tif", (50000, 50000))
    return _train(w, tmp, coco, images), ["huge.tif", "too large", "50000 x 50000"]


def file_name_with_dotdot(w, tmp):
    return _train(w, tmp, _one_image(w, tmp, "../scenes/x.png", (128, 128))), ["../scenes/x.png", "outside the images"]


def absolute_file_name(w, tmp):
    name = str(w.images / "scene_000.png")
    return _train(w, tmp, _one_image(w, tmp, name, (128, 128))), ["outside the images folder"]


def train_out_under_a_file(w, tmp):
    (tmp / "a_file").write_text("not a folder")
    argv = _train(w, tmp)
    argv[argv.index("--out") + 1] = str(tmp / "a_file" / "run")
    return argv, ["a_file/run", "cannot create the run folder"]


def predict_out_under_a_file(w, tmp):
    (tmp / "a_file").write_text("not a folder")
    argv = _predict(w, tmp)
    argv[argv.index("--out") + 1] = str(tmp / "a_file" / "pred")
    return argv, ["a_file/pred", "cannot write the output folder"]


def predict_missing_input(w, tmp):
    argv = _predict(w, tmp)
    argv[argv.index(str(w.images / "scene_000.png"))] = str(tmp / "nope.png")
    return argv, ["nope.png", "no such file"]


def predict_roi_on_a_plain_image(w, tmp):
    return _predict(w, tmp) + ["--roi=-5,-5,10,10"], ["--roi -5,-5,10,10", "x, y >= 0"]


def predict_roi_inside_on_a_plain_image(w, tmp):
    return _predict(w, tmp) + ["--roi", "0,0,10,10"], ["--roi 0,0,10,10", "scene_000.png is a plain image",
                                                         "whole slides"]


def predict_overlap_larger_than_the_window(w, tmp):
    return _predict(w, tmp) + ["--overlap", "5000"], ["--overlap 5000", "128 px"]


def predict_negative_pixel_size(w, tmp):
    return _predict(w, tmp) + ["--pixel-size", "-1"], ["--pixel-size -1", "positive"]


def predict_score_threshold_above_one(w, tmp):
    return _predict(w, tmp) + ["--score-threshold", "1.5"], ["--score-threshold 1.5", "between 0 and 1"]


def predict_no_detection_allowed(w, tmp):
    return _predict(w, tmp) + ["--max-detections", "0"], ["--max-detections 0", "at least 1"]


def predict_no_threads(w, tmp):
    return _predict(w, tmp) + ["--threads", "0"], ["--threads 0", "1 or more"]


def train_no_threads(w, tmp):
    return _train(w, tmp, None, None, "--threads", "0"), ["--threads 0", "1 or more"]


def label_overlap_larger_than_the_window(w, tmp):
    argv = ["label", "--model", str(w.model), "--sam-checkpoint", str(w.sam), "--data", str(w.boxes_json),
            "--images", str(w.images), "--out", str(tmp / "masks.json"), "--overlap", "5000", "--quiet"]
    return argv, ["--overlap 5000", "128 px"]


def resume_without_checkpoint(w, tmp):
    return _train(w, tmp, None, None, "--resume"), ["last.pt", "nothing to resume from"]


def unknown_setting(w, tmp):
    return _train(w, tmp, None, None, "--set", "train.learning_rate=0.1"), ["train.learning_rate", "unknown setting"]


def _pretrain(tmp, *options):
    corpus = tmp / "corpus.yaml"
    corpus.write_text("datasets:\n  - {name: pap, format: synthetic, generator: pap, licence: Apache-2.0}\n")
    return ["pretrain-teacher", "--corpus", str(corpus), "--out", str(tmp / "teacher"), "--quiet", *options]


def pretrain_negative_steps(w, tmp):
    return _pretrain(tmp, "--steps", "-5"), ["--steps -5", "0 or more"]


def pretrain_crop_not_a_multiple_of_16(w, tmp):
    return _pretrain(tmp, "--crop", "100"), ["--crop 100", "multiple of 16"]


def pretrain_negative_lr(w, tmp):
    return _pretrain(tmp, "--lr", "-0.001"), ["--lr -0.001", "positive learning rate"]


def pretrain_missing_corpus(w, tmp):
    return ["pretrain-teacher", "--corpus", str(tmp / "corpus.yaml"), "--out", str(tmp / "t"), "--quiet"], [
        "corpus.yaml", "corpus manifest not found"]


def pretrain_model_missing_teacher(w, tmp):
    argv = _pretrain(tmp)
    return ["pretrain-model", "--corpus", argv[2], "--teacher", str(tmp / "teacher.pt"), "--out", str(tmp / "m"),
            "--quiet"], ["teacher.pt", "teacher file not found"]


ERROR_CASES: dict[str, Callable] = {
    "missing annotation file": missing_file,
    "missing image": missing_image,
    "corrupt PNG": corrupt_png,
    "truncated TIFF": truncated_tiff,
    "JSON syntax error": json_syntax_error,
    "COCO without 'annotations'": coco_without_annotations_key,
    "COCO image without file_name": coco_image_without_file_name,
    "image size in JSON differs from file": size_in_json_differs,
    "convert: label image of another size": label_image_of_another_size,
    "empty dataset": empty_dataset,
    "model.pt as --sam-checkpoint": model_as_sam_checkpoint,
    "SAM .pth as --model": sam_checkpoint_as_model,
    "checkpoint of another SAM variant": checkpoint_of_another_variant,
    "model's SAM checkpoint missing": model_sam_checkpoint_missing,
    "model's SAM checkpoint has another hash": model_sam_checkpoint_other_hash,
    "PNG header claims 50000 x 50000": png_claiming_50000_squared,
    "TIFF header claims 50000 x 50000": tiff_claiming_50000_squared,
    "file_name with '..'": file_name_with_dotdot,
    "absolute file_name": absolute_file_name,
    "train --out under a regular file": train_out_under_a_file,
    "predict --out under a regular file": predict_out_under_a_file,
    "predict input missing": predict_missing_input,
    "predict --roi=-5,-5,10,10": predict_roi_on_a_plain_image,
    "predict --roi on a plain image": predict_roi_inside_on_a_plain_image,
    "predict --overlap 5000": predict_overlap_larger_than_the_window,
    "predict --pixel-size -1": predict_negative_pixel_size,
    "predict --score-threshold 1.5": predict_score_threshold_above_one,
    "predict --max-detections 0": predict_no_detection_allowed,
    "label --overlap 5000": label_overlap_larger_than_the_window,
    "--resume without a checkpoint": resume_without_checkpoint,
    "unknown --set key": unknown_setting,
    "pretrain-teacher --steps -5": pretrain_negative_steps,
    "pretrain-teacher --crop 100": pretrain_crop_not_a_multiple_of_16,
    "pretrain-teacher --lr -0.001": pretrain_negative_lr,
    "pretrain-teacher without its corpus": pretrain_missing_corpus,
    "pretrain-model without its teacher": pretrain_model_missing_teacher,
    "predict --threads 0": predict_no_threads,
    "train --threads 0": train_no_threads,
}

TABLE: dict = {}
PROGRESS_BAR = re.compile(r"\d+/\d+ \[")  # tqdm's "3/10 [" (commands without --quiet show one)


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if TABLE:
        print("\n\n| bad input | exit | message |\n| --- | ---: | --- |")
        for name, (code, message) in TABLE.items():
            print(f"| {name} | {code} | {message.replace('|', '/')} |")


def _files(*folders: Path) -> set:
    return {p for folder in folders for p in folder.rglob("*") if p.is_file()}


def _new_outputs(before: set, *folders: Path) -> list:
    """Files written since `before`, except complete embedding-cache entries (reused by the next run)."""
    return sorted(p for p in _files(*folders) - before if "cache" not in p.parts or p.name.endswith(".tmp"))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No SAM checkpoint can be found in the current folder or the download folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DESSAM_HOME", str(tmp_path / "no_downloads"))
    return tmp_path


def _error_line(err: str, argv: list) -> str:
    """The one `dessam: error:` line; other lines are allowed only as progress bars of commands without --quiet."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("dessam: error: ")]
    assert len(errors) == 1, err
    others = [line for line in lines if line not in errors]
    assert not others or ("--quiet" not in argv and all(PROGRESS_BAR.search(line) for line in others)), err
    return errors[0]


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, world, isolated, capsys):
    argv, fragments = ERROR_CASES[name](world, isolated)
    before = _files(isolated, world.root)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    line = _error_line(err, argv)
    TABLE[name] = (code, line.replace(str(isolated), "TMP").replace(str(world.root), "DATA"))
    assert code == 2, (out, err)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert _new_outputs(before, isolated, world.root) == []


def box_partly_outside(w, tmp):
    coco = w.coco()
    coco["annotations"][0]["bbox"] = [-6.0, -6.0, 20.0, 20.0]
    return _train(w, tmp, coco), "1 boxes clipped, 0 zero-size boxes dropped"


def zero_area_box(w, tmp):
    coco = w.coco()
    coco["annotations"][0]["bbox"] = [30.0, 30.0, 0.0, 12.0]
    return _train(w, tmp, coco), "0 boxes clipped, 1 zero-size boxes dropped"


WARNING_CASES = {"box partly outside the image": box_partly_outside, "zero-area box": zero_area_box}


@pytest.mark.parametrize("name", list(WARNING_CASES))
def test_questionable_box_is_a_counted_warning_and_training_proceeds(name, world, tmp_path, capsys):
    argv, counted = WARNING_CASES[name](world, tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    TABLE[name] = (code, out.strip().replace(str(tmp_path), "TMP"))
    assert code == 0, err
    assert counted in out
    assert (tmp_path / "out" / "model.pt").is_file()
    report = (tmp_path / "out" / "data_report.txt").read_text()
    assert f"clipped boxes: {int(counted[0])}" in report


def test_python_m_dessam_prints_one_line_without_traceback(world, tmp_path):
    """The real command, in its own process, on a file that fails deep inside training."""
    argv, fragments = truncated_tiff(world, tmp_path)
    before = _files(tmp_path)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "dessam", *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(lines) == 1 and lines[0].startswith("dessam: error: ") and all(f in lines[0] for f in fragments)
    assert _new_outputs(before, tmp_path) == []
