"""Step budgets in optimizer steps: plain arithmetic on a config, no torch (the engine plans
rungs with it before any worker exists)."""

from __future__ import annotations

import math

from evotui.dsl import RunConfig


def steps_for(cfg: RunConfig, steps: int | None, tokens: int | None) -> int:
    """A rung budget in optimizer steps (tokens are rounded up to whole steps)."""
    if steps is not None:
        return steps
    per_step = tokens_per_step(cfg)
    return max(1, math.ceil((tokens or per_step) / per_step))


def tokens_per_step(cfg: RunConfig) -> int:
    return cfg.data.batch_size * cfg.data.seq_len * (cfg.train.grad_accum or 1)
