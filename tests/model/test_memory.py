"""The retro memory extra and the built-in custom components."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from pydantic import BaseModel

from evotui.dsl import components
from evotui.dsl.estimate import block_manifest
from evotui.dsl.model import CustomExtra, ModelSpec, RetroExtra
from evotui.model.components import ExpBridge, ExpGater, build_component
from evotui.model.memory import Retro

D = 16
AGGREGATORS = ("attention", "gate", "mean")


def spec_of(extra: dict, dim: int = D) -> ModelSpec:
    return ModelSpec.model_validate(
        {"emb": {"dim": dim, "vocab": 32}, "blocks": [{"extras": [extra]}]}
    )


def retro(aggregator: str = "gate", memory_tokens: int = 8, stride: int = 4,
          **kw) -> RetroExtra:
    extra = {"type": "retro", "memory_tokens": memory_tokens, "stride": stride,
             "aggregator": aggregator, **kw}
    return spec_of(extra).blocks[0].extras[0]


def make(aggregator: str = "gate", seed: int = 0, **kw) -> Retro:
    torch.manual_seed(seed)
    return Retro(retro(aggregator, **kw), D).double()


def reference(m: Retro, h: torch.Tensor) -> torch.Tensor:
    """Position by position, straight from the definition."""
    B, T, _ = h.shape
    s = m.stride
    out = torch.zeros_like(h)
    for t in range(T):
        k = t // s
        chunks = range(max(0, k - m.slots), k)
        if not chunks:
            continue
        mem = torch.stack([h[:, c * s:(c + 1) * s].mean(1) for c in chunks], 1)  # (B, n, D)
        v = m.wv(mem)
        if m.aggregator == "mean":
            read = v.mean(1)
        else:
            q = m.wq(h[:, t])  # (B, M)
            scores = torch.einsum("bm,bnm->bn", q, m.wk(mem)) / m.wq.out_features ** 0.5
            read = torch.einsum("bn,bnm->bm", scores.softmax(-1), v)
            if m.aggregator == "gate":
                read = read * torch.sigmoid(m.wg(h[:, t]))
        out[:, t] = m.gating_weight * m.wo(read)
    return out


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_state_dict_matches_manifest(aggregator):
    spec = spec_of({"type": "retro", "memory_tokens": 32, "stride": 8,
                    "aggregator": aggregator, "mem_dim": 6})
    extra = spec.blocks[0].extras[0]
    prefix = "blocks.0.extras.0"
    want = {k.removeprefix(prefix + "."): t.shape
            for k, t in block_manifest(spec.blocks[0], "blocks.0", D, spec.norm).items()
            if k.startswith(prefix) and not k.startswith(prefix + ".norm")}
    got = {k: tuple(v.shape) for k, v in Retro(extra, D).state_dict().items()}
    assert got == want
    assert ("wq.weight" in got) == (aggregator != "mean")
    assert ("wg.weight" in got) == (aggregator == "gate")


@pytest.mark.parametrize("aggregator", AGGREGATORS)
@pytest.mark.parametrize("T", [1, 3, 4, 13, 16, 23])
def test_matches_reference_loop(aggregator, T):
    m = make(aggregator, memory_tokens=12, stride=4)  # 3 slots
    h = torch.randn(2, T, D, dtype=torch.float64)
    out = m(h)
    assert out.shape == h.shape
    torch.testing.assert_close(out, reference(m, h))


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_first_chunk_and_short_sequences_read_zeros(aggregator):
    m = make(aggregator, stride=4)
    h = torch.randn(2, 10, D, dtype=torch.float64)
    out = m(h)
    assert out[:, :4].abs().max() == 0
    assert out[:, 4:].abs().min(dim=-1).values.gt(0).all()
    short = m(h[:, :3])  # T < stride: no chunk is ever complete
    assert short.shape == (2, 3, D) and short.abs().max() == 0


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_no_nan_gradient_when_nothing_is_visible(aggregator):
    m = make(aggregator, stride=4)
    h = torch.randn(1, 6, D, dtype=torch.float64, requires_grad=True)
    m(h).sum().backward()
    assert torch.isfinite(h.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_reads_only_its_window_of_earlier_chunks(aggregator):
    """Output at t depends on h_t itself and on the `slots` complete chunks before its own:
    not on the rest of its chunk, not on later tokens, not on older chunks."""
    s, slots, T = 4, 2, 22
    m = make(aggregator, memory_tokens=s * slots, stride=s)
    h = torch.randn(1, T, D, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: m(x).sum(-1), h)  # (1, T, 1, T, D)
    dep = jac[0, :, 0].abs().sum(-1) > 0  # dep[t, u]: output t depends on input u
    for t in range(T):
        start = (t // s) * s
        allowed = set(range(max(0, start - slots * s), start))
        # the gate comes from h_t; so does the query, which matters once there is a choice
        if (aggregator == "gate" and allowed) or (aggregator == "attention" and t >= 2 * s):
            allowed.add(t)
        assert {u for u in range(T) if dep[t, u]} == allowed, t


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_causal_under_perturbation(aggregator):
    m = make(aggregator, memory_tokens=16, stride=4)
    h = torch.randn(2, 21, D, dtype=torch.float64)
    out = m(h)
    for t in (1, 4, 7, 12, 20):
        g = h.clone()
        g[:, t:] = torch.randn_like(g[:, t:])
        torch.testing.assert_close(m(g)[:, :t], out[:, :t], rtol=0, atol=0)
        # the rest of t's own chunk (but not h_t) has no effect on the output at t
        g = h.clone()
        g[:, (t // 4) * 4:t] += 1.0
        g[:, t + 1:] += 1.0
        torch.testing.assert_close(m(g)[:, t], out[:, t], rtol=0, atol=0)


def test_memory_limit_forgets_old_chunks():
    m = make("attention", memory_tokens=8, stride=4)  # 2 slots
    h = torch.randn(1, 24, D, dtype=torch.float64)
    g = h.clone()
    g[:, :4] = torch.randn_like(g[:, :4])  # chunk 0: read by chunks 1 and 2 only
    a, b = m(h), m(g)
    assert not torch.allclose(a[:, 4:12], b[:, 4:12])
    torch.testing.assert_close(a[:, 12:], b[:, 12:], rtol=0, atol=0)


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_gating_weight_scales_output(aggregator):
    one = make(aggregator, seed=3)
    scaled = Retro(retro(aggregator, gating_weight=0.25), D).double()
    scaled.load_state_dict(one.state_dict())
    h = torch.randn(2, 13, D, dtype=torch.float64)
    torch.testing.assert_close(scaled(h), 0.25 * one(h))


def test_float32_runs():
    torch.manual_seed(0)
    m = Retro(retro("gate"), D)
    out = m(torch.randn(2, 9, D))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# --- custom components -------------------------------------------------------------------

def custom(name: str, **params) -> CustomExtra:
    return spec_of({"type": "custom", "name": name, "params": params}).blocks[0].extras[0]


@pytest.mark.parametrize("name, cls", [("exp-gater", ExpGater), ("exp-bridge", ExpBridge)])
def test_builtin_components_build_to_their_shapes(name, cls):
    extra = custom(name, dim=5)
    m = build_component(extra, D)
    assert type(m) is cls
    comp = components.get(name)
    want = comp.shapes(D, extra.component_params())
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == want
    # and the estimator counts exactly these tensors (after the block's own pre-norm)
    spec = spec_of({"type": "custom", "name": name, "params": {"dim": 5}})
    listed = block_manifest(spec.blocks[0], "b", D, spec.norm)
    assert {k.removeprefix("b.extras.0.") for k in listed} - {"norm.weight"} == set(want)
    h, x0 = torch.randn(2, 7, D), torch.randn(2, 7, D)
    assert m(h, x0).shape == (2, 7, D)


def test_gater_formula_and_bridge_reads_x0():
    torch.manual_seed(0)
    gater = build_component(custom("exp-gater", dim=4), D)
    bridge = build_component(custom("exp-bridge", dim=4), D)
    h, x0 = torch.randn(2, 7, D), torch.randn(2, 7, D)
    expect = gater.wo(torch.sigmoid(gater.wg(h)) * gater.wv(h))
    torch.testing.assert_close(gater(h, x0), expect)
    torch.testing.assert_close(gater(h, torch.randn_like(x0)), gater(h, x0))
    assert not torch.allclose(bridge(h, torch.randn_like(x0)), bridge(h, x0))


class Params(BaseModel):
    width: int = 3


class PluginMixer(nn.Module):
    def __init__(self, model_dim: int, params: Params):
        super().__init__()
        self.proj = nn.Linear(model_dim, params.width, bias=False)
        self.back = nn.Linear(params.width, model_dim, bias=False)

    def forward(self, h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.back(self.proj(h + x0))


def plugin(name: str, declared_width_offset: int = 0) -> components.Component:
    def shapes(d: int, p: BaseModel) -> dict[str, tuple[int, ...]]:
        w = p.width + declared_width_offset  # type: ignore[attr-defined]
        return {"proj.weight": (w, d), "back.weight": (d, w)}

    return components.Component(name=name, params=Params, shapes=shapes,
                                 module=f"{__name__}:PluginMixer", summary="test plugin")


@pytest.fixture
def registry(monkeypatch):
    """Let a test register components without leaking them into other tests."""
    monkeypatch.setattr(components, "_registry", dict(components._registry))


def test_registered_plugin_builds(registry):
    components.register(plugin("test-mixer"))
    m = build_component(custom("test-mixer", width=6), D)
    assert isinstance(m, PluginMixer)
    assert tuple(m.proj.weight.shape) == (6, D)
    assert m(torch.randn(1, 3, D), torch.randn(1, 3, D)).shape == (1, 3, D)


def test_plugin_whose_shapes_disagree_is_rejected(registry):
    components.register(plugin("test-liar", declared_width_offset=1))
    with pytest.raises(ValueError, match="test-liar") as exc:
        build_component(custom("test-liar"), D)
    assert "proj.weight" in str(exc.value)


def test_plugin_with_missing_module_is_rejected(registry):
    comp = plugin("test-ghost")
    components.register(components.Component(
        name=comp.name, params=comp.params, shapes=comp.shapes,
        module="evotui.model.no_such_module:Thing", summary=""))
    with pytest.raises(ImportError, match="test-ghost"):
        build_component(custom("test-ghost"), D)
