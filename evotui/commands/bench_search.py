"""``evotui bench search``: the evolutionary search against random search and the seed trained
longer, at the same training-token budget (see :mod:`evotui.bench.search`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evotui.commands.common import ConfigArg, JsonOpt, progress
from evotui.errors import UserError


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    bench_app.command("search")(bench_search)


def bench_search(
    config: ConfigArg,
    budget_tokens: Annotated[int | None, typer.Option(
        "--budget-tokens", min=1, help="Training tokens per method and seed, every candidate "
        "and rung counted (rounded down to whole generations). Default: the config's "
        "generations.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Repeats of each method.")] = 3,
    methods: Annotated[str, typer.Option(
        help="Comma-separated: evolve, random, seed.")] = "evolve,random,seed",
    steps: Annotated[int | None, typer.Option(
        min=2, help="Rung-2 steps (rung 1 keeps the config's, or a fifth).")] = None,
    function_preserving: Annotated[bool | None, typer.Option(
        "--function-preserving/--no-function-preserving",
        help="Override evolution.function_preserving.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    cpu_threads: Annotated[int | None, typer.Option(
        min=1, help="Torch threads of the CPU worker (default: the machine's cores); 1 lets "
        "two benchmarks share two cores without oversubscribing them.")] = None,
    out: Annotated[Path, typer.Option(help="Where search.json and anytime.png go.")] = Path(
        "bench-search"),
    as_json: JsonOpt = False,
) -> None:
    """Best held-out loss reached per method at equal training tokens, over seeds, with a
    verdict per pair ("within noise" under two standard errors) and anytime curves."""
    from evotui.bench import search
    from evotui.data import prepare_run
    from evotui.dsl import load
    from evotui.engine import devices
    from evotui.engine.local import LocalExecutor
    from evotui.engine.runner import rung_steps
    from evotui.train.budget import tokens_per_step

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in search.METHODS]
    if unknown or not chosen:
        raise UserError.single(f"unknown method {', '.join(unknown) or '(none)'}; use "
                               f"{', '.join(search.METHODS)}", path="--methods")
    slots = devices.slots(device, None, 1)
    cfg = load(config)
    if function_preserving is not None:
        cfg.evolution.function_preserving = function_preserving
    rungs = rung_steps(cfg, steps)
    tps = tokens_per_step(cfg)
    budget = search.plan(cfg, rungs, tps, budget_tokens)
    cfg = prepare_run(cfg, budget.tokens, progress)  # one data budget: the same windows
    work = out / "runs"
    if work.exists() and any(work.iterdir()):
        raise UserError.single(f"{work} holds an earlier benchmark's runs; choose another "
                               "--out or remove it", path="--out")
    result = search.run(cfg, rungs, tps, budget_tokens, seeds, chosen,
                        lambda: LocalExecutor(slots, cpu_threads=cpu_threads), work,
                        progress)
    result["config"] = str(config)
    result["plot"] = str(search.plot(result, out / "anytime.png"))
    from evotui import atomic

    atomic.write_text(out / "search.json", json.dumps(result, indent=1))
    if as_json:
        typer.echo(json.dumps(result))
        return
    b = result["budget"]
    typer.echo(f"bench search {config}: {b['tokens']:,} tokens per method and seed "
               f"({b['generations']} generations, rungs {b['rungs']}), {seeds} seed(s), "
               "function-preserving inheritance "
               + ("on" if result["function_preserving"] else "off"))
    typer.echo(f"{'method':<8} {'best loss':>10} {'std':>8}  shards (mean)   tokens")
    for name, m in result["methods"].items():
        std = f"{m['best_loss_std']:.4f}" if m["best_loss_std"] is not None else "-"
        shards = " ".join(f"{t} {v:.3f}" for t, v in m["shards_mean"].items())
        mean = f"{m['best_loss_mean']:.4f}" if m["best_loss_mean"] is not None else "-"
        typer.echo(f"{name:<8} {mean:>10} {std:>8}  {shards}  {m['tokens_spent']}")
    for v in result["verdicts"]:
        se = f"{v['standard_error']:.4f}" if v["standard_error"] is not None else "-"
        typer.echo(f"{v['a']} vs {v['b']}: {v['difference']:+.4f} (se {se}): {v['verdict']}")
    typer.echo(f"wrote {out / 'search.json'} and {result['plot']}")
