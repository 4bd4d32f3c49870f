"""Tokenizers: bytes, a byte-level BPE trained here, or a ``tokenizer.json`` (a file or the Hub).

``data.tokenizer`` names one of:

- ``byte``: UTF-8 bytes 0..255 and end-of-document 256 (vocabulary 257);
- ``bpe:<N>``: a byte-level BPE with N ids trained on a few MB of the run's own training
  shards, cached as JSON (keyed by N and the training sources) and reused;
- a path to a ``tokenizer.json`` (or a folder holding one), or a Hugging Face model name
  (``gpt2``): its ``tokenizer.json`` from the local Hugging Face cache, else fetched from the
  Hub (and cached there) when the Hub is reachable and offline mode is off.

Every tokenizer has an end-of-document id, ``eot``, that separates packed documents.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from evotui import atomic
from evotui.errors import UserError

EOT_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")
BPE_TRAIN_CHARS = 4_000_000  # most text a bpe:N tokenizer is trained on
BPE_VERSION = 1  # bump when training changes (part of the cached tokenizer's name)
OFFLINE_FIX = ("use tokenizer: byte or bpe:<N> (trained here), or give the path of a "
               "tokenizer.json")


class Tokenizer:
    """What the data layer needs from a tokenizer; ``fingerprint`` identifies its vocabulary."""

    name: str
    vocab_size: int
    eot: int
    fingerprint: str
    parallel = True  # worth encoding in a pool of processes

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def encode_docs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The documents' ids, each followed by ``eot``, as one uint32 array; and each
        document's length in it (eot included), int64."""
        encoded = self.encode_batch(texts)
        lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64,
                              count=len(encoded))
        out = np.empty(int(lengths.sum()), dtype=np.uint32)
        at = 0
        for ids, n in zip(encoded, lengths, strict=True):
            out[at : at + n - 1] = ids
            out[at + n - 1] = self.eot
            at += n
        return out, lengths

    def encode_packed(self, texts: list[str]) -> np.ndarray:
        """The documents' ids, each followed by ``eot``, as one uint32 array."""
        return self.encode_docs(texts)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, vocab_size={self.vocab_size})"


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255; 256 ends a document."""

    name = "byte"
    vocab_size = 257
    eot = 256
    fingerprint = "byte-v1"
    parallel = False  # a copy of the UTF-8 bytes: shipping them to a process costs more

    def encode(self, text: str) -> list[int]:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).tolist()

    def decode(self, ids: Iterable[int]) -> str:
        data = bytes(i for i in ids if 0 <= i < 256)
        return data.decode("utf-8", errors="replace")

    def encode_docs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        raw = [t.encode("utf-8") for t in texts]
        lengths = np.fromiter((len(r) + 1 for r in raw), dtype=np.int64, count=len(raw))
        ids = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.uint32)
        return np.insert(ids, np.cumsum(lengths - 1), self.eot), lengths


class HFTokenizer(Tokenizer):
    """A ``tokenizers`` library tokenizer; ``eot`` is its end-of-text token, else one extra id
    after its vocabulary."""

    def __init__(self, name: str, json_text: str) -> None:
        from tokenizers import Tokenizer as Backend

        self.name = name
        self.backend = Backend.from_str(json_text)
        self.fingerprint = hashlib.sha256(json_text.encode()).hexdigest()[:16]
        self.vocab_size = self.backend.get_vocab_size(with_added_tokens=True)
        found = [self.backend.token_to_id(t) for t in EOT_NAMES]
        ids = [i for i in found if i is not None]
        if ids:
            self.eot = ids[0]
        else:
            self.eot = self.vocab_size
            self.vocab_size += 1

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([i for i in ids if i != self.eot], skip_special_tokens=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["backend"] = self.backend.to_str()
        return state

    def __setstate__(self, state: dict) -> None:
        from tokenizers import Tokenizer as Backend

        state["backend"] = Backend.from_str(state["backend"])
        self.__dict__.update(state)


def get_tokenizer(name: str, train_texts: Callable[[], Iterable[str]] | None, cache_dir: Path,
                  sources_key: str | None = None) -> Tokenizer:
    """The tokenizer ``data.tokenizer`` names (see the module docstring).

    ``train_texts`` yields the documents a ``bpe:<N>`` tokenizer is trained on (read only when
    no cached one fits); ``sources_key`` names them for the cache (default: a hash of the texts).
    """
    if name == "byte":
        return ByteTokenizer()
    m = re.fullmatch(r"bpe:(\d+)", name)
    if m:
        return _bpe(name, int(m.group(1)), train_texts, Path(cache_dir), sources_key)
    path = _find_tokenizer_json(name)
    try:
        return HFTokenizer(name, path.read_text(encoding="utf-8"))
    except Exception as e:  # unreadable, not JSON, not a tokenizer
        reason = " ".join(str(e).split())[:160]
        raise UserError.single(f"{path} is not a tokenizer.json the tokenizers library can "
                               f"read ({reason}); {OFFLINE_FIX}", path="data.tokenizer") from None


def check_vocab(tokenizer: Tokenizer, model_vocab: int) -> None:
    """The model's embedding must have a row for every id the tokenizer makes."""
    n = tokenizer.vocab_size
    if model_vocab < n:
        raise UserError.single(f"{model_vocab} is smaller than tokenizer {tokenizer.name}'s "
                               f"vocabulary ({n}); use at least {n}", path="model.emb.vocab")


def _find_tokenizer_json(name: str) -> Path:
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return p / "tokenizer.json"
        raise UserError.single(f"{name}: folder has no tokenizer.json; {OFFLINE_FIX}",
                               path="data.tokenizer")
    from huggingface_hub import hf_hub_download

    from evotui.data.sources import env_offline, hub_reachable

    try:  # the local Hugging Face cache first: no network needed
        return Path(hf_hub_download(name, "tokenizer.json", local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a valid name): ask the Hub
        pass
    if env_offline() or not hub_reachable():
        why = "offline mode is on" if env_offline() else "the Hub is not reachable"
        raise UserError.single(f"{name} is not a file and not in the local Hugging Face cache, "
                               f"and {why}; fetch it once with network (evotui data prepare "
                               f"CONFIG, or hf download {name} tokenizer.json) or "
                               f"{OFFLINE_FIX}", path="data.tokenizer")
    try:
        return Path(hf_hub_download(name, "tokenizer.json"))
    except Exception as e:  # no such repository, no tokenizer.json in it, gated
        reason = " ".join(str(e).split())[:160]
        raise UserError.single(f"{name}: no tokenizer.json on the Hugging Face Hub ({reason}); "
                               f"{OFFLINE_FIX}", path="data.tokenizer") from None


def _limited(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    total = 0
    for t in texts:
        if total >= max_chars:
            return
        t = t[: max_chars - total]
        total += len(t)
        yield t


def _bpe(name: str, size: int, train_texts: Callable[[], Iterable[str]] | None, cache_dir: Path,
         sources_key: str | None) -> Tokenizer:
    if size < 257 + 1:
        raise UserError.single(f"{name}: a byte-level BPE needs at least 258 ids (256 bytes, "
                               "<|endoftext|> and merges)", path="data.tokenizer")
    texts: list[str] | None = None
    if sources_key is None:
        if train_texts is None:
            raise ValueError(f"{name} needs train_texts or sources_key")
        texts = list(_limited(train_texts(), BPE_TRAIN_CHARS))
        h = hashlib.sha256()
        for t in texts:
            h.update(hashlib.sha256(t.encode()).digest())
        sources_key = h.hexdigest()
    digest = hashlib.sha256(f"{BPE_VERSION}:{sources_key}".encode()).hexdigest()[:16]
    path = cache_dir / f"bpe{size}-{digest}.json"
    if path.is_file():
        return HFTokenizer(name, path.read_text(encoding="utf-8"))
    if texts is None:
        if train_texts is None:
            raise ValueError(f"{name} is not cached at {path} and no train_texts were given")
        texts = list(_limited(train_texts(), BPE_TRAIN_CHARS))
    if not texts:
        raise UserError.single(f"{name}: no training text to learn the BPE from",
                               path="data.tokenizer")
    json_text = train_bpe(texts, size)
    atomic.write_text(path, json_text)
    return HFTokenizer(name, json_text)


def train_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """Train a byte-level BPE (with ``<|endoftext|>``) and return it as JSON text."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_NAMES[0]],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str()
