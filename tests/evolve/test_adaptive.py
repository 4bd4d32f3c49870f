"""Adaptive operator weights move toward operators whose children beat their parents."""

from __future__ import annotations

import random
from collections import Counter

from evotui.dsl import EvolutionConfig
from evotui.evolve import DECK, AdaptiveWeights, improved, mutate

OBJ = {"loss": "min", "throughput": "max"}


def test_improved_counts_objectives_with_directions():
    parent = {"loss": 2.0, "throughput": 100.0}
    assert improved({"loss": 1.0, "throughput": 100.0}, parent, OBJ)
    assert not improved({"loss": 3.0, "throughput": 100.0}, parent, OBJ)
    assert not improved({"loss": 1.0, "throughput": 50.0}, parent, OBJ)  # one win, one loss
    assert not improved({"loss": 1.0}, parent, OBJ)  # a missing metric is no success
    assert not improved({}, parent, OBJ)


def test_weights_move_toward_successful_operators_and_stay_clipped():
    w = AdaptiveWeights.from_config(EvolutionConfig(adaptive_mutation=True,
                                                    adaptive_mutation_eta=0.2))
    start_good, start_bad = w.weight("ffn.hidden"), w.weight("attn.heads")
    for _ in range(5):
        w.observe(["ffn.hidden(block b1: hidden 256 -> 384)"], {"loss": 1.0, "throughput": 2.0},
                  {"loss": 2.0, "throughput": 1.0}, OBJ)
        w.observe(["attn.heads(block b0: heads 4 -> 8)"], {"loss": 3.0, "throughput": 0.5},
                  {"loss": 2.0, "throughput": 1.0}, OBJ)
    assert w.weight("ffn.hidden") > start_good
    assert w.weight("attn.heads") < start_bad
    for _ in range(200):
        w.update(["ffn.hidden"], True)
        w.update(["attn.heads"], False)
    assert w.weight("ffn.hidden") == w.max_weight
    assert w.weight("attn.heads") == w.min_weight


def test_round_trip_through_a_dict():
    w = AdaptiveWeights(eta=0.3, min_weight=0.1, max_weight=3.0)
    w.update(["norm.kind"], True)
    again = AdaptiveWeights.from_dict(w.to_dict())
    assert again == w
    assert set(DECK) <= set(again.weights())


def test_adapted_weights_steer_mutation(tiny):
    w = AdaptiveWeights(max_weight=50.0)
    for _ in range(60):
        w.update(["ffn.activation"], True)
    rng = random.Random(0)
    drawn = Counter(op for _ in range(200)
                    for op in mutate(tiny, tiny.model, rng, weights=w.weights()).operators)
    assert drawn.most_common(1)[0][0] == "ffn.activation"
    assert drawn["ffn.activation"] > 100
