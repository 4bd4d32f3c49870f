"""The training-memory estimate (evotui.dsl.memory) against what torch really holds: the weights'
bytes exactly, and the activations a forward pass saves for backward (counted with saved-tensor
hooks on CPU) within a factor of two; sharding and checkpointing shrink what they should."""

from __future__ import annotations

import pytest
import torch

from evotui.dsl import load
from evotui.dsl.memory import shards_needed, table, training_memory
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def cfg():
    return load(ROOT / "configs" / "tiny.yaml")


def saved_bytes(cfg, grad_ckpt: bool) -> int:
    """Bytes of the tensors autograd keeps for backward in one CPU training forward."""
    from evotui.model.lm import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.seq_len)
    model.gradient_checkpointing = grad_ckpt
    model.train()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if not isinstance(t, torch.nn.Parameter) and not t.requires_grad or t.grad_fn:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    x = torch.randint(0, cfg.model.emb.vocab, (cfg.data.batch_size, cfg.data.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(x, x)
    loss.backward()
    return sum(n for ptr, n in seen.items() if ptr not in params)


def test_weights_gradients_and_optimizer_are_the_built_models(cfg):
    from evotui.model.lm import build_model

    model = build_model(cfg.model, cfg.data.seq_len)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    m = training_memory(cfg, "cpu")
    assert m.params == m.grads == weights
    assert m.optimizer == 2 * weights  # AdamW: two fp32 moments


def test_activations_match_what_autograd_saves(cfg):
    measured = saved_bytes(cfg, grad_ckpt=False)
    estimated = training_memory(cfg, "cpu", grad_ckpt=False).activations
    assert measured / 2 <= estimated <= measured * 2, (estimated, measured)


def test_checkpointing_keeps_block_inputs_and_one_block_at_a_time(cfg):
    """The forward keeps only what the block edges save; the estimate adds the one block that
    backward recomputes at a time, so it lies between that and the whole forward's."""
    kept = saved_bytes(cfg, grad_ckpt=True)
    estimated = training_memory(cfg, "cpu", grad_ckpt=True).activations
    assert kept <= estimated < training_memory(cfg, "cpu", grad_ckpt=False).activations


def test_sharding_and_checkpointing_shrink_the_estimate(cfg):
    whole = training_memory(cfg, "cuda", False)
    half = training_memory(cfg, "cuda", False, shards=2)
    assert half.optimizer * 2 == pytest.approx(whole.optimizer, rel=1e-6)
    assert half.params < whole.params and half.activations < whole.activations
    assert training_memory(cfg, "cuda", True).activations < whole.activations
    assert shards_needed(cfg, 10 * whole.total) == 1
    assert shards_needed(cfg, int(0.75 * whole.total)) == 2
    assert shards_needed(cfg, 1) is None
    assert [(r["device"], r["grad_ckpt"]) for r in table(cfg)] == [
        ("cpu", False), ("cpu", True), ("cuda", False), ("cuda", True)]
