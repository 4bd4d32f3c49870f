"""The learning-rate schedule: linear warm-up, then cosine, linear or constant.

``lr_factor`` is a pure function of ``(step, total_steps, cfg)``, so a run resumed at step k
gets exactly the learning rates the uninterrupted run would have had, with no scheduler state
to save.

``total_steps`` is the length of the candidate's whole planned training: the trainer passes
the total optimizer steps it plans for the candidate (across the rungs it is planned to
train through), not the length of the current rung. A candidate that continues from one rung
into the next therefore keeps decaying along the same curve, and one that stops early has
only seen the start of it. Past ``total_steps`` the factor stays at the end value.
"""

from __future__ import annotations

import math

import torch

from evotui.dsl.run import TrainConfig


def lr_factor(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """The multiplier of the base lr for optimizer step ``step`` (0 for the first step).

    Warm-up: (step + 1) / warmup for the first ``cfg.warmup`` steps (1/warmup ... 1). Then,
    with progress p = (step - warmup) / (total_steps - warmup) clamped to [0, 1]:
    cosine 1 -> min_lr_ratio along half a cosine, linear 1 -> min_lr_ratio, constant 1.
    The decay reaches ``cfg.min_lr_ratio`` at ``step == total_steps``.
    """
    if step < 0 or total_steps < 1:
        raise ValueError(f"need step >= 0 and total_steps >= 1 (got {step}, {total_steps})")
    warmup = cfg.warmup
    if step < warmup:
        return (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    low = cfg.min_lr_ratio
    if cfg.lr_schedule == "cosine":
        return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "linear":
        return 1.0 - (1.0 - low) * progress
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}")


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to ``group["base_lr"] * factor``."""
    for group in optimizer.param_groups:
        if "base_lr" not in group:
            raise KeyError("param group has no base_lr; build it with evotui.train.optim")
        lr = group["base_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
