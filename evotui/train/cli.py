"""``evotui train``: one candidate with a progress bar; writes its checkpoint and metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evotui import atomic
from evotui.dsl import load
from evotui.errors import UserError
from evotui.train.budget import steps_for
from evotui.train.trainer import CandidateTrainer


def train_one(config: Path, steps: int | None, device: str, out: Path | None,
              seed: int | None, eval_batches: int | None, resume: Path | None) -> None:
    from evotui.data import prepare

    console = Console(stderr=True)
    cfg = load(config)
    if eval_batches is not None:
        cfg.train.eval_batches = eval_batches
    ev = cfg.evolution
    steps = steps or steps_for(cfg, ev.rung1_steps, ev.rung1_tokens or cfg.train.max_tokens)
    out = out or Path("runs") / f"train-{cfg.model.name or 'model'}"
    if resume is not None and not resume.is_file():
        raise UserError.single("no such checkpoint", path="--resume", source=str(resume))
    try:
        dataset = prepare(cfg, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
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
    atomic.write_text(out / "metrics.json", json.dumps(report, indent=1, default=_json) + "\n")
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


def _json(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
