"""After a run: ``evotui ablate``, ``evotui export-seed``; and ``evotui gpu``, the GPU stream.

Nothing heavy is imported here at module level; each command imports what it drives."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands import run_flags as rf
from evotui.errors import UserError

SourceArg = Annotated[Path, typer.Argument(
    help="A run directory or a frontier JSON.", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="The run's config (default: config.yaml of the run / beside the "
    "frontier JSON).")]


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("ablate")(ablate)
    app.command("export-seed")(export_seed)
    app.command("gpu")(gpu)


def ablate(
    source: SourceArg,
    top: Annotated[int, typer.Option(min=1, help="Ablate the N best frontier candidates.",
                                     show_default=False)],
    steps: Annotated[int | None, typer.Option(
        min=1, help="Training steps of every control and variant (default: the config's "
        "rung-1 budget).")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per control and variant.")] = 3,
    motif: Annotated[list[str] | None, typer.Option(
        "--motif", help="Only this motif (repeatable): retro, local_global->sliding, "
        "kv_groups->1, rope_theta->default, norm, ssm, moe->dense, extra:gated, "
        "extra:custom:<name>; quote a name with '>' or write -to- (moe-to-dense). "
        "Default: all.")] = None,
    by: Annotated[str | None, typer.Option(
        "--by", help="Rank by this objective (default: the run's first; ties broken by the "
        "others in order).")] = None,
    device: rf.Device = "auto",
    devices: rf.Devices = None,
    cpu_slots: rf.CpuSlots = 1,
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory (default: RUN_DIR/ablations).")] = None,
    keep_checkpoints: Annotated[bool, typer.Option(
        "--keep-checkpoints", help="Keep every control's and variant's checkpoint in "
        "OUT/checkpoints.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Switch off one motif at a time in the best candidates; train each variant and an
    unchanged control from the candidate's weights (same steps, seeds and data); report each
    motif's effect on every objective with its spread."""
    from evotui.engine.runner import RunFlags, check_data, devices_for, rung_steps
    from evotui.post.ablate import Settings, format_table, to_json
    from evotui.post.ablate import ablate as run_ablation
    from evotui.post.seed import open_source

    if out is not None and out.is_file():
        raise UserError.single("is a file; give a directory", path="--out", source=str(out))
    src = open_source(source, config)
    cfg = src.config()
    motifs = check_names(src.objectives or cfg.evolution.objectives, by, motif or [])
    slots = devices_for(RunFlags(device=device, devices=devices, cpu_slots=cpu_slots))
    check_data(cfg)  # a shard that cannot be read: one line now, not a failed training each
    settings = Settings(top=top, steps=steps or rung_steps(cfg, None).steps[0], seeds=seeds,
                        slots=slots, motifs=motifs or None, by=by, out_dir=out,
                        keep_checkpoints=keep_checkpoints)
    doc = run_ablation(src, settings, lambda text: typer.echo(text, err=True))
    typer.echo(to_json(doc) if as_json else format_table(doc))


def check_names(objectives: dict[str, str], by: str | None, motifs: list[str]) -> list[str]:
    """--by and --motif name things that exist (checked before anything slow starts); the
    motifs' canonical names."""
    from evotui.evolve.ablations import AblationError, get
    from evotui.post.ablate import ranking

    ranking(objectives, by)
    try:
        return list(dict.fromkeys(get(name).name for name in motifs))
    except AblationError as e:
        raise UserError.single(str(e), path="--motif") from None


def export_seed(
    source: SourceArg,
    candidate: Annotated[str, typer.Option("--id", help="The candidate's id (e.g. c0012).",
                                           show_default=False)],
    out_config: Annotated[Path, typer.Option(
        "--out-config", help="The YAML config to write.", show_default=False)],
    out_checkpoint: Annotated[Path | None, typer.Option(
        "--out-checkpoint", help="Also write the candidate's weights (safetensors) and start "
        "the config from them (train.init_checkpoint).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a run config whose model is one candidate's genome (and its weights), so the
    next run starts from it."""
    from evotui.post.seed import export_seed as export
    from evotui.post.seed import open_source

    for path, flag in ((out_config, "--out-config"), (out_checkpoint, "--out-checkpoint")):
        if path is not None and path.is_dir():
            raise UserError.single("is a directory; give a file name", path=flag,
                                   source=str(path))
    result = export(open_source(source, config), candidate, out_config, out_checkpoint)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {result.config} (candidate {result.candidate}'s genome"
               + (f", starting from {result.checkpoint}" if result.checkpoint else "") + ")")
    if result.checkpoint:
        typer.echo(f"wrote {result.checkpoint} (model weights)")
    typer.echo(f"next: evotui validate {result.config}; evotui run {result.config}")


def gpu(
    interval: Annotated[float, typer.Option(help="Seconds between samples (> 0).")] = 1.0,
    count: Annotated[int | None, typer.Option(
        min=1, help="Stop after N samples (default: until Ctrl-C).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Stream GPU utilisation, memory, temperature, power and clocks, like nvidia-smi dmon."""
    from evotui.gpu.dmon import stream

    if not interval > 0 or interval != interval or interval == float("inf"):
        raise UserError.single(f"must be a number of seconds > 0 (got {interval})",
                               path="--interval")
    try:
        stream(interval, count, as_json, write=lambda line: typer.echo(line))
    except BrokenPipeError:  # piped into head: the reader has all it wanted; the exit's
        devnull = os.open(os.devnull, os.O_WRONLY)  # flush of stdout must not fail
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)
