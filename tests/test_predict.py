"""Inference: outputs at each input's own size, for every image kind; the Python API."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from scenes import make_nuclei_scene

import dessam
from dessam.commands import main


def _scene(height, width, seed=3):
    image, _ = make_nuclei_scene(np.random.default_rng(seed), max(height, width))
    return image[:height, :width]


def _write_inputs(folder):
    folder.mkdir()
    rgb = _scene(120, 150)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[..., 1]).save(folder / "gray.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    tifffile.imwrite(folder / "sixteen.tif", rgb[:100].astype(np.uint16) * 257)
    tifffile.imwrite(folder / "gray16.tif", rgb[:90, :, 0].astype(np.uint16) * 200)
    with tifffile.TiffWriter(folder / "pages.tif") as writer:
        writer.write(rgb[:110, :130])
        writer.write(rgb[:50, :50])
    return {"rgb": (120, 150), "gray": (120, 150), "rgba": (120, 150), "sixteen": (100, 150),
            "gray16": (90, 150), "pages": (110, 130)}


def test_predict_outputs_have_each_inputs_size(trained_tiny, tmp_path):
    sizes = _write_inputs(tmp_path / "inputs")
    code = main(["predict", "--model", str(trained_tiny), str(tmp_path / "inputs"), "--out", str(tmp_path / "out"),
                 "--quiet", "--device", "cpu"])
    assert code == 0
    for stem, shape in sizes.items():
        labels = tifffile.imread(tmp_path / "out" / f"{stem}_labels.tif")
        assert labels.shape == shape, stem
        assert labels.dtype == np.uint16
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{stem}_overlay.png"))
        assert overlay.shape[:2] == shape
    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    for result in results:
        assert {"image_id", "segmentation", "bbox", "score", "file_name"} <= set(result)
        assert result["segmentation"]["size"] == list(sizes[result["file_name"].rsplit(".", 1)[0]])


def test_python_api_returns_boxes_scores_instances_and_labels(trained_tiny):
    model = dessam.load_model(trained_tiny)
    model.config = model.config.replace({"model.score_threshold": 0.0})  # the barely trained tiny detector scores low: keep everything
    model.config = model.config.replace({"model.min_object_size": 0})
    model.config = model.config.replace({"model.postprocess.mask_threshold": 0.0})  # and its random decoder's logits rarely pass 0.5
    image = _scene(110, 140)
    prediction = model.predict(image)
    n = len(prediction)
    assert n > 0
    assert prediction.boxes.shape == (n, 4) and prediction.scores.shape == (n,)
    assert prediction.labels.shape == (110, 140)
    painted = set(np.unique(prediction.labels)) - {0}
    assert painted and painted <= set(range(1, n + 1))
    instances = prediction.instances
    assert len(instances) == n and instances.shape == (110, 140)
    assert all(instances.crops[i].any() and instances.mask(i).dtype == bool for i in range(n))
    for k in painted:  # a painted nucleus lies inside its own mask
        assert not (prediction.mask(k - 1) & ~instances.mask(k - 1)).any()


def test_model_needs_the_same_sam_weights(trained_tiny, tmp_path):
    import torch

    payload = torch.load(trained_tiny, weights_only=True)
    payload["sam"]["sha256"] = "0" * 64
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(dessam.DessamError, match="SAM weights differ"):
        dessam.load_model(tmp_path / "model.pt")


def test_model_with_missing_sam_checkpoint_names_the_file(trained_tiny, tmp_path):
    import torch

    payload = torch.load(trained_tiny, weights_only=True)
    payload["sam"] = {"name": "vit_b", "checkpoint": "sam_vit_b_01ec64.pth", "sha256": "1" * 64}
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(dessam.DessamError, match="sam_vit_b_01ec64.pth"):
        dessam.load_model(tmp_path / "model.pt")
