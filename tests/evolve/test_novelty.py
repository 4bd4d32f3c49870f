"""Structural descriptors and novelty."""

from __future__ import annotations

import random

from evotui.dsl import to_data
from evotui.evolve import descriptor, mutate, novelty, validate_model


def test_descriptor_ignores_ids_and_has_fixed_length(tiny, gpt2):
    d = descriptor(tiny.model)
    assert len(d) == len(descriptor(gpt2.model)) == 18
    data = to_data(tiny.model)
    for i, b in enumerate(data["blocks"]):
        b["id"] = f"z{i}"
    assert descriptor(validate_model(tiny, data)) == d


def test_novelty_is_distance_to_the_nearest(tiny, gpt2):
    spec = tiny.model
    assert novelty(spec, []) == 0.0
    assert novelty(spec, [spec]) == 0.0
    near = mutate(tiny, spec, random.Random(0), weights={"ffn.activation": 1.0} | {
        n: 0.0 for n in ("attn.heads",)}).spec
    far = gpt2.model
    assert novelty(spec, [far]) > novelty(spec, [near]) >= 0.0
    # k nearest: the mean over the closest k only
    assert novelty(spec, [spec, far], k=1) == 0.0
    assert novelty(spec, [spec, far], k=2) == novelty(spec, [far]) / 2
    # descriptors are accepted in place of specs
    assert novelty(descriptor(spec), [descriptor(far)]) == novelty(spec, [far])
