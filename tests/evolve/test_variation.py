"""Mutation and crossover bookkeeping: ids, provenance, weight inheritance that follows block
ids, recurrence spans under block edits, the architecture key, determinism."""

from __future__ import annotations

import random

import pytest

from evotui.dsl import manifest, to_data
from evotui.evolve import (
    DECK,
    VariationError,
    compose,
    crossover,
    inheritance_map,
    mutate,
    spec_key,
    validate_model,
)
from evotui.evolve.mutations.helpers import insert_block, remove_block


def only(*ops: str) -> dict[str, float]:
    return {name: (1.0 if name in ops else 0.0) for name in DECK}


def block_tensors(spec, i: int) -> list[str]:
    return [n for n in manifest(spec) if n.startswith(f"blocks.{i}.")]


def index(spec) -> dict[str, int]:
    return {b.id: i for i, b in enumerate(spec.blocks)}


def test_same_seed_same_child(tiny):
    a = mutate(tiny, tiny.model, random.Random(5), steps=3)
    b = mutate(tiny, tiny.model, random.Random(5), steps=3)
    assert a.ops == b.ops and to_data(a.spec) == to_data(b.spec)
    assert len(a.ops) == 3


def test_ops_are_readable(tiny):
    child = mutate(tiny, tiny.model, random.Random(1), weights=only("ffn.dense_to_moe"))
    (op,) = child.ops
    assert op.startswith("ffn.dense_to_moe(block b") and "moe" in op
    assert child.operators == ["ffn.dense_to_moe"]


@pytest.mark.parametrize("seed", range(6))
def test_moved_block_keeps_id_and_inherits_from_old_index(tiny, seed):
    parent = tiny.model
    child = mutate(tiny, parent, random.Random(seed), weights=only("block.move"))
    old, new = index(parent), index(child.spec)
    assert set(old) == set(new)  # same blocks, same ids
    moved = [bid for bid in new if new[bid] != old[bid]]
    assert moved
    assert child.provenance == [(0, b.id) for b in child.spec.blocks]
    m = inheritance_map(child.spec, child.provenance, [parent])
    for bid, i in new.items():
        j = old[bid]
        names = block_tensors(child.spec, i)
        assert names
        for name in names:
            assert m[name] == (0, f"blocks.{j}." + name[len(f"blocks.{i}."):])
    assert m["tok_emb.weight"] == (0, "tok_emb.weight")
    assert m["final_norm.weight"] == (0, "final_norm.weight")


def test_removed_block_is_not_mapped(tiny):
    parent = tiny.model
    child = mutate(tiny, parent, random.Random(2), weights=only("block.remove"))
    (gone,) = set(index(parent)) - set(index(child.spec))
    j = index(parent)[gone]
    m = inheritance_map(child.spec, child.provenance, [parent])
    assert not any(src.startswith(f"blocks.{j}.") for _, src in m.values())
    for i, b in enumerate(child.spec.blocks):  # the others all come from their own id
        for name in block_tensors(child.spec, i):
            assert m[name][1].startswith(f"blocks.{index(parent)[b.id]}.")


def test_duplicate_gets_fresh_id_and_inherits_from_original(tiny):
    parent = tiny.model
    child = mutate(tiny, parent, random.Random(3), weights=only("block.duplicate"))
    (fresh,) = set(index(child.spec)) - set(index(parent))
    i = index(child.spec)[fresh]
    prov = child.provenance[i]
    assert prov is not None and prov[1] in index(parent)
    j = index(parent)[prov[1]]
    m = inheritance_map(child.spec, child.provenance, [parent])
    for name in block_tensors(child.spec, i):
        assert m[name] == (0, f"blocks.{j}." + name[len(f"blocks.{i}."):])


def test_inserted_block_starts_fresh(tiny):
    parent = tiny.model
    child = mutate(tiny, parent, random.Random(4), weights=only("block.insert"))
    (fresh,) = set(index(child.spec)) - set(index(parent))
    i = index(child.spec)[fresh]
    assert child.provenance[i] is None
    m = inheritance_map(child.spec, child.provenance, [parent])
    assert not any(n.startswith(f"blocks.{i}.") for n in m)


def test_resized_tensor_is_still_mapped(gpt2):
    parent = gpt2.model
    child = mutate(gpt2, parent, random.Random(0), weights=only("ffn.hidden"))
    i = next(i for i, (a, b) in enumerate(zip(parent.blocks, child.spec.blocks, strict=True))
             if a.ffn != b.ffn)
    name = f"blocks.{i}.ffn.w1.weight"
    m = inheritance_map(child.spec, child.provenance, [parent])
    assert m[name] == (0, name)
    assert manifest(child.spec)[name].shape != manifest(parent)[name].shape


def test_extras_matched_by_type_and_order(tiny):
    parent = tiny.model
    data = to_data(parent)
    extras = data["blocks"][1]["extras"]  # [custom exp-gater]
    extras.insert(0, {"type": "retro", "memory_tokens": 32, "stride": 16})
    data["blocks"][4]["extras"] = []  # exp-bridge removed
    child = validate_model(tiny, data)
    prov = [(0, b.id) for b in child.blocks]
    m = inheritance_map(child, prov, [parent])
    assert m["blocks.1.extras.1.wg.weight"] == (0, "blocks.1.extras.0.wg.weight")
    assert m["blocks.1.extras.1.norm.weight"] == (0, "blocks.1.extras.0.norm.weight")
    assert not any(n.startswith("blocks.1.extras.0.") for n in m)  # the new retro
    assert not any(n.startswith("blocks.4.extras.") for n in m)


def test_recurrence_adapter_follows_its_span(tiny):
    parent = tiny.model
    name = "recurrences.0.adapter.weight"
    same = mutate(tiny, parent, random.Random(0), weights=only("ffn.activation"))
    assert inheritance_map(same.spec, same.provenance, [parent])[name] == (0, name)
    resized = mutate(tiny, parent, random.Random(0), weights=only("rec.resize"))
    assert name not in inheritance_map(resized.spec, resized.provenance, [parent])


def spans_by_id(spec) -> list[list[str]]:
    return [[b.id for b in spec.blocks[r.start:r.end + 1]] for r in spec.recurrences]


def test_spans_follow_block_edits(tiny):
    base = to_data(tiny.model)  # one span over blocks 2..3 (ids b2, b3)
    assert base["recurrences"][0]["start"] == 2 and base["recurrences"][0]["end"] == 3

    def edited(*edits):
        data = to_data(tiny.model)
        for edit in edits:
            edit(data)
        return validate_model(tiny, data)

    assert spans_by_id(edited(lambda d: remove_block(d, 0))) == [["b2", "b3"]]
    assert spans_by_id(edited(lambda d: remove_block(d, 2))) == [["b3"]]
    assert spans_by_id(edited(lambda d: remove_block(d, 2), lambda d: remove_block(d, 2))) == []
    assert spans_by_id(edited(lambda d: remove_block(d, 5))) == [["b2", "b3"]]
    new = {"id": "fresh", "ffn": {"hidden": 64}}
    assert spans_by_id(edited(lambda d: insert_block(d, 3, new))) == [["b2", "fresh", "b3"]]
    assert spans_by_id(edited(lambda d: insert_block(d, 2, new))) == [["b2", "b3"]]

    def move(src, dst):
        return lambda d: insert_block(d, dst, remove_block(d, src))

    assert spans_by_id(edited(move(0, 6))) == [["b2", "b3"]]
    assert spans_by_id(edited(move(6, 0))) == [["b2", "b3"]]
    assert spans_by_id(edited(move(2, 5))) == [["b3"]]


def test_block_edits_change_a_span_by_at_most_the_edited_block(tiny):
    rng = random.Random(8)
    ops = only("block.move", "block.remove", "block.insert", "block.duplicate", "rec.add")
    spec = tiny.model
    for _ in range(300):
        child = mutate(tiny, spec, rng, weights=ops)
        before = [set(s) for s in spans_by_id(spec)]
        after = [set(s) for s in spans_by_id(child.spec)]
        if child.operators != ["rec.add"]:
            assert len(before) - 1 <= len(after) <= len(before)
            for span in after:
                assert any(len(span ^ old) <= 1 for old in before)
        spec = child.spec if len(child.spec.blocks) < 12 else tiny.model


def test_crossover_splices_and_renames(tiny):
    rng = random.Random(0)
    a = tiny.model
    b = mutate(tiny, a, rng, steps=4, weights=only("ffn.hidden", "attn.heads")).spec
    for seed in range(10):
        child = crossover(tiny, a, b, random.Random(seed))
        ids = [blk.id for blk in child.spec.blocks]
        assert len(set(ids)) == len(ids)
        slots = [p[0] for p in child.provenance]
        ca = slots.index(1)
        assert slots == [0] * ca + [1] * (len(slots) - ca) and ca >= 1
        assert ids[:ca] == [blk.id for blk in a.blocks[:ca]]
        for blk, (_, orig) in zip(child.spec.blocks[ca:], child.provenance[ca:], strict=True):
            src = b.blocks[index(b)[orig]]
            assert blk.id not in {x.id for x in a.blocks}  # renamed: a uses that id
            assert to_data(blk) | {"id": None} == to_data(src) | {"id": None}
        assert all(r.end < ca for r in child.spec.recurrences)
        m = inheritance_map(child.spec, child.provenance, [a, b])
        i = ca  # the first block from b inherits from b, at its index there
        j = index(b)[child.provenance[i][1]]
        for name in block_tensors(child.spec, i):
            assert m[name] == (1, f"blocks.{j}." + name[len(f"blocks.{i}."):])
        assert m["tok_emb.weight"] == (0, "tok_emb.weight")


def test_crossover_across_widths_validates(tiny):
    rng = random.Random(1)
    wide = mutate(tiny, tiny.model, rng, weights=only("model.width")).spec
    assert wide.emb.dim != tiny.model.emb.dim
    for seed in range(10):
        child = crossover(tiny, wide, tiny.model, random.Random(seed))
        assert child.spec.emb.dim == wide.emb.dim
        child = crossover(tiny, tiny.model, wide, random.Random(seed))
        assert child.spec.emb.dim == tiny.model.emb.dim


def test_compose_maps_provenance_to_the_original_parents(tiny):
    rng = random.Random(2)
    b = mutate(tiny, tiny.model, rng, steps=2).spec
    first = crossover(tiny, tiny.model, b, rng)
    second = mutate(tiny, first.spec, rng, weights=only("block.move"))
    both = compose(first, second)
    assert both.ops == first.ops + second.ops
    by_id = dict(zip([x.id for x in first.spec.blocks], first.provenance, strict=True))
    assert both.provenance == [by_id[x.id] for x in second.spec.blocks]


def test_spec_key_ignores_ids_and_names(tiny):
    spec = tiny.model
    data = to_data(spec)
    data["name"] = "renamed"
    for i, blk in enumerate(data["blocks"]):
        blk["id"] = f"other{i}"
        blk["name"] = f"label{i}"
    renamed = validate_model(tiny, data)
    assert spec_key(renamed) == spec_key(spec)
    moved = mutate(tiny, spec, random.Random(0), weights=only("block.move")).spec
    assert spec_key(moved) != spec_key(spec)
    tuned = mutate(tiny, spec, random.Random(0), weights=only("attn.rope_theta")).spec
    assert spec_key(tuned) != spec_key(spec)


def test_nothing_applicable_is_a_clear_error(tiny, gpt2):
    with pytest.raises(VariationError, match="no mutation applies"):
        mutate(tiny, tiny.model, random.Random(0), weights=dict.fromkeys(DECK, 0.0))
    with pytest.raises(VariationError):  # gpt2 has no recurrence to remove
        mutate(gpt2, gpt2.model, random.Random(0), weights=only("rec.remove"))
