"""A top-k key selector for softmax attention (after DeepSeek-V3.2's sparse attention).

A light indexer with its own weights scores each earlier key for each query,
``I(t, s) = sum_j w_j(x_t) * relu(q_j(x_t) . k(x_s))`` over a few narrow indexer heads. Each
query then attends only to its last ``window`` positions (itself included) and its ``topk``
best-scored other keys: keys and values are gathered, so attention work and memory follow
``window + topk``, not the sequence length (the indexer itself is quadratic but narrow).

Selection carries no gradient, so the indexer is trained by distillation: the KL divergence
from the attention's own distribution over the selected keys (summed over heads, detached) to
the indexer's softmax over the same keys, weighted ``distill``. A training forward leaves that
term in ``pending``; ``LM.aux_loss`` collects it with the MoE losses, so the trainer adds it to
the loss it backpropagates (scaled with it under gradient accumulation). ``last_loss`` keeps
the unweighted value for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evotui.dsl.attn_spec import KeySelect


class KeySelector(nn.Module):
    def __init__(self, spec: KeySelect, dim: int):
        super().__init__()
        self.heads, self.dim = spec.heads, spec.dim
        self.topk, self.window, self.distill = spec.topk, spec.window, spec.distill
        self.wq = nn.Linear(dim, spec.heads * spec.dim, bias=False)
        self.wk = nn.Linear(dim, spec.dim, bias=False)
        self.ww = nn.Linear(dim, spec.heads, bias=False)
        self.last_loss: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None  # the weighted distillation loss, not yet taken

    def index_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, T) indexer scores ``I(t, s)`` (not yet masked)."""
        B, T, _ = x.shape
        qi = self.wq(x).view(B, T, self.heads, self.dim).float()
        ki = self.wk(x).float()
        s = torch.relu(torch.einsum("bthd,bsd->bths", qi, ki))
        return torch.einsum("bths,bth->bts", s, self.ww(x).float())

    def select(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n) key indices per query and whether each is a real (causal) key; the
        window always comes first, then the best-scored earlier keys."""
        T = scores.shape[-1]
        n = min(T, self.window + self.topk)
        pos = torch.arange(T, device=scores.device)
        dist = pos[:, None] - pos[None, :]
        causal = dist >= 0
        ranked = scores.detach().masked_fill(~causal, float("-inf"))
        ranked = ranked.masked_fill(causal & (dist < self.window), float("inf"))
        idx = ranked.topk(n, dim=-1).indices
        return idx, idx <= pos[:, None]

    def forward(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                scale: float, slopes: torch.Tensor | None = None,
                dropout: float = 0.0) -> torch.Tensor:
        """q (B, H, T, hd), k and v (B, H_kv, T, hd) -> (B, H, T, hd) over the selected keys."""
        B, H, T, hd = q.shape
        hk = k.shape[1]
        self.pending = None
        scores = self.index_scores(x)
        idx, valid = self.select(scores)  # (B, T, n)
        n = idx.shape[-1]
        flat = idx.reshape(B, 1, T * n, 1).expand(B, hk, T * n, hd)
        ks = k.gather(2, flat).view(B, hk, T, n, hd).float()
        vs = v.gather(2, flat).view(B, hk, T, n, hd).float()
        qg = q.float().view(B, hk, H // hk, T, hd)
        att = torch.einsum("bkgtd,bktnd->bkgtn", qg, ks) * scale
        if slopes is not None:
            dist = (torch.arange(T, device=q.device)[None, :, None] - idx).float()  # (B, T, n)
            att = att - slopes.view(1, hk, H // hk, 1, 1) * dist[:, None, None]
        att = att.masked_fill(~valid[:, None, None], float("-inf")).softmax(dim=-1)
        probs = att
        if dropout > 0:
            att = F.dropout(att, p=dropout, training=True)
        y = torch.einsum("bkgtn,bktnd->bkgtd", att, vs).reshape(B, H, T, hd).to(q.dtype)
        if self.training and self.distill > 0 and torch.is_grad_enabled():
            target = probs.detach().sum(dim=(1, 2)) / H  # (B, T, n)
            logp = scores.gather(-1, idx).masked_fill(~valid, float("-inf")).log_softmax(-1)
            logp = logp.masked_fill(~valid, 0.0)  # target is 0 there: no term, no NaN
            kl = target * (target.clamp_min(1e-9).log() - logp)
            loss = kl.sum(-1).mean()
            self.last_loss = loss.detach()
            self.pending = self.distill * loss
        return y

    def extra_repr(self) -> str:
        return (f"topk={self.topk}, window={self.window}, heads={self.heads}, dim={self.dim}, "
                f"distill={self.distill:g}")
