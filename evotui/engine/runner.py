"""Setting up a run (fresh or resumed) and running it headless (``evotui run``)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evotui.dsl import RunConfig, dump, load, loads, to_data
from evotui.engine import integrity
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.store import RunStore
from evotui.errors import UserError
from evotui.evolve.variation import AdaptiveWeights
from evotui.train.budget import steps_for


@dataclass
class RunFlags:
    config: Path | None = None
    generations: int | None = None
    steps: int | None = None
    eval_batches: int | None = None
    device: str = "auto"
    devices: str | None = None
    checkpoint_dir: Path | None = None
    out: Path | None = None
    log: Path | None = None
    run_dir: Path | None = None
    cleanup_old_checkpoints: bool = False
    parent_selection: str | None = None
    population: int | None = None
    seed: int | None = None
    resume: Path | None = None
    cpu_slots: int = 1
    cpu_threads: int | None = None


def _overridden(cfg: RunConfig, flags: RunFlags) -> RunConfig:
    data = to_data(cfg)
    ev, tr = data["evolution"], data["train"]
    if flags.generations is not None:
        ev["generations"] = flags.generations
    if flags.population is not None:
        ev["population"] = flags.population
    if flags.parent_selection is not None:
        ev["parent_selection"] = flags.parent_selection
    if flags.eval_batches is not None:
        tr["eval_batches"] = flags.eval_batches
    if flags.seed is not None:
        tr["seed"] = flags.seed
    return loads(yaml.safe_dump(data), source="command-line flags")


def rung_steps(cfg: RunConfig, steps: int | None) -> Rungs:
    """Cumulative steps of rung 1 and rung 2. ``--steps`` sets the full budget (rung 2); rung 1
    keeps the config's budget, or a fifth of it. Without either: the priors' token budget."""
    ev = cfg.evolution
    r1 = steps_for(cfg, ev.rung1_steps, ev.rung1_tokens) if (ev.rung1_steps or
                                                             ev.rung1_tokens) else None
    r2 = steps or (steps_for(cfg, ev.rung2_steps, ev.rung2_tokens)
                   if (ev.rung2_steps or ev.rung2_tokens) else None)
    if r2 is None:
        from evotui.dsl import estimate

        budget = cfg.priors.tokens_per_param * estimate(cfg.model, cfg.data.seq_len).params_total
        r2 = steps_for(cfg, None, int(budget))
    if r1 is None or r1 >= r2:
        r1 = max(1, r2 // 5)
    return Rungs((r1, r2))


def check_data(cfg: RunConfig) -> None:
    """Load-check every shard and tokenise what is not cached yet, in this process and before
    any worker starts: a shard that cannot be loaded is one line and exit 2, not a run of failed
    candidates, and the workers find the token cache warm."""
    from rich.console import Console

    from evotui.data import prepare

    console = Console(stderr=True)
    prepare(cfg, progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))


def devices_for(flags: RunFlags) -> list[str]:
    """The executor's slots. torch is imported only when a GPU may be used: without an NVIDIA
    driver (NVML cannot load) no CUDA device can exist, so ``auto`` means CPU at once and the
    process hosting the engine (the TUI's, for one) stays free of torch."""
    device = flags.device
    if not flags.devices and device not in ("auto", "cpu", "cuda"):
        raise UserError.single(f"unknown device {device!r}; use auto, cpu or cuda",
                               path="--device")
    if not flags.devices and device == "auto":
        from evotui.gpu import nvml

        if not nvml.available()[0]:
            device = "cpu"
    if not flags.devices and device == "cpu":
        return ["cpu"] * max(1, flags.cpu_slots)
    import torch

    if flags.devices:
        if not torch.cuda.is_available():
            raise UserError.single("no CUDA device is visible for --devices; use --device cpu",
                                   path="--devices")
        try:
            ids = [int(x) for x in flags.devices.split(",") if x.strip()]
        except ValueError:
            raise UserError.single("give GPU indices like 0,1", path="--devices") from None
        bad = [i for i in ids if i >= torch.cuda.device_count()]
        if bad or not ids:
            raise UserError.single(f"no such GPU {bad}; visible: "
                                   f"{torch.cuda.device_count()}", path="--devices")
        return [f"cuda:{i}" for i in ids]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError.single("no CUDA device is visible; use --device cpu (or check "
                                   "CUDA_VISIBLE_DEVICES and the driver)", path="--device")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"] * max(1, flags.cpu_slots)


def open_run(flags: RunFlags, default_config: Path) -> tuple[Engine, int]:
    """A ready engine for a new run or a resumed one, and the number of generations."""
    from evotui.engine.local import LocalExecutor

    slots = devices_for(flags)  # a bad --device or --devices leaves no run directory behind
    if flags.resume is not None:
        run_dir = flags.resume
        store = RunStore.open(run_dir)
        integrity.check_resumable(store)  # a creation a stop cut short is started again
        log_path = (store.get_state("options") or {}).get("log_path")
        if log_path:  # the run's own --log file, not the default
            store.close()
            store = RunStore.open(run_dir, log_path=Path(log_path))
        cfg = loads(store.config_yaml, source=str(run_dir / "config.yaml"))
        options = RunOptions(run_dir=run_dir, **store.get_state("options"))
        rungs = Rungs(tuple(store.get_state("rungs")["steps"]))
        check_data(cfg)
        generations = cfg.evolution.generations
    else:
        path = flags.config or default_config
        cfg = _overridden(load(path), flags)
        name = cfg.model.name or Path(path).stem
        run_dir = flags.run_dir or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        integrity.prepare_new_run_dir(run_dir)  # a run there is refused, a half-made one redone
        try:
            integrity.check_init_checkpoint(cfg, str(path))  # whole, finite, of this genome
            check_data(cfg)  # every shard and the tokenizer, before a run directory exists
        except UserError as e:
            e.source = e.source or str(path)
            raise
        rungs = rung_steps(cfg, flags.steps)
        options = RunOptions(
            run_dir=run_dir, checkpoint_dir=flags.checkpoint_dir, frontier_path=flags.out,
            log_path=flags.log, cleanup_old_checkpoints=flags.cleanup_old_checkpoints,
            seed=cfg.train.seed)
        store = RunStore.create(run_dir, dump(cfg), {"config": str(path), "name": name},
                                log_path=flags.log)
        with store.transaction():  # "options" last: a run without them was never complete
            store.set_state("objectives", cfg.evolution.objectives)
            store.set_state("run_id", f"{run_dir.name}-{uuid.uuid4().hex[:8]}")
            store.set_state("rungs", {"steps": list(rungs.steps)})
            store.set_state("options", {
                "checkpoint_dir": str(options.checkpoint_dir) if options.checkpoint_dir else None,
                "frontier_path": str(options.frontier_path) if options.frontier_path else None,
                "log_path": str(options.log_path) if options.log_path else None,
                "cleanup_old_checkpoints": options.cleanup_old_checkpoints,
                "seed": options.seed})
        generations = cfg.evolution.generations
    for attr in ("checkpoint_dir", "frontier_path", "log_path"):
        value = getattr(options, attr)
        if isinstance(value, str):
            setattr(options, attr, Path(value))
    executor = LocalExecutor(slots, cpu_threads=flags.cpu_threads)
    ev = cfg.evolution
    weights = AdaptiveWeights.from_config(ev) if ev.adaptive_mutation else None
    engine = Engine(cfg, options, executor, store, rungs, weights=weights)
    engine.rng.seed(options.seed)
    return engine, generations


def run_headless(engine: Engine, generations: int, quiet: bool = False) -> None:
    """Run to the end, printing the log lines and a status line; SIGINT / SIGTERM / SIGHUP
    stop it cleanly (resumable)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()

    def status_line() -> Text:
        s = engine.status()
        counts = s.get("counts", {})
        best = s.get("best", {})
        shown = ", ".join(f"{k} {v['value']:.4g} ({v['id']})"
                          for k, v in list(best.items())[:3] if v)
        return Text(f"generation {(s.get('generation') or 0) + 1}/{generations}  running "
                    f"{counts.get('running', 0)}  queued {counts.get('queued', 0)}  done "
                    f"{counts.get('done', 0) + counts.get('stopped', 0)}  failed "
                    f"{counts.get('failed', 0)}  best: {shown or '-'}", style="bold")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, _stop)
        task = asyncio.create_task(engine.run(generations))
        with Live(status_line(), console=console, refresh_per_second=2,
                  transient=True, redirect_stdout=False) as live:
            def show(kind: str, payload: dict[str, Any]) -> None:
                if "text" in payload and kind != "log" and not quiet:
                    live.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] [{kind}] "
                                       f"{payload['text']}", highlight=False)
                live.update(status_line())

            engine.on_event = show
            await task

    def _stop() -> None:
        engine.stopping = True

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    asyncio.run(main())
    console.print(f"run directory: {engine.options.run_dir}")
