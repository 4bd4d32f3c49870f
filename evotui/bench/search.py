"""``evotui bench search``: does the search beat its baselines at equal compute?

Each method gets the same training-token budget, the same data (one token budget prepared
once: the same train and held-out windows) and the same objectives:

* ``evolve``: the engine as the config sets it (its parent selection, crossover, adaptive
  weights);
* ``random``: the same engine, deck, chain lengths, rungs and promotion, but parents drawn
  uniformly (``parent_selection: random``), no crossover, no adaptive weights;
* ``seed``: the unmutated seed trained on the whole budget (one job).

The budget is spent in whole generations (``population`` candidates to rung 1, the promoted
``topk_keep`` to rung 2): the largest number of generations whose tokens fit ``budget_tokens``,
and the seed trains exactly that many tokens. Every token of every candidate's every rung is
counted (a job's ``tokens`` is cumulative per candidate, so a rung-2 job adds its difference).

Per method and seed: the best mean held-out loss reached (and that candidate's per-shard
losses) and the anytime curve (best so far against tokens spent). Over seeds: mean and standard
deviation; each pair of methods gets a verdict, "within noise" when the difference of means is
under two standard errors. :func:`run` returns everything as one JSON-ready dict and writes
``search.json`` and ``anytime.png`` into ``out``.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evotui.dsl import RunConfig, dump, loads, to_data
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.events import Failed, Result
from evotui.engine.executor import Executor
from evotui.engine.jobs import Job
from evotui.engine.store import RunStore
from evotui.evolve.adaptive import AdaptiveWeights

METHODS = ("evolve", "random", "seed")
ExecutorFactory = Callable[[], Executor]


@dataclass(frozen=True)
class Budget:
    """Whole generations of the search, and the tokens they train (every method's)."""

    rungs: Rungs
    generations: int
    generation_steps: int
    tokens_per_step: int

    @property
    def steps(self) -> int:
        return self.generations * self.generation_steps

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step


def plan(cfg: RunConfig, rungs: Rungs, tokens_per_step: int,
         budget_tokens: int | None) -> Budget:
    """The largest whole number of generations within ``budget_tokens`` (at least one;
    None: the config's ``evolution.generations``)."""
    ev = cfg.evolution
    r1, r2 = rungs.steps
    promoted = max(1, round(ev.topk_keep * ev.population))  # as the engine's promotion
    per_generation = ev.population * r1 + promoted * (r2 - r1)
    gens = ev.generations if budget_tokens is None else max(
        1, budget_tokens // (per_generation * tokens_per_step))
    return Budget(rungs, gens, per_generation, tokens_per_step)


class Tracker:
    """Follows an engine's results: tokens spent and the best held-out loss so far."""

    def __init__(self) -> None:
        self.spent = 0
        self.last: dict[str, int] = {}
        self.best: dict[str, float] | None = None
        self.curve: list[list[float]] = []
        self.candidates = 0

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind != "result":
            return
        cid, tokens = str(payload.get("candidate")), int(payload.get("tokens") or 0)
        if cid not in self.last:
            self.candidates += 1
        self.spent += max(0, tokens - self.last.get(cid, 0))
        self.last[cid] = max(tokens, self.last.get(cid, 0))
        self.point(payload.get("metrics") or {})

    def point(self, metrics: dict[str, Any]) -> None:
        loss = metrics.get("loss")
        if isinstance(loss, int | float) and math.isfinite(loss) and (
                self.best is None or loss < self.best["loss"]):
            self.best = {k: float(v) for k, v in metrics.items()
                         if k == "loss" or k.startswith("loss_")}
        if self.best is not None:
            self.curve.append([self.spent, self.best["loss"]])

    def outcome(self) -> dict[str, Any]:
        best = self.best or {}
        return {"best_loss": best.get("loss"), "tokens_spent": self.spent,
                "shards": {k[len("loss_"):]: v for k, v in best.items() if k != "loss"},
                "curve": self.curve, "candidates": self.candidates}


def method_config(cfg: RunConfig, method: str) -> RunConfig:
    data = to_data(cfg)
    if method == "random":
        data["evolution"].update(parent_selection="random", crossover_prob=0.0,
                                 adaptive_mutation=False)
    return loads(dump_data(data))


def dump_data(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


async def search(cfg: RunConfig, seed: int, budget: Budget, executor: Executor,
                 run_dir: Path) -> dict[str, Any]:
    """One engine run of ``budget.generations`` generations; its :class:`Tracker` outcome."""
    store = RunStore.create(run_dir, dump(cfg), {"name": run_dir.name})
    try:
        options = RunOptions(run_dir=run_dir, seed=seed, poll_s=0.05)
        ev = cfg.evolution
        weights = AdaptiveWeights.from_config(ev) if ev.adaptive_mutation else None
        engine = Engine(cfg, options, executor, store, budget.rungs, weights=weights)
        engine.rng.seed(seed)
        tracker = Tracker()
        engine.on_event = tracker
        await engine.run(budget.generations)
    finally:
        store.close()
    return tracker.outcome()


async def train_seed(cfg: RunConfig, seed: int, budget: Budget, executor: Executor,
                     run_dir: Path) -> dict[str, Any]:
    """The seed trained for ``budget.steps`` in one job, with the candidate seed and data
    windows the engine gives its first candidate; its curve from the eval points."""
    run_dir.mkdir(parents=True, exist_ok=True)
    job = Job(candidate_id="c0000", config=to_data(cfg), until_step=budget.steps,
              total_steps=budget.steps, rung=1, seed=seed * 100_003,
              checkpoint_path=str(run_dir / "seed.safetensors"), device=executor.slots[0])
    executor.submit(job)
    result: Result | None = None
    async for _, event in executor.events():
        if isinstance(event, Result):
            result = event
            break
        if isinstance(event, Failed):
            await executor.shutdown(kill=True)
            raise RuntimeError(f"the seed's training failed: {event.reason}")
    await executor.shutdown()
    assert result is not None
    tracker = Tracker()
    tracker.candidates = 1
    for point in result.evals:
        tracker.spent = int(point["step"]) * budget.tokens_per_step
        tracker.point(point)
    tracker.spent = result.tokens
    tracker.point(result.metrics)
    return tracker.outcome()


def run(cfg: RunConfig, rungs: Rungs, tokens_per_step: int, budget_tokens: int | None,
        seeds: int, methods: list[str], executors: ExecutorFactory, work: Path,
        progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every method for seeds ``0..seeds-1`` (``cfg.train.seed`` + k), fresh executor each."""
    budget = plan(cfg, rungs, tokens_per_step, budget_tokens)
    out: dict[str, Any] = {"budget": {"tokens": budget.tokens, "generations": budget.generations,
                                      "rungs": list(rungs.steps),
                                      "tokens_per_step": tokens_per_step,
                                      "requested_tokens": budget_tokens},
                           "function_preserving": cfg.evolution.function_preserving,
                           "methods": {}}
    for method in methods:
        mcfg = method_config(cfg, method)
        runs = []
        for k in range(seeds):
            seed = cfg.train.seed + k
            progress(f"{method} seed {seed}: {budget.tokens:,} tokens")
            where = work / f"{method}-{seed}"
            fn = train_seed if method == "seed" else search
            runs.append({"seed": seed, **asyncio.run(fn(mcfg, seed, budget, executors(),
                                                        where))})
        out["methods"][method] = {"seeds": runs, **summary(runs)}
    out["verdicts"] = verdicts(out["methods"])
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    losses = [r["best_loss"] for r in runs if r["best_loss"] is not None]
    tags = sorted({t for r in runs for t in r["shards"]})
    return {"best_loss_mean": statistics.fmean(losses) if losses else None,
            "best_loss_std": statistics.stdev(losses) if len(losses) > 1 else None,
            "n": len(losses),
            "shards_mean": {t: statistics.fmean([r["shards"][t] for r in runs
                                                 if t in r["shards"]]) for t in tags},
            "tokens_spent": [r["tokens_spent"] for r in runs]}


def verdicts(methods: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pair: difference of mean best losses, its standard error, and the verdict."""
    names = list(methods)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ma, mb = methods[a], methods[b]
            if ma["best_loss_mean"] is None or mb["best_loss_mean"] is None:
                continue
            diff = ma["best_loss_mean"] - mb["best_loss_mean"]
            if ma["best_loss_std"] is None or mb["best_loss_std"] is None:
                se, text = None, "one seed: no noise estimate"
            else:
                se = math.sqrt(ma["best_loss_std"] ** 2 / ma["n"]
                               + mb["best_loss_std"] ** 2 / mb["n"])
                text = ("within noise" if abs(diff) < 2 * se else
                        f"{a} better" if diff < 0 else f"{b} better")
            out.append({"a": a, "b": b, "difference": diff, "standard_error": se,
                        "verdict": text})
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    """Best held-out loss so far against tokens spent: each seed thin, one colour a method."""
    from evotui.analysis.figures import figure, save

    fig = figure()
    ax = fig.add_subplot()
    for n, (method, m) in enumerate(result["methods"].items()):
        colour = f"C{n}"
        for i, r in enumerate(m["seeds"]):
            if r["curve"]:
                xs, ys = zip(*r["curve"], strict=True)
                ax.step(xs, ys, where="post", color=colour, alpha=0.7, linewidth=1.2,
                        label=method if i == 0 else None)
    ax.set_xlabel("training tokens spent")
    ax.set_ylabel("best mean held-out loss so far")
    ax.set_title(f"budget {result['budget']['tokens']:,} tokens, function-preserving "
                 f"inheritance {'on' if result['function_preserving'] else 'off'}")
    ax.legend()
    return save(fig, path)
