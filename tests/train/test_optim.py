"""Optimizers: parameter groups, AdamW / Lion / Muon lower the loss, Lion's steps have size lr,
Muon's steps are orthogonal, Muon's AdamW part is AdamW."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evotui.dsl import ModelSpec, TrainConfig
from evotui.model.lm import LM, build_model
from evotui.train.optim import (
    MUON_LR_MULT,
    Lion,
    Muon,
    build_optimizer,
    muon_params,
    orthogonalize,
    param_groups,
)

VOCAB, SEQ = 64, 16
NAMES = ["adamw", "lion", "muon"]
ATTN = {"kind": "MHA", "heads": 2, "head_dim": 16, "rope": "standard", "rope_theta": 10000.0}


def tiny_spec(tie: bool = False) -> ModelSpec:
    """Two dim-32 blocks: attention + dense SwiGLU, attention + a 4-expert MoE."""
    return ModelSpec.model_validate({
        "name": "t", "emb": {"dim": 32, "vocab": VOCAB}, "head": {"tie_embeddings": tie},
        "blocks": [
            {"attn": ATTN, "ffn": {"type": "dense", "hidden": 64}},
            {"attn": {"kind": "MHA", "heads": 2, "head_dim": 16, "rope": "none"},
             "ffn": {"type": "moe", "hidden": 64, "n_experts": 4, "k": 2}},
        ],
    })


def tiny_lm(seed: int = 0, tie: bool = False) -> LM:
    torch.manual_seed(seed)
    return build_model(tiny_spec(tie), SEQ)


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """Fixed batches of a learnable sequence: each row counts up from a random start."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, VOCAB, (n, 4, 1), generator=g)
    return list((starts + torch.arange(SEQ + 1)) % VOCAB)


def lm_loss(model: LM, batch: torch.Tensor) -> torch.Tensor:
    _, loss = model(batch[:, :-1], batch[:, 1:])
    return loss + model.aux_loss()


def config(name: str, lr: float, **train: object) -> TrainConfig:
    return TrainConfig.model_validate({"lr": lr, "optimizer": {"name": name}, **train})


# -- groups ---------------------------------------------------------------------------------
def test_param_groups_decay_matrices_only():
    spec = ModelSpec.model_validate({
        "name": "g", "emb": {"dim": 32, "vocab": VOCAB}, "head": {"tie_embeddings": False},
        "blocks": [
            {"ssm": {"kind": "mamba2", "d_state": 8, "d_conv": 4, "chunk": 8, "expand": 2,
                     "head_dim": 16},
             "ffn": {"type": "moe", "hidden": 64, "n_experts": 4, "k": 1},
             "extras": [{"type": "gated", "targets": ["ssm", "ffn"], "init_weight": 0.5}]},
        ],
    })
    model = build_model(spec, SEQ, device="meta")
    decay, plain = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    params = dict(model.named_parameters())
    assert set(decay["param_names"]) == {n for n, p in params.items() if p.dim() >= 2}
    assert set(plain["param_names"]) == {n for n, p in params.items() if p.dim() < 2}
    assert [id(p) for p in decay["params"]] == [id(params[n]) for n in decay["param_names"]]
    for name in ("tok_emb.weight", "lm_head.weight", "blocks.0.ffn.w1", "blocks.0.ffn.w2"):
        assert name in decay["param_names"]
    for suffix in ("ssm.A_log", "ssm.D", "ssm.dt_bias", "ssm_norm.weight", "gate_ssm",
                   "final_norm.weight"):
        assert any(n.endswith(suffix) for n in plain["param_names"]), suffix


def test_frozen_parameters_are_left_out():
    model = tiny_lm()
    model.final_norm.weight.requires_grad_(False)
    names = [n for g in param_groups(model, 0.1) for n in g["param_names"]]
    assert "final_norm.weight" not in names and "tok_emb.weight" in names


def test_muon_params_are_hidden_matrices():
    model = tiny_lm()
    names = set(muon_params(model))
    assert "tok_emb.weight" not in names and "lm_head.weight" not in names
    assert {"blocks.0.attn.wq.weight", "blocks.1.ffn.w1", "blocks.1.ffn.router.weight"} <= names
    assert all(dict(model.named_parameters())[n].dim() >= 2 for n in names)


@pytest.mark.parametrize("name", NAMES)
def test_build_optimizer_groups_and_base_lr(name):
    model = tiny_lm()
    opt = build_optimizer(model, config(name, 1e-3, weight_decay=0.1), "cpu")
    assert type(opt).__name__ == {"adamw": "AdamW", "lion": "Lion", "muon": "Muon"}[name]
    covered = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())
    for g in opt.param_groups:
        assert g["lr"] == g["base_lr"]
        assert g["weight_decay"] == (0.1 if all(p.dim() >= 2 for p in g["params"]) else 0.0)
    if name == "adamw":
        assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["foreach"]
    if name == "lion":
        assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    if name == "muon":
        by_kind = {g["use_muon"]: g for g in opt.param_groups}
        assert by_kind[True]["base_lr"] == pytest.approx(1e-3 * MUON_LR_MULT)
        assert set(by_kind[True]["param_names"]) == set(muon_params(model))
        adam_names = [n for g in opt.param_groups if not g["use_muon"] for n in g["param_names"]]
        assert "tok_emb.weight" in adam_names and "lm_head.weight" in adam_names
        assert all(g["lr"] == 1e-3 for g in opt.param_groups if not g["use_muon"])


def test_build_optimizer_takes_betas_and_eps_from_config():
    cfg = TrainConfig.model_validate(
        {"optimizer": {"name": "adamw", "betas": [0.8, 0.9], "eps": 1e-6, "lr": 2e-3}})
    opt = build_optimizer(tiny_lm(), cfg, "cpu")
    g = opt.param_groups[0]
    assert (g["betas"], g["eps"], g["base_lr"]) == ((0.8, 0.9), 1e-6, 2e-3)


# -- optimisation ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_each_optimizer_trains_a_tiny_lm(name):
    model = tiny_lm()
    opt = build_optimizer(model, config(name, 3e-3, weight_decay=0.01), "cpu")
    data = batches(1)
    first = lm_loss(model, data[0]).item()
    for _ in range(25):
        loss = lm_loss(model, data[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert lm_loss(model, data[0]).item() < 0.6 * first


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.AdamW(ps, lr=0.05),
    lambda ps: Lion(ps, lr=0.02),
    lambda ps: Muon([{"params": [ps[0]]}, {"params": [ps[1]], "use_muon": False, "lr": 0.05}],
                    lr=0.1),
], ids=NAMES)
def test_each_optimizer_fits_a_linear_regression(make):
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 8) + torch.randn(8)
    layer = nn.Linear(16, 8)
    opt = make([layer.weight, layer.bias])
    first = nn.functional.mse_loss(layer(x), y).item()
    for _ in range(100):
        loss = nn.functional.mse_loss(layer(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


# -- the updates themselves -----------------------------------------------------------------
def test_lion_steps_have_size_lr_and_decoupled_decay():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(8, 8))
    opt = Lion([p], lr=1e-3)
    for _ in range(3):
        before = p.detach().clone()
        p.grad = torch.randn(8, 8)
        opt.step()
        torch.testing.assert_close((p - before).abs(), torch.full((8, 8), 1e-3),
                                   rtol=0, atol=1e-6)
    decayed = Lion([q := nn.Parameter(torch.ones(4))], lr=0.1, weight_decay=0.5)
    q.grad = torch.zeros(4)  # sign(0) = 0: only the decay moves it
    decayed.step()
    torch.testing.assert_close(q.detach(), torch.full((4,), 1 - 0.1 * 0.5))


@pytest.mark.parametrize("shape", [(24, 64), (64, 24), (3, 20, 40)])
def test_muon_update_is_orthogonal(shape):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(shape))
    lr = 0.05
    opt = Muon([p], lr=lr, momentum=0.0)
    before = p.detach().clone()
    p.grad = torch.randn(shape)
    opt.step()
    scale = max(1.0, shape[-2] / shape[-1]) ** 0.5
    update = (before - p.detach()) / (lr * scale)
    sv = torch.linalg.svdvals(update)  # per expert for the 3-D stack
    assert sv.shape[-1] == min(shape[-2:])
    assert sv.min() > 0.6 and sv.max() < 1.25, (sv.min(), sv.max())


def test_orthogonalize_pushes_singular_values_to_one():
    torch.manual_seed(0)
    g = torch.randn(32, 96) @ torch.diag(torch.logspace(-2, 1, 96))  # ill-conditioned
    sv = torch.linalg.svdvals(orthogonalize(g))
    assert sv.min() > 0.6 and sv.max() < 1.25
    assert orthogonalize(g).dtype == g.dtype


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_orthogonalize_in_bf16_on_cuda():
    g = torch.randn(64, 128, device="cuda")
    sv = torch.linalg.svdvals(orthogonalize(g).float())
    assert sv.min() > 0.5 and sv.max() < 1.3


def test_muon_adamw_part_is_adamw():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(10))
    b = nn.Parameter(a.detach().clone())
    hp = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    ours = Muon([{"params": [a], "use_muon": False, **hp}])
    ref = torch.optim.AdamW([b], foreach=False, **hp)
    for _ in range(5):
        grad = torch.randn(10)
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_muon_refuses_vectors_in_muon_groups():
    with pytest.raises(ValueError, match="dim < 2"):
        Muon([nn.Parameter(torch.zeros(4))])
