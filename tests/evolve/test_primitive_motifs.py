"""Ablation motifs and weight inheritance for the attention kinds, options and extras of issue
17, on a parent that holds all of them (tests/evolve/primitives.yaml)."""

from __future__ import annotations

import random

import pytest

from evotui.dsl import to_data
from evotui.evolve import DECK, inheritance_map, mutate
from evotui.evolve.ablations import Context, ablations, get, motif_names
from tests.evolve.conftest import config

NEW_MOTIFS = ["alibi", "qk_norm", "attn_gate", "key_select->dense", "linear->softmax",
              "mla->mha", "extra:memory_tokens", "extra:chunk_memory", "extra:assoc_memory",
              "extra:layer_scale", "extra:branch_router"]


@pytest.fixture(scope="module")
def prim():
    return config("primitives")


def present(spec) -> set[str]:
    out = set()
    for b in spec.blocks:
        a = b.attn
        if a is not None:
            out |= {n for n, on in (("alibi", a.alibi), ("qk_norm", a.qk_norm),
                                    ("attn_gate", a.gate != "none"),
                                    ("key_select->dense", a.key_select is not None),
                                    ("linear->softmax", a.kind == "LINEAR"),
                                    ("mla->mha", a.kind == "MLA")) if on}
        out |= {f"extra:{e.type}" for e in b.extras}
    return out


def test_every_new_motif_is_offered_and_switches_only_itself_off(prim):
    ctx = Context.from_config(prim)
    assert set(NEW_MOTIFS) <= set(motif_names([prim.model]))
    before = present(prim.model)
    assert set(NEW_MOTIFS) <= before
    for name, variant in ablations(prim.model, NEW_MOTIFS, ctx).items():
        assert not isinstance(variant, str), (name, variant)
        assert present(variant.spec) == before - {name}, name
        assert [b.id for b in variant.spec.blocks] == [b.id for b in prim.model.blocks]
        # the variant inherits the candidate's tensors (extras pair by kind, so their
        # indices may shift when one goes)
        inherited = inheritance_map(variant.spec, [(0, b.id) for b in variant.spec.blocks],
                                    [prim.model])
        assert inherited and all(c == p for c, (_, p) in inherited.items() if ".extras." not in c)


def test_linear_to_softmax_keeps_the_projections(prim):
    variant = get("linear->softmax").ablate(prim.model, Context.from_config(prim)).spec
    inherited = inheritance_map(variant, [(0, b.id) for b in variant.blocks], [prim.model])
    assert {f"blocks.0.attn.{w}.weight" for w in ("wq", "wk", "wv", "wo")} <= set(inherited)


def test_switching_the_attention_family_keeps_what_it_can(prim):
    rng = random.Random(3)
    only = {op: 0.0 for op in DECK} | {"attn.family": 1.0}
    kinds_seen = set()
    for _ in range(30):
        child = mutate(prim, prim.model, rng, weights=only)
        inherited = inheritance_map(child.spec, child.provenance, [prim.model])
        for i, (old, new) in enumerate(zip(prim.model.blocks, child.spec.blocks, strict=True)):
            if old.attn.kind == new.attn.kind:
                continue
            kinds_seen.add((old.attn.kind, new.attn.kind))
            names = {n.rsplit(".", 2)[-2] for n in inherited if n.startswith(f"blocks.{i}.attn.")}
            assert "wo" in names  # every family writes through the same output projection
            if {old.attn.kind, new.attn.kind} <= {"MHA", "GQA", "MQA", "LINEAR"}:
                assert {"wq", "wk", "wv"} <= names
    assert len(kinds_seen) >= 3


def test_every_variant_of_the_primitives_parent_builds(prim):
    from evotui.dsl import manifest
    from evotui.model.lm import build_model

    for name, variant in ablations(prim.model, NEW_MOTIFS, Context.from_config(prim)).items():
        model = build_model(variant.spec, prim.data.seq_len, device="meta")
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == {k: t.shape for k, t in manifest(variant.spec).items()}, name
        assert to_data(variant.spec)
