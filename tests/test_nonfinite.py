"""Non-finite losses: the step is skipped and counted; too many in a row stop training with the last checkpoint intact."""

import csv

import pytest
import torch
import yaml
from scenes import tiny_config

from dessam.commands import main
from dessam.training.train import train
from dessam.errors import DessamError
from dessam.models.dessam import DESSAM


@pytest.fixture
def nan_at(monkeypatch):
    """`nan_at(first, last=None)`: DESSAM.weighted_total gives nan from call `first` to `last` (1-based)."""
    real = DESSAM.weighted_total
    calls = []

    def install(first, last=None, on_first=None):
        def faulty(self, losses):
            calls.append(1)
            total = real(self, losses)
            if len(calls) >= first and (last is None or len(calls) <= last):
                if len(calls) == first and on_first is not None:
                    on_first()
                return total * float("nan")
            return total

        monkeypatch.setattr(DESSAM, "weighted_total", faulty)

    return install


@pytest.fixture
def count_steps(monkeypatch):
    steps = []
    real = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted)
    return steps


def _log(run):
    with open(run / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_non_finite_loss_skips_the_step_and_is_counted(box_dataset, tmp_path, nan_at, count_steps):
    boxes_json, _, images = box_dataset
    nan_at(4, 4)
    result = train(tiny_config(epochs=2), boxes_json, images, tmp_path / "run", progress=False)
    assert result.iterations == 12 and result.skipped_nonfinite == 1
    assert len(count_steps) == 11  # the optimizer did not step on the bad iteration
    rows = _log(tmp_path / "run")
    assert [int(r["skipped_nonfinite"]) for r in rows] == [0, 0, 0, 1] + [0] * 8
    assert rows[3]["total"] == "nan"
    assert "skipped non-finite iterations: 1" in (tmp_path / "run" / "data_report.txt").read_text()
    weights = torch.load(result.model_path, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_too_many_in_a_row_stop_with_one_line_and_the_last_checkpoint_intact(box_dataset, tmp_path, nan_at, capsys):
    """6 images per epoch: the fault starts at iteration 9 (epoch 2), after epoch 1's checkpoint."""
    boxes_json, _, images = box_dataset
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    before = {}

    def snapshot():  # what the checkpoint held when the fault began
        before.update(torch.load(last, weights_only=True))
        before["bytes"] = last.read_bytes()

    nan_at(9, on_first=snapshot)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(epochs=5).to_dict()))
    code = main(["train", "--train", str(boxes_json), "--images", str(images), "--sam", "tiny", "--out", str(run),
                 "--config", str(tmp_path / "config.yaml"), "--set", "train.max_nonfinite=3", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("dessam: error: training stopped: 3 non-finite losses in a row")
    assert "iteration 11" in err[0] and f"{last} is intact" in err[0]
    assert before["epoch"] == 1 and before["iteration"] == 6
    after = torch.load(last, weights_only=True)  # loadable
    assert last.read_bytes() == before["bytes"]
    assert after["state_dict"].keys() == before["state_dict"].keys()
    assert all(torch.equal(after["state_dict"][k], before["state_dict"][k]) for k in after["state_dict"])
    assert not (run / "checkpoints" / "epoch_002.pt").exists()
    rows = _log(run)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 12))
    assert [int(r["skipped_nonfinite"]) for r in rows] == [0] * 8 + [1, 1, 1]
    assert not list(run.rglob(".*.tmp"))


def test_a_fault_before_any_checkpoint_says_so(box_dataset, tmp_path, nan_at):
    boxes_json, _, images = box_dataset
    nan_at(1)
    with pytest.raises(DessamError, match="2 non-finite losses in a row at iteration 2; no checkpoint was written yet"):
        train(tiny_config(epochs=2, max_nonfinite=2), boxes_json, images, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
