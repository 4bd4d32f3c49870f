"""The flags of a run, written once: ``evotui run`` and ``evotui tui`` take the same ones.

Each field of :class:`evotui.engine.flags.RunFlags` (but the internal ones) has its Typer option
here, in :data:`OPTIONS`; :func:`run_command` gives a command every one of them and hands it one
``RunFlags`` built by keyword. A new run flag is a field of ``RunFlags`` and its entry here.
Other commands take single flags by their aliases (``Device``, ``Devices``, ``CpuSlots``).

Only Typer annotations live here (no heavy imports).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from evotui.engine.flags import INTERNAL, RunFlags

Config = Annotated[Path | None, typer.Argument(help="A YAML config (default: tiny).")]
Generations = Annotated[int | None, typer.Option(min=1)]
Steps = Annotated[int | None, typer.Option(
    min=1, help="Steps of the full budget (rung 2); rung 1 keeps the config's.")]
EvalBatches = Annotated[int | None, typer.Option("--eval-batches", min=1)]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda (all visible GPUs).")]
Devices = Annotated[str | None, typer.Option(help="GPU indices, e.g. 0,1.")]
CheckpointDir = Annotated[Path | None, typer.Option("--checkpoint-dir")]
Out = Annotated[Path | None, typer.Option(help="Frontier JSON (default: "
                                          "RUN_DIR/frontier.json).")]
Log = Annotated[Path | None, typer.Option(help="Log file (default: RUN_DIR/run.log).")]
RunDir = Annotated[Path | None, typer.Option("--run-dir")]
CleanupOldCheckpoints = Annotated[bool, typer.Option(
    "--cleanup-old-checkpoints", help="Delete this run's checkpoints no candidate needs.")]
ParentSelection = Annotated[str | None, typer.Option(
    "--parent-selection", help="lexicase, epsilon_lexicase, pareto, tournament or map_elites.")]
Population = Annotated[int | None, typer.Option(min=2)]
Seed = Annotated[int | None, typer.Option()]
Resume = Annotated[Path | None, typer.Option(help="Continue the run in this directory.")]
CpuSlots = Annotated[int, typer.Option("--cpu-slots", min=1,
                                       help="Parallel workers on a CPU machine.")]
Quiet = Annotated[bool, typer.Option(help="Only the status line, no log lines.")]
Data = Annotated[str, typer.Option(
    "--data", help="config (the config's shards) or offline (the corpus evotui ships, the "
    "model unchanged; see README, Data).")]
Executor = Annotated[str | None, typer.Option(
    "--executor", help="local (worker processes on this machine) or ray (actors on a Ray "
    "cluster); default: a resumed run's own, else local.")]
RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", help="With --executor ray: auto or HOST:PORT of the cluster (default: a "
    "Ray started here).")]
RayCheckpoints = Annotated[str | None, typer.Option(
    "--ray-checkpoints", help="With --executor ray: auto, shared or copy (how checkpoints "
    "reach the nodes).")]

# RunFlags field -> its option, in the order --help lists them
OPTIONS: dict[str, Any] = {
    "config": Config, "generations": Generations, "steps": Steps, "eval_batches": EvalBatches,
    "device": Device, "devices": Devices, "checkpoint_dir": CheckpointDir, "out": Out,
    "log": Log, "run_dir": RunDir, "cleanup_old_checkpoints": CleanupOldCheckpoints,
    "parent_selection": ParentSelection, "population": Population, "seed": Seed,
    "resume": Resume, "cpu_slots": CpuSlots, "data": Data,
    "executor": Executor, "ray_address": RayAddress, "ray_checkpoints": RayCheckpoints,
}


def _flag_parameters() -> list[inspect.Parameter]:
    found = {f.name: f for f in fields(RunFlags) if f.name not in INTERNAL}
    if set(found) != set(OPTIONS):
        raise TypeError(f"run flags without an option: {sorted(set(found) - set(OPTIONS))}; "
                        f"options without a flag: {sorted(set(OPTIONS) - set(found))}")
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=option,
                              default=None if found[name].default is MISSING
                              else found[name].default)
            for name, option in OPTIONS.items()]


def run_command(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn(flags: RunFlags, **own)`` as a Typer command taking every run flag, then ``fn``'s
    own options."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
           for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "flags"]
    params = _flag_parameters() + own

    @functools.wraps(fn)
    def command(**kw: Any) -> None:
        flags = RunFlags(**{name: kw.pop(name) for name in OPTIONS})
        fn(flags, **kw)

    del command.__wrapped__  # Typer reads the signature below, not fn's
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
