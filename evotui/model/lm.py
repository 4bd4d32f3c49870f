"""The language model assembled from a genome: embeddings, pre-norm blocks, recurrence, head.

``build_model(spec, seq_len)`` returns an :class:`LM` whose ``state_dict`` names and shapes are
exactly ``evotui.dsl.manifest(spec)`` (a test checks it for every config), so the estimator's
parameter count is the built model's count.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from evotui.dsl.model import ModelSpec, Recurrence
from evotui.model.block import Block, Gates, make_norm
from evotui.model.ffn import MoE
from evotui.model.selector import KeySelector

# Output projections that write into the residual stream: their init is scaled by depth.
RESIDUAL_OUT = ("wo.weight", "w_out.weight", "w2.weight", ".w2", "out_proj.weight")
# SSM tensors with their own initialisation (Mamba2.reset_parameters) keep it.
SSM_OWN_INIT = ("conv.weight", "conv.bias", "dt_proj.weight", "dt_bias", "A_log", ".D", "scale",
                "out_norm.weight")

__all__ = ["LM", "Block", "Gates", "Loop", "build_model", "count_parameters", "make_norm"]


class Loop(nn.Module):
    """The adapter of one recurrence span (parameters only when the spec asks for them)."""

    def __init__(self, spec: Recurrence, dim: int):
        super().__init__()
        self.spec = spec
        if spec.adapter == "linear":
            fan_in = 2 * dim if spec.concat_prelude else dim
            self.adapter = nn.Linear(fan_in, dim, bias=False)

    def reset_parameters(self) -> None:
        # Start as plain repetition: the adapter passes the state through unchanged.
        if hasattr(self, "adapter"):
            w = self.adapter.weight
            with torch.no_grad():
                w.zero_()
                w[:, : w.shape[0]].copy_(torch.eye(w.shape[0]))

    def step_input(self, state: torch.Tensor, prelude: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "adapter"):
            return state
        inp = torch.cat([state, prelude], dim=-1) if self.spec.concat_prelude else state
        return self.adapter(inp)


class LM(nn.Module):
    def __init__(self, spec: ModelSpec, seq_len: int, backend: str = "auto"):
        super().__init__()
        self.spec = spec
        d, v = spec.emb.dim, spec.emb.vocab
        self.tok_emb = nn.Embedding(v, d)
        self.drop = nn.Dropout(spec.emb.dropout)
        self.blocks = nn.ModuleList(
            Block(b, d, spec.norm, seq_len, backend) for b in spec.blocks
        )
        self.recurrences = nn.ModuleList(Loop(r, d) for r in spec.recurrences)
        self.final_norm = make_norm(spec.norm, d)
        if not spec.head.tie_embeddings:
            self.lm_head = nn.Linear(d, v, bias=False)
        self.gradient_checkpointing = False
        self.progress = 1.0  # fraction of training done, for the recurrence curriculum
        self.loop_override: int | None = None  # evaluation at a test_recurrences count
        # draws the training recurrence count of a span with a max_train_recurrence; the
        # trainer seeds it per step so a resumed run draws the same counts
        self.recurrence_rng = random.Random(0)
        self.reset_parameters()

    # -- initialisation ---------------------------------------------------------------------
    def reset_parameters(self) -> None:
        std = self.spec.emb.init_std
        depth = sum(self.loops_for(r.spec, training=False) * (r.spec.end - r.spec.start + 1)
                    for r in self.recurrences)
        depth += len(self.blocks) - sum(r.spec.end - r.spec.start + 1 for r in self.recurrences)
        residual_std = std / math.sqrt(2 * max(1, depth))
        for name, p in self.named_parameters():
            if name.startswith("recurrences.") or p.dim() < 2:
                continue
            if ".ssm." in name and name.endswith(SSM_OWN_INIT):
                continue
            nn.init.normal_(p, 0.0, residual_std if name.endswith(RESIDUAL_OUT) else std)
        for r in self.recurrences:
            r.reset_parameters()

    # -- recurrence -------------------------------------------------------------------------
    def loops_for(self, rec: Recurrence, training: bool) -> int:
        if not training:
            return self.loop_override or rec.train_recurrence
        target = rec.train_recurrence
        if rec.max_train_recurrence is not None:
            target = self.recurrence_rng.randint(rec.train_recurrence, rec.max_train_recurrence)
        if rec.curriculum_fraction > 0 and self.progress < rec.curriculum_fraction:
            ramp = 1 + math.floor((target - 1) * self.progress / rec.curriculum_fraction)
            target = min(target, ramp)
        return target

    # -- forward ----------------------------------------------------------------------------
    def _run(self, block: Block, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, x0, use_reentrant=False)
        return block(x, x0)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.tok_emb(idx))
        x0 = x
        starts = {r.spec.start: r for r in self.recurrences}
        i = 0
        while i < len(self.blocks):
            loop = starts.get(i)
            if loop is None:
                x = self._run(self.blocks[i], x, x0)
                i += 1
                continue
            prelude, state = x, x
            for _ in range(self.loops_for(loop.spec, self.training)):
                h = loop.step_input(state, prelude)
                for j in range(loop.spec.start, loop.spec.end + 1):
                    h = self._run(self.blocks[j], h, x0)
                state = h
            x = state
            i = loop.spec.end + 1
        return self.final_norm(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.lm_head.weight if hasattr(self, "lm_head") else self.tok_emb.weight
        return F.linear(h, weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, given targets, the mean cross-entropy (MoE auxiliary losses
        are separate: :meth:`aux_loss`)."""
        logits = self.logits(self.hidden(idx))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def moe_layers(self) -> list[MoE]:
        if not hasattr(self, "_moe"):  # walked once: aux_loss runs every micro-step
            self._moe = [m for m in self.modules() if isinstance(m, MoE)]
        return self._moe

    def key_selectors(self) -> list[KeySelector]:
        if not hasattr(self, "_selectors"):
            self._selectors = [m for m in self.modules() if isinstance(m, KeySelector)]
        return self._selectors

    def aux_loss(self, entropy_coeff: float = 0.0) -> torch.Tensor:
        """Auxiliary loss of the last forward: the MoE load-balance losses, minus
        ``entropy_coeff`` x the mean router entropy (a regulariser against router collapse),
        plus the key selectors' distillation losses (each taken once). Zero without either."""
        total = torch.zeros((), device=self.tok_emb.weight.device)
        layers = self.moe_layers()
        if layers:
            total = torch.stack([m.aux_loss for m in layers]).sum()
            if entropy_coeff:
                total = total - entropy_coeff * torch.stack([m.entropy for m in layers]).mean()
        for s in self.key_selectors():
            if s.pending is not None:
                total = total + s.pending.to(total.dtype)
                s.pending = None
        return total

    def router_stats(self) -> list[dict[str, torch.Tensor]]:
        return [m.stats for m in self.moe_layers() if getattr(m, "stats", None)]


def build_model(spec: ModelSpec, seq_len: int, backend: str = "auto",
                device: torch.device | str | None = None) -> LM:
    """Build the model for ``spec`` (``device="meta"`` builds it without memory)."""
    if device is None:
        return LM(spec, seq_len, backend)
    with torch.device(device):
        return LM(spec, seq_len, backend)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

