"""Mamba2 branch: the chunked scan against the step-by-step recurrence, causality, manifest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from evotui.dsl.estimate import block_manifest
from evotui.dsl.model import BlockSpec, EmbSpec, ModelSpec, SSMSpec
from evotui.model.ssm import Mamba2, chunked_scan, naive_scan

DIM = 16


def scan_inputs(b: int = 2, T: int = 20, H: int = 3, P: int = 4, N: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g)
    dt = F.softplus(torch.randn(b, T, H, generator=g) - 1.0)
    A = -torch.empty(H).uniform_(0.5, 4.0, generator=g)
    B = torch.randn(b, T, N, generator=g)
    C = torch.randn(b, T, N, generator=g)
    D = torch.randn(H, generator=g)
    return x, dt, A, B, C, D


def resolved_spec(**kw) -> SSMSpec:
    """An SSMSpec with dt_rank filled in the way a loaded config does."""
    spec = ModelSpec(emb=EmbSpec(dim=DIM, vocab=32), blocks=[BlockSpec(ssm=SSMSpec(**kw))])
    ssm = spec.blocks[0].ssm
    assert ssm is not None and ssm.dt_rank is not None
    return ssm


@pytest.mark.parametrize("T", [16, 19])
@pytest.mark.parametrize("chunk", [1, 4, 5, 8, 32])
def test_chunked_matches_naive(T: int, chunk: int) -> None:
    x, dt, A, B, C, D = scan_inputs(T=T)
    state = torch.randn(2, 3, 4, 5)
    y_ref, h_ref = naive_scan(x, dt, A, B, C, D, state)
    y, h = chunked_scan(x, dt, A, B, C, D, chunk, state)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=1e-4, rtol=1e-4)


def test_state_carries_across_calls() -> None:
    x, dt, A, B, C, D = scan_inputs(T=21)
    y_full, h_full = chunked_scan(x, dt, A, B, C, D, 4)
    y1, h1 = chunked_scan(x[:, :9], dt[:, :9], A, B[:, :9], C[:, :9], D, 4)
    y2, h2 = chunked_scan(x[:, 9:], dt[:, 9:], A, B[:, 9:], C[:, 9:], D, 4, h1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h2, h_full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gate", [None, 0.5])
def test_manifest(gate: float | None) -> None:
    spec = resolved_spec(d_state=8, head_dim=8, chunk=4, gate=gate)
    m = Mamba2(spec, DIM)
    full = block_manifest(BlockSpec(ssm=spec), "b", DIM, "rmsnorm")
    want = {n.removeprefix("b.ssm."): t.shape for n, t in full.items()
            if n.startswith("b.ssm.")}
    assert {n: tuple(t.shape) for n, t in m.state_dict().items()} == want


def test_init_ranges() -> None:
    m = Mamba2(resolved_spec(head_dim=4, gate=0.25), DIM)
    dt = F.softplus(m.dt_bias)
    assert torch.all(dt >= 1e-3 * 0.999) and torch.all(dt <= 1e-1 * 1.001)
    A = -torch.exp(m.A_log)
    assert torch.all(A <= -1.0 + 1e-6) and torch.all(A >= -16.0 - 1e-5)
    assert torch.all(m.D == 1.0)
    assert m.scale is not None and torch.all(m.scale == 0.25)


@pytest.mark.parametrize("T", [12, 13])
def test_module_chunk_size_invariant(T: int) -> None:
    torch.manual_seed(0)
    m = Mamba2(resolved_spec(d_state=4, head_dim=8, chunk=4), DIM)
    u = torch.randn(2, T, DIM)
    y4 = m(u)
    m.chunk = 64
    torch.testing.assert_close(m(u), y4, atol=1e-5, rtol=1e-4)
    assert y4.shape == u.shape


def test_causal() -> None:
    torch.manual_seed(1)
    m = Mamba2(resolved_spec(d_state=4, head_dim=8, chunk=4, d_conv=3), DIM)
    u = torch.randn(2, 15, DIM)
    v = u.clone()
    v[:, 9:] = torch.randn(2, 6, DIM)
    y, z = m(u), m(v)
    torch.testing.assert_close(y[:, :9], z[:, :9], atol=1e-6, rtol=1e-6)
    assert (y[:, 9:] - z[:, 9:]).abs().max() > 1e-3


def test_gradients_flow() -> None:
    torch.manual_seed(2)
    m = Mamba2(resolved_spec(d_state=4, head_dim=8, chunk=4, gate=1.0), DIM)
    u = torch.randn(2, 11, DIM, requires_grad=True)
    m(u).pow(2).sum().backward()
    for name, p in [("A_log", m.A_log), ("dt_bias", m.dt_bias), ("D", m.D),
                    ("dt_proj", m.dt_proj.weight), ("conv.weight", m.conv.weight),
                    ("conv.bias", m.conv.bias), ("in_proj", m.in_proj.weight),
                    ("out_norm", m.out_norm.weight), ("scale", m.scale), ("input", u)]:
        assert p is not None and p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bf16_autocast_runs() -> None:
    m = Mamba2(resolved_spec(d_state=4, head_dim=8, chunk=4), DIM)
    u = torch.randn(1, 9, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(u)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), m(u), atol=5e-2, rtol=5e-2)
