"""Data-parallel training with torchrun: two CPU processes (gloo) end with identical weights."""

import csv
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from scenes import tiny_config

from dessam.training import distributed
from dessam.models.checkpoints import state_sha256

RANKS = 2
EPOCHS = 2  # each rank: 3 steps per epoch on its own 3 of the 6 images

# Runs `dessam` under torchrun with rank 1's loss made non-finite at its second iteration only.
NAN_ON_RANK_1 = textwrap.dedent("""
    import os
    import sys

    from dessam.commands import main
    from dessam.models.dessam import DESSAM

    real = DESSAM.weighted_total
    calls = []

    def faulty(self, losses):
        calls.append(1)
        total = real(self, losses)
        return total * float("nan") if os.environ["RANK"] == "1" and len(calls) == 2 else total

    DESSAM.weighted_total = faulty
    sys.exit(main(sys.argv[1:]))
""")


def _torchrun(target: list, args: list, digests, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", DESSAM_RANK_DIGEST_DIR=str(digests))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}",
               *target, *args]
    # a process group of its own, so that a run that hangs is stopped with all its ranks
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("torchrun did not finish in 240 s: the ranks fell out of step")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _train_args(box_dataset, tmp_path, run):
    boxes_json, _, images = box_dataset
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=EPOCHS).to_dict()))
    return ["train", "--train", str(boxes_json), "--images", str(images), "--config", str(config), "--sam", "tiny",
            "--device", "cpu", "--out", str(run), "--quiet"]


def _check_ranks_agree(run, digests, iterations):
    """Every rank wrote the same digest, which is that of model.pt; rank 0 alone wrote the run files."""
    assert sorted(p.name for p in digests.iterdir()) == [f"rank{r}.sha256" for r in range(RANKS)]
    values = {(digests / f"rank{r}.sha256").read_text().strip() for r in range(RANKS)}
    assert len(values) == 1
    model = torch.load(run / "model.pt", weights_only=True)
    assert values == {state_sha256(model["state_dict"])}
    assert model["iteration"] == iterations
    with open(run / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == list(range(1, iterations + 1))  # one writer, no repeats
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"epoch_{e:03d}.pt" for e in
                                                                      range(1, EPOCHS + 1)] + ["last.pt"]
    assert not list(run.rglob(".*.tmp"))
    return rows


def test_torchrun_two_cpu_ranks_train_in_sync(box_dataset, tmp_path):
    run, digests = tmp_path / "run", tmp_path / "digests"
    done = _torchrun(["-m", "dessam"], _train_args(box_dataset, tmp_path, run), digests, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # 6 images over 2 ranks: 3 steps per epoch, each on 2 images (one per rank)
    rows = _check_ranks_agree(run, digests, iterations=3 * EPOCHS)
    assert all(r["skipped_nonfinite"] == "0" for r in rows)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["epochs"] == EPOCHS


def test_a_non_finite_loss_on_one_rank_is_skipped_by_every_rank(box_dataset, tmp_path):
    """Rank 0's loss is finite, rank 1's is not: both skip the step together and stay in sync."""
    run, digests = tmp_path / "run", tmp_path / "digests"
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    done = _torchrun([str(script)], _train_args(box_dataset, tmp_path, run), digests, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _check_ranks_agree(run, digests, iterations=3 * EPOCHS)
    assert [r["skipped_nonfinite"] for r in rows] == ["0", "1"] + ["0"] * (3 * EPOCHS - 2)
    assert rows[1]["total"] != "nan"  # rank 0 (which logs) saw a finite loss and still skipped
    assert "1 non-finite steps skipped" in done.stdout


@pytest.mark.parametrize("count", [1, 5, 6, 7])
def test_shards_are_disjoint_cover_everything_and_have_equal_length(count):
    items = list(range(count))
    shards = [distributed.shard(items, distributed.DistContext(True, rank, 3)) for rank in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert sorted(set().union(*shards)) == items
    if count % 3 == 0:
        assert sorted(sum(shards, [])) == items


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = distributed.current()
    assert not context.enabled and context.is_main
    assert distributed.shard([1, 2, 3], context) == [1, 2, 3]
    assert distributed.all_finite(context, torch.tensor(1.0))
    assert not distributed.all_finite(context, torch.tensor(float("inf")))
