"""--data offline: any config's shards moved onto the embedded corpus, the model untouched."""

from __future__ import annotations

from evotui.data import offline, prepare
from evotui.dsl import load
from tests.conftest import ROOT


def test_scalehop_runs_offline_on_the_embedded_corpus(small_caps, tmp_path):
    cfg = load(ROOT / "configs" / "scalehop_xover-68-8a93.yaml")
    moved = offline(cfg)
    assert moved.model == cfg.model  # vocabulary and every block kept
    assert moved.data.tokenizer == "byte" and moved.data.hf_revision is None
    assert [(s.name, s.tag, s.weight) for s in moved.data.shards] == [
        ("builtin:prose", "news", 0.2), ("builtin:prose", "text", 0.3),
        ("builtin:code", "code", 0.4), ("builtin:math", "math", 0.1)]
    assert moved.data.seq_len == cfg.data.seq_len
    assert cfg.data.tokenizer == "gpt2"  # the original is not changed
    ds = prepare(moved, cache_dir=tmp_path / "c", train_tokens=200_000)
    objectives = [k.removeprefix("ppl_") for k in cfg.evolution.objectives if "ppl_" in k]
    assert set(objectives) <= set(ds.eval_tags)  # ppl_code and ppl_math still measured
    x, _ = ds.train_batch(0, 0, 1, 64)
    assert int(x.max()) < 257 <= cfg.model.emb.vocab


def test_byte_and_bpe_tokenizers_are_kept():
    cfg = load(ROOT / "configs" / "tiny.yaml")
    assert offline(cfg).data == cfg.data  # already offline: nothing changes
