"""Helpers shared by the benchmarks: peak-memory sampling and table output."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "reports" / "bench"


@dataclass
class Measurement:
    """Wall time, CPU time and peak resident memory of one block, and the machine's load after it.

    ``cpu_seconds`` is the user and system time of this process and its
    children during the block. ``load_average`` is the 1-minute load average
    when the block ended: above the core count, other jobs shared the cores.
    """

    seconds: float = 0.0
    peak_mib: float = 0.0
    cpu_seconds: float = 0.0
    load_average: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[Measurement]:
    """Time a block and sample this process's resident memory (children included) for its peak."""
    process = psutil.Process()
    result = Measurement()
    cpu_started = _cpu_seconds(process)
    stop = threading.Event()

    def rss() -> int:
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    peak = [rss()]

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                peak[0] = max(peak[0], rss())
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    thread.start()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = _cpu_seconds(process) - cpu_started
        result.load_average = os.getloadavg()[0]
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss())
        result.peak_mib = peak[0] / 2**20


def machine() -> dict[str, Any]:
    """Describe the machine a benchmark ran on."""
    return {
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.date.today().isoformat(),
    }


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return a Markdown table with right-aligned numbers."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    for row in text_rows:
        lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def publish(name: str, title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    """Print a benchmark table and write it to ``reports/bench/<name>.md`` and ``.json``."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    info = machine()
    table = format_table(header, rows)
    text = f"## {title}\n\n{table}\n\n" + "".join(f"- {n}\n" for n in notes)
    text += f"- machine: {info['cpu_count']} cores, {info['memory_gib']} GiB, Python {info['python']}, {info['date']}\n"
    print(text, flush=True)
    (OUT_DIR / f"{name}.md").write_text(text, encoding="utf-8")
    (OUT_DIR / f"{name}.json").write_text(
        json.dumps({"title": title, "header": list(header), "rows": [list(r) for r in rows], "notes": list(notes), "machine": info}, indent=2),
        encoding="utf-8",
    )
    return text
