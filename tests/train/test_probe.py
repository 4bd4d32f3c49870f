"""The passkey probe measures recall: a copying oracle scores 1.0, an untrained model about 0,
results repeat for a seed, and fine-tuning touches only a copy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evotui.dsl import ModelSpec, TrainConfig
from evotui.model.lm import build_model
from evotui.train.probe import (
    EVAL,
    PasskeyTask,
    choose_markers,
    config_kwargs,
    default_distances,
    make_task,
    max_distance,
    passkey_probe,
    stream,
)

VOCAB, SEQ = 64, 64
KEYS = 16  # key tokens from [0, 16); the filler below never uses them


def filler(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(KEYS, 48, size=n)


def tiny_lm(seed: int = 0):
    spec = ModelSpec.model_validate({
        "emb": {"dim": 32, "vocab": VOCAB},
        "blocks": [{"attn": {"heads": 2, "head_dim": 16, "kind": "MHA"},
                    "ffn": {"type": "dense", "hidden": 64}}] * 2,
    })
    torch.manual_seed(seed)
    return build_model(spec, SEQ)


def induction(idx: torch.Tensor, targets: torch.Tensor | None = None):
    """Logits that put all mass on the token after the previous occurrence of each token."""
    B, T = idx.shape
    logits = torch.zeros(B, T, VOCAB)
    for b in range(B):
        last: dict[int, int] = {}
        row = idx[b].tolist()
        for t, tok in enumerate(row):
            if tok in last:
                logits[b, t, row[last[tok] + 1]] = 30.0
            last[tok] = t
    return logits, None


PROBE = dict(seq_len=SEQ, batches=2, batch_size=2, vocab_limit=KEYS, seed=3)


def test_layout_and_distances():
    assert max_distance(64, 4) == 54
    assert default_distances(64, 4) == [16, 29, 41, 54]
    assert default_distances(64, 4, min_distance=40)[0] == 40
    with pytest.raises(ValueError):
        default_distances(64, 4, min_distance=60)
    a, b, fill = choose_markers(filler(4096, 0), VOCAB, KEYS)
    assert {a, b} == {62, 63} and KEYS <= fill < 48
    task = PasskeyTask(filler, SEQ, 4, np.arange(KEYS), a, b, fill)
    d = 20
    seq = task.sequence(d, stream(0, 0), 0)
    q = SEQ - 4 - 1
    key = seq[q + 1:]
    assert seq[q] == a and (key < KEYS).all() and len(set(key.tolist())) == 4
    p = q - d - 4  # the first key
    assert seq[p - 1] == a and (seq[p:p + 4] == key).all() and seq[p + 4] == b
    assert (seq == a).sum() == 2 and (seq == b).sum() == 1  # markers appear only where planted


def test_induction_oracle_finds_every_key(monkeypatch):
    model = tiny_lm()
    monkeypatch.setattr(model, "forward", induction)
    out = passkey_probe(model, filler, **PROBE)
    assert out["passkey_acc"] == 1.0 and out["passkey_token_acc"] == 1.0
    assert out["passkey_loss"] < 1e-6
    for d in default_distances(SEQ, 4):
        assert out[f"passkey_acc@{d}"] == 1.0 and f"passkey_loss@{d}" in out


def test_untrained_model_scores_about_zero():
    model = tiny_lm()
    model.train()
    out = passkey_probe(model, filler, **{**PROBE, "vocab_limit": None}, distances=[10, 30])
    assert set(out) == {"passkey_acc", "passkey_loss", "passkey_token_acc", "passkey_acc@10",
                        "passkey_loss@10", "passkey_acc@30", "passkey_loss@30"}
    assert out["passkey_acc"] <= 0.25
    assert math.isfinite(out["passkey_loss"]) and out["passkey_loss"] > 1.0
    assert model.training  # mode restored


def test_deterministic_for_a_seed():
    model = tiny_lm()
    first = passkey_probe(model, filler, **PROBE)
    assert passkey_probe(model, filler, **PROBE) == first
    assert passkey_probe(model, filler, **{**PROBE, "seed": 4}) != first
    tuned = dict(PROBE, steps=3, lr=1e-2)
    assert passkey_probe(model, filler, **tuned) == passkey_probe(model, filler, **tuned)


def test_finetune_lowers_loss_of_a_copy_only():
    model = tiny_lm()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = passkey_probe(model, filler, **PROBE)
    tuned = passkey_probe(model, filler, **PROBE, steps=15, lr=1e-2)
    assert tuned["passkey_loss"] < base["passkey_loss"] - 0.5
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    with pytest.raises(ValueError):
        passkey_probe(model, filler, **PROBE, steps=2)  # no lr


def test_loss_is_cross_entropy_on_the_key_tokens():
    model = tiny_lm()
    out = passkey_probe(model, filler, **{**PROBE, "batches": 1}, distances=[20])
    task = make_task(filler, VOCAB, SEQ, vocab_limit=KEYS, seed=3)
    assert task.alphabet.tolist() == list(range(KEYS))
    idx = task.batch([20, 20], stream(3, EVAL, 0, 0), EVAL, torch.device("cpu"))
    with torch.no_grad():
        logits, _ = model(idx)
    want = F.cross_entropy(logits[:, -5:-1].reshape(-1, VOCAB), idx[:, -4:].reshape(-1))
    assert out["passkey_loss"] == pytest.approx(want.item(), rel=1e-5)


def test_config_kwargs():
    t = TrainConfig(passkey_eval_steps=5, passkey_eval_lr=1e-3, passkey_eval_vocab_limit=10)
    kw = config_kwargs(t, 128)
    assert kw["seq_len"] == 128 and kw["steps"] == 5 and kw["lr"] == 1e-3
    assert kw["vocab_limit"] == 10 and kw["min_distance"] is None
