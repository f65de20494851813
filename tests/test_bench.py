"""`dessam bench`: the report has every row; the measuring helpers count and format correctly.

Nothing here asserts on how fast anything is.
"""

import re

import numpy as np

from dessam.workflows.agreement import MIN_MASKS, mask_agreement
from dessam.workflows.bench import run_bench
from dessam.workflows.measuring import PeakMemory, Row, Timing, format_table, measure

ROWS = ("Encoder", "Decoder, 100 boxes on one image", "End-to-end predict, 2 demo fields", "End-to-end predict, larger", "Training iteration", "Metrics")


def test_quick_bench_reports_every_row(tmp_path, trained_tiny):
    out = tmp_path / "bench.md"
    report = run_bench("cpu", quick=True, out=out, model=trained_tiny, progress=False)
    text = report.text
    assert out.read_text() == text
    assert not report.passed and "NOT passed: fewer than 100 masks" in text  # the tiny model finds few nuclei
    main, engines = text.split("## Engines")
    assert "| PyTorch |" in engines and "| ONNX Runtime fp32 |" in engines and "time to the first window" in engines
    table = [line for line in main.splitlines() if line.startswith("| ") and "Measurement" not in line]
    assert [next(name for name in ROWS if line.startswith(f"| {name}")) for line in table] == list(ROWS)
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        reference, fast, speedup = (float(re.match(r"[\d.e+-]+", cell).group()) for cell in cells[1:4])
        assert reference > 0 and fast > 0
        assert cells[3].endswith("x") and speedup > 0
    assert re.search(r"mean IoU (\d\.\d+)", text)
    assert 0 <= float(re.search(r"mean IoU (\d\.\d+)", text).group(1)) <= 1
    assert re.search(r"AJI on the demo's test splits, reference / fast: patch [\d.]+ / [\d.]+", text)
    assert "Reference path: fp32, 1 image(s) per encoder call, 50 prompts per decoder call, full decoding, " \
           "1000 test proposals" in text


def test_measure_warms_up_then_repeats():
    calls = []
    timing = measure(lambda: calls.append(1), "cpu", repeats=3)
    assert len(calls) == 4
    assert timing.seconds >= 0 and timing.warmup_s >= 0 and timing.peak_bytes >= 0


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MB, every page written
        block.sum()
    assert memory.peak >= 48 * 2**20


def test_table_speedups_and_targets():
    timing = Timing(1.0, 2**20, 1.0)
    rows = [
        Row("Throughput (img/s)", 10.0, 60.0, "img/s", timing, timing, ">= 5x", True),
        Row("Time (s)", 8.0, 2.0, "s", target=">= 5x", met=False),
    ]
    assert rows[0].speedup == 6.0 and rows[1].speedup == 4.0
    table = format_table(rows).splitlines()
    assert "6.00x" in table[2] and ">= 5x: met" in table[2] and "1 MB / 1 MB" in table[2]
    assert "4.00x" in table[3] and ">= 5x: NOT met" in table[3]


def test_agreement_checks_need_enough_masks_and_fail_when_paths_disagree():
    from dataclasses import replace

    from scenes import make_nuclei_scene
    from test_inference import _model

    first = _model()
    keep_all = replace(first.postprocess, score_threshold=0.0, max_detections=80)
    images = [make_nuclei_scene(np.random.default_rng(seed), 128)[0] for seed in (1, 2)]
    same = mask_agreement(first, first, images, keep_all)
    assert same.masks >= MIN_MASKS and same.iou == 1.0 and same.passed
    other = _model()
    other.model = first.model
    other.config = first.config.replace({"model.postprocess.mask_threshold": 3.0})  # another read-out: smaller masks
    disagreeing = mask_agreement(first, other, images, keep_all)
    assert disagreeing.masks >= MIN_MASKS and not disagreeing.passed and "FAILED" in disagreeing.verdict()
    few = mask_agreement(first, first, images[:1], replace(keep_all, max_detections=10))
    assert few.masks < MIN_MASKS and not few.passed and "NOT passed" in few.verdict()
