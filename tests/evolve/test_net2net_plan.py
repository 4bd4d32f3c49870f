"""The net2net plan over the real mutation deck: for any child of tiny it names only the
child's tensors, every widen map fits the child's shape and indexes the parent's, and a child
that changed no shape has an empty plan."""

from __future__ import annotations

import random

from evotui.dsl import load
from evotui.dsl.estimate import manifest
from evotui.evolve.inheritance import inheritance_map
from evotui.evolve.net2net_plan import counts, net2net_plan
from evotui.evolve.variation import mutate
from tests.conftest import ROOT


def test_plans_of_random_children_fit_their_shapes() -> None:
    cfg = load(ROOT / "configs" / "tiny.yaml")
    parent = cfg.model
    pshapes = {k: v.shape for k, v in manifest(parent).items()}
    rng = random.Random(0)
    widened = 0
    for i in range(40):
        child = mutate(cfg, parent, rng, steps=rng.randint(1, 2))
        mapping = inheritance_map(child.spec, child.provenance, [parent])
        plan = net2net_plan(child.spec, child.provenance, [parent], mapping, seed=i)
        own = {k: v.shape for k, v in manifest(child.spec).items()}
        assert set(plan) <= set(own)
        for name, t in plan.items():
            if t["op"] == "zero":
                continue
            widened += 1
            src = pshapes[mapping[name][1]]
            for d in t["dims"]:
                assert len(d["map"]) * d["unit"] == own[name][d["dim"]]
                assert max(d["map"]) * d["unit"] < src[d["dim"]]
        c = counts(child.spec, [parent], mapping, plan)
        assert c["exact"] + c["transformed"] + c["fresh"] == len(own)
        if all(own[n] == pshapes.get(s) for n, (_, s) in mapping.items()) and all(
                p is not None and p[1] == b.id for p, b in zip(child.provenance,
                                                               child.spec.blocks, strict=True)):
            assert plan == {}
    assert widened  # the deck's resizing mutations do reach the widen path
