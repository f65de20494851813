"""The Train from boxes widget in a real napari viewer: boxes and corrected masks of open images
become a model file; the loss shows live; Stop keeps the model so far; bad inputs are refused
before any work and leave no file."""

import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("napari", reason="napari is not installed: pip install -e '.[napari]' (make install does)")

from scenes import label_boxes, make_nuclei_scene  # noqa: E402
from viewer_support import click, dock, run, stop_at_first_progress  # noqa: E402

from dessam.config import Config  # noqa: E402
from dessam.inference.loading import load_model  # noqa: E402
from dessam.napari.layers import box_rectangles  # noqa: E402
from dessam.napari.train_from_boxes import TrainWidget, fit_schedule  # noqa: E402


def _open_two_images(viewer):
    """Image A with its boxes; image B with boxes for half its nuclei and corrected masks for the rest."""
    rng = np.random.default_rng(11)
    image_a, truth_a = make_nuclei_scene(rng, 128)
    image_b, truth_b = make_nuclei_scene(rng, 128)
    viewer.add_image(image_a, name="A")
    viewer.add_shapes(box_rectangles(label_boxes(truth_a)), shape_type="rectangle", name="A boxes")
    viewer.add_image(image_b, name="B")
    boxes_b = label_boxes(truth_b)
    viewer.add_shapes(box_rectangles(boxes_b), shape_type="rectangle", name="B boxes")
    corrected = np.where(truth_b > truth_b.max() // 2, truth_b, 0).astype(np.uint16)
    viewer.add_labels(corrected, name="B corrected")
    return len(label_boxes(truth_a)), len(boxes_b), len(np.unique(corrected)) - 1


def _widget(viewer, model_path, iterations):
    widget = dock(viewer, TrainWidget(viewer, sams=("tiny",)))
    widget.iterations.value = iterations
    widget.model_file.value = model_path
    return widget


def test_training_from_boxes_and_corrected_masks_writes_a_model(viewer, qtbot, tmp_path):
    boxes_a, boxes_b, corrected = _open_two_images(viewer)
    widget = _widget(viewer, tmp_path / "model.pt", 6)
    rows = {row.image_layer.name: row for row in widget.rows}
    assert rows["A"].use.value and rows["A"].boxes.value is viewer.layers["A boxes"]  # found by its name
    rows["B"].masks.value = viewer.layers["B corrected"]
    losses = []
    widget.progress.changed.connect(lambda _: losses.append(widget.status.value))
    status = run(qtbot, widget)

    assert status.startswith(f"6 iterations saved to {tmp_path / 'model.pt'} (2 images, "
                             f"{boxes_a + boxes_b - corrected} boxes, {corrected} masks;")
    assert any(text.startswith("iteration 6 of 6: loss ") for text in losses)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["iteration"] == 6
    model = load_model(tmp_path / "model.pt")
    assert model.predict(viewer.layers["A"].data).labels.shape == (128, 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_stop_ends_training_early_and_keeps_the_model_so_far(viewer, qtbot, tmp_path):
    _open_two_images(viewer)
    widget = _widget(viewer, tmp_path / "model.pt", 500)
    shown = stop_at_first_progress(widget)
    status = run(qtbot, widget)
    iteration = torch.load(tmp_path / "model.pt", weights_only=True)["iteration"]
    assert shown and 1 <= iteration < 500
    assert status.startswith(f"stopped at iteration {iteration} of 500; the model as trained so far saved to")


def test_stop_before_training_began_writes_nothing(viewer, qtbot, tmp_path):
    _open_two_images(viewer)
    widget = _widget(viewer, tmp_path / "model.pt", 50)
    click(widget.run_button)
    click(widget.stop_button)   # while the images are still being written out
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.status.value == "stopped before training began: no model was written"
    assert list(tmp_path.iterdir()) == []


def test_refused_before_any_work_with_nothing_written(viewer, qtbot, tmp_path):
    image, truth = make_nuclei_scene(np.random.default_rng(12), 128)
    viewer.add_image(image, name="field")
    widget = _widget(viewer, tmp_path / "model.pt", 5)
    assert run(qtbot, widget).startswith("no boxes to train from")

    viewer.add_shapes(box_rectangles(np.array([[150, 20, 170, 40]])), shape_type="rectangle", name="field boxes")
    assert widget.rows[0].use.value and widget.rows[0].boxes.value is viewer.layers["field boxes"]
    assert run(qtbot, widget).startswith("shapes layer 'field boxes': rectangle 1 (x 150 to 170, y 20 to 40) "
                                         "lies outside image 'field'")

    viewer.layers["field boxes"].data = box_rectangles(label_boxes(truth))
    widget.model_file.value = tmp_path / "missing" / "model.pt"
    assert "does not exist" in run(qtbot, widget)
    widget.model_file.value = tmp_path
    assert "is a folder" in run(qtbot, widget)
    if os.geteuid() == 0 and sys.platform.startswith("linux"):
        locked = "/sys"                      # root may write anywhere but here
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
    widget.model_file.value = os.path.join(locked, "model.pt")
    assert "the model file is not writable" in run(qtbot, widget)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["locked"])
    assert not os.path.exists(os.path.join(locked, "model.pt"))


def test_the_schedule_is_fitted_to_the_iterations():
    config = fit_schedule(Config.compose("cpu"), 300, 9)  # from 12 epochs, learning rate x 0.1 at epoch 10, 100 warm-up steps
    assert (config.train.epochs, config.train.max_iters, config.train.lr_steps, config.train.warmup_iters) == (
        34, 300, (28,), 75)
