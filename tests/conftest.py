import os

import pytest
import torch

# Two cores are shared by the whole suite: keep each test single-threaded and quiet.
torch.set_num_threads(1)
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session", autouse=True)
def dessam_home(tmp_path_factory):
    """dessam's user folder (SAM checkpoints, the ONNX graphs exported on first use) is a temporary
    one for the whole run: tests never write into the user's own."""
    patch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("dessam_home")
    patch.setenv("DESSAM_HOME", str(home))
    yield home
    patch.undo()


@pytest.fixture(scope="session")
def box_dataset(tmp_path_factory):
    """Six small scenes: a boxes-only COCO file and one with masks, over the same images."""
    from scenes import write_box_dataset

    root = tmp_path_factory.mktemp("scenes")
    boxes_json, images = write_box_dataset(root, n_images=6)
    masks_json, _ = write_box_dataset(root, n_images=6, with_masks=True)
    return boxes_json, masks_json, images


@pytest.fixture(scope="session")
def trained_tiny(box_dataset, tmp_path_factory):
    """A tiny DES-SAM trained for a few epochs (shared by tests that need a model file)."""
    from scenes import tiny_config

    from dessam.training.train import train

    boxes_json, _, images = box_dataset
    out = tmp_path_factory.mktemp("tiny_run")
    result = train(tiny_config(epochs=5), boxes_json, images, out, progress=False)
    return result.model_path


@pytest.fixture(scope="session")
def finding_model(box_dataset, tmp_path_factory):
    """A DES-SAM on the first bundled teacher (`default-v1`, from random weights) trained for a few
    seconds (50 iterations of the `cpu` preset, at a higher learning rate and with fewer sampled RoIs
    and prompts): unlike `trained_tiny`, it finds the nuclei of the scenes it saw (10 to 14 where
    there are 10). The synthetic scenes' nuclei are smaller than today's default teacher is made for."""
    from dessam.config import Config
    from dessam.training.train import train

    boxes_json, _, images = box_dataset
    config = Config.compose("cpu", overrides={"model.sam": "default-v1", "train.init": "scratch", "train.max_iters": 50, "train.lr": 3e-3, "train.warmup_iters": 10,
                                              "model.roi_batch_per_image": 64, "loss.distill_max_prompts": 8,
                                              "model.postprocess.mask_threshold": 0.5, "train.min_iters": None,  # as the files tests expect
                                              # the scenes at their own scale, as the tests that read this model expect
                                              "model.input_scaling": "fixed", "train.copies": 1,
                                              # the detector on the teacher's embedding, as these tests were written for
                                              "model.detector_encoder": "teacher"})
    return train(config, boxes_json, images, tmp_path_factory.mktemp("finding_run"), progress=False).model_path


def _end_with_parent() -> None:
    """In a child process (Linux): be sent SIGTERM when the parent dies, even when it crashes."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="session")
def viewer_display():
    """An X display for napari's Qt viewer (it draws with OpenGL, which Qt's offscreen platform
    lacks): the one there is, or an Xvfb server for the test run. With neither, the viewer tests are
    skipped with the reason, or fail where DESSAM_REQUIRE_VIEWER=1 says they must run (CI)."""
    import shutil
    import subprocess

    os.environ["QT_QPA_PLATFORM"] = "xcb"
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        reason = ("no display and no Xvfb for napari's viewer: `make install` as root installs it, "
                  "or run `sudo apt-get install xvfb`")
        if os.environ.get("DESSAM_REQUIRE_VIEWER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    read, write = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=_end_with_parent)
    os.close(write)
    with os.fdopen(read) as display:
        number = display.readline().strip()  # Xvfb writes its display number once it accepts clients
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def viewer(viewer_display, make_napari_viewer):
    """A real napari viewer (Qt and OpenGL) on the test run's display."""
    return make_napari_viewer()


@pytest.fixture
def corpus(tmp_path):
    """A small pre-training corpus manifest: a DSB-layout folder and synthetic Pap fields."""
    import yaml
    from public_layouts import write_dsb

    write_dsb(tmp_path / "dsb", count=8, size=(48, 56))
    path = tmp_path / "corpus.yaml"
    path.write_text(yaml.safe_dump({"datasets": [
        {"name": "dsb", "format": "dsb", "path": "dsb", "licence": "CC0-1.0", "val_fraction": 0.3,
         "stain": "fluorescence"},
        {"name": "pap", "format": "synthetic", "generator": "pap", "licence": "Apache-2.0", "weight": 0.5,
         "val_images": 1},
    ]}))
    return path
