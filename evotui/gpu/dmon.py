"""``evotui gpu``: a headless stream of the GPU figures the TUI shows, like ``nvidia-smi dmon``.

One line per GPU per sample (time, index, SM and memory-controller utilisation, framebuffer
used/total, temperature, power/limit, SM and memory clocks), a header repeated every
:data:`HEADER_EVERY` lines, ``N/A`` for a field the device does not report; or one JSON object
per line. The sampler is a function argument (``evotui.gpu.nvml.sample`` by default), so the
formatting is testable with made-up samples. Imports no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evotui.gpu import nvml
from evotui.gpu.nvml import GpuSample

HEADER_EVERY = 20  # data lines between headers
NA = "N/A"

Sampler = Callable[[], Sequence[GpuSample]]
Write = Callable[[str], None]


@dataclass(frozen=True)
class Column:
    title: str
    unit: str
    width: int


COLUMNS = (
    Column("time", "hh:mm:ss", 8), Column("gpu", "idx", 3), Column("sm", "%", 4),
    Column("mem", "%", 4), Column("fb used/total", "MiB", 15), Column("temp", "C", 4),
    Column("power/limit", "W", 11), Column("sm clk", "MHz", 6), Column("mem clk", "MHz", 7),
)


def _num(value: float | None, digits: int = 0) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def _pair(a: float | None, b: float | None) -> str:
    if a is None and b is None:
        return NA
    return f"{_num(a)}/{_num(b)}"


def _line(cells: Sequence[str], prefix: str = " ") -> str:
    return prefix + " ".join(c.rjust(col.width) for c, col in zip(cells, COLUMNS, strict=True))


def header() -> list[str]:
    """Two lines, as ``nvidia-smi dmon`` prints them: names, then units."""
    return [_line([c.title for c in COLUMNS], "#"), _line([c.unit for c in COLUMNS], "#")]


def row(s: GpuSample, at: float) -> str:
    return _line([
        time.strftime("%H:%M:%S", time.localtime(at)), str(s.index), _num(s.util_pct),
        _num(s.mem_util_pct), _pair(s.mem_used_mib, s.mem_total_mib), _num(s.temp_c),
        _pair(s.power_w, s.power_limit_w), _num(s.sm_clock_mhz), _num(s.mem_clock_mhz),
    ])


def as_json(s: GpuSample, at: float) -> dict[str, Any]:
    """One sample of one GPU as a JSON object (null for a field the device does not report)."""
    return {"time": round(at, 3), "gpu": s.index, "name": s.name, "sm_pct": s.util_pct,
            "mem_pct": s.mem_util_pct, "fb_used_mib": s.mem_used_mib,
            "fb_total_mib": s.mem_total_mib, "temp_c": s.temp_c, "power_w": s.power_w,
            "power_limit_w": s.power_limit_w, "sm_clock_mhz": s.sm_clock_mhz,
            "mem_clock_mhz": s.mem_clock_mhz}


def stream(interval: float = 1.0, count: int | None = None, json_lines: bool = False, *,
           write: Write = print, sampler: Sampler | None = None,
           available: Callable[[], tuple[bool, str]] | None = None,
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.time) -> int:
    """Write samples every ``interval`` seconds, ``count`` times (None: until Ctrl-C, which
    ends it quietly). The header comes first and again once :data:`HEADER_EVERY` data lines
    followed it, always before a sample's first line. Without a GPU, one line saying why.
    Returns the exit code: 0."""
    if interval <= 0:
        raise ValueError("interval must be > 0")
    import json

    ok, why = (available or nvml.available)()
    if not ok:
        if json_lines:
            write(json.dumps({"gpu": None, "available": False, "reason": why}))
        else:
            write(f"evotui gpu: no GPU to monitor: {why}")
        return 0
    sampler = sampler or nvml.sample
    since_header: int | None = None  # data lines since the last header
    taken = 0
    try:
        while count is None or taken < count:
            started = clock()
            samples = list(sampler())
            taken += 1
            if not json_lines and (since_header is None or since_header >= HEADER_EVERY):
                for h in header():
                    write(h)
                since_header = 0
            for s in samples:
                if json_lines:
                    write(json.dumps(as_json(s, started)))
                else:
                    write(row(s, started))
                    since_header = (since_header or 0) + 1
            if count is None or taken < count:
                sleep(max(0.0, interval - (clock() - started)))
    except KeyboardInterrupt:
        return 0
    return 0
