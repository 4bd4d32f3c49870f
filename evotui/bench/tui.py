"""``evotui bench tui``: how long the app takes to show what changed, and how much CPU it uses.

A separate process (so its CPU is not counted) writes a synthetic run to a fresh run store as
the engine would: ``candidates`` candidates training at once, each writing ``rate`` metric rows
per second with its step, an event now and then, and a candidate finishing and a new one
starting every few seconds. The real app runs headless (``App.run_test``) attached to that store
with the real GPU/CPU sampler, its cursor on a candidate that trains throughout (as a person
watching training has it: the Loss pane's curve grows with every poll). Measured per refresh (one
poll of the store): the read (in a thread), the widget updates and the time until the screen has
been redrawn; and the process's CPU time over wall time while it runs.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

OBJECTIVES = {"ppl_code": "min", "ppl_text": "min", "throughput": "max"}
TOTAL_STEPS = 10_000
WARMUP_S = 1.5


def _spec(i: int) -> dict[str, Any]:
    return {"name": f"synthetic-{i}", "emb": {"dim": 64 * (1 + i % 4), "vocab": 257},
            "blocks": [{"attn": {"kind": "MHA", "heads": 4, "head_dim": 16}}]}


def _add(store: Any, i: int, generation: int, status: str) -> str:
    cid = f"c{i:04d}"
    store.add_candidate(cid, generation=generation, spec=_spec(i),
                        parents=[f"c{(i * 7) % max(1, i):04d}"] if i else [],
                        operator="ffn.hidden(block b0: 256 -> 384)" if i % 2 else
                        "crossover(a blocks 0..1 + b blocks 2..3)",
                        status=status, rung=1, total_steps=TOTAL_STEPS,
                        metrics={"params_total": 1_000_000 + 1000 * i}, device="cuda:0")
    return cid


def write_run(run_dir: str, candidates: int, rate: float, stop: Any, started: Any,
              written: Any) -> None:
    """The synthetic engine (a process of its own): runs until ``stop`` is set; ``written``
    counts the metric rows committed."""
    from evotui.engine.store import RunStore

    store = RunStore.create(Path(run_dir), "model: {}\n", {"name": "bench-tui"})
    store.set_state("objectives", OBJECTIVES)
    store.set_state("rungs", {"steps": [TOTAL_STEPS // 5, TOTAL_STEPS]})
    rng = random.Random(0)
    running = [_add(store, i, 0, "running") for i in range(candidates)]
    step = dict.fromkeys(running, 0)
    n = candidates
    tick = 0.1
    per_tick = rate * tick
    owed = 0.0
    store.add_event("run", f"synthetic run of {candidates} candidates")
    started.set()
    t0 = time.monotonic()
    k = 0
    while not stop.is_set():
        k += 1
        owed += per_tick
        rows_now, owed = int(owed), owed - int(owed)
        now = time.time()
        with store.transaction():
            rows = []
            for cid in running:
                for _ in range(rows_now):
                    step[cid] += 1
                    s = step[cid]
                    rows.append({"candidate": cid, "rung": 1, "step": s, "time": now,
                                 "loss": 2.0 + 3.0 * math.exp(-s / 400) + rng.random() * 0.05,
                                 "lr": 1e-3, "tokens": 4096 * s,
                                 "tokens_per_s": 50_000 + rng.random() * 5000})
                    if s % 50 == 0:
                        rows.append({"candidate": cid, "rung": 1, "step": s, "kind": "eval",
                                     "loss": 2.1 + 3.0 * math.exp(-s / 400), "time": now})
            written.value += store.add_metrics(rows)
            for cid in running:
                store.update_candidate(cid, step=step[cid])
            if k % 10 == 0:  # once a second: a log line
                cid = rng.choice(running)
                store.add_event("start", f"{cid} checkpoint at step {step[cid]}", cid)
            if k % 30 == 0:  # every three seconds: one finishes, another starts
                done = running.pop(0)
                store.update_candidate(done, status="done", metrics={
                    "params_total": 1_000_000, "ppl_code": 20 + rng.random(),
                    "ppl_text": 25 + rng.random(), "throughput": 50_000.0})
                store.add_event("finish", f"{done} rung 1 done", done)
                new = _add(store, n, 1, "running")
                n += 1
                running.append(new)
                step[new] = 0
                store.add_event("mutation", f"{new} <- {done}: ffn.hidden", new)
        time.sleep(max(0.0, t0 + k * tick - time.monotonic()))
    store.close()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"p50": _pct(values, 0.5), "p95": _pct(values, 0.95),
            "max": round(max(values), 2) if values else None,
            "mean": round(statistics.mean(values), 2) if values else None}


def _watch(app: Any) -> str | None:
    """The cursor on the newest running candidate (the writer finishes the oldest first, so it
    runs to the end of the measurement); its id."""
    running = [cid for cid, c in app.feed.candidates.items() if c["status"] == "running"]
    if not running:
        return None
    app.population.table.move_to(max(running))
    return max(running)


async def _measure(run_dir: Path, seconds: float
                   ) -> tuple[list[dict[str, float]], float, float, str | None]:
    from evotui.tui.app import EvoApp

    app = EvoApp(run_dir, readonly=True)
    async with app.run_test(headless=True, size=(160, 48)) as pilot:
        await asyncio.sleep(WARMUP_S)
        await pilot.pause()
        watched = _watch(app)
        await pilot.pause()
        first = len(app.timings)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        await pilot.pause()
        timings = [t for t in app.timings[first:] if "paint_ms" in t]
        watched = watched if app.population.selected == watched else None
    return timings, cpu1 - cpu0, wall1 - wall0, watched


def run(seconds: float = 15.0, candidates: int = 24, rate: float = 10.0) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="evotui-bench-tui-") as tmp:
        run_dir = Path(tmp) / "run"
        stop, started, written = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
        writer = ctx.Process(target=write_run, args=(str(run_dir), candidates, rate, stop,
                                                     started, written),
                             name="evotui-bench-writer")
        writer.start()
        load0 = os.getloadavg()[0]
        try:
            deadline = time.monotonic() + 60
            while not started.wait(0.2):
                if not writer.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the synthetic writer did not start "
                                       f"(exit code {writer.exitcode})")
            timings, cpu, wall, watched = asyncio.run(_measure(run_dir, seconds))
        finally:
            stop.set()
            writer.join(10)
            if writer.is_alive():
                writer.kill()
    refresh = [t["read_ms"] + t["apply_ms"] + t["paint_ms"] for t in timings]
    return {
        "seconds": round(wall, 2), "candidates": candidates, "rate": rate,
        "watched": watched,  # the candidate under the cursor throughout, training
        "refreshes": len(timings), "rows_written": written.value,
        "rows_shown": int(sum(t.get("rows", 0) for t in timings)),
        "refresh_ms": _stats(refresh),
        "read_ms": _stats([t["read_ms"] for t in timings]),
        "apply_ms": _stats([t["apply_ms"] for t in timings]),
        "paint_ms": _stats([t["paint_ms"] for t in timings]),
        "cpu_pct_of_one_core": round(100 * cpu / wall, 1) if wall else None,
        # the app's CPU time per refresh: what a loaded machine stretches into wall time
        "cpu_ms_per_refresh": round(1000 * cpu / len(timings), 1) if timings else None,
        # the machine's 1-minute load average as the measurement began and ended
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "targets": {"refresh_p95_ms": 50, "cpu_pct_of_one_core": 20},
    }
