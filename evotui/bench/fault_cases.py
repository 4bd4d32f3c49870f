"""The process faults of ``evotui bench faults`` (see :mod:`evotui.bench.faults` for the
figures): kill -9 and SIGTERM of the group, of the engine, of a worker, a second engine. The
commands, the full disk and the damaged ``init_checkpoint`` are in
:mod:`evotui.bench.fault_steer`.

Each case is ``case(tiny, trials) -> Case``: it starts tiny runs, strikes, resumes, and states
what must hold. Instants are drawn from a generator seeded by ``tiny.seed``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evotui.bench.faults import (
    Case,
    Proc,
    Tiny,
    candidates,
    duplicates,
    finished,
    inconsistent_exports,
    kill_group,
    lost,
    orphans,
    run_cli,
    start,
    state,
    wait_until,
)

CLEAN_WALL: dict[str, float] = {}  # the clean run's wall time, for drawing instants


def resume_args(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "evotui", "run", "--resume", str(run_dir), "--device", "cpu",
            "--quiet"]


def _running(run_dir: Path, rung: int | None = None, min_step: int = 0) -> str | None:
    for cid, c in candidates(run_dir).items():
        if c["status"] == "running" and c["step"] >= min_step and (rung is None or
                                                                   c["rung"] == rung):
            return cid
    return None


def _end(proc: Proc, timeout: float) -> tuple[int, list[int]]:
    code = proc.wait(timeout)
    left = orphans(proc.pid)
    for pid in left:  # never leave them to disturb the next case
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return code, left


def strike_and_resume(tiny: Tiny, run_dir: Path, strike: Callable[[Proc], dict[str, Any]],
                      resume: bool = True) -> dict[str, Any]:
    """Start a run, let ``strike`` wait for its moment and hit it (returning what it saw),
    wait for the run to end, count orphans, then ``--resume`` it to the end and compare."""
    proc = start(tiny.args(run_dir), run_dir.parent / f"{run_dir.name}.err")
    seen = strike(proc)
    code, left = _end(proc, tiny.timeout_s)
    at_stop = candidates(run_dir)
    trial = {**seen, "exit": code, "orphans": len(left),
             "finished_at_stop": len(finished(at_stop)),
             "failed_at_stop": sorted(c for c, v in at_stop.items() if v["status"] == "failed")}
    if resume:
        rproc = start(resume_args(run_dir), run_dir.parent / f"{run_dir.name}.resume.err")
        rcode, rleft = _end(rproc, tiny.timeout_s)
        trial["resume_exit"] = rcode
        trial["orphans"] += len(rleft)
        if rcode != 0:
            trial["resume_stderr"] = rproc.stderr()[-300:]
    after = candidates(run_dir)
    before = seen.get("before", {})
    trial.update({
        "finished_after": len(finished(after)), "lost": lost(before, finished(after)),
        "duplicates": duplicates(run_dir),
        "failed_after": sorted(c for c, v in after.items() if v["status"] == "failed"),
        "inconsistent_exports": inconsistent_exports(run_dir),
        "promoted": state(run_dir, "promoted.0"), "candidates": {
            cid: f"{v['status']}@{v['rung']}" for cid, v in after.items()}})
    return trial


def _totals(case: Case, trials: list[dict[str, Any]]) -> None:
    case.trials = trials
    case.figures.update({
        "runs": len(trials),
        "finished_before": sum(len(t.get("before", {})) for t in trials),
        "finished_after": sum(t["finished_after"] for t in trials),
        "lost": sum(len(t["lost"]) for t in trials),
        "duplicates": sum(t["duplicates"] for t in trials),
        "orphans": sum(t["orphans"] for t in trials),
        "inconsistent_exports": sum(bool(t["inconsistent_exports"]) for t in trials)})
    case.expect("no finished candidate lost", case.figures["lost"] == 0,
                [t["lost"] for t in trials if t["lost"]])
    case.expect("no rung recorded twice", case.figures["duplicates"] == 0)
    case.expect("no orphan process", case.figures["orphans"] == 0)
    case.expect("exports match the store", case.figures["inconsistent_exports"] == 0,
                [t["inconsistent_exports"] for t in trials if t["inconsistent_exports"]])
    bad = [t.get("resume_stderr", t.get("resume_exit")) for t in trials
           if t.get("resume_exit", 0) != 0]
    case.expect("--resume runs to the end (exit 0)", not bad, bad)


def _snapshot(run_dir: Path) -> dict[str, Any]:
    cands = candidates(run_dir)
    running = [f"{c}@rung{v['rung']}:step{v['step']}" for c, v in cands.items()
               if v["status"] == "running"]
    return {"before": finished(cands), "running": running}


# -- the cases --------------------------------------------------------------------------------
def clean(tiny: Tiny, trials: int) -> Case:
    """A run without a fault: the reference (and its wall time sets the kill instants)."""
    case = Case("clean")
    run_dir = tiny.workdir / "clean"
    t0 = time.monotonic()
    trial = strike_and_resume(tiny, run_dir, lambda proc: {}, resume=False)
    CLEAN_WALL["s"] = time.monotonic() - t0
    case.figures.update({"run_wall_s": round(CLEAN_WALL["s"], 1),
                         "finished": trial["finished_after"], "exit": trial["exit"]})
    case.expect("exit 0", trial["exit"] == 0)
    case.expect("every candidate finished", trial["finished_after"] == len(
        trial["candidates"]), trial["candidates"])
    _totals(case, [trial])
    case.trials = []
    return case


def kill9_group(tiny: Tiny, trials: int) -> Case:
    """kill -9 of the whole process group (engine and workers) at random instants."""
    case = Case("kill9_group")
    rng = random.Random(tiny.seed)
    wall = CLEAN_WALL.get("s", 240.0)  # without the clean case: about a tiny run here
    runs = []
    for i in range(trials):
        at = rng.uniform(0.5, wall)
        run_dir = tiny.workdir / f"kill9-{i}"

        def strike(proc: Proc, at: float = at, run_dir: Path = run_dir) -> dict[str, Any]:
            time.sleep(at)
            seen = _snapshot(run_dir)
            live = proc.popen.poll() is None  # a late instant finds the run already done
            kill_group(proc.pid, signal.SIGKILL)
            return {"at_s": round(at, 2), "struck_live_run": live, **seen}

        runs.append(strike_and_resume(tiny, run_dir, strike))
    _totals(case, runs)
    case.figures["struck_live_run"] = sum(t["struck_live_run"] for t in runs)
    return case


def kill9_rung2(tiny: Tiny, trials: int) -> Case:
    """kill -9 of the group while a promoted candidate trains its rung 2; the resume must
    finish rung 2 for every promoted candidate."""
    case = Case("kill9_rung2")
    rng = random.Random(tiny.seed + 1)
    runs = []
    for i in range(max(1, trials // 3)):
        run_dir = tiny.workdir / f"rung2-{i}"

        # a random step of rung 2 (a step count, not a delay: on an idle machine tiny's rung 2
        # lasts about a second, under load minutes)
        first = max(1, tiny.steps // 5) + 1
        at = rng.randint(first, max(first, tiny.steps - 1))

        def strike(proc: Proc, run_dir: Path = run_dir, at: int = at) -> dict[str, Any]:
            hit = wait_until(lambda: _running(run_dir, rung=2, min_step=at), tiny.timeout_s)
            seen = _snapshot(run_dir)
            kill_group(proc.pid, signal.SIGKILL)
            return {"landed_in_rung2": bool(hit) and any("rung2" in r for r in seen["running"]),
                    **seen}

        runs.append(strike_and_resume(tiny, run_dir, strike))
    _totals(case, runs)
    unfinished = []
    for t, i in zip(runs, range(len(runs)), strict=True):
        for cid in t["promoted"] or []:
            if t["candidates"].get(cid) not in ("done@2", "stopped@2"):
                unfinished.append(f"run {i}: {cid} {t['candidates'].get(cid)}")
    case.figures["landed_in_rung2"] = sum(t["landed_in_rung2"] for t in runs)
    case.expect("kills landed in rung 2", case.figures["landed_in_rung2"] == len(runs))
    case.expect("every promoted candidate finishes rung 2 after --resume", not unfinished,
                unfinished)
    return case


def _stop_case(name: str, tiny: Tiny, target: str, trials: int) -> Case:
    case = Case(name)
    runs = []
    for i in range(trials):
        run_dir = tiny.workdir / f"{name}-{i}"
        rung = 2 if i % 2 == 0 else 1  # most of a run's steps are in rung 2

        def strike(proc: Proc, run_dir: Path = run_dir, rung: int = rung) -> dict[str, Any]:
            first = max(1, tiny.steps // 5) + 1 if rung == 2 else 1  # a step of this rung
            wait_until(lambda: _running(run_dir, rung=rung, min_step=first), tiny.timeout_s)
            seen = _snapshot(run_dir)
            if target == "group":
                kill_group(proc.pid, signal.SIGTERM)
            else:
                os.kill(proc.pid, signal.SIGTERM)
            return {"rung_aimed": rung, **seen}

        runs.append(strike_and_resume(tiny, run_dir, strike))
    _totals(case, runs)
    failed = [t["failed_at_stop"] for t in runs if t["failed_at_stop"]]
    case.expect("the stop exits 0 (clean, resumable)", all(t["exit"] == 0 for t in runs),
                [t["exit"] for t in runs])
    case.expect("no candidate failed by the signal", not failed, failed)
    return case


def sigterm_group(tiny: Tiny, trials: int) -> Case:
    """SIGTERM to the whole process group (timeout, systemd, Slurm), in rung 1 and rung 2."""
    return _stop_case("sigterm_group", tiny, "group", max(1, trials // 3))


def sigterm_engine(tiny: Tiny, trials: int) -> Case:
    """SIGTERM to the engine process alone."""
    return _stop_case("sigterm_engine", tiny, "engine", max(1, trials // 3))


def kill9_worker(tiny: Tiny, trials: int) -> Case:
    """kill -9 of one worker mid-training: that candidate fails with the signal named, the
    run carries on to its end."""
    case = Case("kill9_worker")
    run_dir = tiny.workdir / "kill9-worker"

    def strike(proc: Proc) -> dict[str, Any]:
        cid = wait_until(lambda: _running(run_dir, min_step=1), tiny.timeout_s)
        workers = state(run_dir, "workers") or {}
        pid = next((w["pid"] for w in workers.values() if w.get("candidate") == cid), None)
        seen = _snapshot(run_dir)
        if pid:
            os.kill(pid, signal.SIGKILL)
        return {"victim": cid, "worker_pid": pid, **seen}

    trial = strike_and_resume(tiny, run_dir, strike, resume=False)
    trial["resume_exit"] = 0
    _totals(case, [trial])
    victim = candidates(run_dir).get(trial["victim"] or "", {})
    case.figures["victim_status"] = victim.get("status")
    case.figures["victim_error"] = victim.get("error")
    case.expect("a worker pid was found to kill", trial["worker_pid"] is not None)
    case.expect("the run carries on to exit 0", trial["exit"] == 0, trial["exit"])
    case.expect("the others finish", trial["finished_after"] >= len(trial["candidates"]) - 1,
                trial["candidates"])
    return case


def second_engine(tiny: Tiny, trials: int) -> Case:
    """A second ``evotui run --resume`` on a directory whose engine runs: refused in one line
    naming the holder's pid; the first engine finishes, nothing trained twice."""
    case = Case("second_engine")
    run_dir = tiny.workdir / "second"

    def strike(proc: Proc) -> dict[str, Any]:
        wait_until(lambda: _running(run_dir), tiny.timeout_s)
        code, err = run_cli(resume_args(run_dir), tiny.workdir / "second.b.err", 120)
        return {"second_exit": code, "second_stderr": err.strip()[-300:],
                "first_pid": proc.pid}

    trial = strike_and_resume(tiny, run_dir, strike, resume=False)
    trial["resume_exit"] = 0
    _totals(case, [trial])
    case.figures.update({"second_exit": trial["second_exit"],
                         "second_stderr": trial["second_stderr"]})
    case.expect("the second engine exits 2", trial["second_exit"] == 2)
    case.expect("it names the pid holding the run", str(trial["first_pid"]) in
                trial["second_stderr"])
    case.expect("the first engine finishes (exit 0)", trial["exit"] == 0)
    return case


CASES: dict[str, Callable[[Tiny, int], Case]] = {
    "clean": clean, "kill9_group": kill9_group, "kill9_rung2": kill9_rung2,
    "sigterm_group": sigterm_group, "sigterm_engine": sigterm_engine,
    "kill9_worker": kill9_worker, "second_engine": second_engine}
