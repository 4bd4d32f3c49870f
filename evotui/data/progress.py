"""A progress bar per shard while caches are built: documents, tokens, MB read, tokens/s, ETA.

:class:`BuildBars` is an ``on_build`` callback for :func:`evotui.data.prepare` that draws
with rich on stderr; when stderr is not a terminal (a log file, nohup) it writes a plain line
per shard every ``LINE_EVERY`` seconds and when the shard is done.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from evotui.data.build import Progress as BuildProgress

LINE_EVERY = 10.0


class BuildBars:
    """Use as a context manager; pass the instance as ``on_build``; :meth:`say` prints a line
    above the bars."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.last: dict[str, float] = {}
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                             TextColumn("{task.fields[info]}"), console=self.console,
                             transient=False, refresh_per_second=4)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BuildBars:
        if self.live:
            self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.bars.__exit__(*exc)

    def say(self, message: str) -> None:
        self.console.print(message, style="dim", highlight=False, soft_wrap=True)

    def __call__(self, p: BuildProgress) -> None:
        if not self.live:
            if p.done or p.seconds - self.last.get(p.source, 0.0) >= LINE_EVERY:
                self.last[p.source] = p.seconds
                self.say(f"{p.source}: {describe(p)}")
            return
        total = p.budget if p.budget is not None else None
        info = describe(p)
        if p.source not in self.tasks:
            self.tasks[p.source] = self.bars.add_task(p.source[:48], total=total, info=info)
        task = self.tasks[p.source]
        if p.done and total is None:
            total = p.tokens or 1
        self.bars.update(task, completed=min(p.tokens, total or p.tokens), total=total,
                         info=info)


def describe(p: BuildProgress) -> str:
    """docs, tokens, MB read, tokens/s and ETA (or how it ended) as one line."""
    if p.cached:
        return f"{p.docs:,} docs  {p.tokens:,} tokens  cached"
    read = f"{p.bytes_read / 1e6:,.1f}"
    if p.total_bytes:
        read += f"/{p.total_bytes / 1e6:,.{0 if p.total_bytes >= 1e7 else 1}f}"
    line = (f"{p.docs:,} docs  {p.tokens:,} tokens  {read} MB read  "
            f"{p.tokens_per_s:,.0f} tok/s")
    if p.done:
        end = "budget met" if p.budget is not None and p.tokens >= p.budget else "source ended"
        return f"{line}  {end} in {p.seconds:.1f} s"
    if p.budget is not None and p.tokens_per_s > 0:
        eta = max(0.0, (p.budget - p.tokens) / p.tokens_per_s)
        line += f"  ETA {int(eta // 60)}:{int(eta % 60):02d}"
    return line
