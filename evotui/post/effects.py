"""The effect of switching a motif off: ``variant - control`` per seed, summarised.

For each training the report keeps a record (:func:`run_record`: status, metrics with the
genome's structural objectives, tensors inherited or fresh). For each objective the per-seed
differences of a variant against its control (:func:`paired`) give a mean, a sample standard
deviation and n (:func:`effect`), with a verdict: "worse" when the variant is worse than the
control (switching the motif off hurts, so the motif helps), "better", or "within noise" when
the mean is within :data:`NOISE` standard errors of zero. :func:`summarise` does this per
candidate and pooled over the candidates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evotui.dsl import ModelSpec, estimate, to_data
from evotui.jsonio import finite

if TYPE_CHECKING:
    from evotui.post.ablate import Candidate

CONTROL = "control"
NOISE = 2.0  # an effect within NOISE standard errors of zero is reported as within noise
STRUCTURAL = ("params_total", "params_active", "flops_per_token", "kv_bytes_per_token", "layers",
              "moe_blocks", "ssm_blocks")


def run_record(seed: int, event: Mapping[str, Any] | None, spec: ModelSpec, seq_len: int
               ) -> dict[str, Any]:
    """One training as the report keeps it: status, metrics, tensors inherited / fresh."""
    if event is None:
        return {"seed": seed, "status": "failed", "error": "not run (interrupted)"}
    if event.get("kind") == "failed":
        return {"seed": seed, "status": "failed", "error": event.get("reason")}
    metrics = dict(event.get("metrics") or {})
    if metrics:
        est = estimate(spec, seq_len)
        for name in STRUCTURAL:  # exact reads of the genome, as the engine records them
            metrics.setdefault(name, float(getattr(est, name)))
    return {"seed": seed, "status": event.get("status"), "step": event.get("step"),
            "metrics": metrics, "inherited": event.get("inherited"), "fresh": event.get("fresh"),
            "checkpoint": event.get("checkpoint"),
            "error": event.get("error") or event.get("stop_reason")}


def effect(diffs: Sequence[float], rel: Sequence[float], direction: str) -> dict[str, Any]:
    """Mean, sample std and n of ``variant - control`` differences, and what they mean."""
    n = len(diffs)
    if not n:
        return {"mean": None, "std": None, "n": 0, "relative": None, "direction": direction,
                "verdict": None}
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if n > 1 else None  # one seed measures no spread
    if mean == 0:
        verdict = "same"
    elif std is None:
        verdict = "one seed"
    elif abs(mean) <= NOISE * std / math.sqrt(n):
        verdict = "within noise"
    else:
        verdict = "worse" if (mean > 0) == (direction == "min") else "better"
    return {"mean": mean, "std": std, "n": n,
            "relative": statistics.fmean(rel) if rel else None, "direction": direction,
            "verdict": verdict, "diffs": list(diffs)}


def paired(control: Sequence[dict[str, Any]], variant: Sequence[dict[str, Any]], name: str
           ) -> tuple[list[float], list[float]]:
    """Per-seed differences of one metric where both trainings measured it."""
    diffs, rel = [], []
    for c, v in zip(control, variant, strict=True):
        a = finite((c.get("metrics") or {}).get(name))
        b = finite((v.get("metrics") or {}).get(name))
        if a is not None and b is not None:
            diffs.append(b - a)
            if a != 0:
                rel.append((b - a) / abs(a))
    return diffs, rel


def summarise(cands: Sequence[Candidate], runs: Mapping[str, list[dict[str, Any]]],
              objectives: Mapping[str, str], names: Sequence[str]) -> tuple[list, dict]:
    """Per-candidate records and the pooled effects (``runs``: job prefix -> per-seed runs)."""
    records = []
    pooled: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for c in cands:
        control = runs[f"{c.id}/{CONTROL}"]
        motifs: dict[str, Any] = {}
        for name in names:
            v = c.variants[name]
            if isinstance(v, str):
                motifs[name] = {"applies": False, "reason": v}
                continue
            vr = runs[f"{c.id}/{name}"]
            effects = {}
            for obj, direction in objectives.items():
                diffs, rel = paired(control, vr, obj)
                effects[obj] = effect(diffs, rel, direction)
                acc = pooled.setdefault(name, {}).setdefault(obj, ([], []))
                acc[0].extend(diffs)
                acc[1].extend(rel)
            motifs[name] = {"applies": True, "change": v.change, "spec": to_data(v.spec),
                            "runs": vr, "effects": effects}
        records.append({"id": c.id, "rank": c.rank, "checkpoint": str(c.checkpoint),
                        "objectives": c.entry.get("objectives"),
                        "control": {"spec": to_data(c.spec), "runs": control},
                        "motifs": motifs})
    pooled_effects = {name: {obj: effect(d, r, objectives[obj]) for obj, (d, r) in per.items()}
                      for name, per in pooled.items()}
    return records, pooled_effects
