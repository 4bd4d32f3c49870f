"""The scheduling loop: queued candidates go to free slots, worker events are recorded, results
are committed, commands obeyed, and a stop pauses what runs. A mixin of
:class:`evotui.engine.engine.Engine`.

A stop (SIGINT, SIGTERM, SIGHUP, the TUI's quit) sets ``engine.stopping``: every running worker
is asked to pause (checkpoint at its next step); one that has not ended within
``options.stop_grace_s`` is killed. Either way the candidate is queued again and ``--resume``
continues it from its last checkpoint; a worker that a signal ends while the engine stops is
interrupted, not failed. A finished rung's result is committed before anything else is done
with it, so nothing that follows can lose it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

from evotui.dsl import ModelSpec, to_data
from evotui.engine import integrity
from evotui.engine.events import Eval as EvalEvent
from evotui.engine.events import Event, Failed, Log, Result, Started, Step
from evotui.engine.events import Guard as GuardEvent
from evotui.engine.events import parse as parse_event
from evotui.engine.jobs import Job
from evotui.engine.records import Candidate
from evotui.engine.rundir import RunDir
from evotui.evolve.net2net_plan import net2net_plan
from evotui.evolve.novelty import novelty
from evotui.evolve.variation import inheritance_map
from evotui.lifecycle import Status

if TYPE_CHECKING:
    from evotui.engine.engine import Engine

    _Base = Engine
else:
    _Base = object


class Scheduling(_Base):
    async def train_until_settled(self, ids: list[str], rung: int) -> None:
        """Train every queued candidate of ``ids`` to ``rung``, or to the rung it is queued
        for when that is later (a promoted one, after a resume), and any paused candidate of
        an earlier generation resumed meanwhile, to its own rung; obey commands meanwhile.
        Returns when none of them is queued or running (paused ones wait for a resume), or,
        when the run stops, once every running candidate has been paused (or interrupted) and
        queued again for ``--resume``."""
        wanted = {i: rung for i in ids}
        self._recover()
        events = self.executor.events()
        deadline: float | None = None
        while True:
            self._beat()
            if self.stopping and deadline is None:
                deadline = self._begin_stop()
            if self.stopping and self._running and time.monotonic() > deadline:
                for cid in list(self._running):  # past the grace period: ended, requeued
                    if cid not in self._interrupting:
                        self._interrupting.add(cid)
                        self.executor.request(cid, "kill")
            if not self.stopping:
                self._obey_commands()
                for c in self.store.candidates(Status.QUEUED, with_spec=False):
                    if c.id not in wanted and c.rung >= 1:  # resumed from older generations
                        wanted[c.id] = c.rung
                for cid in list(wanted):
                    c = self.store.candidate(cid)
                    if c.status != Status.QUEUED:
                        continue
                    slots = self.executor.free_slots()
                    if not slots:
                        break
                    self._start(c, self._target_rung(c, wanted[cid]), slots[0])
            if self._stale:  # once the free slots have their next candidates
                self._export()
            if not self._running and (self.stopping or not any(
                    self.store.candidate(i).status == Status.QUEUED for i in wanted)):
                return
            try:
                cid, event = await asyncio.wait_for(anext(events), self.options.poll_s)
            except (TimeoutError, StopAsyncIteration):
                continue
            self._handle(cid, event)

    def _target_rung(self, c: Candidate, wanted: int) -> int:
        """The rung a queued candidate trains to: the one asked for, or a later one it is
        queued for (promoted; a run stored before the promoted rung was recorded on the
        candidate knows it from its generation's saved promotion)."""
        promoted = c.id in (self.store.get_state(f"promoted.{c.generation}") or [])
        return max(wanted, c.rung, 2 if promoted else 0)

    def _recover(self) -> None:
        """What an engine that died left behind: a running candidate starts again (from its
        last checkpoint), a kill on its way is done."""
        if self._running:
            return
        for c in self.store.candidates((Status.RUNNING, Status.KILLING), with_spec=False):
            if c.status == Status.RUNNING:
                self.store.update_candidate(c.id, status=Status.QUEUED)
            else:
                self.store.update_candidate(c.id, status=Status.KILLED)

    def _begin_stop(self) -> float:
        self.store.set_engine_state("stopping")
        for cid in self._running:
            self.executor.request(cid, "pause")
        if self._running:
            self.log("run", f"stopping: pausing {len(self._running)} running candidate(s) at "
                     f"their next step (at most {self.options.stop_grace_s:g} s)")
        return time.monotonic() + self.options.stop_grace_s

    def _start(self, c: Candidate, rung: int, slot: str) -> None:
        cid = c.id
        path = self.checkpoint_path(cid)
        resume_from = c.checkpoint if c.checkpoint and Path(c.checkpoint).is_file() else None
        inherit = None
        # generation 0 is the seed and its mutants: all start from the same (fresh or
        # init_checkpoint) weights, whatever order the slots take them in
        if (resume_from is None and c.parents and c.generation > 0
                and self.cfg.evolution.weight_inheritance == "parent"):
            inherit = self._inherit_list(c)
        transforms = self._transforms(c) if inherit else None
        data = to_data(self.cfg)
        data["model"] = c.spec
        if self.cfg.evolution.weight_inheritance == "scratch":
            data["train"].pop("init_checkpoint", None)  # random init, always
        until = self.rungs.steps[rung - 1]
        job = Job(candidate_id=cid, config=data, until_step=until,
                  total_steps=self.rungs.total, rung=rung,
                  seed=self.options.seed * 100_003 + int(cid[1:]),
                  checkpoint_path=str(path), resume_from=resume_from, inherit=inherit,
                  transforms=transforms,
                  device=slot, cache_dir=str(self.options.cache_dir)
                  if self.options.cache_dir else None)
        self.executor.submit(job)
        self._running[cid] = rung
        self.store.update_candidate(cid, status=Status.RUNNING, rung=rung, device=slot,
                                    checkpoint=str(path))
        how = "continues from its checkpoint" if resume_from else (
            f"inherits from {', '.join(c.parents)}" if inherit else "starts fresh")
        self.log("start", f"{cid} rung {rung} on {slot} ({how}) to step {until}", cid)

    def checkpoint_path(self, cid: str) -> Path:
        """``RUN_DIR/checkpoints/<id>.safetensors``; in a ``--checkpoint-dir`` that other runs
        may share, the run's directory name comes first so runs never overwrite each other."""
        if self.options.checkpoint_dir is None:
            return RunDir(self.options.run_dir).checkpoint_dir / f"{cid}.safetensors"
        run_id = self.store.get_state("run_id") or self.options.run_dir.name
        return self.options.checkpoint_dir / f"{run_id}-{cid}.safetensors"

    def _inherit_list(self, c: Candidate) -> list[tuple[str, str, str]] | None:
        parents = [self.store.candidate(p) for p in c.parents]
        if any(not p.checkpoint or not Path(p.checkpoint).is_file() for p in parents):
            return None
        child = ModelSpec.model_validate(c.spec)
        specs = [ModelSpec.model_validate(p.spec) for p in parents]
        provenance = [tuple(x) if x is not None else None for x in (c.provenance or [])]
        mapping = inheritance_map(child, provenance, specs)
        return [(name, str(parents[slot].checkpoint), src)
                for name, (slot, src) in mapping.items()]

    def _transforms(self, c: Candidate) -> dict[str, dict] | None:
        """The function-preserving plan (``evolution.function_preserving``) for ``c``."""
        if not self.cfg.evolution.function_preserving:
            return None
        child = ModelSpec.model_validate(c.spec)
        specs = [ModelSpec.model_validate(self.store.candidate(p).spec) for p in c.parents]
        provenance = [tuple(x) if x is not None else None for x in (c.provenance or [])]
        return net2net_plan(child, provenance, specs, inheritance_map(child, provenance, specs),
                            seed=self.options.seed * 100_003 + int(c.id[1:])) or None

    # -- events -------------------------------------------------------------------------
    def _handle(self, cid: str, event: Event | dict) -> None:
        event = parse_event(event)  # an executor outside the family may send plain dicts
        rung = self._running.get(cid, 0)
        if isinstance(event, Step):
            self.store.add_metrics([{
                "candidate": cid, "rung": rung, "step": event.step, "loss": event.loss,
                "lr": event.lr, "tokens": event.tokens, "tokens_per_s": event.tokens_per_s,
                "kind": "train"}])
            self.store.update_candidate(cid, step=event.step)
        elif isinstance(event, Started):
            # which process trains on which device: the TUI's GPU pane shows their memory
            workers = self.store.get_state("workers", {}) or {}
            workers[str(event.device)] = {"pid": event.pid, "candidate": cid}
            self.store.set_state("workers", workers)
        elif isinstance(event, EvalEvent):
            self.store.add_metrics([{"candidate": cid, "rung": rung, "step": event.step,
                                     "loss": event.loss, "kind": "eval"}])
        elif isinstance(event, GuardEvent):
            self.log("guard", f"{cid} stopped by guard {event.reason} at step {event.step}",
                     cid)
        elif isinstance(event, Log) and event.text.startswith(("compile:", "fsdp:")):
            # graphs, breaks, eager fallback; a sharded job's wait for slots and its ranks
            self.log(event.text.split(":", 1)[0], f"{cid} {event.text}", cid)
        elif isinstance(event, Result):
            self._running.pop(cid, None)
            self._finish(cid, event, rung)
        elif isinstance(event, Failed):
            self._running.pop(cid, None)
            self._failed(cid, event)
        if self.on_event:
            self.on_event(event.kind, {"candidate": cid, **event.to_dict()})

    def _failed(self, cid: str, event: Failed) -> None:
        current = self.store.candidate(cid).status
        interrupted = cid in self._interrupting or (self.stopping and event.signal)
        fault = integrity.machine_fault(event.reason)  # a full disk: the run's, not the job's
        if fault is not None and current != Status.KILLING:
            interrupted = True
            if not self.stopping:
                self.stopping = True
                self.fault = event.reason
                self.log("run", f"stopping: {fault} ({event.reason}); free space, then `evotui "
                         f"run --resume {self.options.run_dir}` continues", cid)
        self._interrupting.discard(cid)
        if current == Status.KILLING:
            status = Status.KILLED
        elif interrupted:
            status = Status.QUEUED
        else:
            status = Status.FAILED
        if status == Status.QUEUED:
            self.store.update_candidate(cid, status=status)
            self.log("interrupted", f"{cid} interrupted while the run stopped ({event.reason}): "
                     "continues from its last checkpoint on --resume", cid)
        else:
            self.store.update_candidate(cid, status=status, error=event.reason)
            self.log("failure" if status == Status.FAILED else "kill",
                     f"{cid} {status}: {event.reason}", cid)
        self._settle_pauses(cid)

    def _finish(self, cid: str, result: Result, rung: int) -> None:
        """Commit a job's result first, then derive what depends on it (novelty, credit)."""
        status = Status(result.status)
        c = self.store.candidate(cid)
        metrics = dict(c.metrics)
        metrics.update(result.metrics or {})
        if result.inherited:  # tensors its first rung started from (parents or
            metrics["inherited_tensors"] = result.inherited  # init_checkpoint); kept after
            metrics["transformed_tensors"] = result.transformed  # exact / net2net / fresh
            metrics["fresh_tensors"] = result.fresh
        if status == Status.KILLED or c.status == Status.KILLING:
            status = Status.KILLED
        if cid in self._interrupting and not status.is_finished():
            status = Status.QUEUED  # ended by the stop's grace period: continues on --resume
        self._interrupting.discard(cid)
        paused_by_stop = (status == Status.PAUSED and self.stopping and not any(
            cmd["action"] == "pause" for cmd in self.store.pending_commands(cid)))
        fields: dict = {"status": status, "metrics": metrics, "step": result.step,
                        "error": result.error or result.stop_reason}
        if result.checkpoint:
            fields["checkpoint"] = result.checkpoint
        self.store.update_candidate(cid, **fields)
        if paused_by_stop:
            self.store.update_candidate(cid, status=Status.QUEUED)  # resumes with the run
        if status.is_finished():
            try:
                others = [self._descriptor(o) for o in
                          self.store.candidates(with_spec=False) if o.id != cid]
                metrics["novelty"] = novelty(self._descriptor(c), others) if others else 0.0
                self.store.update_candidate(cid, metrics=metrics)
            except Exception as e:  # noqa: BLE001 - the result is committed; say why not
                self.log("failure", f"{cid}: novelty not computed: {e}", cid)
            if self.weights is not None and c.parents:
                self._credit(c, metrics)
        self._settle_pauses(cid)
        text = f"{cid} rung {rung} {status}"
        if result.stop_reason:
            text += f" ({result.stop_reason})"
        shown = [f"{k} {metrics[k]:.4g}" for k in self.cfg.evolution.objectives
                 if isinstance(metrics.get(k), int | float)]
        self.log("finish" if status.is_finished() else str(status),
                 text + (": " + ", ".join(shown) if shown else ""), cid)
        self._stale = True  # exported once the freed slot has its next candidate

    def _credit(self, c: Candidate, metrics: dict[str, float]) -> None:
        assert self.weights is not None
        parent = self.store.candidate(c.parents[0])
        ops = [op for op in (c.operator or "").split("; ") if op]
        self.weights.observe(ops, metrics, parent.metrics, self.cfg.evolution.objectives)
        self.store.set_state("weights", self.weights.to_dict())  # a resume keeps every credit
