"""Setting up a run, fresh or resumed: the engine that ``evotui run`` drives headless and
``evotui tui`` in the app (the commands in :mod:`evotui.commands` show it running)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from evotui.dsl import RunConfig, dump, load, loads, to_data
from evotui.engine import devices, integrity
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.flags import RunFlags
from evotui.engine.lock import RunLock
from evotui.engine.rundir import RunDir
from evotui.engine.store import RunStore
from evotui.errors import UserError
from evotui.evolve.variation import AdaptiveWeights
from evotui.train.budget import steps_for

__all__ = ["DEFAULT_CONFIG", "RunFlags", "check_data", "open_run", "rung_steps"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"  # embedded
Progress = Callable[[str], None]


def _overridden(cfg: RunConfig, flags: RunFlags) -> RunConfig:
    if flags.data not in ("config", "offline"):
        raise UserError.single(f"unknown value {flags.data!r}; use config or offline",
                               path="--data")
    if flags.data == "offline":  # --data offline: the embedded corpus (evotui/data/offline.py)
        from evotui.data import offline

        cfg = offline(cfg)
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


def check_data(cfg: RunConfig, progress: Progress | None = None,
               rungs: Rungs | None = None) -> RunConfig:
    """Load-check every shard and tokenise what is not cached yet, in this process and before
    any worker starts: a shard that cannot be loaded is one line and exit 2, not a run of failed
    candidates, and the workers find the token cache warm. Each shard reads the run's budget
    (its share of what the whole search trains on, see evotui/data/budget.py); the config is
    returned with the budgets written in. ``progress`` gets a line per step (default: a
    progress bar per shard on stderr)."""
    from evotui.data import prepare_run
    from evotui.data.budget import search_tokens
    from evotui.train.budget import tokens_per_step

    rungs = rungs or rung_steps(cfg, None)
    return prepare_run(cfg, search_tokens(cfg, rungs.steps, tokens_per_step(cfg)), progress)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_run(flags: RunFlags, default_config: Path = DEFAULT_CONFIG,
             progress: Progress | None = None) -> tuple[Engine, int]:
    """A ready engine for a new run or a resumed one, and the number of generations.
    ``progress``: where data preparation reports (see :func:`check_data`)."""
    from evotui.engine.local import LocalExecutor

    if flags.executor not in (None, "local", "ray"):
        raise UserError.single(f"unknown executor {flags.executor!r}; use local or ray",
                               path="--executor")
    # a bad --device or --devices leaves no run directory behind (a Ray cluster's slots are
    # the cluster's)
    slots = [] if flags.executor == "ray" else devices.slots(flags.device, flags.devices,
                                                              flags.cpu_slots)
    if flags.resume is not None:
        run_dir = flags.resume
        store = RunStore.open(run_dir)
        integrity.check_resumable(store)  # a creation a stop cut short is started again
        with RunLock(run_dir):  # a second engine is refused now, before any data line
            pass
        log_path = RunDir.of(store).log_path
        if log_path != store.log_path:  # the run's own --log file, not the default
            store.close()
            store = RunStore.open(run_dir, log_path=log_path)
        cfg = loads(store.config_yaml, source=str(run_dir / "config.yaml"))
        options = RunOptions(run_dir=run_dir, **store.get_state("options"))
        rungs = Rungs(tuple(store.get_state("rungs")["steps"]))
        devices.check_shards(cfg, slots, str(run_dir / "config.yaml"))
        cfg = check_data(cfg, progress, rungs)
        generations = cfg.evolution.generations
    else:
        path = flags.config or default_config
        cfg = _overridden(load(path), flags)
        name = cfg.model.name or Path(path).stem
        run_dir = flags.run_dir or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        devices.check_shards(cfg, slots, str(path))  # before a run directory exists
        integrity.prepare_new_run_dir(run_dir)  # a run there is refused, a half-made one redone
        try:
            integrity.check_init_checkpoint(cfg, str(path))  # whole, finite, of this genome
            rungs = rung_steps(cfg, flags.steps)
            cfg = check_data(cfg, progress, rungs)  # every shard, before a run exists
        except UserError as e:
            e.source = e.source or str(path)
            raise
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
    kind = flags.executor or (store.get_state("executor") or {}).get("kind", "local")
    if kind == "ray":
        from evotui.engine.ray_executor import open_ray

        ckpts = options.checkpoint_dir or RunDir(run_dir).checkpoint_dir
        executor: Any = open_ray(flags, store, ckpts)
    else:
        executor = LocalExecutor(slots or devices.slots(flags.device, flags.devices,
                                                        flags.cpu_slots),
                                 cpu_threads=flags.cpu_threads)
    ev = cfg.evolution
    weights = AdaptiveWeights.from_config(ev) if ev.adaptive_mutation else None
    engine = Engine(cfg, options, executor, store, rungs, weights=weights)
    engine.rng.seed(options.seed)
    return engine, generations
