"""After a run: ``evotui scale``, ``evotui fit-scaling`` and ``evotui report``.

Nothing heavy at import time: numpy, scipy and matplotlib load inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("scale")(scale)
    app.command("fit-scaling")(fit_scaling)
    app.command("report")(report)


def scale(
    config: Annotated[Path, typer.Argument(help="A YAML config (see docs/dsl.md).")],
    dim: Annotated[int, typer.Option("--dim", min=1, help="New model width (a multiple of "
                                     "64: head_dim stays 64).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the scaled YAML.")],
    layers: Annotated[int | None, typer.Option(
        "--layers", min=1, help="New block count: more tiles the block pattern, fewer keeps "
        "the first blocks.")] = None,
    seq_len: Annotated[int | None, typer.Option(
        "--seq-len", min=8, help="New data.seq_len; windows and strides follow it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Widen, deepen or lengthen a genome for a scale hop (docs/scale.md) and print its
    parameters, FLOPs/token and KV bytes/token before and after."""
    from evotui import atomic
    from evotui.dsl import load
    from evotui.dsl.scale import scale as hop
    from evotui.summary import binary, si

    if out.is_dir():
        raise UserError.single("is a directory; give a file name such as scaled.yaml",
                               path="--out", source=str(out))
    if out.resolve() == config.resolve():
        raise UserError.single("would overwrite the input config; write a new file",
                               path="--out", source=str(out))
    cfg = load(config)
    result = hop(cfg, dim, layers, seq_len, source=str(config))
    header = (f"# Scaled by `evotui scale {config} --dim {dim}"
              + (f" --layers {layers}" if layers else "")
              + (f" --seq-len {seq_len}" if seq_len else "") + "` (see docs/scale.md).\n")
    atomic.write_text(out, header + result.yaml)
    b, a = result.before, result.after
    figures = ("params_total", "params_active", "flops_per_token", "kv_bytes_per_token",
               "layers")
    if as_json:
        typer.echo(json.dumps({
            "config": str(config), "out": str(out),
            "before": {k: getattr(b, k) for k in figures} | {"width": cfg.model.emb.dim,
                                                             "seq_len": b.seq_len},
            "after": {k: getattr(a, k) for k in figures} | {
                "width": result.config.model.emb.dim, "seq_len": a.seq_len},
            "changes": result.changes, "notes": result.notes}))
        return
    typer.echo(f"{config} -> {out}")
    rows = [
        ("width", str(cfg.model.emb.dim), str(result.config.model.emb.dim)),
        ("blocks", str(b.layers), str(a.layers)),
        ("seq_len", str(b.seq_len), str(a.seq_len)),
        ("params total", si(b.params_total), si(a.params_total)),
        ("params active", si(b.params_active), si(a.params_active)),
        ("FLOPs/token", si(b.flops_per_token), si(a.flops_per_token)),
        ("KV bytes/token", binary(b.kv_bytes_per_token), binary(a.kv_bytes_per_token)),
    ]
    for name, before, after in rows:
        typer.echo(f"  {name:<15} {before:>12} -> {after}")
    for line in result.changes:
        typer.echo(f"  changed: {line}")
    for line in result.notes:
        typer.echo(f"  note: {line}")


def fit_scaling(
    sources: Annotated[list[Path], typer.Argument(
        help="Run directories or frontier JSONs inside them (each run counted once).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write scaling.json and the plots (PNG) into this directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", min=10, max=100000, help="Bootstrap refits for the intervals.")] = 200,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the bootstrap.")] = 0,
    fresh_only: Annotated[bool, typer.Option(
        "--fresh-only", help="Leave out candidates that started from a parent's weights.")
    ] = False,
) -> None:
    """Fit loss against parameters and tokens (Chinchilla form, bootstrap intervals) and
    throughput against width over the finished candidates; print a 1.5B / 3B / 8B recipe."""
    from evotui import jsonio
    from evotui.analysis import fit_scaling as fs

    doc, fit, tp, points = fs.analyse(sources, bootstrap, seed, fresh_only)
    for line in doc["warnings"]:
        typer.echo(f"warning: {line}", err=True)
    if out is not None:
        written = fs.write(doc, fit, tp, points, out)
        doc["written"] = [str(p) for p in written]
    if as_json:
        typer.echo(jsonio.dumps(doc))
        return
    typer.echo(fs.as_text(doc))
    if out is not None:
        typer.echo(f"wrote {', '.join(doc['written'])}")


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds run.db).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for report.md and its PNGs (default: RUN_DIR/report).")
    ] = None,
) -> None:
    """A Markdown report with plots: the Pareto front, frontier loss curves, the lineage,
    motifs on the frontier against the population, and failure reasons."""
    from evotui.analysis.report import write_report

    result = write_report(run_dir, out)
    typer.echo(f"wrote {result['report']} with {len(result['images'])} plots")
