"""Training from boxes: loss goes down, the encoder runs once per image, resume is exact, bad data."""

import csv
import json

import numpy as np
import pytest
import torch
from scenes import tiny_config, write_box_dataset

from dessam.commands import main
from dessam.training.loss_log import LOG_COLUMNS
from dessam.training.train import train


def _log_rows(log_path):
    """The rows of a run's log.csv, as dicts of strings."""
    with open(log_path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_boxes_only_training_lowers_the_loss(box_dataset, tmp_path):
    """200 iterations of the tiny SAM on generated scenes: the detector's classification losses of
    the last 20 iterations are <= 60 % of the first 20's. (The total is not compared: the
    distillation is summed over the positive proposals, whose number grows as the RPN learns.)"""
    boxes_json, _, images = box_dataset
    data = json.loads(boxes_json.read_text())
    assert not any("segmentation" in a for a in data["annotations"]), "the training file has boxes only"
    config = tiny_config(epochs=1000, max_iters=200)
    train(config, boxes_json, images, tmp_path / "run", progress=False)
    rows = _log_rows(tmp_path / "run" / "log.csv")
    assert len(rows) == 200
    classification = [float(r["rpn_cls"]) + float(r["roi_cls"]) for r in rows]
    first, last = np.mean(classification[:20]), np.mean(classification[-20:])
    print(f"mean rpn_cls + roi_cls: first 20 = {first:.4f}, last 20 = {last:.4f}, ratio = {last / first:.3f}")
    assert last <= 0.6 * first
    assert all(np.isfinite(float(r["total"])) for r in rows)


def test_log_has_every_loss_term_and_the_learning_rate(trained_tiny):
    rows = _log_rows(trained_tiny.parent / "log.csv")
    assert tuple(rows[0]) == LOG_COLUMNS
    assert len(rows) == 5 * 6  # 5 epochs x 6 images, batch 1
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < lrs[-1]  # linear warm-up
    for r in rows:
        assert all(np.isfinite(float(r[k])) for k in LOG_COLUMNS if k not in ("epoch", "iteration"))
    assert (trained_tiny.parent / "checkpoints" / "epoch_005.pt").is_file()


def test_encoder_runs_once_per_image_across_epochs(box_dataset, tmp_path):
    boxes_json, _, images = box_dataset
    result = train(tiny_config(epochs=2), boxes_json, images, tmp_path / "run", progress=False)
    assert result.iterations == 12
    assert result.encoder_runs == 6  # two epochs over 6 images, one encoder pass each
    # a second run sharing the cache never runs the encoder
    config = tiny_config(epochs=1)
    config = config.replace({"train.cache_dir": str(tmp_path / "run" / "cache")})
    again = train(config, boxes_json, images, tmp_path / "run2", progress=False)
    assert again.encoder_runs == 0


def test_damaged_cache_entry_is_recomputed(box_dataset, tmp_path):
    boxes_json, _, images = box_dataset
    train(tiny_config(epochs=1), boxes_json, images, tmp_path / "run", progress=False)
    entry = next((tmp_path / "run" / "cache").rglob("*.npy"))
    data = bytearray(entry.read_bytes())
    data[-10] ^= 0xFF
    entry.write_bytes(bytes(data))
    config = tiny_config(epochs=1)
    config = config.replace({"train.cache_dir": str(tmp_path / "run" / "cache")})
    result = train(config, boxes_json, images, tmp_path / "run2", progress=False)
    assert result.encoder_runs == 1  # only the damaged entry


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(box_dataset, tmp_path):
    boxes_json, _, images = box_dataset
    full = train(tiny_config(epochs=3), boxes_json, images, tmp_path / "full", progress=False)
    part = tiny_config(epochs=3, max_iters=8)  # stops inside epoch 2
    train(part, boxes_json, images, tmp_path / "part", progress=False)
    resumed = train(tiny_config(epochs=3), boxes_json, images, tmp_path / "part", resume=True, progress=False)
    assert resumed.iterations == full.iterations == 18
    a = torch.load(full.model_path, weights_only=True)["state_dict"]
    b = torch.load(resumed.model_path, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(_log_rows(tmp_path / "part" / "log.csv")) == 18


def test_boxes_outside_and_zero_size_are_clipped_and_dropped(tmp_path):
    boxes_json, images = write_box_dataset(tmp_path, n_images=2)
    data = json.loads(boxes_json.read_text())
    data["annotations"][0]["bbox"] = [-5.0, -5.0, 30.0, 30.0]
    data["annotations"][1]["bbox"] = [10.0, 10.0, 0.0, 5.0]
    boxes_json.write_text(json.dumps(data))
    result = train(tiny_config(epochs=1), boxes_json, images, tmp_path / "run", progress=False)
    assert result.clipped_boxes == 1 and result.dropped_boxes == 1
    report = (tmp_path / "run" / "data_report.txt").read_text()
    assert "clipped boxes: 1" in report and "dropped zero-size boxes: 1" in report


def test_cli_train_refuses_a_missing_image_in_one_line(tmp_path, capsys):
    boxes_json, images = write_box_dataset(tmp_path, n_images=2)
    (images / "scene_001.png").unlink()
    code = main(["train", "--train", str(boxes_json), "--images", str(images), "--sam", "tiny",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "scene_001.png" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.pt").exists()


def test_cli_train_and_predict_with_a_config_file(box_dataset, tmp_path):
    import yaml

    boxes_json, _, images = box_dataset
    config = tiny_config(epochs=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    code = main(["train", "--train", str(boxes_json), "--images", str(images), "--out", str(tmp_path / "run"),
                 "--config", str(tmp_path / "config.yaml"), "--no-edge-loss", "--no-prompt-token", "--quiet"])
    assert code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["loss"]["edge_aware"] is False and saved["model"]["prompt_token"] is False
    assert all(float(r["edge_local"]) == 0 for r in _log_rows(tmp_path / "run" / "log.csv"))


def test_optimizer_choice():
    from dessam.training.schedule import make_optimizer
    from dessam.errors import DessamError

    params = [torch.nn.Parameter(torch.zeros(2))]
    config = tiny_config()
    assert isinstance(make_optimizer(config, params, 0.1), torch.optim.SGD)
    config = config.replace({"train.optimizer": "adamw"})
    assert isinstance(make_optimizer(config, params, 0.1), torch.optim.AdamW)
    with pytest.raises(DessamError, match="train.optimizer: unknown 'lion'; use sgd or adamw"):
        config.replace({"train.optimizer": "lion"})


def test_cli_train_preset_reproduces_the_authors_cluster_config(box_dataset, tmp_path, capsys):
    import yaml

    from dessam.config.presets import REGISTRY

    boxes_json, _, images = box_dataset
    tiny = tiny_config(epochs=1).to_dict()
    for key in REGISTRY["clusterseg"].overlay["model"]["detector"]:
        tiny["model"]["detector"].pop(key)
    subset = {"model": tiny["model"], "train": tiny["train"]}  # no loss section: the preset's box weight stays
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(subset))
    code = main(["train", "--train", str(boxes_json), "--images", str(images), "--out", str(tmp_path / "run"),
                 "--preset", "clusterseg", "--config", str(tmp_path / "tiny.yaml"), "--max-iters", "2", "--quiet"])
    assert code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["preset"] == "clusterseg"
    assert saved["loss"]["roi_box"] == 0.1
    assert saved["model"]["detector"]["detection_nms"] == 0.2 and saved["model"]["detector"]["rpn_nms_test"] == 0.5
    assert saved["model"]["detector"]["rpn_nms"] == 0.7 and saved["model"]["sam"] == "tiny"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "patchseg" in help_text and "clusterseg" in help_text


def test_default_config_is_the_authors_patchseg_config():
    from dessam.config import Config
    from dessam.errors import DessamError

    default, patch = Config(), Config.compose("patchseg")
    assert default.to_dict() == {**patch.to_dict(), "preset": None}
    assert (default.loss.roi_box == 1.0 and default.model.detector.detection_nms == 0.5
            and default.model.postprocess.mask_threshold == 0.5)
    with pytest.raises(DessamError, match="unknown preset 'vit'"):
        Config.compose("vit")
    cluster = Config.compose("clusterseg")
    assert Config.from_dict(cluster.to_dict()).to_dict() == cluster.to_dict()


def test_a_small_training_set_gets_enough_epochs_for_min_iters(box_dataset, tmp_path):
    from dessam.config import Config
    from dessam.training.schedule import stretched_schedule

    cpu = Config.compose("cpu")
    assert cpu.train.min_iters == 1200
    thirty = stretched_schedule(cpu, 30)  # 30 tiles: 360 iterations in 12 epochs
    assert thirty.train.epochs == 40 and thirty.train.lr_steps == (33,)
    assert stretched_schedule(cpu, 500) is cpu  # a large set keeps its 12 epochs
    unstretched = cpu.replace({"train.min_iters": None})
    assert stretched_schedule(unstretched, 30) is unstretched
    boxes_json, _, images = box_dataset
    n = len(json.loads(boxes_json.read_text())["images"])
    result = train(tiny_config(epochs=1, min_iters=2 * n + 1), boxes_json, images, tmp_path / "run", progress=False)
    assert result.epochs_done == 3 and result.iterations == 3 * n  # whole epochs, at least min_iters
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"min_iters: {2 * n + 1}" in saved and "epochs: 3" in saved
