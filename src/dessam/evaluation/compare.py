"""`dessam compare`: several evaluation reports side by side in one Markdown table.

Typical use is an ablation: models trained with the edge-aware loss off, or without the prompt
token, each evaluated with `dessam eval`; `compare_reports` reads each `REPORT/metrics.json` and
writes one row per (report, method).
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Optional, Sequence

from ..atomic import write_text_atomic
from ..data.coco import read_json
from ..errors import DessamError
from .report import COUNT_COLUMNS, METRIC_COLUMNS, markdown_table

REPORT_FILE = "metrics.json"


def _report_file(location) -> Path:
    """A report folder or its metrics.json -> the metrics.json path."""
    path = Path(location)
    return path / REPORT_FILE if path.is_dir() or path.suffix != ".json" else path


def _is_number(value) -> bool:
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _check_summary(summary, path: Path, method: str) -> None:
    if not isinstance(summary, dict):
        raise DessamError(f"{path}: method {method!r} is not a mapping of metrics; re-run `dessam eval`")
    counts = summary.get("counts", {})
    if not isinstance(counts, dict):
        raise DessamError(f"{path}: 'counts' of method {method!r} is not a mapping; re-run `dessam eval`")
    values = [(key, summary.get(key)) for key, _, _ in METRIC_COLUMNS]
    values += [(key, counts.get(key)) for key, _ in COUNT_COLUMNS]
    for key, value in values:
        if not _is_number(value):
            raise DessamError(f"{path}: metric {key!r} of method {method!r} is {value!r}, not a number; "
                              "re-run `dessam eval`")


def read_report(location) -> dict:
    """Load and check one `metrics.json` (given as the report folder or the file)."""
    path = _report_file(location)
    if not path.is_file():
        raise DessamError(f"{path}: no evaluation report here; run `dessam eval ... --out {path.parent}` first")
    report = read_json(path)
    methods = report.get("methods") if isinstance(report, dict) else None
    if not isinstance(methods, dict) or not methods:
        raise DessamError(f"{path}: not a dessam evaluation report (no 'methods'); re-run `dessam eval`")
    for method, summary in methods.items():
        _check_summary(summary, path, method)
    settings = report.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise DessamError(f"{path}: 'settings' is not a mapping; re-run `dessam eval`")
    return report


def _default_names(locations: Sequence) -> list:
    """Each report's folder name; the full path where folder names repeat."""
    folders = [_report_file(location).parent for location in locations]
    names = [folder.name or str(folder) for folder in folders]
    return [str(folder) if names.count(name) > 1 else name for folder, name in zip(folders, names)]


def _settings_line(name: str, settings: dict) -> str:
    threshold = settings.get("score_threshold")
    removal = f"{settings.get('min_size')} px" if settings.get("remove_small") else "off"
    return (f"- {name}: model `{settings.get('model')}`, data `{settings.get('data')}`, "
            f"score threshold {threshold if threshold else 'off'}, small-object removal {removal}")


def compare_reports(report_dirs: Sequence, out_path=None, names: Optional[Sequence[str]] = None) -> str:
    """One Markdown table (rows: report name / method) from several evaluation reports.

    `report_dirs`: report folders (or their metrics.json); `names`: row labels, one per report
    (default: the folder names). Returns the Markdown; also writes it to `out_path` if given.
    """
    report_dirs = list(report_dirs)
    if not report_dirs:
        raise DessamError("dessam compare: give at least one report folder (written by `dessam eval --out`)")
    if names is None:
        names = _default_names(report_dirs)
    elif len(names) != len(report_dirs):
        raise DessamError(f"dessam compare: {len(names)} names for {len(report_dirs)} reports; give one name per report")
    reports = [read_report(location) for location in report_dirs]
    rows = [(f"{name} / {method}", summary)
            for name, report in zip(names, reports) for method, summary in report["methods"].items()]
    lines = ["# Comparison", "", markdown_table(rows), "Settings:", ""]
    lines += [_settings_line(name, report.get("settings") or {}) for name, report in zip(names, reports)]
    text = "\n".join(lines) + "\n"
    if out_path is not None:
        write_text_atomic(out_path, text)
    return text
