"""The flags of a run, written once: ``evotui run`` and ``evotui tui`` take the same ones.

Only Typer annotations live here (no heavy imports): each alias is the type of one parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
