"""``evotui bench engine``: how much of a worker's wall time goes to training steps.

Runs a small search on the embedded default config in a temporary run directory and times,
from the executor's events: each worker's wall time (start to result), the time it spent inside
training steps (the trainer's own clock, via tokens / throughput), and how long each slot sat
idle between one candidate's result and the next candidate's first training step.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def run(device: str = "cpu", population: int = 4, generations: int = 1, steps: int = 20,
        config: Path | None = None) -> dict[str, Any]:
    from evotui.engine.runner import RunFlags, open_run

    default = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    with tempfile.TemporaryDirectory(prefix="evotui-bench-") as tmp:
        flags = RunFlags(config=config or default, generations=generations, steps=steps,
                         population=population, device=device, run_dir=Path(tmp) / "run",
                         eval_batches=2)
        engine, total = open_run(flags, default)
        started: dict[str, float] = {}
        slot_of: dict[str, str] = {}
        walls: list[float] = []
        training: list[float] = []
        idle: list[float] = []
        last_free: dict[str, float] = {}

        def on_event(kind: str, payload: dict[str, Any]) -> None:
            now = time.monotonic()
            cid = payload.get("candidate")
            if kind == "started" and cid:
                started[cid] = now
                slot_of[cid] = payload.get("device", "?")
            elif kind == "step" and cid in slot_of:
                # the slot was idle from the last result until this candidate's first step
                slot = slot_of.pop(cid)
                if slot in last_free:
                    idle.append(now - last_free.pop(slot))
            elif kind in ("result", "failed") and cid in started:
                walls.append(now - started.pop(cid))
                training.append(payload.get("train_seconds", 0.0))
                last_free[engine.store.candidate(cid).get("device") or "?"] = now

        engine.on_event = on_event
        t0 = time.monotonic()
        asyncio.run(engine.run(total))
        wall = time.monotonic() - t0
        engine.store.close()
    busy = sum(walls)
    return {
        "device": device, "population": population, "generations": generations,
        "steps": steps, "jobs": len(walls), "run_wall_s": round(wall, 2),
        "worker_wall_s": round(busy, 2), "training_s": round(sum(training), 2),
        "not_training_fraction": round(1 - sum(training) / busy, 4) if busy else None,
        "mean_job_s": round(statistics.mean(walls), 2) if walls else None,
        "slot_idle_between_candidates_s": {
            "median": round(statistics.median(idle), 3) if idle else None,
            "max": round(max(idle), 3) if idle else None},
    }
