"""Small data the data tests write themselves (no downloads), and a config around it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from evotui.data import corpus
from evotui.dsl.loader import parse
from evotui.dsl.run import RunConfig

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "iota", "kappa",
         "lambda", "omicron", "sigma", "tau", "upsilon", "omega", "river", "stone", "cloud",
         "ember", "maple", "quartz", "violet", "harbor", "lantern")


def random_docs(n: int, seed: int, min_words: int = 5, max_words: int = 80) -> list[str]:
    """Random word documents: windows of a few dozen bytes are unique with high probability."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) + str(rng.randrange(1000))
                     for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def write_jsonl(path: Path, docs: list[str], field: str = "content") -> Path:
    path.write_text("".join(json.dumps({"id": i, field: d}) + "\n" for i, d in enumerate(docs)))
    return path


def write_parquet(path: Path, docs: list[str], field: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"n": list(range(len(docs))), field: docs}), path)
    return path


def make_config(shards: list[dict], vocab: int = 257, **data) -> RunConfig:
    """A small valid run config with these data shards (and data overrides)."""
    raw = {
        "model": {"emb": {"dim": 32, "vocab": vocab},
                  "blocks": [{"attn": {"heads": 2, "head_dim": 16},
                              "ffn": {"type": "dense", "hidden": 64}}]},
        "data": {"tokenizer": "byte", "seq_len": 32, "batch_size": 4, "eval_tokens": 512,
                 "shards": shards, **data},
    }
    return parse(raw, RunConfig)


def locate(stream: np.ndarray, window: np.ndarray) -> int:
    """Where ``window`` occurs in ``stream`` as a contiguous slice, or -1."""
    hay = np.ascontiguousarray(stream).tobytes()
    needle = np.ascontiguousarray(window).astype(stream.dtype).tobytes()
    size = stream.dtype.itemsize
    at = hay.find(needle)
    while at != -1 and at % size:
        at = hay.find(needle, at + 1)
    return at // size if at != -1 else -1


@pytest.fixture
def small_caps(monkeypatch):
    """Builtin corpora capped small, so tests that touch them stay fast."""
    caps = {"builtin:code": 300_000, "builtin:prose": 60_000, "builtin:math": 100_000}
    monkeypatch.setattr(corpus, "CAPS", caps)
    return caps


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No Hub: offline mode on, and an empty Hugging Face cache."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub"))
