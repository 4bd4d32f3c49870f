"""``evotui bench data``: tokenisation throughput at 1 and N workers, and the time to the first
training batch on a warm cache.

The text is the offline corpus (the standard library's source and docstrings), held in memory
so that only tokenisation is measured, through the same batching and worker pool a cache build
uses. Three tokenizers: ``byte``; ``bpe`` (a byte-level BPE of 8,192 ids trained here on the
text, as ``bpe:8192`` would be); ``gpt2-style`` (a ``tokenizer.json`` this bench builds with
GPT-2's layout: byte-level pre-tokenisation with its regex, up to 50,257 ids (as many as the
training text gives), ``<|endoftext|>``,
since the Hub may be out of reach). Each figure is the best of ``repeats`` runs, 1 and N
workers taking turns so that both see the same load on a shared machine. Bytes are
never sent to a pool (``pool`` false: copying them is cheaper than shipping them), so their
N-worker figure is the same one-process path.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from evotui.data import build, corpus
from evotui.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, train_bpe

TRAIN_CHARS = 4_000_000  # text the two BPEs are trained on


def texts(megabytes: float) -> list[str]:
    """About ``megabytes`` MB of documents: code and prose from the offline corpus."""
    out: list[str] = []
    size, cap = 0, int(megabytes * 1e6)
    for name in ("builtin:prose", "builtin:code"):
        for doc in corpus.documents(name):
            if size >= cap:
                return out
            out.append(doc)
            size += len(doc)
    while size < cap:  # a small corpus: go round again
        out += out[: max(1, len(out) // 2)]
        size = sum(map(len, out))
    return out


def gpt2_style(sample: list[str]) -> str:
    """A GPT-2-shaped tokenizer.json (byte-level BPE, GPT-2 regex, up to 50,257 ids)."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=50257, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(sample, trainer=trainer)
    return tok.to_str()


def throughput(tokenizer: Tokenizer, docs: list[str], workers: int) -> dict[str, float]:
    """One run of the build pipeline's encoder over ``docs``: tokens/s, and the CPU seconds
    it took in this process and in its worker processes (measured with getrusage)."""
    before = _cpu()
    t0 = time.perf_counter()
    n = 0
    batches = build._batches((d, i) for i, d in enumerate(docs))
    for _texts, _pos, (ids, _lengths) in build._encode(tokenizer, batches, workers):
        n += len(ids)
    wall = time.perf_counter() - t0
    after = _cpu()
    return {"tokens_per_s": n / wall, "cpu_main_s": after[0] - before[0],
            "cpu_workers_s": after[1] - before[1]}


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)  # a pool's workers are counted once they have exited
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def first_batch(repeats: int) -> float:
    """Seconds from :func:`evotui.data.prepare` to the first training batch, cache warm."""
    import torch  # noqa: F401 - imported before timing: a run's worker has it already

    from evotui.data import prepare
    from evotui.dsl import load

    cfg = load(Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml")
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="evotui-bench-data-") as tmp:
        prepare(cfg, Path(tmp), train_tokens=2_000_000)  # warm the cache
        for _ in range(repeats):
            t0 = time.perf_counter()
            ds = prepare(cfg, Path(tmp), train_tokens=2_000_000)
            ds.train_batch(0, 0, cfg.data.batch_size, cfg.data.seq_len)
            best = min(best, time.perf_counter() - t0)
    return best


def run(workers: int | None = None, megabytes: float = 8.0, repeats: int = 3) -> dict[str, Any]:
    workers = workers or max(2, build.default_workers())
    docs = texts(megabytes)
    sample, size = [], 0
    for d in docs:
        if size >= TRAIN_CHARS:
            break
        sample.append(d)
        size += len(d)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizers: dict[str, Tokenizer] = {
        "byte": ByteTokenizer(),
        "bpe": HFTokenizer("bpe:8192", train_bpe(sample, 8192)),
        "gpt2-style": HFTokenizer("gpt2-style", gpt2_style(sample)),
    }
    out: dict[str, Any] = {}
    for name, tok in tokenizers.items():
        best: dict[int, dict[str, float]] = {}
        for _ in range(repeats):  # interleaved, so both see the same load on a shared machine
            for w in (1, workers):
                r = throughput(tok, docs, w)
                if r["tokens_per_s"] > best.get(w, {}).get("tokens_per_s", 0.0):
                    best[w] = r
        one, many = best[1], best[workers]
        out[name] = {"vocab": tok.vocab_size, "pool": tok.parallel,
                     "tokens_per_s_1": round(one["tokens_per_s"]),
                     "tokens_per_s_n": round(many["tokens_per_s"]),
                     "speedup": round(many["tokens_per_s"] / one["tokens_per_s"], 3),
                     "cpu_s_1": round(one["cpu_main_s"] + one["cpu_workers_s"], 3),
                     "cpu_s_n": round(many["cpu_main_s"] + many["cpu_workers_s"], 3),
                     "cpu_s_n_main": round(many["cpu_main_s"], 3)}
    return {"megabytes": megabytes, "documents": len(docs), "workers": workers,
            "cores": build.default_workers(), "repeats": repeats, "tokenizers": out,
            "warm_first_batch_s": round(first_batch(repeats), 4),
            "load_average": list(os.getloadavg())}
