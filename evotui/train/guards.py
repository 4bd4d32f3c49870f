"""Early-stop guards: each watches one symptom and names its reason when it fires.

- ``nonfinite``: a loss or gradient norm that is NaN or infinite. The candidate fails.
- ``grad_instability``: the gradient norm (before clipping) above ``instability_threshold``.
- ``router_collapse``: mean MoE router entropy below ``entropy_threshold`` for
  ``entropy_patience`` consecutive log intervals.
- ``no_improvement``: the smoothed training loss (EMA 0.9) has not improved on its best by more
  than ``improvement_tolerance`` (relative) for ``no_improve_patience`` steps.
- ``ppl_gate``: after rung 1, held-out perplexity above ``ppl_stop_threshold``.

Telemetry kept on the way: ``nan_seen``, ``loss_spikes`` (steps whose loss exceeded twice the
smoothed loss), ``max_grad_norm``, the last router statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from evotui.dsl.run import TrainConfig

FAILING = {"nonfinite"}  # reasons that fail the candidate; the others stop it early


@dataclass
class Guards:
    cfg: TrainConfig
    nan_seen: bool = False
    loss_spikes: int = 0
    max_grad_norm: float = 0.0
    ema: float | None = None
    best_ema: float = math.inf
    best_step: int = 0
    low_entropy_checks: int = 0
    router: dict[str, Any] = field(default_factory=dict)

    def after_step(self, step: int, loss: float, grad_norm: float) -> str | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nan_seen = True
            return "nonfinite"
        self.max_grad_norm = max(self.max_grad_norm, grad_norm)
        if self.ema is not None and loss > 2.0 * self.ema:
            self.loss_spikes += 1
        self.ema = loss if self.ema is None else 0.9 * self.ema + 0.1 * loss
        limit = self.cfg.instability_threshold
        if limit is not None and grad_norm > limit:
            return "grad_instability"
        if self.ema < self.best_ema * (1.0 - self.cfg.improvement_tolerance):
            self.best_ema, self.best_step = self.ema, step
        patience = self.cfg.no_improve_patience
        if patience is not None and step - self.best_step >= patience:
            return "no_improvement"
        return None

    def after_router_check(self, entropy: float | None) -> str | None:
        """Called every log interval with the mean router entropy (None without MoE)."""
        threshold = self.cfg.entropy_threshold
        if entropy is None or threshold is None:
            return None
        self.low_entropy_checks = self.low_entropy_checks + 1 if entropy < threshold else 0
        if self.low_entropy_checks >= self.cfg.entropy_patience:
            return "router_collapse"
        return None

    def after_rung(self, rung: int, heldout_ppl: float | None) -> str | None:
        limit = self.cfg.ppl_stop_threshold
        if rung == 1 and limit is not None and heldout_ppl is not None and heldout_ppl > limit:
            return "ppl_gate"
        return None

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps so a resumed candidate's guards carry on where they were."""
        return {"nan_seen": self.nan_seen, "loss_spikes": self.loss_spikes,
                "max_grad_norm": self.max_grad_norm, "ema": self.ema,
                "best_ema": None if math.isinf(self.best_ema) else self.best_ema,
                "best_step": self.best_step, "low_entropy_checks": self.low_entropy_checks}

    def restore(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, math.inf if k == "best_ema" and v is None else v)

    def telemetry(self) -> dict[str, Any]:
        return {"nan_seen": self.nan_seen, "loss_spikes": self.loss_spikes,
                "max_grad_norm": self.max_grad_norm, "router": self.router}
