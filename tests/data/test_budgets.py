"""Token budgets: a shard is read only as far as its budget, a larger budget appends to the cache
(equal to a clean build), a killed build continues, the tokenizer comes before any shard."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import numpy as np
import pytest
import yaml

from evotui.data import build, cache, prepare, sources
from evotui.data.budget import HEADROOM, search_tokens, shard_budgets
from evotui.errors import UserError
from tests.data.conftest import make_config, random_docs, write_jsonl, write_parquet


def big_jsonl(path, n_docs: int = 6000, seed: int = 3):
    return write_jsonl(path, random_docs(n_docs, seed=seed, min_words=20, max_words=200),
                       field="text")


def bin_hash(cdir) -> str:
    (b,) = list(cdir.glob("*.bin"))
    return hashlib.sha256(b.read_bytes()).hexdigest()


def built(cfg, cdir, **kw) -> tuple[list[build.Progress], object]:
    seen: list[build.Progress] = []
    ds = prepare(cfg, cache_dir=cdir, on_build=seen.append, workers=1, **kw)
    return seen, ds


def test_a_budget_reads_a_small_part_and_a_larger_one_appends(tmp_path):
    path = big_jsonl(tmp_path / "big.jsonl")  # about 4.5 MB
    size = path.stat().st_size
    small = make_config([{"path": str(path), "max_tokens": 100_000}])
    seen, ds = built(small, tmp_path / "c")
    last = seen[-1]
    assert last.done and last.tokens >= 100_000 and last.bytes_read < size / 4
    assert last.total_bytes == size
    tf = ds.train_shards[0].tokens
    assert 100_000 <= len(tf) + len(ds.heldout_tokens("big")) < 100_000 + 2000

    double = make_config([{"path": str(path), "max_tokens": 200_000}])
    seen2, _ = built(double, tmp_path / "c")
    assert seen2[0].start_tokens == last.tokens  # continued, not rebuilt
    assert seen2[-1].bytes_read < size / 4  # read on from where the first stopped
    built(double, tmp_path / "clean")
    assert bin_hash(tmp_path / "c") == bin_hash(tmp_path / "clean")
    # the smaller budget still reads exactly its own documents from the larger cache
    again = prepare(small, cache_dir=tmp_path / "c", workers=1)
    assert np.array_equal(again.train_shards[0].tokens, tf)


def test_parquet_and_dataset_folder_stream_to_a_budget_and_extend(tmp_path, offline):
    docs = random_docs(3000, seed=5, min_words=20, max_words=100)
    pq = write_parquet(tmp_path / "p.parquet", docs, field="text")
    folder = tmp_path / "hub-like"  # laid out like a Hub dataset repository
    (folder / "data").mkdir(parents=True)
    for i in range(2):
        write_parquet(folder / "data" / f"train-0000{i}-of-00002.parquet",
                      docs[i * 1500:(i + 1) * 1500], field="text")
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    for shard in ({"path": str(pq)}, {"name": str(folder)}):
        small = make_config([{**shard, "max_tokens": 60_000}])
        big = make_config([{**shard, "max_tokens": 400_000}])
        seen, _ = built(small, tmp_path / "a")
        assert seen[-1].tokens < 70_000
        seen, _ = built(big, tmp_path / "a")  # crosses into the second file of the folder
        assert seen[0].start_tokens > 0 and seen[-1].tokens >= 400_000
        built(big, tmp_path / "b")
        assert bin_hash(tmp_path / "a") == bin_hash(tmp_path / "b")
        for d in ("a", "b"):
            for f in (tmp_path / d).iterdir():
                if f.is_file():
                    f.unlink()


def test_kill_9_during_prepare_then_prepare_equals_a_clean_build(tmp_path, monkeypatch):
    path = big_jsonl(tmp_path / "big.jsonl", n_docs=3000)
    cfg = make_config([{"path": str(path), "max_tokens": 600_000}])
    cdir = tmp_path / "killed"
    pid = os.fork()
    if pid == 0:  # the child builds slowly, in small batches, until it is killed
        try:
            build.BATCH_CHARS = 20_000
            prepare(cfg, cache_dir=cdir, workers=1, on_build=lambda p: time.sleep(0.05))
        finally:
            os._exit(0)
    meta = None
    for _ in range(400):
        found = list(cdir.glob("*.json")) if cdir.exists() else []
        if found:
            try:
                meta = json.loads(found[0].read_text())
            except ValueError:
                meta = None
            if meta and meta["n_docs"] > 0:
                break
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert meta and 0 < meta["n_tokens"] < 600_000  # killed part way
    with open(next(cdir.glob("*.bin")), "ab") as f:
        f.write(b"\x01\x02\x03")  # as if killed in the middle of appending a batch
    seen, ds = built(cfg, cdir)
    assert seen[0].start_tokens > 0  # continued from the committed batches
    built(cfg, tmp_path / "clean")
    assert bin_hash(cdir) == bin_hash(tmp_path / "clean")


def test_an_interrupted_cache_is_never_used_as_complete(tmp_path):
    path = big_jsonl(tmp_path / "big.jsonl", n_docs=2000)
    cfg = make_config([{"path": str(path), "max_tokens": 300_000}])
    built(cfg, tmp_path / "c")
    c = cache.Cache(tmp_path / "c", next((tmp_path / "c").glob("*.json")).stem)
    assert c.read_meta() and c.covers(300_000) and not c.covers(600_000)
    c.meta.update(n_tokens=1000, n_docs=3)  # as if it had stopped after a few documents
    c._commit()
    assert not c.covers(300_000)
    seen, _ = built(cfg, tmp_path / "c")
    assert not seen[-1].cached and seen[-1].tokens >= 300_000


def test_the_tokenizer_is_resolved_before_any_shard_is_touched(tmp_path, offline, monkeypatch,
                                                             run_cli):
    def touched(*a, **k):
        raise AssertionError("a shard was opened before the tokenizer was resolved")

    monkeypatch.setattr(sources.Source, "check", touched)
    monkeypatch.setattr(sources.Source, "documents", touched)
    cfg = make_config([{"name": "evotui-test/would-fail-to-open"}],
                      tokenizer="evotui-test/no-such-tokenizer", vocab=60000)
    with pytest.raises(UserError) as e:
        prepare(cfg, cache_dir=tmp_path / "c")
    assert [p.path for p in e.value.problems] == ["data.tokenizer"]
    raw = {"model": {"emb": {"dim": 32, "vocab": 60000},
                     "blocks": [{"attn": {"heads": 2, "head_dim": 16},
                                 "ffn": {"type": "dense", "hidden": 64}}]},
           "data": {"tokenizer": "evotui-test/no-such-tokenizer", "seq_len": 32,
                    "shards": [{"name": "evotui-test/would-fail-to-open"}]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    code, out, err = run_cli("data", "prepare", tmp_path / "c.yaml", "--cache-dir",
                             tmp_path / "c")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "data.tokenizer" in lines[0]
    assert "offline" in lines[0] and "tokenizer: byte" in lines[0]


def test_budgets_derive_from_the_search_and_are_printed_before_reading(tmp_path):
    path = big_jsonl(tmp_path / "big.jsonl", n_docs=500)
    cfg = make_config([{"path": str(path), "weight": 3.0},
                       {"name": "builtin:math", "weight": 1.0, "max_tokens": 5000}])
    train, _ = shard_budgets(cfg, 1_000_000)
    assert train == [int(np.ceil((750_000 + 512) * HEADROOM)), 5000]
    assert shard_budgets(cfg, None)[0] == [None, 5000]
    tokens = search_tokens(cfg, (10, 30), 100)
    ev = cfg.evolution
    assert tokens == ev.generations * (ev.population * 10 + int(np.ceil(
        ev.topk_keep * ev.population)) * 20) * 100
    said: list[str] = []
    prepare(cfg, cache_dir=tmp_path / "c", progress=said.append, train_tokens=40_000)
    first_budget = next(i for i, s in enumerate(said) if "budget" in s)
    first_read = next(i for i, s in enumerate(said) if "tokenised" in s)
    assert first_budget < first_read and "budget 33,564 tokens" in said[0]


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("Dataset scripts are no longer supported, but found x.py"),
     "needs a loading script, which datasets no longer runs; use revision: "
     "refs/convert/parquet"),
    (FileNotFoundError("Dataset 'o/x' is a gated dataset on the Hub. You must be "
                       "authenticated to access it."), "is gated and no Hugging Face token"),
    (ValueError("Bad split: test. Available splits: ['train']"),
     "has no split 'test'; set split: to one of train"),
    (ValueError("BuilderConfig 'zz' not found. Available: ['a', 'b']"),
     "has no config 'zz'; set config: to one of a, b"),
])
def test_dataset_refusals_name_the_fix(error, expected, monkeypatch, tmp_path):
    import datasets

    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr(sources, "_has_token", lambda: False)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", fail)
    monkeypatch.setattr(sources, "hub_reachable", lambda: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    cfg = make_config([{"name": "org/set", "split": "test", "config": "zz"}])
    with pytest.raises(UserError) as e:
        prepare(cfg, cache_dir=tmp_path / "c")
    text = e.value.render()
    assert "\n" not in text and text.startswith("data.shards[0]: dataset org/set")
    assert expected in text
