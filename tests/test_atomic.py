"""Files written atomically: whole or not at all, with the permissions a plain open() gives."""

import os
import stat

import pytest

from dessam.atomic import write_text_atomic


def test_written_files_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "report.md", "# report\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0o600: colleagues can read results


def test_a_failed_write_leaves_nothing(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    from dessam.atomic import write_atomic
    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "out.csv", fail)
    assert list(tmp_path.iterdir()) == []


def test_saved_weights_are_the_same_bytes_every_time(tmp_path):
    import torch

    from dessam.models.checkpoints import file_sha256, save_torch_atomic

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_torch_atomic(state, tmp_path / "a.pt")
    save_torch_atomic(state, tmp_path / "b.pt")
    assert file_sha256(tmp_path / "a.pt") == file_sha256(tmp_path / "b.pt")
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], state["w"])
