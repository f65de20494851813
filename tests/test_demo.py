"""The demo end to end, in its quick form: files a user looks at are all there."""

import pytest

from dessam.models.default_teacher import DEFAULT_TEACHER_PATH


@pytest.mark.skipif(not DEFAULT_TEACHER_PATH.is_file(), reason="the bundled default teacher is not built")
def test_quick_demo_writes_the_report_curves_and_overlays(tmp_path):
    from dessam.workflows.demo import SPLITS, run_demo

    import torch

    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    text = run_demo(out, quick=True, progress=False, n_train=6, n_test=2)
    assert (out / "report.md").read_text() == text
    assert "1 thread, fp32, deterministic algorithms" in text   # what the table was made with
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()  # as before
    assert (out / "loss_curve.png").stat().st_size > 1000
    for name, *_ in SPLITS:
        report = out / "reports" / name
        assert (report / "metrics.json").is_file() and (report / "per_image.csv").is_file()
        assert list((report / "overlays").glob("*.png"))
        for method in ("box-as-mask", "sam", "des-sam", "teacher-gt-boxes"):
            assert f"{name} / {method}" in text


def test_the_demo_holds_the_math_libraries_to_one_instruction_set_unless_told_otherwise(monkeypatch):
    from dessam.workflows.demo import CPU_MATH, pin_cpu_math

    for key in CPU_MATH:  # set first, so that monkeypatch restores the environment as it found it
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    monkeypatch.setenv("MKL_CBWR", "AUTO")   # a value already set wins: runs can be compared
    pin_cpu_math()
    import os

    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert os.environ["MKL_CBWR"] == "AUTO" and os.environ["OMP_NUM_THREADS"] == "1"
