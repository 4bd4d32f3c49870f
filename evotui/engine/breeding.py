"""Breeding a generation: the seed and its mutants first, then children of selected parents
(mutation or crossover), each genome trained at most once, rung 0's static gates applied as a
child is added. A mixin of :class:`evotui.engine.engine.Engine`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evotui.dsl import ModelSpec, estimate, to_data
from evotui.engine.records import Candidate
from evotui.errors import UserError
from evotui.evolve.entry import Entry, eligible
from evotui.evolve.novelty import descriptor
from evotui.evolve.selection import get_selector
from evotui.evolve.variation import VariationError, crossover, mutate, spec_key
from evotui.lifecycle import FINISHED, Status

if TYPE_CHECKING:
    from evotui.engine.engine import Engine

    _Base = Engine
else:
    _Base = object


class Breeding(_Base):
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
                       if not any(k in c.metrics for c in self.store.candidates())]
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
            status=Status.FAILED if reason else Status.QUEUED, rung=0,
            total_steps=self.rungs.total,
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

    def _descriptor(self, c: Candidate) -> tuple[float, ...]:
        """A candidate's novelty descriptor, computed once per genome (a finish compares it
        with every other candidate's)."""
        key = c.spec_key or c.id
        if key not in self._descriptors:
            spec = c.spec if c.spec is not None else self.store.candidate(c.id).spec
            self._descriptors[key] = descriptor(ModelSpec.model_validate(spec))
        return self._descriptors[key]

    def _spec(self, cid: str) -> ModelSpec:
        return ModelSpec.model_validate(self.store.candidate(cid).spec)

    def _parent_pool(self) -> list[Entry]:
        """Finished candidates with every objective measured; when clean-up is on, only those
        whose checkpoint is kept (a child always starts from its parents' weights)."""
        inherit = self.cfg.evolution.weight_inheritance == "parent"
        entries = [Entry(id=c.id, metrics=c.metrics, status=c.status,
                         spec=ModelSpec.model_validate(c.spec))
                   for c in self.store.candidates(FINISHED)
                   if not (self.options.cleanup_old_checkpoints and inherit
                           and not c.checkpoint)]
        return eligible(entries, self.cfg.evolution.objectives)
