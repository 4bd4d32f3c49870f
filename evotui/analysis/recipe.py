"""A training recipe for 1.5B, 3B and 8B models from a scaling fit and the run's config.

The rules, each stated in the output:

- tokens: the compute-optimal split from the loss fit when it is identifiable (the tokens D
  for which N is the optimal size of the compute 6 N D: D = (N/G)^((alpha+beta)/beta) / N with
  G = (alpha A / (beta B))^(1/(alpha+beta)), Hoffmann et al. 2022), else
  ``priors.tokens_per_param`` x N of the run;
- shape: width / layers = 128 (a common transformer aspect); the parameter count of a width is
  ``k x layers x width^2`` plus the embedding (and an untied head), where ``k`` is the run
  genome's per-layer parameters over width^2, so MoE / SSM / extras keep their weight;
- batch: global batch tokens = 0.292 x C^0.3271 with C = 6 N D (the fit of DeepSeek LLM, 2024),
  rounded to a power-of-two number of ``data.seq_len`` sequences; steps = tokens / batch;
- learning rate: the run's ``train.lr`` x run width / width (muP-style 1/width for Adam);
- predicted loss: the fit at (N, D) with the bootstrap's 90% interval, only when identifiable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evotui.analysis.scaling import LossFit, ThroughputFit
from evotui.dsl import RunConfig, estimate

TARGETS: tuple[tuple[str, float], ...] = (("1.5B", 1.5e9), ("3B", 3e9), ("8B", 8e9))
ASPECT = 128
WIDTH_STEP = 64
BATCH_COEF, BATCH_EXP = 0.292, 0.3271
SHAPE_RULE = (f"width/layers = {ASPECT}; params = k x layers x width^2 + embedding, k from the "
              "run's genome")
BATCH_RULE = (f"global batch tokens = {BATCH_COEF} x C^{BATCH_EXP}, C = 6 N D (DeepSeek LLM "
              "2024), as a power-of-two number of seq_len sequences")
LR_RULE = "lr = run lr x run width / width (muP-style 1/width)"


@dataclass
class Reference:
    """What the recipe takes from the run: its learning rate, shape and data settings."""

    config: str
    lr: float
    width: int
    layers: int
    seq_len: int
    vocab: int
    tied: bool
    per_layer: float  # parameters per layer / width^2
    tokens_per_param: float


def reference(cfg: RunConfig, config: str) -> Reference:
    est = estimate(cfg.model, cfg.data.seq_len)
    d, v = cfg.model.emb.dim, cfg.model.emb.vocab
    tied = cfg.model.head.tie_embeddings
    body = est.params_active - v * d * (1 if tied else 2)
    return Reference(config, cfg.train.lr, d, est.layers, cfg.data.seq_len, v, tied,
                     max(body, 1) / (est.layers * d * d), cfg.priors.tokens_per_param)


def shape_params(ref: Reference, width: int) -> tuple[int, int]:
    """(layers, parameters) of a model ``width`` wide under the shape rule."""
    layers = max(1, round(width / ASPECT))
    embed = ref.vocab * width * (1 if ref.tied else 2)
    return layers, int(ref.per_layer * layers * width * width + embed)


def shape_for(ref: Reference, params: float) -> tuple[int, int, int]:
    """(width, layers, parameters) whose parameter count is closest to ``params``."""
    best = None
    for width in range(WIDTH_STEP, 65536 + 1, WIDTH_STEP):
        layers, n = shape_params(ref, width)
        gap = abs(math.log(n / params))
        if best is None or gap < best[0]:
            best = (gap, width, layers, n)
        if n > 4 * params:
            break
    assert best is not None
    return best[1], best[2], best[3]


def optimal_tokens(params: dict[str, float], n: float) -> float:
    """Tokens D for which ``n`` is the compute-optimal size (Chinchilla's closed form)."""
    a, alpha, b, beta = params["A"], params["alpha"], params["B"], params["beta"]
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    return (n / g) ** ((alpha + beta) / beta) / n


def batch_for(ref: Reference, n: float, d: float) -> tuple[int, int]:
    """(sequences, tokens) of the global batch for a run of ``d`` tokens on ``n`` params."""
    target = BATCH_COEF * (6 * n * d) ** BATCH_EXP
    seqs = 2 ** max(0, round(math.log2(max(target / ref.seq_len, 1))))
    return seqs, seqs * ref.seq_len


@dataclass
class Row:
    target: str
    params: float
    width: int
    layers: int
    params_shape: int
    tokens: float
    tokens_lo: float | None
    tokens_hi: float | None
    tokens_per_param: float
    batch_sequences: int
    batch_tokens: int
    seq_len: int
    steps: int
    lr: float
    predicted_loss: float | None
    predicted_loss_lo: float | None
    predicted_loss_hi: float | None
    tokens_per_s: float | None


def recipe(fit: LossFit, throughput: ThroughputFit, ref: Reference,
           targets: tuple[tuple[str, float], ...] = TARGETS) -> dict[str, Any]:
    rows = []
    best = fit.natural(fit.theta) if fit.identifiable and fit.theta is not None else None
    samples = [fit.natural(th) for th in fit.boots] if best is not None else []
    for label, n in targets:
        width, layers, n_shape = shape_for(ref, n)
        lo = hi = None
        if best is not None:
            d = optimal_tokens(best, n)
            if len(samples) >= 2:
                lo, hi = (float(v) for v in np.percentile(
                    [optimal_tokens(s, n) for s in samples], [5, 95]))
            loss, loss_lo, loss_hi = fit.interval(n, d)
        else:
            d = ref.tokens_per_param * n
            loss = loss_lo = loss_hi = None
        seqs, batch = batch_for(ref, n, d)
        rows.append(Row(label, n, width, layers, n_shape, d, lo, hi, d / n, seqs, batch,
                        ref.seq_len, math.ceil(d / batch), ref.lr * ref.width / width,
                        loss, loss_lo, loss_hi,
                        throughput.predict(width) if throughput.identifiable else None))
    tokens_rule = ("compute-optimal from the loss fit" if best is not None else
                   f"priors.tokens_per_param = {ref.tokens_per_param:g} of the run (the loss "
                   "fit is not identifiable)")
    return {"tokens_rule": tokens_rule, "shape_rule": SHAPE_RULE, "batch_rule": BATCH_RULE,
            "lr_rule": LR_RULE, "params_measure": "params_active",
            "reference": asdict(ref), "rows": [asdict(r) for r in rows]}
