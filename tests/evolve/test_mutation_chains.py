"""Property test: thousands of random mutation chains from every shipped config. Every child
validates in its run, keeps ids unique and spans sound, and a sample builds (on the meta device)
to exactly the estimator's manifest."""

from __future__ import annotations

import random

import pytest
import torch

from evotui.dsl import ModelSpec, RunConfig, manifest, to_data
from evotui.evolve import DECK, Child, VariationError, crossover, mutate, validate_model
from evotui.model import lm
from tests.evolve.conftest import CONFIG_NAMES, config

CHAINS = {"tiny": 1200, "gpt2_124m": 1000, "scalehop_xover-68-8a93": 800,
          "primitives": 600}
# need a block that lost its ffn / attention first, or (from the shipped configs, which have
# none) a LINEAR, MLA, key selector or extra added first: the primitives parent starts with
# each of them, and its chains see every operator
RARE = {"ffn.add", "attn.add"}
NEEDS_A_PRIMITIVE = {"attn.chunk", "attn.mla"} | {
    f"{group}.{op}" for group in ("select", "memory_tokens", "chunk_memory", "assoc_memory",
                                  "layer_scale", "router") for op in ("tune", "remove")}
MAX_DEPTH = 20


def check_child(cfg: RunConfig, parent: ModelSpec, child: Child) -> None:
    spec = child.spec
    again = validate_model(cfg, to_data(spec))  # the child is a fixed point of validation
    assert to_data(again) == to_data(spec)
    ids = [b.id for b in spec.blocks]
    assert len(set(ids)) == len(ids) and all(ids)
    assert len(child.provenance) == len(spec.blocks)
    parent_ids = {b.id for b in parent.blocks}
    for b, prov in zip(spec.blocks, child.provenance, strict=True):
        if b.id in parent_ids:  # a surviving block keeps its own weights
            assert prov == (0, b.id)
        if prov is not None:
            assert prov[1] in parent_ids
    n = cfg.data.seq_len
    spans = sorted((r.start, r.end) for r in spec.recurrences)
    for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False):
        assert e0 < s1
    assert all(0 <= s <= e < len(spec.blocks) for s, e in spans)
    for b in spec.blocks:
        if b.attn is not None:
            for knob in ("sw", "block_size", "block_stride", "global_stride", "dilation"):
                assert (getattr(b.attn, knob) or 0) <= n
        if b.ssm is not None:
            assert b.ssm.chunk <= n
    assert child.ops and all(op.split("(")[0] in DECK for op in child.ops)


def walk(name: str, chains: int, seed: int):
    """Random chains from a population that drifts away from the seed config."""
    cfg = config(name)
    rng = random.Random(seed)
    population = [cfg.model]
    for _ in range(chains):
        parent = rng.choice(population)
        child = mutate(cfg, parent, rng, steps=rng.randint(1, 4))
        yield cfg, parent, child
        if len(child.spec.blocks) <= MAX_DEPTH:
            population.append(child.spec)
        if len(population) > 24:
            population.pop(rng.randrange(1, len(population)))


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_random_chains_validate(name):
    seen_ops = set()
    for cfg, parent, child in walk(name, CHAINS[name], seed=7):
        check_child(cfg, parent, child)
        seen_ops.update(child.operators)
    rare = RARE | (NEEDS_A_PRIMITIVE if name != "primitives" else set())
    assert set(DECK) - seen_ops <= rare, set(DECK) - seen_ops


@pytest.fixture
def fast_init(monkeypatch):
    """Skip weight initialisation: shapes are all the build test looks at, and initialising
    meta tensors is most of a build's time."""
    monkeypatch.setattr(lm.LM, "reset_parameters", lambda self: None)
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    monkeypatch.setattr(torch.nn.Embedding, "reset_parameters", lambda self: None)


def assert_builds(cfg: RunConfig, spec: ModelSpec) -> None:
    model = lm.build_model(spec, cfg.data.seq_len, device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == {k: t.shape for k, t in manifest(spec).items()}


@pytest.mark.parametrize("name,per_op,chains", [("tiny", 2, 100), ("gpt2_124m", 2, 20),
                                                ("primitives", 2, 60)])
def test_children_build_to_their_manifest(name, per_op, chains, fast_init):
    """Every operator alone, from drifted parents, then random chains: all build."""
    cfg = config(name)
    rng = random.Random(11)
    parents = [cfg.model] + [c.spec for _, _, c in walk(name, 12, seed=3)][-6:]
    built = 0
    for op in DECK:
        for _ in range(per_op):
            try:
                child = mutate(cfg, rng.choice(parents), rng, weights={op: 1.0} | {
                    other: 0.0 for other in DECK if other != op})
            except VariationError:
                continue  # not applicable to that parent
            assert child.operators == [op]
            assert_builds(cfg, child.spec)
            built += 1
    for _, _, child in walk(name, chains, seed=5):
        assert_builds(cfg, child.spec)
        built += 1
    assert built >= len(DECK) * per_op // 2 + chains


def test_crossovers_validate_and_build(tiny, fast_init):
    rng = random.Random(4)
    specs = [c.spec for _, _, c in walk("tiny", 60, seed=9)]
    for _ in range(40):
        a, b = rng.sample(specs, 2)
        child = crossover(tiny, a, b, rng)
        assert to_data(validate_model(tiny, to_data(child.spec))) == to_data(child.spec)
        ids = [blk.id for blk in child.spec.blocks]
        assert len(set(ids)) == len(ids)
    assert_builds(tiny, child.spec)
