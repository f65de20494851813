"""How `dessam bench` measures: time (the median of repeats after a warm-up, two paths alternating)
and peak memory, and the Markdown table its rows make."""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch


class PeakMemory:
    """Peak memory growth during a `with` block, in bytes (`.peak`).

    CUDA: `torch.cuda.max_memory_allocated` above what was allocated at the start. CPU: the
    process's resident set size sampled every millisecond from /proc/self/statm, above its size
    at the start after freed heap memory is handed back to the OS (where /proc is missing: the
    growth of the peak RSS from `resource`).
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> Optional[int]:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _max_rss() -> int:
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return value if platform.system() == "Darwin" else value * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._highest = max(self._highest, self._rss() or 0)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        release_free_memory()
        self._start = self._rss()
        self._thread = None
        if self._start is None:
            self._start = self._max_rss()
        else:
            self._highest = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._highest, self._rss() or 0) - self._start
        else:
            self.peak = self._max_rss() - self._start
        self.peak = max(int(self.peak), 0)
        return False


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so that RSS growth reflects what a call needs."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class Timing:
    seconds: float      # median of the timed repeats
    peak_bytes: int     # peak memory growth of the worst call, warm-up included
    warmup_s: float     # the first call (includes torch.compile where used)


def measure_alternating(fns: list, device, repeats: int, warmup: bool = True) -> list:
    """One `Timing` per callable: each is warmed up once, then they are timed in turn (ABAB...).

    Alternating makes a load that changes during the run (a shared machine) hit every callable
    alike. CUDA work is synchronised before each clock read; peak memory is the highest of a
    callable's own calls.
    """
    device = torch.device(device)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def timed(fn) -> tuple:
        with PeakMemory(device) as memory:
            start = clock()
            fn()
            elapsed = clock() - start
        return elapsed, memory.peak

    warmups = [timed(fn) if warmup else (0.0, 0) for fn in fns]
    runs = [[] for _ in fns]
    for _ in range(max(repeats, 1)):
        for fn, times in zip(fns, runs):
            times.append(timed(fn))
    return [
        Timing(statistics.median(t for t, _ in times), max([peak for _, peak in times] + [first[1]]), first[0])
        for first, times in zip(warmups, runs)
    ]


def measure(fn: Callable[[], object], device, repeats: int, warmup: bool = True) -> Timing:
    """Warm up once, then time `repeats` calls (see `measure_alternating`)."""
    return measure_alternating([fn], device, repeats, warmup)[0]


@dataclass
class Row:
    label: str                  # what is measured, with its unit
    reference: float            # in `unit`
    fast: float
    unit: str                   # "img/s", "ms" or "s"
    reference_timing: Optional[Timing] = None
    fast_timing: Optional[Timing] = None
    target: str = ""            # e.g. ">= 4x"
    met: Optional[bool] = None
    pixels_per_image: Optional[float] = None  # img/s rows: also given in megapixels per second

    @property
    def speedup(self) -> float:
        if self.unit == "img/s":
            return self.fast / self.reference
        return self.reference / self.fast


def _mb(value: Optional[int]) -> str:
    return "—" if value is None else f"{value / 2**20:.0f} MB"


def _number(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def format_table(rows: list) -> str:
    lines = [
        "| Measurement | Reference | Fast | Speed-up | Target | Peak memory, reference / fast |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        target = "—" if not row.target else f"{row.target}: {'met' if row.met else 'NOT met'}"
        memory = "—"
        if row.reference_timing is not None and row.fast_timing is not None:
            memory = f"{_mb(row.reference_timing.peak_bytes)} / {_mb(row.fast_timing.peak_bytes)}"
        cells = [_number(row.reference, row.unit), _number(row.fast, row.unit)]
        if row.pixels_per_image:
            cells = [f"{cell} ({value * row.pixels_per_image / 1e6:.2f} Mpx/s)"
                     for cell, value in zip(cells, (row.reference, row.fast))]
        lines.append(f"| {row.label} | {cells[0]} | {cells[1]} | {row.speedup:.2f}x | {target} | {memory} |")
    return "\n".join(lines)


def targeted(row: Row, target: str, ratio: float) -> Row:
    row.target, row.met = target, row.speedup >= ratio
    return row
