"""Rung promotion: after rung 1 the best ``topk_keep`` fraction of a generation (non-dominated
rank, then crowding distance) continues into rung 2 from its rung-1 checkpoint. The decision is
saved (``promoted.<generation>``) before anything acts on it, so a resumed run never decides
twice; a promoted candidate is queued at rung 2 (``rung`` is the rung it trains toward), so a
resume continues it there. A mixin of :class:`evotui.engine.engine.Engine`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from evotui.engine.records import Candidate
from evotui.evolve.pareto import rank_and_crowding
from evotui.lifecycle import Status

if TYPE_CHECKING:
    from evotui.engine.engine import Engine

    _Base = Engine
else:
    _Base = object

ENTROPY_METRIC = "router_entropy"


@dataclass
class Rungs:
    """Cumulative step budgets: rung 1 for everyone, rung 2 for the promoted."""

    steps: tuple[int, int]

    @property
    def total(self) -> int:
        return self.steps[-1]

    @property
    def last(self) -> int:
        return len(self.steps)


class Promotion(_Base):
    def _promotion(self, g: int, ids: list[str]) -> list[str]:
        saved = self.store.get_state(f"promoted.{g}")
        if saved is not None:
            return list(saved)
        finished = [self.store.candidate(i) for i in ids]
        finished = [c for c in finished if c.status.is_finished() and c.rung == 1
                    and self._complete(c)]
        gates = self.cfg.evolution.rung0_thresholds
        keep_n = max(1, round(self.cfg.evolution.topk_keep * len(ids)))
        promoted = []
        for c in self._ranked(finished):
            entropy = c.metrics.get(ENTROPY_METRIC)
            if entropy is not None and (
                (gates.gate_entropy_min is not None and entropy < gates.gate_entropy_min)
                    or (gates.gate_entropy_max is not None and entropy > gates.gate_entropy_max)):
                self.log("promotion", f"{c.id} not promoted: router entropy {entropy:.2f} "
                         "outside the gate", c.id)
                continue
            if c.status == Status.STOPPED:
                continue  # a guard ended it early: it keeps its rung-1 metrics
            promoted.append(c.id)
            if len(promoted) == keep_n:
                break
        with self.store.transaction():  # the decision and its effects, or none of them
            for cid in promoted:
                paused = self._pause_at_promotion(cid)
                self.store.update_candidate(cid, status=Status.PAUSED if paused
                                            else Status.QUEUED, rung=2)
                self.log("promotion", f"{cid} promoted to rung 2"
                         + (" (paused: resume continues it)" if paused else ""), cid)
            self.store.set_state(f"promoted.{g}", promoted)
            self._refuse_pauses_not_promoted(ids, promoted)
        return promoted

    def _complete(self, c: Candidate) -> bool:
        return all(k in c.metrics for k in self.cfg.evolution.objectives)

    def _ranked(self, cands: list[Candidate]) -> list[Candidate]:
        """Best first: non-dominated rank, then crowding distance within the front."""
        if not cands:
            return []
        ranks, crowd = rank_and_crowding([c.metrics for c in cands],
                                         self.cfg.evolution.objectives)
        order = sorted(range(len(cands)), key=lambda i: (ranks[i], -crowd[i]))
        return [cands[i] for i in order]

    def awaiting_promotion(self, c: Candidate) -> bool:
        """Finished a rung before the last, and its generation's promotion is not decided yet
        (a pause asked of it now acts at the promotion)."""
        return (c.status == Status.DONE and c.rung < self.rungs.last
                and self.store.get_state(f"promoted.{c.generation}") is None)
