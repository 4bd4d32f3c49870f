"""A Mamba2-style selective state-space branch with a chunked (SSD) scan in pure PyTorch.

Shapes in the scan: b batch, T time, H heads, P head_dim, N d_state. Per head the state
h (P x N) evolves as ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T`` and the output is
``y_t = h_t C_t + D x_t``; A is one scalar per head and B, C are shared by all heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from evotui.dsl.model import SSMSpec


def naive_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
               state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step-by-step reference. x (b,T,H,P), dt (b,T,H), A (H), B and C (b,T,N), D (H),
    state (b,H,P,N) or None. Returns (y (b,T,H,P), final state (b,H,P,N))."""
    b, T, H, P = x.shape
    h = x.new_zeros(b, H, P, B.size(-1)) if state is None else state
    ys = []
    for t in range(T):
        decay = torch.exp(dt[:, t] * A)  # (b, H)
        inp = (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        h = decay[..., None, None] * h + inp
        ys.append(torch.einsum("bhpn,bn->bhp", h, C[:, t]) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1), h


def segsum(a: Tensor) -> Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above the diagonal.

    Summing the masked terms directly (rather than differencing one long cumsum) keeps the
    small decays near the diagonal accurate."""
    L = a.size(-1)
    ones = torch.ones(L, L, dtype=torch.bool, device=a.device)
    terms = a[..., :, None].expand(*a.shape, L)  # terms[..., i, j] = a[..., i]
    s = terms.masked_fill(~ones.tril(-1), 0.0).cumsum(-2)  # keep a_i only for i > j
    return s.masked_fill(~ones.tril(0), -math.inf)


def chunked_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                 chunk: int, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The same recurrence as :func:`naive_scan`, computed chunk by chunk (SSD).

    Within a chunk the output is a masked, decayed attention-like product; across chunks
    only the (H, P, N) states are passed on. T need not be a multiple of ``chunk``: the tail
    is padded with dt = 0 (no decay, no input), which leaves earlier outputs unchanged."""
    b, T, H, P = x.shape
    N = B.size(-1)
    pad = (-T) % chunk
    if pad:
        x, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    nc, L = (T + pad) // chunk, chunk
    x = x.reshape(b, nc, L, H, P)
    B = B.reshape(b, nc, L, N)
    C = C.reshape(b, nc, L, N)
    dt = dt.reshape(b, nc, L, H)
    a = (dt * A).permute(0, 1, 3, 2)  # (b, nc, H, L): log decay per step
    a_cum = a.cumsum(-1)
    xdt = x * dt[..., None]

    # 1. within each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(a_{s+1} + .. + a_l) dt_s x_s
    decay = torch.exp(segsum(a))  # (b, nc, H, L, L)
    y = torch.einsum("bcln,bcsn,bchls,bcshp->bclhp", C, B, decay, xdt)

    # 2. the state each chunk leaves from its own inputs
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, nc, H, L)
    states = torch.einsum("bcsn,bchs,bcshp->bchpn", B, to_end, xdt)

    # 3. pass states across chunks: entering[c] = sum_{c'<c} decay(c'..c) * states[c']
    first = x.new_zeros(b, 1, H, P, N) if state is None else state[:, None]
    states = torch.cat([first, states], dim=1)  # (b, nc+1, H, P, N)
    totals = a_cum[..., -1].transpose(1, 2)  # (b, H, nc): log decay over each chunk
    chunk_decay = torch.exp(segsum(F.pad(totals, (1, 0))))  # (b, H, nc+1, nc+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    entering, final = states[:, :-1], states[:, -1]

    # 4. the entering state's contribution, decayed to each position of the chunk
    y = y + torch.einsum("bcln,bchpn,bchl->bclhp", C, entering, torch.exp(a_cum))
    y = y.reshape(b, nc * L, H, P)[:, :T] + D[:, None] * x.reshape(b, nc * L, H, P)[:, :T]
    return y, final


class GatedRMSNorm(nn.Module):
    """rmsnorm(y * silu(z)) * weight."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        y = (y * F.silu(z)).float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(z) * self.weight


class Mamba2(nn.Module):
    """in_proj -> [z, x, B, C, dt_low]; causal depthwise conv + silu over [x, B, C];
    input-dependent step size; chunked selective scan; gated RMSNorm; out_proj."""

    def __init__(self, spec: SSMSpec, dim: int) -> None:
        super().__init__()
        if spec.dt_rank is None:
            raise ValueError("SSMSpec.dt_rank must be resolved (load the spec through a ModelSpec)")
        inner = spec.expand * dim
        if inner % spec.head_dim:
            raise ValueError(f"head_dim {spec.head_dim} must divide expand*dim ({inner})")
        self.inner, self.d_state, self.dt_rank = inner, spec.d_state, spec.dt_rank
        self.head_dim, self.nheads = spec.head_dim, inner // spec.head_dim
        self.d_conv, self.chunk = spec.d_conv, spec.chunk
        conv_ch = inner + 2 * spec.d_state
        self.in_proj = nn.Linear(dim, 2 * inner + 2 * spec.d_state + spec.dt_rank, bias=False)
        self.conv = nn.Conv1d(conv_ch, conv_ch, spec.d_conv, groups=conv_ch, bias=True)
        self.dt_proj = nn.Linear(spec.dt_rank, self.nheads, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        self.out_norm = GatedRMSNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.gate_init = spec.gate
        self.scale = nn.Parameter(torch.empty(dim)) if spec.gate is not None else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        """SSM-specific init (a generic re-init of Linear weights may follow; these should not
        be overwritten): A in [-16, -1], softplus(dt_bias) log-uniform in [dt_min, dt_max]."""
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1.0, 16.0).log())
        u = torch.rand_like(self.dt_bias)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp_min(1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.D.fill_(1.0)
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        if self.scale is not None:
            self.scale.fill_(self.gate_init)

    def forward(self, u: Tensor) -> Tensor:
        b, T, _ = u.shape
        inner, N, H, P = self.inner, self.d_state, self.nheads, self.head_dim
        z, xbc, dt_low = self.in_proj(u).split([inner, inner + 2 * N, self.dt_rank], dim=-1)
        xbc = F.pad(xbc.transpose(1, 2), (self.d_conv - 1, 0))  # causal: left pad only
        xbc = F.silu(self.conv(xbc)).transpose(1, 2)
        x, B, C = xbc.split([inner, N, N], dim=-1)
        dt = self.dt_proj(dt_low)
        # the scan runs in fp32: its decays and long sums are sensitive to rounding
        with torch.autocast(u.device.type, enabled=False):
            dt = F.softplus(dt.float() + self.dt_bias.float())
            A = -torch.exp(self.A_log.float())
            y, _ = chunked_scan(x.float().reshape(b, T, H, P), dt, A, B.float(), C.float(),
                                self.D.float(), self.chunk)
        y = self.out_norm(y.reshape(b, T, inner), z)
        out = self.out_proj(y)
        return out * self.scale if self.scale is not None else out
