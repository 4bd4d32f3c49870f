"""The GPU pane: nvidia-smi-style gauges per device (utilisation, memory, temperature, power,
clocks), the memory and CPU of each of our worker processes, and, in the rows left, the history
of utilisation, memory and power as sparklines (one sample a second, the newest on the right);
without a GPU, CPU and RAM gauges and their history, and a one-line notice. Sampled about once
a second in a thread, never on the event loop."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType
from rich.text import Text
from textual.widget import Widget

from evotui.tui.sampler import Reading, Sampler, SystemSampler
from evotui.tui.spark import SPARKS, sparkline

NA = "N/A"
INTERVAL_S = 1.0


def _fmt(value: float | None, fmt: str, unit: str = "") -> str:
    return NA if value is None else f"{value:{fmt}}{unit}"


def _gib(mib: float | None) -> str:
    return NA if mib is None else f"{mib / 1024:.1f}"


def gauge(label: str, used: float | None, total: float | None, text: str, width: int) -> Text:
    """``label ████░░░░ text``: a bar of ``width`` cells, ``N/A`` when unreadable."""
    out = Text(f"{label:<4} ", style="bold")
    if used is None or not total:
        out.append("·" * width, style="bright_black")
    else:
        frac = min(1.0, max(0.0, used / total))
        full = round(frac * width)
        style = "green" if frac < 0.6 else ("yellow" if frac < 0.85 else "red")
        out.append("█" * full, style=style)
        out.append("░" * (width - full), style="bright_black")
    out.append(f" {text}")
    return out


def _mib(mib: float | None) -> str:
    if mib is None:
        return NA
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


HISTORY = 240  # samples kept per series (four minutes at one a second)


class History:
    """The recent values of each series (``gpu0 util``, ``cpu``, ...), newest last."""

    def __init__(self) -> None:
        self.series: dict[str, deque[float]] = {}
        self.last: float | None = None

    def add(self, reading: Reading, now: float) -> None:
        """Keep ``reading`` taken at ``now``; one sample per interval at most (readings that
        come closer together, or a clock that stands still, add nothing)."""
        if self.last is not None and now - self.last < INTERVAL_S / 2:
            return
        self.last = now

        def put(name: str, value: float | None) -> None:
            if value is not None:
                self.series.setdefault(name, deque(maxlen=HISTORY)).append(value)

        for g in reading.gpus:
            put(f"GPU{g.index} util", g.util_pct)
            if g.mem_used_mib is not None and g.mem_total_mib:
                put(f"GPU{g.index} mem", 100 * g.mem_used_mib / g.mem_total_mib)
            if g.power_w is not None and g.power_limit_w:
                put(f"GPU{g.index} power", 100 * g.power_w / g.power_limit_w)
        if not reading.gpus:
            put("CPU", reading.cpu_pct)
            if reading.ram_used_mib is not None and reading.ram_total_mib:
                put("RAM", 100 * reading.ram_used_mib / reading.ram_total_mib)

    def lines(self, width: int, rows: int) -> list[Text]:
        """``label ▁▂▅█ 87%`` per series (percent of the full scale), each as tall as the
        ``rows`` allow, its label on its bottom row."""
        names = list(self.series)[:rows]
        if not names:
            return []
        span = max(1, width - 17)
        out = []
        for i, name in enumerate(names):  # the rows shared out, the first series first
            tall = max(1, rows // len(names) + (i < rows % len(names)))
            values = list(self.series[name])[-span:]
            for r in range(tall - 1, -1, -1):  # top row first
                bars = "".join(_cell(v, r, tall) for v in values)
                label = f"{name:<11}"[:11] if r == 0 else " " * 11
                tail = f" {values[-1]:>3.0f}%" if r == 0 else ""
                out.append(Text.assemble((label, "bold"), " ", (bars, "cyan"), tail))
        return out


def _cell(value: float, row: int, rows: int) -> str:
    """Row ``row`` (0 at the bottom) of a bar ``rows`` high for ``value`` percent."""
    eighths = round(max(0.0, min(100.0, value)) / 100 * rows * 8) - row * 8
    if rows == 1:
        return sparkline([value], 1, 0.0, 100.0)
    return " " if eighths <= 0 else SPARKS[min(8, eighths) - 1]


def render_reading(reading: Reading | None, width: int, history: History | None = None,
                   height: int | None = None) -> Text:
    """The pane's text for one reading, fitted to ``width`` columns (and to ``height`` rows,
    the history filling what the gauges leave)."""
    if reading is None:
        return Text("sampling…", style="bright_black")
    bar = max(4, min(24, width - 22))
    lines: list[Text] = []
    for g in reading.gpus:
        lines.append(Text(f"GPU{g.index} {g.name or NA}", style="bold"))
        lines.append(gauge("util", g.util_pct, 100, _fmt(g.util_pct, '.0f', '%'), bar))
        lines.append(gauge("mem", g.mem_used_mib, g.mem_total_mib,
                           f"{_gib(g.mem_used_mib)}/{_gib(g.mem_total_mib)} GiB", bar))
        lines.append(Text(f"     {_fmt(g.temp_c, '.0f', '°C')}  "
                          f"{_fmt(g.power_w, '.0f')}/{_fmt(g.power_limit_w, '.0f', ' W')}  "
                          f"SM {_fmt(g.sm_clock_mhz, '.0f')} / mem "
                          f"{_fmt(g.mem_clock_mhz, '.0f', ' MHz')}"))
    if not reading.gpus:
        lines.append(Text(reading.notice or "no GPU", style="yellow"))
        cores = f" of {reading.cpu_count}" if reading.cpu_count else ""
        lines.append(gauge("CPU", reading.cpu_pct, 100,
                           f"{_fmt(reading.cpu_pct, '.0f', '%')}{cores}", bar))
        lines.append(gauge("RAM", reading.ram_used_mib, reading.ram_total_mib,
                           f"{_gib(reading.ram_used_mib)}/{_gib(reading.ram_total_mib)} GiB",
                           bar))
    for p in reading.procs:
        what = "GPU mem" if p.device.startswith("cuda") else "RSS"
        lines.append(Text(f"pid {p.pid} {p.candidate or '-'} {p.device}: {what} "
                          f"{_mib(p.mem_mib)} CPU {_fmt(p.cpu_pct, '.0f', '%')}",
                          style="cyan"))
    if not reading.procs:
        lines.append(Text("no worker process of this run", style="bright_black"))
    if history is not None and height is not None and height > len(lines) + 1:
        lines.append(Text("history (1 sample/s, newest right)", style="bright_black"))
        lines += history.lines(width, height - len(lines))
    for line in lines:
        line.truncate(width, overflow="ellipsis")
    return Text("\n").join(lines)


class GpuPane(Widget, can_focus=True):
    DEFAULT_CSS = """
    GpuPane { border: round $primary; }
    GpuPane:focus { border: round $accent; }
    """
    ALLOW_MAXIMIZE = True

    def __init__(self, sampler: Sampler | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "GPU"
        self.sampler = sampler
        self.engine_workers: Mapping[str, Any] = {}
        self.reading: Reading | None = None
        self.history = History()
        self._busy = False
        self._dirty = False

    def on_mount(self) -> None:
        self.sample()
        self.set_interval(INTERVAL_S, self.sample)

    def sample(self) -> None:
        """Take a reading in a thread worker; the pane updates when it arrives."""
        if self._busy:
            return
        self._busy = True
        self.run_worker(self._sample, thread=True, group="gpu", exit_on_error=False)

    def _sample(self) -> None:
        try:
            if self.sampler is None:
                self.sampler = SystemSampler()
            reading = self.sampler(dict(self.engine_workers))
        except Exception as e:  # noqa: BLE001 - a sensor that breaks must not take the app down
            reading = Reading(notice=f"sampling failed: {e}")
        finally:
            self._busy = False
        with contextlib.suppress(RuntimeError):  # the app closed meanwhile
            self.app.call_from_thread(self.show, reading)

    def show(self, reading: Reading) -> None:
        """Keep a new reading; it is drawn by :meth:`flush`, with the app's next refresh (one
        repaint for both rather than a frame of its own in between)."""
        clock = getattr(self.app, "clock", time.time)  # the app's clock (tests fix it)
        self.history.add(reading, clock())
        self.reading = reading
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self.refresh()

    def render(self) -> RenderableType:
        return render_reading(self.reading, max(20, self.content_size.width), self.history,
                              self.content_size.height)
