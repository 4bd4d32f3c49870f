"""``evotui ablate``: how much each motif of the best candidates is worth.

Which candidates: the frontier entries ranked by one objective (``--by``, default the run's
first objective as the frontier lists them), ties broken by the remaining objectives in order,
best first; an entry without a checkpoint on disk is skipped (and listed), since every training
starts from the candidate's weights. The first ``top`` are ablated.

For each candidate and each of ``seeds`` seeds (``train.seed``, ``train.seed + 1``, ...), the
control (the candidate's genome unchanged) and each variant (one motif switched off, see
:mod:`evotui.evolve.ablations`) are trained from the same starting point, the candidate's
checkpoint: every tensor whose name and shape still match is copied from it, exactly as a child
inherits from its parent (block ids are stable, so blocks are paired by id), the rest start
fresh; the optimizer starts fresh. Each training runs the same ``steps`` steps (the run's
learning-rate schedule over ``steps``), with the same seed and hence the same data windows, then
is measured with the trainer's ``measure()`` (structural objectives read off the genome, as the
engine records them). A motif's effect on an objective is ``variant - control`` per seed; the
report gives its mean, sample standard deviation and n per candidate, and pooled over the
candidates, with the objective's direction: "worse" means the variant is worse than the control
(switching the motif off hurts, so the motif helps).

The trainings run as jobs on the engine's :class:`LocalExecutor` (one worker process per device
slot, torch and the dataset kept warm between jobs), so several GPUs are used at once and a
crashing or out-of-memory variant fails that one training, not the command.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui import atomic
from evotui.dsl import ModelSpec, RunConfig, estimate, to_data
from evotui.engine.jobs import Job
from evotui.errors import UserError
from evotui.evolve.ablations import AblationError, Context, Variant, ablations, motif_names
from evotui.evolve.inheritance import inheritance_map
from evotui.lifecycle import FINISHED
from evotui.post.seed import Source

CONTROL = "control"
NOISE = 2.0  # an effect within NOISE standard errors of zero is reported as within noise
STRUCTURAL = ("params_total", "params_active", "flops_per_token", "kv_bytes_per_token", "layers",
              "moe_blocks", "ssm_blocks")
Say = Callable[[str], None]


@dataclass
class Settings:
    top: int
    steps: int
    seeds: int
    slots: list[str]
    motifs: list[str] | None = None  # None: every motif
    by: str | None = None
    out_dir: Path | None = None
    keep_checkpoints: bool = False
    cache_dir: str | None = None


@dataclass
class Candidate:
    id: str
    rank: int
    entry: dict[str, Any]
    spec: ModelSpec
    checkpoint: Path
    variants: dict[str, Variant | str] = field(default_factory=dict)


# -- choosing the candidates -------------------------------------------------------------------

def ranking(objectives: Mapping[str, str], by: str | None) -> list[tuple[str, str]]:
    """(objective, direction) in ranking order: ``by`` first, then the others in order."""
    if not objectives:
        raise UserError.single("the frontier lists no objectives to rank by", path="objectives")
    if by is not None and by not in objectives:
        raise UserError.single(f"not an objective of this run; use one of "
                               f"{', '.join(objectives)}", path="--by")
    first = by or next(iter(objectives))
    return [(first, objectives[first])] + [(k, d) for k, d in objectives.items() if k != first]


def _sort_key(entry: Mapping[str, Any], order: Sequence[tuple[str, str]]) -> tuple[float, ...]:
    values = entry.get("objectives") or entry.get("metrics") or {}
    key = []
    for name, direction in order:
        v = values.get(name)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        key.append((v if direction == "min" else -v) if ok else math.inf)
    return tuple(key)


def choose(source: Source, top: int, order: Sequence[tuple[str, str]],
           motifs: Sequence[str] | None, ctx: Context
           ) -> tuple[list[Candidate], list[dict[str, str]]]:
    """The ``top`` best entries with a checkpoint, each with its variants; and the skipped."""
    chosen: list[Candidate] = []
    skipped = []
    ranked = sorted(source.entries, key=lambda e: _sort_key(e, order))
    for rank, entry in enumerate(ranked, 1):
        if len(chosen) == top:
            break
        path = source.checkpoint(entry)
        if path is None:
            skipped.append({"id": entry["id"], "reason": "no checkpoint on disk "
                            f"({entry.get('checkpoint') or 'none recorded'})"})
            continue
        chosen.append(Candidate(entry["id"], rank, entry, source.spec(entry), path))
    if not chosen:
        raise UserError.single("no frontier entry has a checkpoint on disk to start from",
                               source=str(source.path))
    names = list(motifs) if motifs else motif_names(c.spec for c in chosen)
    for c in chosen:
        try:
            c.variants = ablations(c.spec, names, ctx)
        except AblationError as e:
            raise UserError.single(str(e), path="--motif") from None
    return chosen, skipped


# -- the jobs ----------------------------------------------------------------------------------

def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("->", "-to-"))


def job_id(cid: str, motif: str, seed: int) -> str:
    return f"{cid}/{motif}/s{seed}"


def make_jobs(cfg: RunConfig, cands: Sequence[Candidate], seeds: Sequence[int],
              s: Settings, out_dir: Path) -> dict[str, Job]:
    """Every training, interleaved so that each seed's control and variants run close
    together. A variant inherits from the candidate's checkpoint by block id."""
    jobs: dict[str, Job] = {}
    base = to_data(cfg)
    base["train"].pop("init_checkpoint", None)  # the candidate's checkpoint is the start
    for c in cands:
        trained = {CONTROL: c.spec} | {m: v.spec for m, v in c.variants.items()
                                       if isinstance(v, Variant)}
        for motif, spec in trained.items():
            provenance = [(0, b.id) for b in spec.blocks]
            mapping = inheritance_map(spec, provenance, [c.spec])  # type: ignore[arg-type]
            inherit = [(name, str(c.checkpoint), src) for name, (_, src) in mapping.items()]
            config = dict(base, model=to_data(spec))
            for seed in seeds:
                jid = job_id(c.id, motif, seed)
                path = (out_dir / "checkpoints" / f"{c.id}-{slug(motif)}-s{seed}.safetensors"
                        if s.keep_checkpoints else "")
                jobs[jid] = Job(candidate_id=jid, config=config, until_step=s.steps,
                                total_steps=s.steps, rung=1, seed=seed,
                                checkpoint_path=str(path), inherit=inherit,
                                cache_dir=s.cache_dir)
    # seed by seed; within a seed the order rotates, so no training (the control above all) is
    # always the one that meets a cold worker or a busy machine first
    order: list[str] = []
    for k, seed in enumerate(seeds):
        same = [j for j in jobs if int(j.rsplit("/s", 1)[1]) == seed]
        shift = k % len(same) if same else 0
        order += same[shift:] + same[:shift]
    return {j: jobs[j] for j in order}


async def run_jobs(executor: Any, jobs: Sequence[Job], say: Say,
                   results: dict[str, dict[str, Any]] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` on the executor's free slots; each job's terminal event (``result`` or
    ``failed``) by job id, collected into ``results`` as they arrive (so an interrupted caller
    keeps what finished). The executor is shut down at the end (killing what still runs when
    this is interrupted)."""
    queue, outstanding = deque(jobs), set()
    results = {} if results is None else results
    events = executor.events()
    done = False
    try:
        while queue or outstanding:
            while queue and (free := executor.free_slots()):
                job = queue.popleft()
                job.device = free[0]
                executor.submit(job)
                outstanding.add(job.candidate_id)
            jid, event = await anext(events)
            if event.get("kind") in ("result", "failed") and jid in outstanding:
                outstanding.discard(jid)
                results[jid] = event
                say(f"[{len(results)}/{len(jobs)}] {jid}: {_outcome(event)}")
        done = True
    finally:
        await executor.shutdown(kill=not done)
    return results


def _outcome(event: Mapping[str, Any]) -> str:
    if event.get("kind") == "failed":
        return f"failed: {event.get('reason')}"
    status = event.get("status", "?")
    loss = (event.get("metrics") or {}).get("loss")
    why = event.get("error") or event.get("stop_reason")
    return status + (f" ({why})" if why else "") + (f", loss {loss:.4f}" if loss else "")


# -- effects -----------------------------------------------------------------------------------

def _number(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


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
        a = _number((c.get("metrics") or {}).get(name))
        b = _number((v.get("metrics") or {}).get(name))
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


# -- the command -------------------------------------------------------------------------------

def ablate(source: Source, s: Settings, say: Say, executor: Any = None) -> dict[str, Any]:
    """Choose, train, measure and write ``ablation.json``; return the report."""
    cfg = source.config()
    objectives = dict(source.objectives or cfg.evolution.objectives)
    order = ranking(objectives, s.by)
    ctx = Context.from_config(cfg)
    cands, skipped = choose(source, s.top, order, s.motifs, ctx)
    for sk in skipped:
        say(f"skipped {sk['id']}: {sk['reason']}")
    if len(cands) < s.top:
        say(f"only {len(cands)} frontier candidate(s) to ablate (asked for {s.top})")
    names = list(cands[0].variants)
    seeds = [cfg.train.seed + i for i in range(s.seeds)]
    out_dir = s.out_dir or source.out_dir / "ablations"
    jobs = make_jobs(cfg, cands, seeds, s, out_dir)
    say(f"ablating {', '.join(c.id for c in cands)}: {len(jobs)} trainings of {s.steps} "
        f"steps on {', '.join(dict.fromkeys(s.slots))} ({len(s.slots)} slot(s))")
    if executor is None:
        from evotui.engine.local import LocalExecutor

        executor = LocalExecutor(s.slots)
        first = next(iter(jobs.values()), None)
        if first is not None:  # torch and the dataset ready before the first training
            executor.warm(first.config, s.cache_dir)
    started = time.time()
    events: dict[str, dict[str, Any]] = {}
    interrupted = False
    try:
        asyncio.run(run_jobs(executor, list(jobs.values()), say, events))
    except KeyboardInterrupt:  # keep what finished: the report marks the rest not run
        interrupted = True
    runs: dict[str, list[dict[str, Any]]] = {}
    for jid, job in jobs.items():
        prefix = jid.rsplit("/s", 1)[0]
        spec = ModelSpec.model_validate(job.config["model"])
        runs.setdefault(prefix, []).append(
            run_record(job.seed, events.get(jid), spec, cfg.data.seq_len))
    records, pooled = summarise(cands, runs, objectives, names)
    doc = {"source": str(source.path), "config": str(source.config_path),
           "objectives": objectives, "ranked_by": [n for n, _ in order], "steps": s.steps,
           "seeds": seeds, "devices": s.slots, "motifs": names, "started": started,
           "seconds": round(time.time() - started, 2), "skipped": skipped,
           "candidates": records, "pooled": pooled, "interrupted": interrupted}
    path = out_dir / "ablation.json"
    atomic.write_text(path, to_json(doc, indent=1) + "\n")
    doc["path"] = str(path)
    if interrupted:
        say(f"interrupted: wrote what finished ({len(events)} of {len(jobs)} trainings) to "
            f"{path}")
        raise KeyboardInterrupt
    return doc


def to_json(doc: Mapping[str, Any], indent: int | None = None) -> str:
    """Strict JSON: a non-finite number is written as null."""
    import json

    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(doc), indent=indent, allow_nan=False)


# -- the table ---------------------------------------------------------------------------------

def _g(x: float, digits: int, sign: bool = False) -> str:
    """``digits`` significant digits, without an exponent between 1e-3 and 1e6."""
    plus = "+" if sign else ""
    if x == 0 or not 1e-3 <= abs(x) < 1e6:
        return f"{x:{plus}.{digits}g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:{plus}.{decimals}f}"


def _cell(e: Mapping[str, Any] | None) -> str:
    if not e or not e.get("n"):
        return "not measured"
    spread = "n/a" if e.get("std") is None else _g(e["std"], 2)
    return f"{_g(e['mean'], 4, True)} ± {spread} ({e['n']}) {e['verdict']}"


def _failures(runs: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in runs if r.get("status") not in FINISHED]
    if not bad:
        return ""
    return f"  [{len(bad)}/{len(runs)} failed: {bad[0].get('error')}]"


def format_table(doc: Mapping[str, Any]) -> str:
    objectives = doc["objectives"]
    heads = [f"{k} ({d})" for k, d in objectives.items()]
    width = max([30, *(len(h) + 2 for h in heads)])
    mw = max([22, *(len(m) + 2 for m in doc["motifs"])])
    line = lambda first, cells: (first.ljust(mw) + "".join(c.ljust(width) for c in cells)  # noqa: E731
                                 ).rstrip()
    out = [f"effect = variant - control: mean ± std (n seeds); worse/better: the variant "
           f"against the control, when |mean| > {NOISE:g} std/sqrt(n), else within noise "
           f"({doc['steps']} step{'s' if doc['steps'] != 1 else ''}, seeds {doc['seeds']})"]
    for c in doc["candidates"]:
        out += ["", f"{c['id']} (rank {c['rank']} by {', '.join(doc['ranked_by'])}), from "
                f"{c['checkpoint']}", line("motif", heads)]
        control = c["control"]["runs"]
        means = []
        for obj in objectives:
            vals = [v for r in control if (v := _number((r.get("metrics") or {}).get(obj)))
                    is not None]
            means.append(_g(statistics.fmean(vals), 4) if vals else "not measured")
        out.append(line("control (value)", means) + _failures(control))
        for name, m in c["motifs"].items():
            if not m["applies"]:
                out.append(line(name, [f"n/a: {m['reason']}"]))
                continue
            cells = [_cell(m["effects"].get(obj)) for obj in objectives]
            fresh = max((r.get("fresh") or 0 for r in m["runs"]), default=0)
            note = f"  [{fresh} tensor(s) start fresh]" if fresh else ""
            out.append(line(name, cells) + _failures(m["runs"]) + note)
    if len(doc["candidates"]) > 1 and doc["pooled"]:
        out += ["", f"pooled over {len(doc['candidates'])} candidates", line("motif", heads)]
        for name, per in doc["pooled"].items():
            out.append(line(name, [_cell(per.get(obj)) for obj in objectives]))
    if doc.get("path"):
        out += ["", f"wrote {doc['path']}"]
    return "\n".join(out)
