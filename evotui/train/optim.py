"""Optimizers: AdamW (torch's), Lion and Muon, and the parameter groups they share.

Every group built here stores its base learning rate in ``group["base_lr"]``;
``evotui.train.schedule.apply_lr`` scales it each step. Groups also carry ``param_names`` (torch
keeps them in the optimizer's ``state_dict``) so a checkpoint can check it is loaded into the
same parameters.

Weight decay goes to tensors with ``dim >= 2`` (matrices, expert stacks, embeddings) and never
to the rest (norm weights, biases, gates, SSM ``A_log`` / ``D`` / ``dt_bias``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from evotui.dsl.run import TrainConfig

ADAMW_BETAS = (0.9, 0.95)
LION_BETAS = (0.9, 0.99)
EPS = 1e-8

# Muon's learning rate for hidden matrices is train.lr x MUON_LR_MULT: the usual pairing of
# AdamW at 3e-4 with Muon at 0.02 (Muon's steps are orthogonal matrices, whose per-element
# size is ~1/sqrt(width), so it needs a far larger lr than Adam's ~lr-sized steps). The
# embeddings, the head and every vector keep train.lr with AdamW maths.
MUON_LR_MULT = 0.02 / 3e-4
MUON_MOMENTUM = 0.95
NS_STEPS = 5
NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz: fast growth of small sigmas
EMBEDDING_NAMES = ("tok_emb.weight", "lm_head.weight")


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _group(named: list[tuple[str, nn.Parameter]], **options: Any) -> dict[str, Any]:
    return {"params": [p for _, p in named], "param_names": [n for n, _ in named], **options}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[decayed (dim >= 2), not decayed (dim < 2)] trainable parameters; empty groups dropped."""
    named = trainable(model)
    decay = [(n, p) for n, p in named if p.dim() >= 2]
    plain = [(n, p) for n, p in named if p.dim() < 2]
    groups = [_group(decay, weight_decay=weight_decay), _group(plain, weight_decay=0.0)]
    return [g for g in groups if g["params"]]


def muon_params(model: nn.Module) -> list[str]:
    """Names of the hidden matrices Muon updates: dim >= 2, except the embedding, the head and
    depthwise convolution kernels (C, 1, K), which are per-channel filters, not matrices."""
    return [n for n, p in trainable(model)
            if p.dim() >= 2 and n not in EMBEDDING_NAMES and 1 not in p.shape[-2:]]


# -- Lion -----------------------------------------------------------------------------------
class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): step = lr * sign(beta1 * m + (1 - beta1) * g), then
    m <- beta2 * m + (1 - beta2) * g. Weight decay is decoupled: p <- p * (1 - lr * wd).

    Every step moves each element by exactly lr (where the sign is not 0), so Lion usually
    wants a 3-10x smaller lr, and a larger weight decay, than AdamW.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = LION_BETAS, weight_decay: float = 0.0) -> None:
        if lr <= 0 or not all(0.0 <= b < 1.0 for b in betas) or weight_decay < 0:
            raise ValueError(f"bad Lion hyper-parameters: lr={lr}, betas={betas}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise RuntimeError("Lion does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(torch.lerp(m, g, 1 - beta1).sign_(), alpha=-lr)
                m.lerp_(g, 1 - beta2)
        return loss


# -- Muon -----------------------------------------------------------------------------------
def orthogonalize(g: Tensor, steps: int = NS_STEPS) -> Tensor:
    """Approximately U V^T for g = U S V^T, by the quintic Newton-Schulz iteration.

    Works on the last two dims (leading dims, e.g. MoE experts, are a batch). Singular values
    come out in roughly [0.7, 1.2] rather than exactly 1, which is all Muon needs. Runs in bf16
    on CUDA and fp32 elsewhere; returns g's dtype.
    """
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    if tall:
        x = x.mT
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for hidden matrices and AdamW for everything else, in one optimizer (one state).

    Groups with ``use_muon=True`` (the default) hold only tensors with dim >= 2. Their update
    is the Nesterov momentum of the gradient, orthogonalised by :func:`orthogonalize` (per
    matrix of a stacked tensor: a 3-D MoE stack (E, out, in) per expert), scaled by
    ``max(1, out / in) ** 0.5``. Groups with ``use_muon=False`` get AdamW (bias-corrected
    moments, ``betas``, ``eps``). Weight decay is decoupled in both: p <- p * (1 - lr * wd).
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, momentum: float = MUON_MOMENTUM,
                 nesterov: bool = True, ns_steps: int = NS_STEPS,
                 betas: tuple[float, float] = ADAMW_BETAS, eps: float = EPS,
                 weight_decay: float = 0.0) -> None:
        if lr <= 0 or not 0.0 <= momentum < 1.0 or ns_steps < 1 or weight_decay < 0:
            raise ValueError(f"bad Muon hyper-parameters: lr={lr}, momentum={momentum}, "
                             f"ns_steps={ns_steps}, weight_decay={weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                    "betas": betas, "eps": eps, "weight_decay": weight_decay, "use_muon": True}
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"] and any(p.dim() < 2 for p in group["params"]):
                raise ValueError("a use_muon group holds a tensor with dim < 2; put vectors in "
                                 "a use_muon=False group")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            update = self._muon if group["use_muon"] else self._adamw
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Muon does not support sparse gradients")
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                update(p, group, self.state[p])
        return loss

    @staticmethod
    def _muon(p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        g, mom = p.grad, group["momentum"]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf = state["momentum_buffer"]
        buf.lerp_(g, 1 - mom)
        u = torch.lerp(g, buf, mom) if group["nesterov"] else buf
        scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
        p.add_(orthogonalize(u, group["ns_steps"]), alpha=-group["lr"] * scale)

    @staticmethod
    def _adamw(p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        g = p.grad
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(group["eps"])
        p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**t))


# -- construction ---------------------------------------------------------------------------
def build_optimizer(model: nn.Module, cfg: TrainConfig, device_type: str, *,
                    muon_lr_mult: float = MUON_LR_MULT) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer.name`` names, over ``model``'s trainable parameters.

    adamw: ``torch.optim.AdamW`` (fused on CUDA, foreach otherwise), betas/eps from
    ``cfg.optimizer`` (default (0.9, 0.95), 1e-8). lion: :class:`Lion` at ``cfg.lr``, betas
    default (0.9, 0.99). muon: :class:`Muon`, hidden matrices at ``cfg.lr * muon_lr_mult``
    with momentum 0.95, the embedding, head and vectors with AdamW at ``cfg.lr``.
    """
    o, wd = cfg.optimizer, cfg.weight_decay
    eps = o.eps if o.eps is not None else EPS
    if o.name == "muon":
        hidden = set(muon_params(model))
        named = trainable(model)
        matrices = [(n, p) for n, p in named if n in hidden]
        others = [(n, p) for n, p in named if n not in hidden]
        groups = [
            _group(matrices, use_muon=True, weight_decay=wd, lr=cfg.lr * muon_lr_mult),
            _group([(n, p) for n, p in others if p.dim() >= 2], use_muon=False,
                   weight_decay=wd, lr=cfg.lr),
            _group([(n, p) for n, p in others if p.dim() < 2], use_muon=False,
                   weight_decay=0.0, lr=cfg.lr),
        ]
        groups = [g for g in groups if g["params"]]
        betas = tuple(o.betas) if o.betas else ADAMW_BETAS
        opt: torch.optim.Optimizer = Muon(groups, lr=cfg.lr * muon_lr_mult, betas=betas, eps=eps)
    elif o.name == "lion":
        betas = tuple(o.betas) if o.betas else LION_BETAS
        opt = Lion(param_groups(model, wd), lr=cfg.lr, betas=betas)
    elif o.name == "adamw":
        betas = tuple(o.betas) if o.betas else ADAMW_BETAS
        fast = {"fused": True} if device_type == "cuda" else {"foreach": True}
        opt = torch.optim.AdamW(param_groups(model, wd), lr=cfg.lr, betas=betas, eps=eps, **fast)
    else:
        raise ValueError(f"unknown optimizer {o.name!r}")
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    return opt
