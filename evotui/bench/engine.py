"""``evotui bench engine``: where a worker's wall time goes on a small search.

Runs a search on the embedded default config (or ``config``) in a temporary run directory. Each
job's wall time runs from the engine submitting it (the ``started`` event) to its result
arriving in the engine. The worker reports, with its own clock, how that time divides:

* ``train``: inside optimizer steps (the only part the issue's target counts as training);
* ``measure``: the held-out evaluation the objectives need (eval points during the rung and
  the final measurement: per-shard perplexity, probes, recurrence diagnostics);
* ``setup``: importing torch, preparing the dataset, building the model, loading weights,
  and a job's wait for its worker (a slot's first job waits for the worker's warm-up);
* ``checkpoint``: writing the candidate's checkpoint;
* ``other``: the rest of the wall time: pipes, the engine's bookkeeping, a job waiting for its
  worker's warm-up.

A slot's idle time between candidates runs from one job's result reaching the engine to the
next job's first training step on that slot (both ``time.monotonic()`` on this machine).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PARTS = {"train": ("train_s",), "measure": ("eval_s", "measure_s"),
         "setup": ("startup_s", "data_s", "build_s", "load_s"), "checkpoint": ("checkpoint_s",)}


def run(device: str = "cpu", population: int = 4, generations: int = 1, steps: int = 20,
        config: Path | None = None, eval_batches: int = 2, executor: str = "local",
        ray_address: str | None = None, cpu_slots: int = 1) -> dict[str, Any]:
    """``executor``: local or ray (``ray_address``: a cluster; None: a Ray started here)."""
    from evotui.engine.runner import RunFlags, open_run

    with tempfile.TemporaryDirectory(prefix="evotui-bench-") as tmp:
        flags = RunFlags(config=config, generations=generations, steps=steps,
                         population=population, device=device, run_dir=Path(tmp) / "run",
                         eval_batches=eval_batches, executor=executor,
                         ray_address=ray_address, cpu_slots=cpu_slots)
        engine, total = open_run(flags)
        submitted: dict[str, tuple[float, str]] = {}  # candidate -> (time, slot)
        jobs: list[dict[str, Any]] = []
        freed: dict[str, float] = {}  # slot -> when its last result arrived
        waiting: dict[str, float] = {}  # candidate -> when its slot was freed before it
        idle: list[float] = []

        def on_event(kind: str, payload: dict[str, Any]) -> None:
            now = time.monotonic()
            cid = payload.get("candidate")
            if kind == "started" and cid:
                slot = payload.get("device", "?")
                submitted[cid] = (now, slot)
                if slot in freed:
                    waiting[cid] = freed.pop(slot)
            elif kind in ("result", "failed") and cid in submitted:
                began, slot = submitted.pop(cid)
                received = payload.get("received_at")
                jobs.append({"wall": now - began, "timings": payload.get("timings") or {},
                             "wait": received - began if received is not None else 0.0})
                freed[slot] = now
                first_step, since = payload.get("first_step_at"), waiting.pop(cid, None)
                if first_step is not None and since is not None:
                    idle.append(first_step - since)

        engine.on_event = on_event
        t0 = time.monotonic()
        asyncio.run(engine.run(total))
        wall = time.monotonic() - t0
        engine.store.close()
    return summarise(jobs, idle, wall) | {
        "device": device, "executor": executor, "slots": len(engine.executor.slots),
        "population": population, "generations": generations,
        "steps": steps, "eval_batches": eval_batches}


def summarise(jobs: list[dict[str, Any]], idle: list[float], run_wall: float) -> dict[str, Any]:
    """The JSON figures from the jobs' walls and timings and the slots' idle gaps."""
    busy = sum(j["wall"] for j in jobs)
    parts = {name: sum(j["timings"].get(k, 0.0) for j in jobs for k in keys)
             for name, keys in PARTS.items()}
    parts["setup"] += sum(max(0.0, j.get("wait", 0.0)) for j in jobs)
    parts["other"] = max(0.0, busy - sum(parts.values()))
    n = max(1, len(jobs))
    return {
        "jobs": len(jobs), "run_wall_s": round(run_wall, 2), "worker_wall_s": round(busy, 2),
        "training_s": round(parts["train"], 2),
        "not_training_fraction": round(1 - parts["train"] / busy, 4) if busy else None,
        "overhead_fraction": round(1 - (parts["train"] + parts["measure"]) / busy, 4)
        if busy else None,
        "fractions": {k: round(v / busy, 4) if busy else None for k, v in parts.items()},
        "per_job_s": {k: round(v / n, 3) for k, v in parts.items()},
        "mean_job_s": round(busy / n, 2) if jobs else None,
        "slot_idle_between_candidates_s": {
            "median": round(statistics.median(idle), 3) if idle else None,
            "max": round(max(idle), 3) if idle else None, "count": len(idle)},
    }
