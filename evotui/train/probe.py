"""Passkey recall: can the model reproduce a key it saw far back in held-out text?

A probe sequence is held-out filler text with a key of ``key_len`` tokens planted twice:

    filler .. A k1 .. kK B .. filler .. A k1 .. kK        (the last token ends the sequence)
                         |<---- d ---->|

``d`` is the distance: the tokens between the end of the first key and the query marker (the
closing marker ``B`` included). The query repeats the marker that opened the key, so the task
is solvable by copying: a model that predicts "the token that followed the previous
occurrence of this token" (an induction head) scores 1.0. Only the final key tokens are
scored: their mean cross-entropy (``passkey_loss``) and whether greedy prediction gets every
key token right (``passkey_acc``), per distance and averaged over the distances.

With ``steps > 0`` a deep copy of the model is first fine-tuned on fresh probe sequences
(filler seeds disjoint from the evaluation ones) and the copy is measured; the model passed
in is never modified.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evotui.dsl.run import TrainConfig

Filler = Callable[[int, int], np.ndarray]  # (n_tokens, seed) -> held-out token ids

EVAL, TRAIN, SAMPLE = 0, 1, 2  # seed streams: filler seeds never coincide across them
N_DISTANCES = 4  # default number of distances
MARKER_SAMPLE = 4096  # filler tokens counted to pick rare marker tokens


def max_distance(seq_len: int, key_len: int) -> int:
    """The largest distance that fits: ``A key B`` before, ``A key`` at the end."""
    return seq_len - 2 * key_len - 2


def default_distances(seq_len: int, key_len: int = 4, min_distance: int | None = None,
                      n: int = N_DISTANCES) -> list[int]:
    """``n`` distances spread evenly from ``min_distance`` (default seq_len // 4) to the
    largest that fits."""
    lo = seq_len // 4 if min_distance is None else min_distance
    hi = max_distance(seq_len, key_len)
    if not 1 <= lo <= hi:
        raise ValueError(f"min_distance {lo} must lie in [1, {hi}] for seq_len {seq_len} "
                         f"and key_len {key_len}")
    return sorted({round(float(d)) for d in np.linspace(lo, hi, n)})


def choose_markers(sample: np.ndarray, vocab: int, key_limit: int,
                   exclude: Iterable[int] = ()) -> tuple[int, int, int]:
    """(open marker, close marker, fill token): the two rarest ids in a filler sample (ids
    outside the key range preferred) and the commonest other id, which replaces any
    marker the filler happens to contain."""
    counts = np.bincount(sample, minlength=vocab)
    banned = set(exclude)
    ids = [i for i in range(vocab) if i not in banned]
    outside = [i for i in ids if i >= key_limit]
    pool = outside if len(outside) >= 2 else ids
    if len(pool) < 2 or len(ids) < 3:
        raise ValueError("the vocabulary is too small for two markers and a key")
    rare = sorted(pool, key=lambda i: (counts[i], -i))
    a, b = rare[0], rare[1]
    fill = max((i for i in ids if i not in (a, b)), key=lambda i: (counts[i], -i))
    return a, b, fill


def stream(seed: int, *path: int) -> np.random.Generator:
    """An independent generator for one (seed, purpose, ...) path."""
    return np.random.default_rng([seed % 2**63, *path])


@dataclass(frozen=True)
class PasskeyTask:
    """Makes probe sequences; every random choice comes from the generator passed in."""

    filler: Filler
    seq_len: int
    key_len: int
    alphabet: np.ndarray  # ids a key token is drawn from
    mark_open: int
    mark_close: int
    fill: int

    def sequence(self, distance: int, rng: np.random.Generator, purpose: int) -> np.ndarray:
        T, K = self.seq_len, self.key_len
        if not 1 <= distance <= max_distance(T, K):
            raise ValueError(f"distance {distance} does not fit seq_len {T} with key_len {K} "
                             f"(1..{max_distance(T, K)})")
        filler_seed = 3 * int(rng.integers(2**60)) + purpose
        toks = np.array(self.filler(T, filler_seed), dtype=np.int64)
        if toks.shape != (T,):
            raise ValueError(f"filler returned shape {toks.shape}, expected ({T},)")
        toks[(toks == self.mark_open) | (toks == self.mark_close)] = self.fill
        key = rng.choice(self.alphabet, size=K, replace=len(self.alphabet) < K)
        q = T - K - 1  # the query marker
        p = q - distance - K  # the first key
        toks[p - 1], toks[p:p + K], toks[p + K] = self.mark_open, key, self.mark_close
        toks[q], toks[q + 1:] = self.mark_open, key
        return toks

    def batch(self, distances: Sequence[int], rng: np.random.Generator, purpose: int,
              device: torch.device) -> torch.Tensor:
        rows = [self.sequence(d, rng, purpose) for d in distances]
        return torch.from_numpy(np.stack(rows)).to(device)


def key_scores(model: nn.Module, idx: torch.Tensor, key_len: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (B, K) and greedy hits (B, K) on the last ``key_len`` tokens of idx."""
    out = model(idx)
    logits = out[0] if isinstance(out, tuple) else out
    T = idx.shape[1]
    pred = logits[:, T - key_len - 1:T - 1].float()
    target = idx[:, T - key_len:]
    nll = F.cross_entropy(pred.transpose(1, 2), target, reduction="none")
    return nll, pred.argmax(-1) == target


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (and Python's random, used by recurrence sampling) inside the block and
    leave the caller's RNG states as they were."""
    devices = [device] if device.type == "cuda" else []
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed % 2**63)
            random.seed(seed)
            yield
    finally:
        random.setstate(state)


def finetune(model: nn.Module, task: PasskeyTask, *, lo: int, hi: int, steps: int, lr: float,
             batch_size: int, seed: int, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy of ``model`` trained ``steps`` AdamW steps on the key tokens of fresh
    probe sequences (distances uniform in [lo, hi])."""
    tuned = copy.deepcopy(model)
    tuned.train()
    params = [p for p in tuned.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    with seeded(seed, device):
        for step in range(steps):
            rng = stream(seed, TRAIN, step)
            distances = rng.integers(lo, hi + 1, size=batch_size).tolist()
            idx = task.batch(distances, rng, TRAIN, device)
            with autocast(device, amp_dtype):
                nll, _ = key_scores(tuned, idx, task.key_len)
                loss = nll.mean()
                aux = getattr(tuned, "aux_loss", None)
                if callable(aux):
                    loss = loss + aux()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
    opt.zero_grad(set_to_none=True)
    return tuned


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_vocab(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    if spec is not None:
        return int(spec.emb.vocab)
    emb = getattr(model, "tok_emb", None)
    if isinstance(emb, nn.Embedding):
        return emb.num_embeddings
    raise ValueError("cannot tell the model's vocabulary size; pass vocab=")


def make_task(filler: Filler, vocab: int, seq_len: int, key_len: int = 4,
              vocab_limit: int | None = None, exclude: Iterable[int] = (),
              markers: tuple[int, int] | None = None, seed: int = 0) -> PasskeyTask:
    """The probe task ``passkey_probe`` builds for these arguments."""
    key_limit = vocab if vocab_limit is None else min(vocab_limit, vocab)
    banned = set(exclude)
    if markers is None:
        sample_seed = 3 * int(stream(seed, SAMPLE).integers(2**60)) + SAMPLE
        sample = np.asarray(filler(max(MARKER_SAMPLE, seq_len), sample_seed), np.int64)
        a, b, fill = choose_markers(sample, vocab, key_limit, banned)
    else:
        a, b = markers
        if a == b or not (0 <= a < vocab and 0 <= b < vocab):
            raise ValueError(f"markers {markers} must be two distinct ids below {vocab}")
        fill = next(i for i in range(vocab) if i not in {a, b} | banned)
    alphabet = np.array([i for i in range(key_limit) if i not in banned | {a, b}], np.int64)
    if alphabet.size == 0:
        raise ValueError("no token ids left for the key (check vocab_limit and exclude)")
    return PasskeyTask(filler, seq_len, key_len, alphabet, a, b, fill)


def passkey_probe(
    model: nn.Module,
    filler: Filler,
    *,
    seq_len: int,
    distances: list[int] | None = None,
    min_distance: int | None = None,
    batches: int = 4,
    batch_size: int = 1,
    key_len: int = 4,
    vocab_limit: int | None = None,
    vocab: int | None = None,
    exclude: Iterable[int] = (),
    markers: tuple[int, int] | None = None,
    seed: int = 0,
    steps: int = 0,
    lr: float | None = None,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Measure passkey recall; see the module docstring for the task.

    ``filler(n, seed)`` returns ``n`` held-out token ids. Key tokens are drawn (distinct
    within a key where the alphabet allows) from ``[0, vocab_limit)`` (default: the whole
    vocabulary) minus ``exclude`` (special ids) and the markers. The markers default to the
    two rarest ids in a filler sample. ``batches`` x ``batch_size`` sequences are scored
    per distance. Returns ``passkey_acc``, ``passkey_loss``, ``passkey_token_acc`` (greedy
    per-token accuracy) and ``passkey_acc@<d>`` / ``passkey_loss@<d>`` for each distance.
    """
    if steps > 0 and lr is None:
        raise ValueError("steps > 0 fine-tunes a copy of the model; give lr")
    if key_len < 1 or batches < 1 or batch_size < 1:
        raise ValueError("key_len, batches and batch_size must be positive")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    vocab = model_vocab(model) if vocab is None else vocab
    if distances is None:
        distances = default_distances(seq_len, key_len, min_distance)
    distances = sorted(set(distances))

    task = make_task(filler, vocab, seq_len, key_len, vocab_limit, exclude, markers, seed)

    was_training = model.training
    try:
        target = model
        if steps > 0:
            assert lr is not None
            target = finetune(model, task, lo=min(distances), hi=max(distances), steps=steps,
                              lr=lr, batch_size=batch_size, seed=seed, device=device,
                              amp_dtype=amp_dtype)
        target.eval()
        return measure(target, task, distances, batches, batch_size, seed, device, amp_dtype)
    finally:
        model.train(was_training)


@torch.no_grad()
def measure(model: nn.Module, task: PasskeyTask, distances: list[int], batches: int,
            batch_size: int, seed: int, device: torch.device,
            amp_dtype: torch.dtype | None) -> dict[str, float]:
    out: dict[str, float] = {}
    accs, losses, token_hits = [], [], []
    for i, d in enumerate(distances):
        nll_sum, exact, hits, n = 0.0, 0, 0, 0
        for b in range(batches):
            rng = stream(seed, EVAL, i, b)
            idx = task.batch([d] * batch_size, rng, EVAL, device)
            with autocast(device, amp_dtype):
                nll, hit = key_scores(model, idx, task.key_len)
            nll_sum += nll.sum().item()
            exact += int(hit.all(dim=1).sum().item())
            hits += int(hit.sum().item())
            n += idx.shape[0]
        acc, loss = exact / n, nll_sum / (n * task.key_len)
        out[f"passkey_acc@{d}"], out[f"passkey_loss@{d}"] = acc, loss
        accs.append(acc)
        losses.append(loss)
        token_hits.append(hits / (n * task.key_len))
    out["passkey_acc"] = float(np.mean(accs))
    out["passkey_loss"] = float(np.mean(losses))
    out["passkey_token_acc"] = float(np.mean(token_hits))
    return out


def config_kwargs(train: TrainConfig, data_seq_len: int) -> dict[str, Any]:
    """``passkey_probe`` keyword arguments from a run's ``train.passkey_eval_*`` fields."""
    return {
        "seq_len": train.passkey_eval_seq_len or data_seq_len,
        "min_distance": train.passkey_eval_min_distance,
        "batches": train.passkey_eval_batches,
        "batch_size": train.passkey_eval_batch_size,
        "vocab_limit": train.passkey_eval_vocab_limit,
        "steps": train.passkey_eval_steps,
        "lr": train.passkey_eval_lr,
        "seed": train.seed,
    }
