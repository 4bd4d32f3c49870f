"""``evotui tui``, ``evotui attach`` and ``evotui bench tui``. Nothing heavy at import: Textual
and the engine are imported inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands import run_flags as rf
from evotui.engine.flags import RunFlags

QuietHeadless = Annotated[bool, typer.Option(
    help="Only the status line, no log lines: in the output of the headless run if you quit "
    "with 'leave it running'.")]


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("tui")(tui)
    app.command("attach")(attach)
    bench_app.command("tui")(bench_tui)


@rf.run_command
def tui(flags: RunFlags, quiet: QuietHeadless = False) -> None:
    """Run the evolutionary search in the live app: the same flags as `evotui run`; q stops
    it resumably or leaves it running headless."""
    from evotui.engine.runner import DEFAULT_CONFIG
    from evotui.tui.launch import run_in_app

    run_in_app(flags, DEFAULT_CONFIG, quiet)


def attach(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds run.db).")],
    readonly: Annotated[bool, typer.Option(
        "--readonly", help="Watch only: every key that changes the run is off.")] = False,
) -> None:
    """The live app on a run started elsewhere (e.g. `evotui run` under nohup); quitting leaves
    the run running."""
    from evotui.tui.launch import attach as attach_app

    attach_app(run_dir, readonly)


def bench_tui(
    seconds: Annotated[float, typer.Option(min=1.0, help="How long to measure.")] = 15.0,
    candidates: Annotated[int, typer.Option(min=1, help="Candidates training at once.")] = 24,
    rate: Annotated[float, typer.Option(
        min=0.1, help="Metric rows per second per candidate.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The app's refresh time (p50/p95) and CPU use, driven headless by a synthetic run: a
    separate process writes candidates, metric rows and events to a run store."""
    from evotui.bench import tui as bench

    result = bench.run(seconds=seconds, candidates=candidates, rate=rate)
    if as_json:
        typer.echo(json.dumps(result))
        return
    r = result["refresh_ms"]
    typer.echo(f"TUI refresh over {result['seconds']} s, {result['candidates']} candidates x "
               f"{result['rate']} rows/s ({result['rows_written']} rows written, "
               f"{result['rows_shown']} shown in {result['refreshes']} refreshes)")
    typer.echo(f"  refresh p50 {r['p50']} ms  p95 {r['p95']} ms  max {r['max']} ms "
               f"(read {result['read_ms']['p95']} ms p95, paint {result['paint_ms']['p95']} "
               "ms p95)")
    typer.echo(f"  CPU {result['cpu_pct_of_one_core']}% of one core, "
               f"{result['cpu_ms_per_refresh']} ms per refresh (targets: p95 < 50 ms, CPU < 20%)")
    typer.echo(f"  the cursor on {result['watched']}, a training candidate (its Loss curve "
               f"grows with every poll); load average {result['load_avg'][0]} at the start, "
               f"{result['load_avg'][1]} at the end")
