"""A training killed with SIGKILL mid-epoch resumes to exactly the weights of an uninterrupted run."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from scenes import tiny_config

from dessam.commands import main
from dessam.training.train import train

EPOCHS = 3  # x 6 images, batch 1: the kill lands in epoch 2, with epoch 3 still to go


def _rows(log_path) -> int:
    try:
        return max(0, len(log_path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _kill_mid_epoch(argv, env, run, per_epoch, after=2):
    """Start `argv`; SIGKILL it once epoch 1 is checkpointed and `after` more iterations are logged
    (0: as soon as its epoch checkpoint is there, which is written after the last one)."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if (run / "checkpoints" / "epoch_001.pt").is_file() and _rows(run / "log.csv") >= per_epoch + after:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        rows = _rows(run / "log.csv")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-training: {stderr[-2000:]}"
    return rows


@pytest.mark.parametrize("after", [2, 0], ids=["two-iterations-into-epoch-2", "at-epoch-1-checkpoint"])
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(box_dataset, tmp_path, after):
    boxes_json, _, images = box_dataset
    per_epoch = 6
    reference = train(tiny_config(epochs=EPOCHS), boxes_json, images, tmp_path / "reference", progress=False)

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=EPOCHS).to_dict()))
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "dessam", "train", "--train", str(boxes_json), "--images", str(images),
            "--config", str(config), "--sam", "tiny", "--out", str(run), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    rows_at_kill = _kill_mid_epoch(argv, env, run, per_epoch, after)
    assert per_epoch <= rows_at_kill < EPOCHS * per_epoch

    # what a kill at a worse moment leaves: a half-written checkpoint and a half-written log row
    (run / "checkpoints" / ".last.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    if (run / "log.csv").read_text().endswith("\n"):
        with open(run / "log.csv", "a") as handle:
            handle.write("1,1")

    assert main(argv[3:] + ["--resume"]) == 0  # in this process (one thread, like the killed one)

    expected = torch.load(reference.model_path, weights_only=True)
    resumed = torch.load(run / "model.pt", weights_only=True)
    assert resumed["iteration"] == expected["iteration"] == EPOCHS * per_epoch
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    different = [k for k in expected["state_dict"] if not torch.equal(expected["state_dict"][k], resumed["state_dict"][k])]
    assert different == []
    with open(run / "log.csv", newline="") as handle:
        assert [int(r["iteration"]) for r in csv.DictReader(handle)] == list(range(1, EPOCHS * per_epoch + 1))
    assert sorted(p.name for p in run.rglob(".*.tmp")) == []
