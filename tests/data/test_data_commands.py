"""evotui data prepare|ls|rm on a config the test writes (no network)."""

from __future__ import annotations

import json

import yaml

from tests.data.conftest import random_docs, write_jsonl


def config(tmp_path, max_tokens: int) -> str:
    path = tmp_path / "shard.jsonl"
    if not path.exists():  # written once: a new file is a new source
        write_jsonl(path, random_docs(800, seed=4, min_words=30), field="text")
    raw = {"model": {"emb": {"dim": 32, "vocab": 257},
                     "blocks": [{"attn": {"heads": 2, "head_dim": 16},
                                 "ffn": {"type": "dense", "hidden": 64}}]},
           "data": {"tokenizer": "byte", "seq_len": 32, "eval_tokens": 512,
                    "shards": [{"path": str(path), "max_tokens": max_tokens}]}}
    out = tmp_path / f"c{max_tokens}.yaml"
    out.write_text(yaml.safe_dump(raw))
    return str(out)


def test_prepare_ls_rm(tmp_path, run_cli):
    cdir = tmp_path / "cache"
    code, _, err = run_cli("data", "prepare", config(tmp_path, 50_000), "--cache-dir", cdir,
                           "--workers", "1")
    assert code == 0, err
    assert "budget 50,000 tokens" in err and "MB read" in err and "budget met" in err
    code, out, _ = run_cli("data", "ls", "--cache-dir", cdir, "--json")
    (entry,) = json.loads(out)
    assert entry["source"].endswith("shard.jsonl") and entry["tokenizer"] == "byte"
    assert entry["n_tokens"] >= 50_000 and not entry["exhausted"] and entry["size"] > 100_000
    code, out, _ = run_cli("data", "ls", "--cache-dir", cdir)
    assert "shard.jsonl" in out and "byte" in out
    code, again, err = run_cli("data", "prepare", config(tmp_path, 50_000), "--cache-dir", cdir)
    assert code == 0 and "cached" in err
    assert run_cli("data", "rm", "--cache-dir", cdir)[0] == 2  # names nothing: refused
    code, out, _ = run_cli("data", "rm", "shard.jsonl", "--cache-dir", cdir)
    assert code == 0 and "removed" in out
    assert not list(cdir.glob("*.bin"))
    assert "no token caches" in run_cli("data", "ls", "--cache-dir", cdir)[1]


def test_data_flag_is_checked(tmp_path, run_cli):
    code, _, err = run_cli("data", "prepare", config(tmp_path, 1000), "--data", "elsewhere",
                           "--cache-dir", tmp_path / "c")
    assert code == 2 and "--data" in err and "offline" in err
