"""What `dessam eval` writes for people to read: the Markdown tables of a report (one row per method,
one column per metric; detection recall per nucleus size), its per-image CSV and the overlays of the
worst images."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_path
from ..metrics import SIZE_BUCKETS
from ..outputs.writers import write_overlay_png

# (key in metrics.json, column title, decimals); counts live under "counts" and are totals.
METRIC_COLUMNS = (
    ("aji", "AJI", 4),
    ("pq", "PQ", 4),
    ("dq", "DQ", 4),
    ("sq", "SQ", 4),
    ("pixel_f1", "Pixel F1", 4),
    ("object_dice", "Obj. Dice", 4),
    ("object_iou", "Obj. IoU", 4),
    ("object_hausdorff", "Obj. Hausdorff (px)", 2),
    ("adice", "ADice", 4),
    ("ap", "AP", 4),
    ("ap50", "AP50", 4),
    ("ap75", "AP75", 4),
    ("precision", "Det. P", 4),
    ("recall", "Det. R", 4),
    ("f1", "Det. F1", 4),
)
COUNT_COLUMNS = (("n_gt", "GT"), ("n_pred", "Pred."), ("tp", "TP"), ("fp", "FP"), ("fn", "FN"))


def _cell(value, decimals: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{decimals}f}"


def markdown_table(rows: Sequence[tuple]) -> str:
    """A Markdown table of `(row name, method summary)` pairs: one column per metric and count."""
    titles = ["Method"] + [title for _, title, _ in METRIC_COLUMNS] + [title for _, title in COUNT_COLUMNS]
    lines = ["| " + " | ".join(titles) + " |", "|---|" + "---:|" * (len(titles) - 1)]
    for name, summary in rows:
        counts = summary.get("counts") or {}
        cells = [name] + [_cell(summary.get(key), decimals) for key, _, decimals in METRIC_COLUMNS]
        cells += [_cell(counts.get(key), 0) for key, _ in COUNT_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def size_recall_table(rows: Sequence[tuple]) -> str:
    """A Markdown table of `(row name, method summary)` pairs: detection recall per nucleus size
    (found / nuclei of that size, pooled over images)."""
    titles = ["Method"] + [f"recall {name} px" for name, _, _ in SIZE_BUCKETS]
    lines = ["| " + " | ".join(titles) + " |", "|---|" + "---:|" * (len(titles) - 1)]
    for name, summary in rows:
        cells = [name]
        for bucket, _, _ in SIZE_BUCKETS:
            entry = (summary.get("recall_by_size") or {}).get(bucket)
            cells.append("n/a" if not entry or entry["recall"] is None
                         else f"{entry['recall']:.3f} ({entry['found']}/{entry['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def settings_lines(settings: dict) -> list:
    """Human-readable lines for the settings block of a report."""
    threshold = settings["score_threshold"]
    cleaning = (f"holes and islands under {settings['min_size']} px removed "
                f"({settings.get('connectivity', 4)}-connected)" if settings["remove_small"] else "off")
    sizes = settings.get("nucleus_size") or {}
    size_line = ([f"- nucleus size the images were brought by (nucleus scaling): median ratio to the ground truth's "
                  f"median box side {sizes['median_ratio']:.2f}, {sizes['within_25_percent']:.0%} of images within 25 %"]
                 if sizes.get("images") else [])
    return size_line + [
        f"- model: `{settings.get('model') or 'in memory'}` (SAM {settings['sam'].get('name')}, "
        f"sha256 {str(settings['sam'].get('sha256'))[:12]})",
        f"- data: `{settings['data']}` ({settings['n_images']} images)",
        f"- score threshold: {threshold if threshold > 0 else 'off'}; small-object removal: {cleaning}; "
        f"at most {settings['max_detections']} detections per image",
        f"- masks: logit > {settings.get('mask_threshold', 0)}; overlaps go to the "
        f"{settings.get('overlap_winner', 'higher-score').split('-')[0]} score",
    ]


def markdown_report(report: dict) -> str:
    lines = ["# Evaluation", ""] + settings_lines(report["settings"]) + [""]
    rows = [(method, summary) for method, summary in report["methods"].items()]
    lines.append(markdown_table(rows))
    lines.append("Means over images, except AP (COCO mask AP over all images) and the counts (totals). "
                 "Obj. = GlaS object-level; Det. = detection at IoU > 0.5.")
    lines += ["", "Detection recall by nucleus size (the longer side of the ground-truth box; nuclei found / "
              "nuclei of that size, over all images):", "", size_recall_table(rows)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _safe_stem(file_name: str) -> str:
    stem = Path(file_name).with_suffix("").as_posix().replace("/", "_")
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)


def write_overlays(folder: Path, worst: list) -> None:
    """Replace the previous worst-image overlays with the new ones."""
    if folder.is_dir():
        for old in folder.glob("worst_*.png"):
            old.unlink()
    for rank, (_, _, name, image, labels, gt_labels) in enumerate(worst, start=1):
        write_overlay_png(folder / f"worst_{rank}_{_safe_stem(name)}.png", image, labels, gt_labels)
