"""prepare() and Dataset: packed streams, held-out tails, reproducible batches, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evotui.data import Dataset, build, prepare
from evotui.data.tokenizers import ByteTokenizer, train_bpe
from evotui.errors import UserError
from tests.data.conftest import (
    locate,
    make_config,
    random_docs,
    write_jsonl,
    write_parquet,
)

T = 32


@pytest.fixture
def files(tmp_path):
    """Two local shards: a jsonl file with a ``content`` field and a parquet file."""
    a, b = random_docs(150, seed=10), random_docs(100, seed=11)
    return {
        "a": (write_jsonl(tmp_path / "alpha.jsonl", a, field="content"), a),
        "b": (write_parquet(tmp_path / "beta.parquet", b, field="story"), b),
    }


def shards(files, **extra) -> list[dict]:
    return [{"path": str(files["a"][0]), "weight": 3.0, **extra},
            {"path": str(files["b"][0]), "weight": 1.0, **extra}]


@pytest.fixture
def ds(files, tmp_path) -> Dataset:
    return prepare(make_config(shards(files)), cache_dir=tmp_path / "cache")


def windows(x, y) -> np.ndarray:
    assert x.dtype == y.dtype and str(x.dtype) == "torch.int64"
    assert (y[:, :-1] == x[:, 1:]).all()
    return np.concatenate([x.numpy(), y[:, -1:].numpy()], axis=1)


def heldout_region(ds: Dataset, shard) -> np.ndarray:
    return next(r.tokens for rs in ds.heldout.values() for r in rs if r.where == shard.where)


def test_streams_are_packed_documents_split_at_a_document(ds, files):
    assert [s.tag for s in ds.train_shards] == ["alpha", "beta"]
    assert ds.eval_tags == ["alpha", "beta"]
    for shard, (_, docs) in zip(ds.train_shards, files.values(), strict=True):
        held = heldout_region(ds, shard)
        stream = np.concatenate([shard.tokens, held])
        assert np.array_equal(stream, ByteTokenizer().encode_packed(docs))  # no padding
        assert shard.tokens[-1] == 256  # training ends at the end of a document
        assert len(held) >= 512 and len(shard.tokens) > len(stream) / 2
        k = int((held == 256).sum())
        tail = ByteTokenizer().encode_packed(docs[-k:])
        assert np.array_equal(held, tail)  # held-out = the last k whole documents


def test_training_windows_are_contiguous_and_never_held_out(ds):
    regions = [(s.tokens, heldout_region(ds, s)) for s in ds.train_shards]
    found = [0, 0]
    for seed in range(4):
        for step in range(25):
            w = windows(*ds.train_batch(step, seed, 4, T))
            assert w.shape == (4, T + 1)
            for row in w:
                hits = [locate(train, row) for train, _ in regions]
                assert max(hits) >= 0, "window is not a slice of a training region"
                found[int(np.argmax(hits))] += 1
                assert all(locate(held, row) == -1 for _, held in regions)
    assert found[0] > 2 * found[1] > 0  # weights 3:1


def test_batches_depend_on_seed_and_step_only(ds, files, tmp_path):
    a = windows(*ds.train_batch(7, 1, 8, T))
    assert np.array_equal(a, windows(*ds.train_batch(7, 1, 8, T)))
    again = prepare(make_config(shards(files)), cache_dir=tmp_path / "cache")
    assert np.array_equal(a, windows(*again.train_batch(7, 1, 8, T)))
    ds.train_batch(3, 5, 8, T)  # other calls in between change nothing
    assert np.array_equal(a, windows(*ds.train_batch(7, 1, 8, T)))
    assert not np.array_equal(a, windows(*ds.train_batch(8, 1, 8, T)))
    assert not np.array_equal(a, windows(*ds.train_batch(7, 2, 8, T)))


def test_candidates_start_from_different_windows(ds):
    def places(seed: int) -> set[tuple[int, int]]:
        rows = windows(*ds.train_batch(0, seed, 8, T))
        return {(i, locate(s.tokens, row)) for row in rows
                for i, s in enumerate(ds.train_shards) if locate(s.tokens, row) >= 0}

    seen = [places(seed) for seed in range(6)]
    for i in range(len(seen)):
        for j in range(i):
            assert len(seen[i] & seen[j]) <= 1
    assert len(set().union(*seen)) >= 40  # of 48 windows


def test_eval_batches_are_fixed_spread_and_held_out(ds):
    for tag in ds.eval_tags:
        held = ds.heldout_tokens(tag)
        batches = ds.eval_batches(tag, 4, T, 3)
        assert len(batches) == 3
        assert all(np.array_equal(windows(*a), windows(*b))
                   for a, b in zip(batches, ds.eval_batches(tag, 4, T, 3), strict=True))
        starts = [locate(held, row) for x, y in batches for row in windows(x, y)]
        assert starts[0] == 0 and min(starts) >= 0
        assert starts == sorted(starts) and len(set(starts)) == 12
        assert starts[-1] > len(held) * 0.8  # spread over the whole region


def test_same_tag_groups_shards(files, tmp_path):
    ds = prepare(make_config(shards(files, tag="mixed")), cache_dir=tmp_path / "c")
    assert ds.eval_tags == ["mixed"]
    assert len(ds.heldout_tokens("mixed")) == sum(len(r.tokens) for r in ds.heldout["mixed"])
    assert len(ds.heldout["mixed"]) == 2
    for x, y in ds.eval_batches("mixed", 4, T, 2):
        for row in windows(x, y):
            assert any(locate(r.tokens, row) >= 0 for r in ds.heldout["mixed"])


def test_cache_is_reused_and_keyed_by_tokenizer(files, tmp_path, monkeypatch):
    cdir = tmp_path / "cache"
    cfg = make_config(shards(files))
    prepare(cfg, cache_dir=cdir)
    bins = sorted(cdir.glob("*.bin"))
    assert len(bins) == 2 and not list(cdir.glob("*.tmp"))
    stamps = [b.stat().st_mtime_ns for b in bins]
    meta = json.loads(bins[0].with_suffix(".json").read_text())
    assert meta["n_tokens"] * 2 == bins[0].stat().st_size and meta["dtype"] == "uint16"
    assert {"n_docs", "position", "exhausted", "source"} <= set(meta)

    def no_build(*args, **kwargs):
        raise AssertionError("re-tokenised a cached source")

    monkeypatch.setattr(build, "fill", no_build)
    said: list[str] = []
    prepare(cfg, cache_dir=cdir, progress=said.append)
    assert [b.stat().st_mtime_ns for b in sorted(cdir.glob("*.bin"))] == stamps
    assert sum("cached)" in s for s in said) == 2

    wider = make_config(shards(files), eval_tokens=2048)  # a new split, no new tokens
    assert len(prepare(wider, cache_dir=cdir).heldout_tokens("alpha")) >= 2048
    monkeypatch.undo()

    bpe = make_config(shards(files), vocab=300, tokenizer="bpe:300")
    ds = prepare(bpe, cache_dir=cdir)
    assert len(list(cdir.glob("*.bin"))) == 4  # a new key per source
    assert len(list((cdir / "tokenizers").glob("bpe300-*.json"))) == 1
    assert ds.tokenizer.name == "bpe:300"
    x, _ = ds.train_batch(0, 0, 2, T)
    assert int(x.max()) < ds.tokenizer.vocab_size


def test_cache_key_follows_the_file(files, tmp_path):
    cdir = tmp_path / "cache"
    prepare(make_config(shards(files)), cache_dir=cdir)
    path, docs = files["a"]
    write_jsonl(path, docs + ["one more document " * 20])
    ds = prepare(make_config(shards(files)), cache_dir=cdir)
    assert len(list(cdir.glob("alpha*.bin"))) == 2
    assert ByteTokenizer().decode(ds.heldout_tokens("alpha")).endswith("one more document ")


def test_incomplete_cache_files_are_not_trusted(files, tmp_path):
    cdir = tmp_path / "cache"
    cfg = make_config(shards(files))
    first = prepare(cfg, cache_dir=cdir).train_batch(0, 0, 4, T)
    b = sorted(cdir.glob("*.bin"))[0]
    b.write_bytes(b.read_bytes()[:-10])  # a torn write
    (cdir / f".{b.name}.123.tmp").write_bytes(b"junk")  # a crash's leftover
    b2 = sorted(cdir.glob("*.bin"))[1]
    b2.with_suffix(".json").unlink()  # tokens without their description
    said: list[str] = []
    again = prepare(cfg, cache_dir=cdir, progress=said.append)
    assert sum("tokenised" in s for s in said) == 2
    assert all(np.array_equal(u, v) for u, v in
               zip(first, again.train_batch(0, 0, 4, T), strict=True))


def test_every_problem_is_reported_before_tokenising(files, tmp_path, offline):
    cfg = make_config([{"path": str(files["a"][0]), "text_field": "nope"},
                       {"path": str(tmp_path / "missing.jsonl")},
                       {"name": "builtin:code"},
                       {"name": "evotui-test/absent"}])
    with pytest.raises(UserError) as e:
        prepare(cfg, cache_dir=tmp_path / "cache")
    paths = [p.path for p in e.value.problems]
    assert paths == ["data.shards[0]", "data.shards[1]", "data.shards[3]"]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.bin"))


def test_vocab_is_checked(files, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(train_bpe(random_docs(50, seed=1), 300))
    cfg = make_config(shards(files), tokenizer=str(path))
    with pytest.raises(UserError, match=r"model.emb.vocab: 257 is smaller than tokenizer"):
        prepare(cfg, cache_dir=tmp_path / "cache")


def test_too_short_shard_is_named(files, tmp_path):
    tiny = write_jsonl(tmp_path / "tiny.jsonl", ["just a few words"] * 2)
    cfg = make_config([*shards(files), {"path": str(tiny)}])
    with pytest.raises(UserError) as e:
        prepare(cfg, cache_dir=tmp_path / "cache")
    text = e.value.render()
    assert "data.shards[2]" in text and "tiny.jsonl" in text and "seq_len" in text
    ds = prepare(make_config(shards(files)), cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="data.shards"):
        ds.train_batch(0, 0, 2, 100_000)


def test_eval_shards_replace_held_out_tails(files, tmp_path):
    val = write_jsonl(tmp_path / "val.jsonl", random_docs(30, seed=12), field="text")
    cfg = make_config(shards(files), eval_shards=[{"path": str(val), "tag": "val"}])
    ds = prepare(cfg, cache_dir=tmp_path / "cache")
    assert ds.eval_tags == ["val"]
    a_docs = files["a"][1]
    assert np.array_equal(ds.train_shards[0].tokens, ByteTokenizer().encode_packed(a_docs))
    assert len(ds.eval_batches("val", 2, T, 2)) == 2


def test_a_source_both_trained_and_evaluated_keeps_its_tail_out_of_training(files, tmp_path):
    s = shards(files)
    cfg = make_config(s, eval_shards=[{"path": s[0]["path"], "tag": "alpha"}])
    ds = prepare(cfg, cache_dir=tmp_path / "cache")
    alpha_train = ds.train_shards[0].tokens
    held = ds.heldout_tokens("alpha")
    full = ByteTokenizer().encode_packed(files["a"][1])
    assert len(alpha_train) + len(held) == len(full)  # disjoint: train head, held-out tail
    assert np.array_equal(held, full[len(alpha_train):])
    # the other training shard is not evaluated: it trains on all of its tokens
    b_full = ByteTokenizer().encode_packed(files["b"][1])
    assert np.array_equal(ds.train_shards[1].tokens, b_full)


def test_builtin_corpus_and_filler(small_caps, tmp_path):
    cfg = make_config([{"name": "builtin:code", "weight": 0.4},
                       {"name": "builtin:prose", "weight": 0.4},
                       {"name": "builtin:math", "weight": 0.2}], eval_tokens=1024)
    ds = prepare(cfg, cache_dir=tmp_path / "cache")
    assert ds.eval_tags == ["code", "text", "math"]
    x, y = ds.train_batch(0, 1234, 8, 128)
    assert x.shape == y.shape == (8, 128)
    pool = np.concatenate([ds.heldout_tokens(t) for t in ds.eval_tags])
    f = ds.filler(300, seed=5)
    assert f.dtype == np.int64 and len(f) == 300
    assert locate(pool, f) >= 0  # held-out text only
    assert np.array_equal(f, ds.filler(300, seed=5))
    assert not np.array_equal(f, ds.filler(300, seed=6))
    assert len(ds.filler(len(pool) + 10, seed=1)) == len(pool) + 10


def test_workers_give_the_same_tokens(files, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "BATCH_CHARS", 10_000)  # many batches through the pool
    bpe = {"vocab": 300, "tokenizer": "bpe:300"}
    prepare(make_config(shards(files), workers=1, **bpe), cache_dir=tmp_path / "one")
    prepare(make_config(shards(files), workers=2, **bpe), cache_dir=tmp_path / "two")
    assert len(list((tmp_path / "two").glob("*.bin"))) == 2
    for b in sorted((tmp_path / "one").glob("*.bin")):
        assert b.read_bytes() == (tmp_path / "two" / b.name).read_bytes()
