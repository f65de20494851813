"""The demo end to end, in its quick form: files a user looks at are all there."""

import pytest

from dessam.models.default_teacher import DEFAULT_TEACHER_PATH


@pytest.mark.skipif(not DEFAULT_TEACHER_PATH.is_file(), reason="the bundled default teacher is not built")
def test_quick_demo_writes_the_report_curves_and_overlays(tmp_path):
    from dessam.demo import SPLITS, run_demo

    out = tmp_path / "demo"
    text = run_demo(out, quick=True, progress=False, n_train=6, n_test=2)
    assert (out / "report.md").read_text() == text
    assert (out / "loss_curve.png").stat().st_size > 1000
    for name, *_ in SPLITS:
        report = out / "reports" / name
        assert (report / "metrics.json").is_file() and (report / "per_image.csv").is_file()
        assert list((report / "overlays").glob("*.png"))
        for method in ("box-as-mask", "sam", "des-sam", "teacher-gt-boxes"):
            assert f"{name} / {method}" in text
