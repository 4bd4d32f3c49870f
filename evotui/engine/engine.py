"""The orchestrator: generations of candidates trained in rungs, selection, persistence, control.

One asyncio loop owns the run. Training happens in executor worker processes; the engine is
the run store's single writer (other processes only add commands). Every decision is written
to the store as it is made, so ``--resume`` after a crash at any instant continues the run:
finished candidates are kept, in-flight ones restart from their last checkpoint (a promoted one
in rung 2), and the RNG state and adaptive mutation weights are restored. One engine at a time
runs a run directory (:mod:`evotui.engine.lock`); it states what it does and beats a heartbeat
in the store (``RunStore.engine_state``).

A generation: rung 0 (static gates) -> rung 1 for every candidate -> the best ``topk_keep``
fraction (Pareto rank, then crowding) continues into rung 2 from its rung-1 checkpoint ->
frontier, lineage and clean-up -> parents are selected and the next generation is bred.

The concerns live in mixins, each a module: :mod:`~evotui.engine.breeding` (breeding and rung
0), :mod:`~evotui.engine.rungs` (promotion), :mod:`~evotui.engine.schedule` (the scheduling
loop, events, results, stopping) and :mod:`~evotui.engine.commands` (pause, resume, kill).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui.dsl import RunConfig, to_data
from evotui.engine import integrity
from evotui.engine.breeding import Breeding
from evotui.engine.commands import Commands
from evotui.engine.executor import Executor
from evotui.engine.exports import summary, write_frontier, write_lineage
from evotui.engine.lock import RunLock
from evotui.engine.records import HEARTBEAT_S
from evotui.engine.rundir import RunDir
from evotui.engine.rungs import Promotion, Rungs
from evotui.engine.schedule import Scheduling
from evotui.engine.store import RunStore
from evotui.evolve.entry import Entry
from evotui.evolve.pareto import pareto_front
from evotui.evolve.variation import AdaptiveWeights
from evotui.lifecycle import FINISHED, Status

__all__ = ["Engine", "RunOptions", "Rungs"]


@dataclass
class RunOptions:
    run_dir: Path
    checkpoint_dir: Path | None = None
    frontier_path: Path | None = None
    log_path: Path | None = None
    cleanup_old_checkpoints: bool = False
    seed: int = 0
    cache_dir: Path | None = None
    poll_s: float = 0.5
    stop_grace_s: float = 60.0  # a stop waits this long for running candidates to pause


@dataclass
class Engine(Breeding, Promotion, Scheduling, Commands):
    cfg: RunConfig
    options: RunOptions
    executor: Executor
    store: RunStore
    rungs: Rungs
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    weights: AdaptiveWeights | None = None
    stopping: bool = False
    fault: str | None = None  # a worker's machine fault (a full disk) that stopped the run
    _stale: bool = field(default=False, init=False)  # a candidate finished since the export
    _descriptors: dict[str, tuple[float, ...]] = field(default_factory=dict, init=False)
    _running: dict[str, int] = field(default_factory=dict, init=False)  # candidate -> rung
    _asked: set[int] = field(default_factory=set, init=False)  # pause commands sent to workers
    _interrupting: set[str] = field(default_factory=set, init=False)  # ended by the stop
    _beaten: float = field(default=0.0, init=False)

    # -- persistence --------------------------------------------------------------------
    def _save_state(self, generation: int) -> None:
        state = {"generation": generation, "rng": _rng_to_json(self.rng.getstate()),
                 "weights": self.weights.to_dict() if self.weights else None}
        self.store.set_state("engine", state)

    def _load_state(self) -> int:
        state = self.store.get_state("engine")
        if not state:
            return 0
        self.rng.setstate(_rng_from_json(state["rng"]))
        weights = self.store.get_state("weights") or state.get("weights")
        if weights and self.weights is not None:
            self.weights = AdaptiveWeights.from_dict(weights)
        return int(state["generation"])

    def log(self, kind: str, text: str, candidate: str | None = None) -> None:
        self.store.add_event(kind, text, candidate)
        if self.on_event:
            self.on_event(kind, {"text": text, "candidate": candidate})

    def _beat(self) -> None:
        """The heartbeat the TUI and ``evotui pause`` read: at least every HEARTBEAT_S."""
        now = time.monotonic()
        if now - self._beaten >= HEARTBEAT_S / 2:
            self._beaten = now
            self.store.set_engine_state()

    # -- the run ------------------------------------------------------------------------
    async def run(self, generations: int) -> None:
        """Run to ``generations`` (or until ``stopping``). A second engine on the same run
        directory is refused (:class:`~evotui.errors.UserError` naming the holder's pid)."""
        with RunLock(self.options.run_dir):
            self.store.set_engine_state("running")
            self._beaten = time.monotonic()
            finished = False
            try:
                await integrity.guarded(self, self._run(generations))  # a full disk
                finished = not self.stopping
            finally:
                self.store.set_engine_state("finished" if finished else "stopped")
            if self.fault is not None:  # a worker's full disk: the run ends as the engine's own
                raise integrity.machine_stop(OSError(self.fault), self.options.run_dir) or \
                    RuntimeError(self.fault)

    async def _run(self, generations: int) -> None:
        start = self._load_state()
        if start < generations and not self.stopping:  # workers start while we breed
            self.executor.warm(to_data(self.cfg), str(self.options.cache_dir)
                               if self.options.cache_dir else None)
        for g in range(start, generations):
            if self.stopping:
                break
            await self.generation(g)
            if self.stopping:
                break
            self._save_state(g + 1)
        await self.executor.shutdown(kill=False)
        self._export()
        self.log("run", "stopped (resumable with --resume)" if self.stopping else "finished")

    async def generation(self, g: int) -> None:
        members = self.store.candidates(generation=g, with_spec=False)
        if not members:
            with self.store.transaction():  # all of a generation is bred, or none of it
                self.breed(g)
                self._save_state(g)  # the RNG after breeding: a resume breeds nothing twice
            members = self.store.candidates(generation=g, with_spec=False)
        ids = [c.id for c in members]
        await self.train_until_settled(ids, rung=1)
        if self.stopping:
            return
        promoted = self._promotion(g, ids)
        await self.train_until_settled(promoted, rung=2)
        if self.stopping:
            return
        self._export()
        if self.options.cleanup_old_checkpoints:
            self.cleanup()

    # -- outputs ------------------------------------------------------------------------
    def frontier_ids(self) -> list[str]:
        finished = [c for c in self.store.candidates(FINISHED, with_spec=False)
                    if self._complete(c)]
        entries = [Entry(id=c.id, metrics=c.metrics, status=c.status, spec=None)
                   for c in finished]
        return pareto_front(entries, self.cfg.evolution.objectives) if entries else []

    def _export(self) -> None:
        self._stale = False
        paths = RunDir(self.options.run_dir, {"frontier_path": self.options.frontier_path})
        write_frontier(self.store, paths.frontier_path, self.cfg.evolution.objectives,
                       self.frontier_ids())
        write_lineage(self.store, paths.lineage_path)

    def cleanup(self) -> None:
        """Delete this run's checkpoints that nothing needs any more: not on the frontier,
        not a possible parent of the next generation, not paused, queued or running.
        Only files named after this run's candidates inside its checkpoint directory."""
        keep = set(self.frontier_ids())
        pool = self._ranked([c for c in self.store.candidates(FINISHED, with_spec=False)
                             if self._complete(c)])
        keep |= {c.id for c in pool[: self.cfg.evolution.population]}
        removed = 0
        for c in self.store.candidates(with_spec=False):
            if not c.checkpoint or c.id in keep or c.status in (
                    Status.QUEUED, Status.RUNNING, Status.PAUSED, Status.KILLING):
                continue
            if not integrity.remove_own_file(c.checkpoint, self.checkpoint_path(c.id)):
                continue  # only the regular file this run wrote for it, never through a link
            self.store.update_candidate(c.id, checkpoint=None)
            removed += 1
        if removed:
            self.log("cleanup", f"removed {removed} checkpoint(s) no candidate needs")

    def status(self) -> dict[str, Any]:
        return summary(self.store)


def _rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
