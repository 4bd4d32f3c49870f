"""The orchestrator: generations of candidates trained in rungs, selection, persistence, control.

One asyncio loop owns the run. Training happens in executor worker processes; the engine is
the run store's single writer (other processes only add commands). Every decision is written
to the store as it is made, so ``--resume`` after a crash at any instant continues the run:
finished candidates are kept, in-flight ones restart from their last checkpoint, and the RNG
state and adaptive mutation weights are restored.

A generation: rung 0 (static gates) -> rung 1 for every candidate -> the best ``topk_keep``
fraction (Pareto rank, then crowding) continues into rung 2 from its rung-1 checkpoint ->
frontier, lineage and clean-up -> parents are selected and the next generation is bred.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui.dsl import ModelSpec, RunConfig, estimate, to_data
from evotui.engine import integrity
from evotui.engine.exports import summary, write_frontier, write_lineage
from evotui.engine.jobs import Job
from evotui.engine.store import RunStore
from evotui.errors import UserError
from evotui.evolve.entry import Entry, eligible
from evotui.evolve.novelty import descriptor, novelty
from evotui.evolve.pareto import pareto_front, rank_and_crowding
from evotui.evolve.selection import get_selector
from evotui.evolve.variation import (
    AdaptiveWeights,
    VariationError,
    crossover,
    inheritance_map,
    mutate,
    spec_key,
)

FINISHED = ("done", "stopped")
ACTIVE = ("queued", "running")
ENTROPY_METRIC = "router_entropy"


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


@dataclass
class Rungs:
    """Cumulative step budgets: rung 1 for everyone, rung 2 for the promoted."""

    steps: tuple[int, int]

    @property
    def total(self) -> int:
        return self.steps[-1]


@dataclass
class Engine:
    cfg: RunConfig
    options: RunOptions
    executor: Any
    store: RunStore
    rungs: Rungs
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    rng: random.Random = field(default_factory=random.Random)
    weights: AdaptiveWeights | None = None
    stopping: bool = False
    _stale: bool = field(default=False, init=False)  # a candidate finished since the export
    _descriptors: dict[str, tuple[float, ...]] = field(default_factory=dict, init=False)

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

    # -- the run ------------------------------------------------------------------------
    async def run(self, generations: int) -> None:
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
        members = self.store.candidates(generation=g)
        if not members:
            with self.store.transaction():  # all of a generation is bred, or none of it
                self.breed(g)
                self._save_state(g)  # the RNG after breeding: a resume breeds nothing twice
            members = self.store.candidates(generation=g)
        ids = [c["id"] for c in members]
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

    # -- breeding -----------------------------------------------------------------------
    def breed(self, g: int) -> None:
        pop = self.cfg.evolution.population
        attempts = 0
        if g == 0:
            seed = self.cfg.model
            self._add(g, seed, parents=[], ops=["seed"], provenance=None)
            while len(self.store.candidates(generation=g)) < pop and attempts < pop * 20:
                attempts += 1
                try:
                    child = mutate(self.cfg, seed, self.rng, steps=self.rng.randint(1, 2),
                                   weights=self._weights())
                except VariationError as e:
                    self.log("mutation", f"no mutation of the seed applies: {e}")
                    break
                self._add_child(g, child, ["c0000"], [seed])
            self._shortfall(g, pop)
            return
        pool = self._parent_pool()
        if not pool:
            missing = [k for k in self.cfg.evolution.objectives
                       if not any(k in (c["metrics"] or {}) for c in self.store.candidates())]
            raise UserError.single(
                "no finished candidate has every objective measured, so none can be a parent"
                + (f" (never measured: {', '.join(missing)})" if missing else
                   " (every candidate failed: see run.log)"), path="evolution.objectives")
        selector = get_selector(self.cfg.evolution.parent_selection, self.cfg.evolution)
        objectives = self.cfg.evolution.objectives
        while len(self.store.candidates(generation=g)) < pop and attempts < pop * 20:
            attempts += 1
            try:
                if len(pool) > 1 and self.rng.random() < self.cfg.evolution.crossover_prob:
                    a, b = selector.select(pool, objectives, 2, self.rng)
                    pa, pb = self._spec(a), self._spec(b)
                    self._add_child(g, crossover(self.cfg, pa, pb, self.rng), [a, b], [pa, pb])
                else:
                    (a,) = selector.select(pool, objectives, 1, self.rng)
                    pa = self._spec(a)
                    child = mutate(self.cfg, pa, self.rng, steps=self.rng.randint(1, 2),
                                   weights=self._weights())
                    self._add_child(g, child, [a], [pa])
            except VariationError as e:
                self.log("mutation", f"a variation failed and was redrawn: {e}")
        self._shortfall(g, pop)

    def _shortfall(self, g: int, pop: int) -> None:
        n = len(self.store.candidates(generation=g))
        if n < pop:
            self.log("mutation", f"generation {g} has {n} of {pop} candidates: variation kept "
                     "producing architectures already evaluated")

    def _weights(self) -> dict[str, float] | None:
        return self.weights.weights() if self.weights else None

    def _add_child(self, g: int, child: Any, parent_ids: list[str],
                   parent_specs: list[ModelSpec]) -> None:
        key = spec_key(child.spec)
        if self.store.find_spec_key(key):
            return  # already evaluated (or queued): never trained twice
        cid = self._add(g, child.spec, parents=parent_ids, ops=child.ops,
                        provenance=child.provenance)
        verb = "crossover" if len(parent_ids) == 2 else "mutation"
        self.log(verb, f"{cid} <- {' x '.join(parent_ids)}: {'; '.join(child.ops)}", cid)

    def _add(self, g: int, spec: ModelSpec, parents: list[str], ops: list[str],
             provenance: Any) -> str:
        n = self.store.count_candidates()
        cid = f"c{n:04d}"
        est = estimate(spec, self.cfg.data.seq_len)
        reason = self._rung0(est)
        self.store.add_candidate(
            id=cid, generation=g, parents=parents, operator="; ".join(ops),
            spec=to_data(spec), spec_key=spec_key(spec), provenance=provenance,
            status="failed" if reason else "queued", rung=0, total_steps=self.rungs.total,
            metrics={"params_total": est.params_total, "params_active": est.params_active,
                     "flops_per_token": est.flops_per_token,
                     "kv_bytes_per_token": est.kv_bytes_per_token, "layers": est.layers,
                     "moe_blocks": est.moe_blocks, "ssm_blocks": est.ssm_blocks})
        if reason:
            self.store.update_candidate(cid, error=f"rung 0: {reason}")
            self.log("failure", f"{cid} rung 0: {reason}", cid)
        return cid

    def _rung0(self, est: Any) -> str | None:
        r = self.cfg.evolution.rung0_thresholds
        checks = [
            (r.max_params, est.params_total, "params", ">"),
            (r.max_active_params, est.params_active, "active params", ">"),
            (r.max_flops_per_token, est.flops_per_token, "FLOPs/token", ">"),
            (r.max_kv_bytes_per_token, est.kv_bytes_per_token, "KV bytes/token", ">"),
            (r.max_layers, est.layers, "layers", ">"),
            (r.min_layers, est.layers, "layers", "<"),
        ]
        for limit, value, what, op in checks:
            if limit is None:
                continue
            if (op == ">" and value > limit) or (op == "<" and value < limit):
                bound = "max" if op == ">" else "min"
                return f"{what} {value:,.0f} beyond {bound} {limit:,.0f}"
        return None

    def _descriptor(self, c: dict[str, Any]) -> tuple[float, ...]:
        """A candidate's novelty descriptor, computed once per genome (a finish compares it
        with every other candidate's)."""
        key = c.get("spec_key") or c["id"]
        if key not in self._descriptors:
            self._descriptors[key] = descriptor(ModelSpec.model_validate(c["spec"]))
        return self._descriptors[key]

    def _spec(self, cid: str) -> ModelSpec:
        return ModelSpec.model_validate(self.store.candidate(cid)["spec"])

    def _parent_pool(self) -> list[Entry]:
        """Finished candidates with every objective measured; when clean-up is on, only those
        whose checkpoint is kept (a child always starts from its parents' weights)."""
        inherit = self.cfg.evolution.weight_inheritance == "parent"
        entries = [Entry(id=c["id"], metrics=c["metrics"] or {}, status=c["status"],
                         spec=ModelSpec.model_validate(c["spec"]))
                   for c in self.store.candidates() if c["status"] in FINISHED
                   and not (self.options.cleanup_old_checkpoints and inherit
                            and not c.get("checkpoint"))]
        return eligible(entries, self.cfg.evolution.objectives)

    # -- rungs --------------------------------------------------------------------------
    def _promotion(self, g: int, ids: list[str]) -> list[str]:
        saved = self.store.get_state(f"promoted.{g}")
        if saved is not None:
            return list(saved)
        finished = [self.store.candidate(i) for i in ids]
        finished = [c for c in finished if c["status"] in FINISHED and c["rung"] == 1
                    and self._complete(c)]
        gates = self.cfg.evolution.rung0_thresholds
        keep_n = max(1, round(self.cfg.evolution.topk_keep * len(ids)))
        order = self._ranked(finished)
        promoted = []
        for c in order:
            entropy = (c["metrics"] or {}).get(ENTROPY_METRIC)
            if entropy is not None and (
                (gates.gate_entropy_min is not None and entropy < gates.gate_entropy_min)
                    or (gates.gate_entropy_max is not None and entropy > gates.gate_entropy_max)):
                self.log("promotion", f"{c['id']} not promoted: router entropy {entropy:.2f} "
                         "outside the gate", c["id"])
                continue
            if c["status"] == "stopped":
                continue  # a guard ended it early: it keeps its rung-1 metrics
            promoted.append(c["id"])
            if len(promoted) == keep_n:
                break
        for cid in promoted:
            self.store.update_candidate(cid, status="queued")
            self.log("promotion", f"{cid} promoted to rung 2", cid)
        self.store.set_state(f"promoted.{g}", promoted)
        return promoted

    def _complete(self, c: dict[str, Any]) -> bool:
        m = c["metrics"] or {}
        return all(k in m for k in self.cfg.evolution.objectives)

    def _ranked(self, cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Best first: non-dominated rank, then crowding distance within the front."""
        if not cands:
            return []
        ranks, crowd = rank_and_crowding([c["metrics"] for c in cands],
                                         self.cfg.evolution.objectives)
        order = sorted(range(len(cands)), key=lambda i: (ranks[i], -crowd[i]))
        return [cands[i] for i in order]

    async def train_until_settled(self, ids: list[str], rung: int) -> None:
        """Train every queued candidate of ``ids`` to ``rung`` (and any paused candidate of an
        earlier generation resumed meanwhile, to its own rung); obey commands meanwhile.
        Returns when none of them is queued or running (paused ones wait for a resume). When
        the run stops, running candidates are paused (checkpointed) and queued again for
        ``--resume``."""
        wanted = {i: rung for i in ids}
        running: dict[str, str] = {}  # candidate -> slot
        for c in self.store.candidates():
            if c["status"] == "running":  # in flight when the engine died: start again
                self.store.update_candidate(c["id"], status="queued")
            elif c["status"] == "killing":  # the kill was on its way: it is killed
                self.store.update_candidate(c["id"], status="killed")
        events = self.executor.events()
        pausing = False
        while True:
            if self.stopping and not pausing:
                pausing = True
                for cid in running:
                    self.executor.request(cid, "pause")
            if not self.stopping:
                self._obey_commands(running)
                for c in self.store.candidates("queued"):  # resumed from older generations
                    if c["id"] not in wanted and c["rung"] >= 1:
                        wanted[c["id"]] = c["rung"]
                queued = [i for i in wanted if self.store.candidate(i)["status"] == "queued"]
                for cid in queued:
                    slots = self.executor.free_slots()
                    if not slots:
                        break
                    self._start(cid, wanted[cid], slots[0])
                    running[cid] = slots[0]
            if self._stale:  # once the free slots have their next candidates
                self._export()
            if not running and (self.stopping or not any(
                    self.store.candidate(i)["status"] == "queued" for i in wanted)):
                return
            try:
                cid, event = await asyncio.wait_for(anext(events), self.options.poll_s)
            except (TimeoutError, StopAsyncIteration):
                continue
            self._handle(cid, event, running, wanted.get(cid, rung))
            if pausing and event.get("kind") == "result" and event.get("status") == "paused":
                self.store.update_candidate(cid, status="queued")  # resumes with the run

    def _start(self, cid: str, rung: int, slot: str) -> None:
        c = self.store.candidate(cid)
        path = self.checkpoint_path(cid)
        resume_from = c.get("checkpoint") if c.get("checkpoint") and Path(
            c["checkpoint"]).is_file() else None
        inherit = None
        # generation 0 is the seed and its mutants: all start from the same (fresh or
        # init_checkpoint) weights, whatever order the slots take them in
        if (resume_from is None and c["parents"] and c["generation"] > 0
                and self.cfg.evolution.weight_inheritance == "parent"):
            inherit = self._inherit_list(c)
        data = to_data(self.cfg)
        data["model"] = c["spec"]
        if self.cfg.evolution.weight_inheritance == "scratch":
            data["train"].pop("init_checkpoint", None)  # random init, always
        until = self.rungs.steps[rung - 1]
        job = Job(candidate_id=cid, config=data, until_step=until,
                  total_steps=self.rungs.total, rung=rung,
                  seed=self.options.seed * 100_003 + int(cid[1:]),
                  checkpoint_path=str(path), resume_from=resume_from, inherit=inherit,
                  device=slot, cache_dir=str(self.options.cache_dir)
                  if self.options.cache_dir else None)
        self.executor.submit(job)
        self.store.update_candidate(cid, status="running", rung=rung, device=slot,
                                    checkpoint=str(path))
        how = "continues from its checkpoint" if resume_from else (
            f"inherits from {', '.join(c['parents'])}" if inherit else "starts fresh")
        self.log("start", f"{cid} rung {rung} on {slot} ({how}) to step {until}", cid)

    def checkpoint_path(self, cid: str) -> Path:
        """``RUN_DIR/checkpoints/<id>.safetensors``; in a ``--checkpoint-dir`` that other runs
        may share, the run's directory name comes first so runs never overwrite each other."""
        if self.options.checkpoint_dir is None:
            return self.options.run_dir / "checkpoints" / f"{cid}.safetensors"
        run_id = self.store.get_state("run_id") or self.options.run_dir.name
        return self.options.checkpoint_dir / f"{run_id}-{cid}.safetensors"

    def _inherit_list(self, c: dict[str, Any]) -> list[tuple[str, str, str]] | None:
        parents = [self.store.candidate(p) for p in c["parents"]]
        if any(not p.get("checkpoint") or not Path(p["checkpoint"]).is_file() for p in parents):
            return None
        child = ModelSpec.model_validate(c["spec"])
        specs = [ModelSpec.model_validate(p["spec"]) for p in parents]
        provenance = [tuple(x) if x is not None else None for x in (c["provenance"] or [])]
        mapping = inheritance_map(child, provenance, specs)
        return [(name, parents[slot]["checkpoint"], src)
                for name, (slot, src) in mapping.items()]

    def _handle(self, cid: str, event: dict[str, Any], running: dict[str, str],
                rung: int) -> None:
        kind = event.get("kind")
        if kind == "step":
            self.store.add_metrics([{
                "candidate": cid, "rung": rung, "step": event["step"], "loss": event["loss"],
                "lr": event["lr"], "tokens": event["tokens"],
                "tokens_per_s": event["tokens_per_s"], "kind": "train"}])
            self.store.update_candidate(cid, step=event["step"])
        elif kind == "started":
            # which process trains on which device: the TUI's GPU pane shows their memory
            workers = self.store.get_state("workers", {}) or {}
            workers[str(event.get("device"))] = {"pid": event.get("pid"), "candidate": cid}
            self.store.set_state("workers", workers)
        elif kind == "eval":
            self.store.add_metrics([{"candidate": cid, "rung": rung, "step": event["step"],
                                     "loss": event["loss"], "kind": "eval"}])
        elif kind == "guard":
            self.log("guard", f"{cid} stopped by guard {event['reason']} at step "
                     f"{event['step']}", cid)
        elif kind == "result":
            running.pop(cid, None)
            self._finish(cid, event, rung)
        elif kind == "failed":
            running.pop(cid, None)
            current = self.store.candidate(cid)["status"]
            status = "killed" if current == "killing" else "failed"
            self.store.update_candidate(cid, status=status, error=event.get("reason"))
            self.log("failure" if status == "failed" else "kill",
                     f"{cid} {status}: {event.get('reason')}", cid)
        if self.on_event:
            self.on_event(kind or "?", {"candidate": cid, **event})

    def _finish(self, cid: str, result: dict[str, Any], rung: int) -> None:
        status = result["status"]
        c = self.store.candidate(cid)
        metrics = dict(c["metrics"] or {})
        metrics.update(result.get("metrics") or {})
        if result.get("inherited"):  # tensors its first rung started from (parents or
            metrics["inherited_tensors"] = result["inherited"]  # init_checkpoint); kept after
        if status in FINISHED:
            others = [self._descriptor(o) for o in self.store.candidates() if o["id"] != cid]
            metrics["novelty"] = novelty(self._descriptor(c), others) if others else 0.0
        if status == "killed" or c["status"] == "killing":
            status = "killed"
        fields = {"status": status, "metrics": metrics, "step": result.get("step", 0),
                  "error": result.get("error") or result.get("stop_reason")}
        if result.get("checkpoint"):
            fields["checkpoint"] = result["checkpoint"]
        self.store.update_candidate(cid, **fields)
        if status in FINISHED and self.weights is not None and c["parents"]:
            self._credit(c, metrics)
        text = f"{cid} rung {rung} {status}"
        if result.get("stop_reason"):
            text += f" ({result['stop_reason']})"
        shown = [f"{k} {metrics[k]:.4g}" for k in self.cfg.evolution.objectives
                 if isinstance(metrics.get(k), int | float)]
        self.log("finish" if status in FINISHED else status,
                 text + (": " + ", ".join(shown) if shown else ""), cid)
        self._stale = True  # exported once the freed slot has its next candidate

    def _credit(self, c: dict[str, Any], metrics: dict[str, float]) -> None:
        parent = self.store.candidate(c["parents"][0])
        ops = [op for op in (c["operator"] or "").split("; ") if op]
        self.weights.observe(ops, metrics, parent["metrics"] or {},
                             self.cfg.evolution.objectives)
        self.store.set_state("weights", self.weights.to_dict())  # a resume keeps every credit

    # -- commands -----------------------------------------------------------------------
    def _obey_commands(self, running: dict[str, str]) -> None:
        for cmd in self.store.pending_commands():
            cid, action = cmd["candidate"], cmd["action"]
            status = self.store.candidate(cid)["status"]
            outcome, ok = "", True
            if action == "pause":
                if cid in running:
                    self.executor.request(cid, "pause")
                    outcome = "pausing at the next step boundary"
                elif status == "queued":
                    self.store.update_candidate(cid, status="paused")
                    outcome = "paused before it started"
                else:
                    ok, outcome = False, f"cannot pause a {status} candidate"
            elif action == "resume":
                if status == "paused":
                    self.store.update_candidate(cid, status="queued")
                    outcome = "queued again; continues from its checkpoint"
                else:
                    ok, outcome = False, f"cannot resume a {status} candidate"
            elif action == "kill":
                if cid in running and self.executor.request(cid, "kill"):
                    self.store.update_candidate(cid, status="killing")
                    outcome = "killing"
                elif status in ("queued", "paused"):
                    self.store.update_candidate(cid, status="killed")
                    outcome = "killed"
                else:
                    ok, outcome = False, f"cannot kill a {status} candidate"
            self.store.finish_command(cmd["id"], "done" if ok else "rejected", outcome)
            self.log(action if ok else "command", f"{cid}: {outcome}", cid)

    # -- outputs ------------------------------------------------------------------------
    def frontier_ids(self) -> list[str]:
        finished = [c for c in self.store.candidates() if c["status"] in FINISHED
                    and self._complete(c)]
        entries = [Entry(id=c["id"], metrics=c["metrics"], status=c["status"], spec=None)
                   for c in finished]
        return pareto_front(entries, self.cfg.evolution.objectives) if entries else []

    def _export(self) -> None:
        self._stale = False
        run_dir = self.options.run_dir
        write_frontier(self.store, self.options.frontier_path or run_dir / "frontier.json",
                       self.cfg.evolution.objectives, self.frontier_ids())
        write_lineage(self.store, run_dir / "lineage.json")

    def cleanup(self) -> None:
        """Delete this run's checkpoints that nothing needs any more: not on the frontier,
        not a possible parent of the next generation, not paused, queued or running.
        Only files named after this run's candidates inside its checkpoint directory."""
        keep = set(self.frontier_ids())
        pool = self._ranked([c for c in self.store.candidates() if c["status"] in FINISHED
                             and self._complete(c)])
        keep |= {c["id"] for c in pool[: self.cfg.evolution.population]}
        removed = 0
        for c in self.store.candidates():
            path = c.get("checkpoint")
            if not path or c["id"] in keep or c["status"] in ("queued", "running", "paused",
                                                               "killing"):
                continue
            if not integrity.remove_own_file(path, self.checkpoint_path(c["id"])):
                continue  # only the regular file this run wrote for it, never through a link
            self.store.update_candidate(c["id"], checkpoint=None)
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

