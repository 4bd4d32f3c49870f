"""``evotui bench faults``: kill -9, SIGTERM, a second engine, commands at each phase, a full
disk and a damaged ``init_checkpoint``, injected into tiny runs on CPU; each fault's expected
outcome is checked by the suite, and a failed one makes the exit code 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    bench_app.command("faults")(bench_faults)


def bench_faults(
    trials: Annotated[int, typer.Option(min=1, help="kill -9 instants (other cases scale "
                                        "with it).")] = 10,
    steps: Annotated[int, typer.Option(min=5, help="Full budget (rung 2) of each run.")] = 10,
    population: Annotated[int, typer.Option(min=2, help="Candidates per run (the phase "
                                             "cases use 3).")] = 2,
    seed: Annotated[int, typer.Option(help="Seeds the runs and the kill instants.")] = 0,
    case: Annotated[list[str] | None, typer.Option(
        "--case", help="Run only this case (repeatable).")] = None,
    workdir: Annotated[Path | None, typer.Option(
        help="Keep the runs here (default: a temporary directory).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fault injection on tiny runs: finished candidates before and after --resume, lost,
    duplicates, orphan processes, exports against the store, per fault."""
    from evotui.bench import faults

    unknown = sorted(set(case or []) - set(faults.all_cases()))
    if unknown:
        raise UserError.single(f"unknown case {', '.join(unknown)}; cases: "
                               f"{', '.join(faults.all_cases())}", path="--case")
    def say(msg: str) -> None:
        typer.echo(msg, err=True)

    result = faults.run(trials, workdir, seed, steps, population, case, say)
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        t = result["totals"]
        typer.echo(f"faults on tiny ({result['trials']} trials, {result['wall_s']} s): lost "
                   f"{t['lost']}, duplicates {t['duplicates']}, orphans {t['orphans']}, "
                   f"inconsistent exports {t['inconsistent_exports']}")
        for name, c in result["cases"].items():
            typer.echo(f"  {name:<20} {'ok' if c['ok'] else 'FAILED'}")
        for line in result["failed_expectations"]:
            typer.echo(f"  failed: {line}")
    if not result["ok"]:
        raise typer.Exit(1)
