"""Feed-forward branches: a dense MLP (SwiGLU or a plain activation) and a mixture of experts.

State-dict names and shapes follow ``evotui.dsl.estimate.ffn_shapes`` exactly:
dense ``w1.weight (F, D)``, ``w3.weight (F, D)`` (swiglu only), ``w2.weight (D, F)``;
MoE ``router.weight (E, D)``, ``w1 (E, Fe, D)``, ``w3 (E, Fe, D)``, ``w2 (E, D, Fe)`` and an
optional dense ``shared`` expert.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from evotui.dsl import model as dsl

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


def activate(h1: Tensor, h3: Tensor | None, activation: str) -> Tensor:
    """The hidden activation: silu(h1) * h3 for swiglu, else act(h1)."""
    if activation == "swiglu":
        assert h3 is not None
        return F.silu(h1) * h3
    return ACTIVATIONS[activation](h1)


class DenseFFN(nn.Module):
    """w2(act(w1 x)) or, for swiglu, w2(silu(w1 x) * w3 x). No biases."""

    def __init__(self, dim: int, hidden: int, activation: str = "swiglu",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if activation != "swiglu" and activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.activation = activation
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False) if activation == "swiglu" else None
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def from_spec(cls, spec: dsl.DenseFFN, dim: int) -> DenseFFN:
        return cls(dim, spec.hidden, spec.activation, spec.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h3 = self.w3(x) if self.w3 is not None else None
        return self.dropout(self.w2(activate(self.w1(x), h3, self.activation)))


class MoE(nn.Module):
    """Top-k routed experts with a fixed capacity per expert, computed without host syncs.

    Each token picks ``k`` of ``E`` experts. An expert takes at most
    ``C = ceil(capacity_factor * tokens * k / E)`` (token, slot) pairs, first come first served
    in flattened token order (so a token is never dropped because of later tokens of its own
    sequence); the rest are dropped and only the residual carries them.

    Dispatch has static shapes throughout, so it compiles into one graph and never waits for
    the device: each pair's rank within its expert is a cumulative sum over a one-hot of the
    routing; kept pairs are scattered into an (E x C) buffer (dropped ones into a spare row),
    every expert runs as one batched matmul over its C rows (``bmm``; empty rows cost FLOPs,
    ``capacity_factor - 1`` of them at a balanced load), and each token gathers its k gated
    outputs back.

    After each forward: ``aux_loss`` (the weighted Switch load-balance loss, a scalar with a
    gradient to the router), ``entropy`` (the mean router entropy, with its gradient) and
    ``stats`` (detached: ``entropy`` in nats, ``load`` fraction of routed slots per expert,
    ``overflow`` fraction of slots dropped).
    """

    def __init__(self, spec: dsl.MoEFFN, dim: int) -> None:
        super().__init__()
        E, Fe = spec.n_experts, spec.expert_hidden
        self.n_experts, self.k = E, spec.k
        self.capacity_factor = spec.capacity_factor
        self.balance = spec.balance or 0.0
        self.router_kind = spec.router
        self.temperature = spec.router_temperature
        self.activation = spec.activation
        self.router = nn.Linear(dim, E, bias=False)
        self.w1 = nn.Parameter(torch.empty(E, Fe, dim))
        self.w3 = nn.Parameter(torch.empty(E, Fe, dim)) if spec.activation == "swiglu" else None
        self.w2 = nn.Parameter(torch.empty(E, dim, Fe))
        self.shared = (DenseFFN(dim, spec.shared * Fe, spec.activation)
                       if spec.shared > 0 else None)
        self.aux_loss: Tensor = torch.zeros(())
        self.entropy: Tensor = torch.zeros(())
        self.stats: dict[str, Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for w in (self.router.weight, self.w1, self.w3, self.w2):
            if w is not None:
                nn.init.normal_(w, std=std)

    def capacity(self, tokens: int) -> int:
        return math.ceil(self.capacity_factor * tokens * self.k / self.n_experts)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(probs (T, E) for the balance loss, gates (T, k), expert ids (T, k))."""
        logits = self.router(x).float() / self.temperature
        if self.router_kind == "softmax":
            scores = probs = logits.softmax(-1)
        else:
            scores = logits.sigmoid()
            probs = scores / scores.sum(-1, keepdim=True)
        top, idx = scores.topk(self.k, dim=-1)
        gates = top / top.sum(-1, keepdim=True)
        return probs, gates, idx

    def experts(self, h: Tensor) -> Tensor:
        """Every expert on its rows at once: h (E, C, D) -> (E, C, D)."""
        w1, w2 = self.w1.to(h.dtype), self.w2.to(h.dtype)
        h3 = torch.bmm(h, self.w3.to(h.dtype).transpose(1, 2)) if self.w3 is not None else None
        a = activate(torch.bmm(h, w1.transpose(1, 2)), h3, self.activation)
        return torch.bmm(a, w2.transpose(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        T, E, k = x.size(0), self.n_experts, self.k
        probs, gates, idx = self.route(x)
        cap = self.capacity(T)

        # (token, slot) pairs token-major; rank = earlier pairs routed to the same expert
        flat_e = idx.reshape(-1)
        onehot = F.one_hot(flat_e, E)  # (T * k, E)
        counts = onehot.sum(0)
        rank = (onehot.cumsum(0) - onehot).gather(1, flat_e[:, None]).squeeze(1)
        keep = rank < cap
        slot = torch.where(keep, flat_e * cap + rank, E * cap)  # E * cap: the spare row

        tok = torch.arange(T * k, device=x.device) // k
        buf = x.new_zeros(E * cap + 1, x.size(1)).index_add(0, slot, x[tok])
        y = self.experts(buf[:-1].view(E, cap, -1)).reshape(E * cap, -1)
        y = torch.cat([y, y.new_zeros(1, y.size(1))])[slot]  # dropped pairs read zeros
        weight = (gates.reshape(-1) * keep).to(y.dtype)
        out = (y * weight[:, None]).view(T, k, -1).sum(1).to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(x)

        load = counts.float() / (T * k)
        self.aux_loss = self.balance * E * (load * probs.mean(0)).sum()
        # mean router entropy with its gradient, for the trainer's entropy regulariser
        self.entropy = -(probs * probs.clamp_min(1e-20).log()).sum(-1).mean()
        with torch.no_grad():
            self.stats = {
                "entropy": self.entropy.detach(),
                "load": load.detach(),
                "overflow": 1.0 - keep.sum().float() / (T * k),
            }
        return out.reshape(shape)


def build_ffn(spec: dsl.DenseFFN | dsl.MoEFFN, dim: int) -> DenseFFN | MoE:
    """The FFN branch a block spec asks for."""
    if isinstance(spec, dsl.MoEFFN):
        return MoE(spec, dim)
    return DenseFFN.from_spec(spec, dim)
