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
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui import jsonio
from evotui.dsl import ModelSpec, RunConfig, to_data
from evotui.engine.jobs import Job
from evotui.errors import UserError
from evotui.evolve.ablations import AblationError, Context, Variant, ablations, motif_names
from evotui.evolve.inheritance import inheritance_map
from evotui.jsonio import finite
from evotui.post.effects import CONTROL, run_record, summarise
from evotui.post.seed import Source

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
        v = finite(values.get(name))
        key.append((v if direction == "min" else -v) if v is not None else math.inf)
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
    jsonio.write(path, doc, indent=1)
    doc["path"] = str(path)
    if interrupted:
        say(f"interrupted: wrote what finished ({len(events)} of {len(jobs)} trainings) to "
            f"{path}")
        raise KeyboardInterrupt
    return doc
