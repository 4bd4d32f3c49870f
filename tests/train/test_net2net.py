"""Function-preserving inheritance: per shape-changing mutation, a child started from its
parent by the net2net plan computes the parent's loss at step 0 (tiny models, CPU, one fixed
batch), and its tensors are counted as exact, transformed or fresh."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from evotui.bench.train import RandomTokens
from evotui.dsl import loads
from evotui.evolve.inheritance import inheritance_map
from evotui.evolve.net2net_plan import counts, net2net_plan
from evotui.train.trainer import CandidateTrainer

PARENT = {
    "model": {
        "name": "n2n", "emb": {"dim": 32, "vocab": 257}, "norm": "rmsnorm",
        "blocks": [
            {"id": "a", "attn": {"kind": "GQA", "heads": 4, "head_dim": 8, "kv_groups": 2},
             "ffn": {"type": "dense", "hidden": 64, "activation": "swiglu"}},
            {"id": "b", "attn": {"kind": "MHA", "heads": 4, "head_dim": 8},
             "ffn": {"type": "moe", "hidden": 64, "n_experts": 2, "k": 1,
                     "capacity_factor": 8.0, "activation": "gelu"}},
            {"id": "c", "attn": {"kind": "MHA", "heads": 2, "head_dim": 8},
             "ffn": {"type": "dense", "hidden": 48, "activation": "relu"}},
        ],
    },
    "train": {"lr": 0.001, "passkey_eval_seq_len": None, "eval_batches": 1},
    "data": {"tokenizer": "byte", "seq_len": 32, "batch_size": 2,
             "shards": [{"name": "builtin:code"}]},
    "evolution": {"objectives": {"ppl": "min"}},
}


def config(model: dict):
    data = copy.deepcopy(PARENT)
    data["model"] = model
    return loads(yaml.safe_dump(data))


def trained_parent() -> CandidateTrainer:
    """A parent whose every tensor is random and distinct (not the init's zeros and ones)."""
    cfg = config(PARENT["model"])
    t = CandidateTrainer(cfg, RandomTokens(257, torch.device("cpu")), seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in t.model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return t


def loss(t: CandidateTrainer) -> float:
    x, y = RandomTokens(257, torch.device("cpu")).train_batch(0, 7, 4, 32)
    t.model.eval()
    with torch.no_grad():
        return float(t.model(x, y)[1])


def mutated(edit) -> tuple[dict, list]:
    model = copy.deepcopy(PARENT["model"])
    provenance = edit(model)
    if provenance is None:
        provenance = [(0, b["id"]) for b in model["blocks"]]
    return model, provenance


def _set(path, value):
    def edit(model):
        block, *keys = path
        d = model["blocks"][block]
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _insert(model):
    new = {"id": "new", "attn": {"kind": "MHA", "heads": 2, "head_dim": 8},
           "ffn": {"type": "dense", "hidden": 32, "activation": "gelu"}}
    model["blocks"].insert(1, new)
    return [(0, "a"), None, (0, "b"), (0, "c")]


def _duplicate(model):
    model["blocks"].insert(1, dict(copy.deepcopy(model["blocks"][0]), id="a2"))
    return [(0, "a"), (0, "a"), (0, "b"), (0, "c")]


def _more_experts(model):
    model["blocks"][1]["ffn"].update(n_experts=3, hidden=96)  # a new expert, same width


MUTATIONS = {
    "ffn.hidden (swiglu)": _set((0, "ffn", "hidden"), 96),
    "ffn.hidden (relu)": _set((2, "ffn", "hidden"), 80),
    "ffn.hidden (moe experts)": _set((1, "ffn", "hidden"), 128),
    "attn.heads (gqa)": _set((0, "attn", "heads"), 8),
    "attn.heads (mha)": _set((2, "attn", "heads"), 4),
    "attn.kv_groups": _set((0, "attn", "kv_groups"), 1),
    "ffn.n_experts (new expert)": _more_experts,
    "block.insert": _insert,
    "block.duplicate": _duplicate,
}


def child_from(parent: CandidateTrainer, model: dict, provenance: list, plan_on: bool):
    cfg = config(model)
    child = CandidateTrainer(cfg, RandomTokens(257, torch.device("cpu")), seed=5)
    mapping = inheritance_map(cfg.model, provenance, [parent.cfg.model])
    plan = net2net_plan(cfg.model, provenance, [parent.cfg.model], mapping, seed=1)
    own = parent.model.state_dict()
    child.inherit({c: own[src] for c, (_, src) in mapping.items()}, plan if plan_on else None)
    return child, mapping, plan


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_child_computes_its_parents_loss_at_step_0(kind: str) -> None:
    parent = trained_parent()
    model, provenance = mutated(MUTATIONS[kind])
    child, mapping, plan = child_from(parent, model, provenance, plan_on=True)
    assert plan, "the mutation changed shapes, so the plan transforms something"
    assert loss(child) == pytest.approx(loss(parent), abs=1e-5)
    names = list(child.model.state_dict())
    expected = counts(config(model).model, [parent.cfg.model], mapping, plan)
    assert (child.inherited, child.transformed, child.fresh) == (
        expected["exact"], expected["transformed"], expected["fresh"])
    assert child.transformed == len(plan)
    off, _, _ = child_from(parent, model, provenance, plan_on=False)
    assert off.transformed == 0 and off.inherited + off.fresh == len(names)
    assert off.fresh >= expected["fresh"]  # resized tensors start fresh without the plan
    assert abs(loss(off) - loss(parent)) > 1e-4  # without the plan the function changes


def test_narrower_layers_and_other_widths_stay_fresh() -> None:
    parent = trained_parent()
    model, provenance = mutated(_set((0, "ffn", "hidden"), 32))
    model["blocks"][0]["attn"]["head_dim"] = 16
    child, mapping, plan = child_from(parent, model, provenance, plan_on=True)
    assert plan == {}
    assert child.transformed == 0
    expected = counts(config(model).model, [parent.cfg.model], mapping, plan)
    assert (child.inherited, child.fresh) == (expected["exact"], expected["fresh"])
    assert expected["fresh"] >= 7  # w1, w3, w2, wq, wk, wv, wo of block 0 resized: fresh
