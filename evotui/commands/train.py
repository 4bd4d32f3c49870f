"""``evotui train``: one candidate with a progress bar; writes its checkpoint and metrics.

torch, rich and the trainer load inside the command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands import run_flags as rf
from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    config: Annotated[Path | None, typer.Argument(help="A YAML config (default: tiny).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps (default: the "
                                              "config's rung-1 budget).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Output directory (default: "
                                             "runs/train-<model name>).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: train.seed).")] = None,
    eval_batches: Annotated[int | None, typer.Option("--eval-batches", min=1)] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from this checkpoint.")] = None,
    data: rf.Data = "config",
) -> None:
    """Train one candidate: a progress bar, then its checkpoint and metrics.json."""
    from evotui.engine.devices import single
    from evotui.engine.runner import DEFAULT_CONFIG

    train_one(config or DEFAULT_CONFIG, steps, single(device), out, seed, eval_batches, resume,
              data)


def train_one(config: Path, steps: int | None, device: str, out: Path | None,
              seed: int | None, eval_batches: int | None, resume: Path | None,
              data: str = "config") -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evotui import jsonio
    from evotui.data import prepare
    from evotui.dsl import load
    from evotui.train.budget import steps_for, tokens_per_step
    from evotui.train.trainer import CandidateTrainer

    console = Console(stderr=True)
    cfg = load(config)
    if data not in ("config", "offline"):
        raise UserError.single(f"unknown value {data!r}; use config or offline", path="--data")
    if cfg.train.parallel == "fsdp":  # one process here: sharding needs the executor's slots
        raise UserError.single(
            "train.parallel fsdp trains over several slots, and `evotui train` runs one "
            "process; use `evotui run` with --cpu-slots or --devices (or set parallel: none)",
            source=str(config), path="train.parallel")
    if data == "offline":  # the embedded corpus, the model unchanged (evotui/data/offline.py)
        from evotui.data import offline

        cfg = offline(cfg)
    if eval_batches is not None:
        cfg.train.eval_batches = eval_batches
    ev = cfg.evolution
    steps = steps or steps_for(cfg, ev.rung1_steps, ev.rung1_tokens or cfg.train.max_tokens)
    out = out or Path("runs") / f"train-{cfg.model.name or 'model'}"
    if resume is not None and not resume.is_file():
        raise UserError.single("no such checkpoint", path="--resume", source=str(resume))
    try:
        dataset = prepare(cfg, progress=lambda msg: console.print(f"[dim]{msg}[/]"),
                          train_tokens=steps * tokens_per_step(cfg))  # this one's budget
    except UserError as e:
        e.source = e.source or str(config)
        raise
    trainer = CandidateTrainer(cfg, dataset, device=device, seed=seed,
                               checkpoint_path=out / "checkpoint.safetensors")
    if resume is not None:
        trainer.resume(resume)
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=steps, completed=trainer.step, info="")

        def on_event(event: dict) -> None:
            if event["kind"] == "step":
                bar.update(task, completed=event["step"], info=(
                    f"loss {event['loss']:.3f}  lr {event['lr']:.2e}  "
                    f"{event['tokens_per_s']:,.0f} tok/s"))
            elif event["kind"] == "eval":
                bar.console.print(f"step {event['step']}: held-out loss {event['loss']:.3f}")
            elif event["kind"] == "guard":
                bar.console.print(f"[yellow]guard: {event['reason']} at step {event['step']}")

        trainer.callback = on_event
        result = trainer.run(steps, total_steps=steps, rung=1)
    report = {"config": str(config), "device": device, "seed": trainer.seed,
              "inherited_tensors": result.inherited, **result.as_dict()}
    jsonio.write(out / "metrics.json", report, indent=1, default=str)
    for key in sorted(result.metrics):
        console.print(f"  {key:<22} {_fmt(result.metrics[key])}")
    console.print(f"{result.status}"
                  + (f" ({result.stop_reason})" if result.stop_reason else "")
                  + f": step {result.step}, checkpoint {result.checkpoint}, "
                  f"metrics {out / 'metrics.json'}")
    if result.status == "failed":  # not bad input: the candidate itself failed
        raise SystemExit(1)


def _fmt(v: float) -> str:
    if isinstance(v, float) and (abs(v) >= 1e5 or (v and abs(v) < 1e-3)):
        return f"{v:.4g}"
    return f"{v:.4f}" if isinstance(v, float) and not math.isnan(v) else str(v)

