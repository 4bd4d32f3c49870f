"""After a run: ``evotui ablate`` (and its table), ``evotui export-seed``; and ``evotui gpu``,
the GPU stream.

Nothing heavy is imported here at module level; each command imports what it drives."""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from evotui.commands import run_flags as rf
from evotui.commands.common import progress
from evotui.errors import UserError
from evotui.jsonio import finite
from evotui.lifecycle import FINISHED

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
        "kv_groups->1, rope_theta->default, norm, ssm, moe->dense, alibi, qk_norm, "
        "attn_gate, key_select->dense, linear->softmax, mla->mha, extra:<kind> (gated, "
        "memory_tokens, chunk_memory, assoc_memory, layer_scale, branch_router), "
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
    from evotui import jsonio
    from evotui.engine.devices import slots
    from evotui.engine.runner import check_data, rung_steps
    from evotui.post.ablate import Settings
    from evotui.post.ablate import ablate as run_ablation
    from evotui.post.seed import open_source

    if out is not None and out.is_file():
        raise UserError.single("is a file; give a directory", path="--out", source=str(out))
    src = open_source(source, config)
    cfg = src.config()
    motifs = check_names(src.objectives or cfg.evolution.objectives, by, motif or [])
    used = slots(device, devices, cpu_slots)
    check_data(cfg, progress)  # a shard that cannot be read: one line now, not a failed training
    settings = Settings(top=top, steps=steps or rung_steps(cfg, None).steps[0], seeds=seeds,
                        slots=used, motifs=motifs or None, by=by, out_dir=out,
                        keep_checkpoints=keep_checkpoints)
    doc = run_ablation(src, settings, lambda text: typer.echo(text, err=True))
    typer.echo(jsonio.dumps(doc) if as_json else format_table(doc))


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


# -- the ablation table --------------------------------------------------------------------

def _g(x: float, digits: int, sign: bool = False) -> str:
    """``digits`` significant digits, without an exponent between 1e-3 and 1e6."""
    plus = "+" if sign else ""
    if x == 0 or not 1e-3 <= abs(x) < 1e6:
        return f"{x:{plus}.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:{plus}.{decimals}f}"


def _cell(e: Mapping[str, Any] | None) -> str:
    if not e or not e.get("n"):
        return "not measured"
    spread = "n/a" if e.get("std") is None else _g(e["std"], 2)
    return f"{_g(e['mean'], 4, True)} ± {spread} ({e['n']}) {e['verdict']}"


def _failures(runs: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in runs if r.get("status") not in FINISHED]
    if not bad:
        return ""
    return f"  [{len(bad)}/{len(runs)} failed: {bad[0].get('error')}]"


def format_table(doc: Mapping[str, Any]) -> str:
    """``ablation.json`` as the table ``evotui ablate`` prints."""
    from evotui.post.effects import NOISE

    objectives = doc["objectives"]
    heads = [f"{k} ({d})" for k, d in objectives.items()]
    width = max([30, *(len(h) + 2 for h in heads)])
    mw = max([22, *(len(m) + 2 for m in doc["motifs"])])
    line = lambda first, cells: (first.ljust(mw) + "".join(c.ljust(width) for c in cells)  # noqa: E731
                                 ).rstrip()
    out = [f"effect = variant - control: mean ± std (n seeds); worse/better: the variant "
           f"against the control, when |mean| > {NOISE:g} std/sqrt(n), else within noise "
           f"({doc['steps']} step{'s' if doc['steps'] != 1 else ''}, seeds {doc['seeds']})"]
    for c in doc["candidates"]:
        out += ["", f"{c['id']} (rank {c['rank']} by {', '.join(doc['ranked_by'])}), from "
                f"{c['checkpoint']}", line("motif", heads)]
        control = c["control"]["runs"]
        means = []
        for obj in objectives:
            vals = [v for r in control if (v := finite((r.get("metrics") or {}).get(obj)))
                    is not None]
            means.append(_g(statistics.fmean(vals), 4) if vals else "not measured")
        out.append(line("control (value)", means) + _failures(control))
        for name, m in c["motifs"].items():
            if not m["applies"]:
                out.append(line(name, [f"n/a: {m['reason']}"]))
                continue
            cells = [_cell(m["effects"].get(obj)) for obj in objectives]
            fresh = max((r.get("fresh") or 0 for r in m["runs"]), default=0)
            note = f"  [{fresh} tensor(s) start fresh]" if fresh else ""
            out.append(line(name, cells) + _failures(m["runs"]) + note)
    if len(doc["candidates"]) > 1 and doc["pooled"]:
        out += ["", f"pooled over {len(doc['candidates'])} candidates", line("motif", heads)]
        for name, per in doc["pooled"].items():
            out.append(line(name, [_cell(per.get(obj)) for obj in objectives]))
    if doc.get("path"):
        out += ["", f"wrote {doc['path']}"]
    return "\n".join(out)
