"""The cases of ``evotui bench faults`` (see :mod:`evotui.bench.faults` for the figures).

Each case is ``case(tiny, trials) -> Case``: it starts tiny runs, strikes, resumes, and states
what must hold. Instants are drawn from a generator seeded by ``tiny.seed``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
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
    commands,
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


def _resume_args(run_dir: Path) -> list[str]:
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
        rproc = start(_resume_args(run_dir), run_dir.parent / f"{run_dir.name}.resume.err")
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
    wall = CLEAN_WALL.get("s", 30.0)
    runs = []
    for i in range(trials):
        at = rng.uniform(0.5, wall)
        run_dir = tiny.workdir / f"kill9-{i}"

        def strike(proc: Proc, at: float = at, run_dir: Path = run_dir) -> dict[str, Any]:
            time.sleep(at)
            seen = _snapshot(run_dir)
            kill_group(proc.pid, signal.SIGKILL)
            return {"at_s": round(at, 2), **seen}

        runs.append(strike_and_resume(tiny, run_dir, strike))
    _totals(case, runs)
    return case


def kill9_rung2(tiny: Tiny, trials: int) -> Case:
    """kill -9 of the group while a promoted candidate trains its rung 2; the resume must
    finish rung 2 for every promoted candidate."""
    case = Case("kill9_rung2")
    rng = random.Random(tiny.seed + 1)
    runs = []
    for i in range(max(2, trials // 3)):
        run_dir = tiny.workdir / f"rung2-{i}"

        def strike(proc: Proc, run_dir: Path = run_dir) -> dict[str, Any]:
            hit = wait_until(lambda: _running(run_dir, rung=2), tiny.timeout_s)
            time.sleep(rng.uniform(0.0, 1.0))
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
        rung = 1 if i % 2 == 0 else 2

        def strike(proc: Proc, run_dir: Path = run_dir, rung: int = rung) -> dict[str, Any]:
            wait_until(lambda: _running(run_dir, rung=rung, min_step=1), tiny.timeout_s)
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
    return _stop_case("sigterm_group", tiny, "group", max(2, trials // 5))


def sigterm_engine(tiny: Tiny, trials: int) -> Case:
    """SIGTERM to the engine process alone."""
    return _stop_case("sigterm_engine", tiny, "engine", max(2, trials // 5))


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
        code, err = run_cli(_resume_args(run_dir), tiny.workdir / "second.b.err", 120)
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


def _phase(run_dir: Path, cid: str, phase: str, until: int) -> bool:
    c = candidates(run_dir).get(cid)
    if c is None:
        return False
    if phase == "queued":
        return c["status"] == "queued"
    if phase == "training":
        return c["status"] == "running" and 0 < c["step"] < until
    return c["status"] == "running" and c["step"] >= until  # measuring: steps all done


def _command_case(action: str, tiny: Tiny) -> Case:
    """``action`` sent (through the store, as ``evotui pause|kill`` does) at each phase of a
    candidate's life: queued, training, measuring (its rung's steps done, not yet recorded)."""
    from evotui.engine.store import RunStore

    case = Case(f"{action}_phases")
    outcomes = []
    rung1 = max(1, tiny.steps // 5)
    for phase, cid in (("queued", "c0002"), ("training", "c0000"), ("measuring", "c0001")):
        run_dir = tiny.workdir / f"{action}-{phase}"

        def strike(proc: Proc, run_dir: Path = run_dir, phase: str = phase,
                   cid: str = cid) -> dict[str, Any]:
            hit = wait_until(lambda: _phase(run_dir, cid, phase, rung1), tiny.timeout_s,
                             poll=0.01)
            if not hit:
                return {"observed": False}
            with RunStore.open(run_dir) as store:
                store.request(cid, action)
            return {"observed": True}

        trial = strike_and_resume(tiny, run_dir, strike, resume=False)
        cmds = [c for c in commands(run_dir) if c["candidate"] == cid]
        final = candidates(run_dir).get(cid, {}).get("status")
        outcomes.append({"phase": phase, "candidate": cid, "observed": trial["observed"],
                         "exit": trial["exit"], "final_status": final,
                         "command": {k: cmds[-1][k] for k in ("status", "outcome")}
                         if cmds else None})
    case.figures["phases"] = outcomes
    want = {"pause": "paused", "kill": "killed"}[action]
    for o in outcomes:
        if not o["observed"]:
            case.expect(f"{o['phase']}: phase reached", False, "the phase passed unseen")
            continue
        cmd = o["command"] or {}
        case.expect(f"{o['phase']}: answered (not left pending)", cmd.get("status") in (
            "done", "rejected"), cmd)
        if cmd.get("status") == "done":
            case.expect(f"{o['phase']}: done means {want}", o["final_status"] == want, o)
        elif cmd.get("status") == "rejected":
            case.expect(f"{o['phase']}: refused with a reason", bool(cmd.get("outcome")), o)
        case.expect(f"{o['phase']}: the run ends (exit 0)", o["exit"] == 0, o["exit"])
    return case


def pause_phases(tiny: Tiny, trials: int) -> Case:
    return _command_case("pause", tiny)


def kill_phases(tiny: Tiny, trials: int) -> Case:
    return _command_case("kill", tiny)


def disk_full(tiny: Tiny, trials: int) -> Case:
    """Checkpoints on a tmpfs too small for them: the run stops with the reason, no candidate
    fails for it, and after the tmpfs is enlarged (space freed) --resume finishes the run."""
    case = Case("disk_full")
    mnt = tiny.workdir / "small-disk"
    mnt.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        case.note = f"skipped: mount -t tmpfs failed ({mounted.stderr.strip()})"
        case.figures["skipped"] = True
        return case
    try:
        run_dir = tiny.workdir / "disk-full"
        args = [*tiny.args(run_dir), "--checkpoint-dir", str(mnt)]
        code, err = run_cli(args, tiny.workdir / "disk-full.err", tiny.timeout_s)
        before = candidates(run_dir)
        log = (run_dir / "run.log").read_text() if (run_dir / "run.log").exists() else ""
        subprocess.run(["mount", "-o", "remount,size=400m", str(mnt)], check=True)
        rcode, rerr = run_cli([*_resume_args(run_dir)], tiny.workdir / "disk-full.r.err",
                              tiny.timeout_s)
        after = candidates(run_dir)
        case.figures.update({
            "tmpfs": "20 MiB, then 400 MiB", "exit": code, "resume_exit": rcode,
            "said": next((line for line in (err + log).splitlines()
                          if "space" in line.lower()), None),
            "failed_before": sorted(c for c, v in before.items() if v["status"] == "failed"),
            "finished_before": len(finished(before)),
            "finished_after": len(finished(after)),
            "lost": len(lost(finished(before), finished(after))),
            "failed_after": sorted(c for c, v in after.items() if v["status"] == "failed")})
        case.expect("the full disk is named", case.figures["said"] is not None)
        case.expect("no candidate failed for it", not case.figures["failed_before"],
                    case.figures["failed_before"])
        case.expect("--resume after freeing space finishes (exit 0)", rcode == 0,
                    rerr.strip()[-300:])
        case.expect("every candidate finished after --resume",
                    case.figures["finished_after"] == len(after), after)
        case.expect("no finished candidate lost", case.figures["lost"] == 0)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    return case


def truncated_init_checkpoint(tiny: Tiny, trials: int) -> Case:
    """A truncated and a bit-rotted ``train.init_checkpoint``: refused in one line naming the
    file, exit 2, before a run directory exists."""
    import yaml

    from evotui.dsl import load
    from evotui.model.lm import build_model
    from evotui.train.checkpoint import save

    case = Case("bad_init_checkpoint")
    cfg = load(Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml")
    results = []
    for damage in ("truncated", "bit rot"):
        path = tiny.workdir / f"init-{damage.replace(' ', '-')}.safetensors"
        save(path, build_model(cfg.model, cfg.data.seq_len), meta={"step": 0})
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 2]
        else:
            data[-4096:] = b"\xff" * 4096
        path.write_bytes(bytes(data))
        conf = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" /
                               "tiny.yaml").read_text())
        conf["train"]["init_checkpoint"] = str(path)
        conf_path = tiny.workdir / f"init-{damage.replace(' ', '-')}.yaml"
        conf_path.write_text(yaml.safe_dump(conf))
        run_dir = tiny.workdir / f"init-{damage.replace(' ', '-')}-run"
        code, err = run_cli(tiny.args(run_dir, conf_path), tiny.workdir / "init.err", 120)
        results.append({"damage": damage, "exit": code, "stderr": err.strip()[-300:],
                        "run_dir_made": run_dir.exists()})
        case.expect(f"{damage}: exit 2", code == 2, code)
        case.expect(f"{damage}: one line naming the file", err.strip().count("\n") == 0
                    and str(path) in err, err.strip()[-300:])
        case.expect(f"{damage}: no run directory", not run_dir.exists())
    case.figures["results"] = results
    return case


CASES: dict[str, Callable[[Tiny, int], Case]] = {
    "clean": clean, "kill9_group": kill9_group, "kill9_rung2": kill9_rung2,
    "sigterm_group": sigterm_group, "sigterm_engine": sigterm_engine,
    "kill9_worker": kill9_worker, "second_engine": second_engine,
    "pause_phases": pause_phases, "kill_phases": kill_phases, "disk_full": disk_full,
    "bad_init_checkpoint": truncated_init_checkpoint}
