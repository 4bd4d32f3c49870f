"""Dense FFN and mixture-of-experts: manifest agreement, routing, capacity, aux loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evotui.dsl.estimate import block_manifest
from evotui.dsl.model import BlockSpec, MoEFFN
from evotui.dsl.model import DenseFFN as DenseSpec
from evotui.model.ffn import DenseFFN, MoE, activate, build_ffn

DIM = 16
ACTS = ["swiglu", "silu", "gelu", "relu"]


def manifest_shapes(ffn_spec: DenseSpec | MoEFFN) -> dict[str, tuple[int, ...]]:
    """The estimator's FFN tensors for one block, with the ``b.ffn.`` prefix stripped."""
    full = block_manifest(BlockSpec(ffn=ffn_spec), "b", DIM, "rmsnorm")
    return {n.removeprefix("b.ffn."): t.shape for n, t in full.items()
            if n.startswith("b.ffn.")}


def built_shapes(m: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in m.state_dict().items()}


def reference_moe(m: MoE, x: torch.Tensor, capacity: int | None = None) -> torch.Tensor:
    """Token by token: route, keep an (expert, slot) only while the expert has room (in
    token-major order), sum the gated expert outputs, add the shared expert."""
    x = x.reshape(-1, x.size(-1))
    logits = x @ m.router.weight.t() / m.temperature
    scores = logits.softmax(-1) if m.router_kind == "softmax" else logits.sigmoid()
    used = [0] * m.n_experts
    out = torch.zeros_like(x)
    for t in range(x.size(0)):
        top, idx = scores[t].topk(m.k)
        gates = top / top.sum()
        for g, e in zip(gates, idx.tolist(), strict=True):
            if capacity is not None and used[e] >= capacity:
                continue
            used[e] += 1
            h3 = m.w3[e] @ x[t] if m.w3 is not None else None
            out[t] += g * (m.w2[e] @ activate(m.w1[e] @ x[t], h3, m.activation))
    if m.shared is not None:
        out += m.shared(x)
    return out


@pytest.mark.parametrize("act", ACTS)
def test_dense_manifest_and_forward(act: str) -> None:
    torch.manual_seed(0)
    spec = DenseSpec(hidden=24, activation=act)
    m = DenseFFN.from_spec(spec, DIM)
    assert built_shapes(m) == manifest_shapes(spec)
    x = torch.randn(2, 5, DIM)
    h = x @ m.w1.weight.t()
    if act == "swiglu":
        h = F.silu(h) * (x @ m.w3.weight.t())
    else:
        h = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}[act](h)
    torch.testing.assert_close(m(x), h @ m.w2.weight.t())


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shared", [0, 2])
def test_moe_manifest(act: str, shared: int) -> None:
    spec = MoEFFN(hidden=48, n_experts=4, k=2, shared=shared, activation=act)
    m = build_ffn(spec, DIM)
    assert isinstance(m, MoE)
    assert built_shapes(m) == manifest_shapes(spec)


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
@pytest.mark.parametrize("act", ["swiglu", "gelu"])
@pytest.mark.parametrize("shared", [0, 1])
def test_moe_matches_reference_unlimited_capacity(router: str, act: str, shared: int) -> None:
    torch.manual_seed(1)
    spec = MoEFFN(hidden=32, n_experts=4, k=2, capacity_factor=100.0, shared=shared,
                  router=router, router_temperature=0.7, activation=act)
    m = MoE(spec, DIM)
    torch.nn.init.normal_(m.router.weight, std=0.5)
    x = torch.randn(3, 7, DIM)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.reshape(-1, DIM), reference_moe(m, x), atol=1e-5, rtol=1e-4)
    assert m.stats["overflow"].item() == 0.0


def test_moe_capacity_drops_tokens_in_order() -> None:
    torch.manual_seed(2)
    spec = MoEFFN(hidden=32, n_experts=4, k=1, capacity_factor=1.0)
    m = MoE(spec, DIM)
    with torch.no_grad():  # every token prefers expert 0
        m.router.weight.zero_()
        m.router.weight[0, 0] = 10.0
    x = torch.randn(8, DIM)
    x[:, 0] = x[:, 0].abs() + 1.0
    y = m(x)
    cap = m.capacity(8)
    assert cap == 2
    assert y[:cap].abs().sum() > 0
    assert torch.all(y[cap:] == 0)  # dropped: only the residual carries them
    assert m.stats["overflow"].item() == pytest.approx(6 / 8)
    torch.testing.assert_close(m.stats["load"], torch.tensor([1.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_moe_matches_reference_with_capacity(router: str) -> None:
    torch.manual_seed(3)
    spec = MoEFFN(hidden=32, n_experts=4, k=2, capacity_factor=0.75, router=router,
                  shared=1)
    m = MoE(spec, DIM)
    torch.nn.init.normal_(m.router.weight, std=1.0)
    x = torch.randn(24, DIM)
    y = m(x)
    cap = m.capacity(24)
    assert cap == math.ceil(0.75 * 24 * 2 / 4)
    torch.testing.assert_close(y, reference_moe(m, x, cap), atol=1e-5, rtol=1e-4)
    kept = torch.bincount(m.router(x).topk(2).indices.reshape(-1), minlength=4).clamp(max=cap)
    assert m.stats["overflow"].item() == pytest.approx(1 - kept.sum().item() / 48)
    assert m.stats["overflow"].item() > 0


def test_moe_aux_loss_and_stats() -> None:
    torch.manual_seed(4)
    spec = MoEFFN(hidden=32, n_experts=4, k=2, balance=0.1)
    m = MoE(spec, DIM)
    x = torch.randn(2, 9, DIM, requires_grad=True)
    y = m(x)
    assert m.aux_loss.dim() == 0 and m.aux_loss.item() > 0
    m.aux_loss.backward(retain_graph=True)
    assert m.router.weight.grad is not None and m.router.weight.grad.abs().sum() > 0
    y.sum().backward()
    for p in (m.w1, m.w2, m.w3, x):
        assert p.grad is not None and p.grad.abs().sum() > 0
    load = m.stats["load"]
    assert load.shape == (4,) and load.sum().item() == pytest.approx(1.0)
    assert 0.0 <= m.stats["entropy"].item() <= math.log(4) + 1e-6
    assert not any(v.requires_grad for v in m.stats.values())


def test_moe_uniform_router_and_no_balance() -> None:
    spec = MoEFFN(hidden=32, n_experts=4, k=2)  # balance None -> no aux loss
    m = MoE(spec, DIM)
    torch.nn.init.zeros_(m.router.weight)
    m(torch.randn(5, DIM))
    assert m.stats["entropy"].item() == pytest.approx(math.log(4))
    assert m.aux_loss.item() == 0.0


def test_moe_shared_expert_contributes() -> None:
    torch.manual_seed(5)
    spec = MoEFFN(hidden=32, n_experts=4, k=1, shared=1)
    m = MoE(spec, DIM)
    x = torch.randn(6, DIM)
    assert m.shared is not None
    shared_out = m.shared(x)
    y = m(x)
    with torch.no_grad():
        m.shared.w2.weight.zero_()
    assert shared_out.abs().sum() > 0
    torch.testing.assert_close(y - m(x), shared_out)


def sorted_dispatch_moe(m: MoE, x: torch.Tensor) -> torch.Tensor:
    """The previous MoE algorithm, kept as a reference: sort the (token, slot) pairs by expert,
    cut per-expert slices on the host (bincount, .tolist()), loop over the experts in Python,
    index_add the gated outputs back."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    T, E, k = x.size(0), m.n_experts, m.k
    _, gates, idx = m.route(x)
    flat_e = idx.reshape(-1)
    order = flat_e.argsort(stable=True)
    counts = torch.bincount(flat_e, minlength=E)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(T * k) - starts[flat_e[order]]
    cap = m.capacity(T)
    kept = order[rank < cap]
    tok = kept // k
    outs = []
    for e, chunk in enumerate(x[tok].split(counts.clamp(max=cap).tolist())):
        if chunk.numel():
            h3 = chunk @ m.w3[e].t() if m.w3 is not None else None
            outs.append(activate(chunk @ m.w1[e].t(), h3, m.activation) @ m.w2[e].t())
    y = torch.cat(outs) * gates.reshape(-1)[kept].unsqueeze(-1)
    out = torch.zeros_like(x).index_add_(0, tok, y)
    if m.shared is not None:
        out = out + m.shared(x)
    return out.reshape(shape)


@pytest.mark.parametrize("cf", [0.5, 1.25, 8.0])
@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_moe_matches_sorted_dispatch(cf: float, router: str) -> None:
    """The static-shape dispatch gives the old algorithm's outputs and gradients, with and
    without dropped tokens."""
    torch.manual_seed(6)
    spec = MoEFFN(hidden=64, n_experts=8, k=2, capacity_factor=cf, router=router, shared=1)
    m = MoE(spec, DIM)
    torch.nn.init.normal_(m.router.weight, std=1.0)
    x = torch.randn(3, 40, DIM, requires_grad=True)
    y = m(x)
    ref = sorted_dispatch_moe(m, x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-4)
    dy = torch.randn_like(y)
    params = [x, m.w1, m.w2, m.w3, m.router.weight]
    for a, b in zip(torch.autograd.grad(y, params, dy), torch.autograd.grad(ref, params, dy),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_moe_forward_has_no_graph_break() -> None:
    """No host sync (bincount sizes, .tolist(), nonzero) and no Python loop over experts:
    Dynamo traces the whole forward, backward included, as one graph."""
    torch._dynamo.reset()
    spec = MoEFFN(hidden=64, n_experts=8, k=2, capacity_factor=1.25, shared=1, balance=0.01)
    m = MoE(spec, DIM)
    x = torch.randn(2, 24, DIM)
    explained = torch._dynamo.explain(m)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), sorted_dispatch_moe(m, x), atol=1e-5, rtol=1e-4)
