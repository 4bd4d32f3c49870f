"""Reading and steering a run from another terminal: ``evotui status``, ``evotui frontier``,
``evotui pause|resume|kill``. They read the run through :class:`evotui.engine.rundir.RunDir`
and write only the store's commands table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands.common import JsonOpt, RunDirArg
from evotui.errors import UserError

QueueOpt = Annotated[bool, typer.Option(
    "--queue", help="On a stopped run, leave the command for the next --resume.")]


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("frontier")(frontier)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("kill")(kill)


def status(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """What a run is doing: the engine's state, progress and ETAs, counts per status, running
    candidates, best so far. Exits 1 when the engine is not responding."""
    from evotui.engine.rundir import RunDir
    from evotui.tui.runstate import plan_of, read_state, report

    rd = RunDir.open(run_dir)
    s = rd.summary()
    with rd.store() as store:
        state, rungs = read_state(store), plan_of(store).rungs
    if as_json:
        typer.echo(json.dumps(s | {"state": state.as_dict()}, default=str))
    else:
        typer.echo(report(state, s, rungs))
    if not state.responding:
        raise typer.Exit(1)


def frontier(source: Annotated[Path, typer.Argument(help="A run directory or frontier JSON.")],
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The Pareto frontier of a run (its --out file, if it was started with one)."""
    from evotui.engine.rundir import FRONTIER_NAME, RunDir, read_frontier

    if RunDir.is_run(source):
        path = RunDir.open(source).frontier_path
    else:
        path = source / FRONTIER_NAME if source.is_dir() else source
    if not path.is_file():
        raise UserError.single("no frontier.json here yet", source=str(source))
    front = read_frontier(path)
    if as_json:
        typer.echo(json.dumps(front.doc))
        return
    typer.echo(f"{len(front.entries)} candidate(s) on the frontier of {source}")
    for e in front.entries:
        metrics = e.get("metrics") or {}
        shown = ", ".join(f"{k} {metrics.get(k, float('nan')):.4g}" for k in front.objectives)
        typer.echo(f"  {e['id']:<8} gen {e.get('generation', '?'):<3} rung {e.get('rung', '?')}"
                   f"  {shown}")


def _command(run_dir: Path, candidate: str, action: str, queue: bool = False) -> None:
    """Write one command; refuse at once (exit 2, nothing written) an unknown candidate or one
    nothing could ever act on (failed, killed or stopped); on a live run, wait a moment for the
    engine's answer and print it (exit 1 when the engine refused)."""
    from evotui.engine import integrity
    from evotui.engine.store import RunStore
    from evotui.lifecycle import TRANSITIONS, command_refusal

    integrity.check_name(candidate, "candidate")
    store = RunStore.open(run_dir)
    if not queue and integrity.engine_stopped(store):
        raise UserError.single(f"the run is stopped (no engine is running it), so nothing was "
                               f"sent; `evotui run --resume {run_dir}` continues it, and "
                               f"--queue leaves the {action} for that", source=str(run_dir))
    if store.has_candidate(candidate):
        status = store.candidate(candidate).status
        refusal = command_refusal(action, status)
        if refusal and not TRANSITIONS[status]:  # final: no engine will ever act on it
            raise UserError.single(f"{refusal}: nothing was sent", source=str(run_dir))
    cid = store.request(candidate, action)
    if not integrity.engine_alive(store):
        typer.echo(f"{action} {candidate}: requested (command {cid}); " + (
            "queued: the engine acts on it when the run is resumed" if queue else
            "the engine acts within about two seconds"))
        return
    row = store.wait_command(cid, timeout=3.0)
    if row["status"] == "done":
        typer.echo(f"{action} {candidate}: {row['outcome']} (command {cid})")
    elif row["status"] == "rejected":
        typer.echo(f"{action} {candidate}: refused: {row['outcome']} (command {cid})", err=True)
        raise typer.Exit(1)
    else:
        typer.echo(f"{action} {candidate}: requested (command {cid}); pending: the engine acts "
                   "at the next point it can (a running candidate's next step boundary)")


def pause(run_dir: RunDirArg, candidate: str, queue: QueueOpt = False) -> None:
    """Pause a candidate: it checkpoints at its next step and frees its slot."""
    _command(run_dir, candidate, "pause", queue)


def resume(run_dir: RunDirArg, candidate: str, queue: QueueOpt = False) -> None:
    """Resume a paused candidate from its checkpoint."""
    _command(run_dir, candidate, "resume", queue)


def kill(run_dir: RunDirArg, candidate: str, queue: QueueOpt = False) -> None:
    """Kill a candidate: it stops, is marked killed and never becomes a parent."""
    _command(run_dir, candidate, "kill", queue)
