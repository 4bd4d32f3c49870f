"""The GPU pane: nvidia-smi-style gauges per device (utilisation, memory, temperature, power,
clocks) and the memory of each of our worker processes; without a GPU, CPU and RAM gauges and
a one-line notice. Sampled about once a second in a thread, never on the event loop."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType
from rich.text import Text
from textual.widget import Widget

from evotui.tui.sampler import Reading, Sampler, SystemSampler

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


def render_reading(reading: Reading | None, width: int) -> Text:
    """The pane's text for one reading, fitted to ``width`` columns."""
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
                          f"{_mib(p.mem_mib)}", style="cyan"))
    if not reading.procs:
        lines.append(Text("no worker process of this run", style="bright_black"))
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
        if reading != self.reading:
            self.reading = reading
            self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self.refresh()

    def render(self) -> RenderableType:
        return render_reading(self.reading, max(20, self.content_size.width))
