"""The cases of ``evotui bench faults`` that are not signals: pause and kill sent at each
phase of a candidate's life, a disk that fills up (a tmpfs), and a damaged
``train.init_checkpoint``. Each is ``case(tiny, trials) -> Case``."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evotui.bench.fault_cases import resume_args, strike_and_resume
from evotui.bench.faults import (
    Case,
    Proc,
    Tiny,
    candidates,
    commands,
    finished,
    lost,
    run_cli,
    wait_until,
)


def _in_phase(run_dir: Path, phase: str, rungs: tuple[int, int]) -> str | None:
    """A candidate in ``phase``: ``queued``; ``measuring`` (running, its rung's steps all
    done, its result not yet recorded); ``training`` (running in rung 2, between steps)."""
    for cid, c in candidates(run_dir).items():
        until = rungs[0] if c["rung"] <= 1 else rungs[1]
        if phase == "queued" and c["status"] == "queued":
            return cid
        if c["status"] != "running":
            continue
        if phase == "measuring" and c["step"] >= until:
            return cid
        if phase == "training" and c["rung"] == 2 and 0 < c["step"] < until:
            return cid
    return None


def _command_case(action: str, tiny: Tiny) -> Case:
    """``action`` sent (through the store, as ``evotui pause|kill`` does) at each phase of a
    candidate's life in one run: a queued candidate, one being measured at the end of its
    rung, and one training in rung 2 (the phase is seen in the store, then the command sent)."""
    from evotui.engine.store import RunStore

    case = Case(f"{action}_phases")
    tiny = dataclasses.replace(tiny, population=max(3, tiny.population))  # three phases
    rungs = (max(1, tiny.steps // 5), tiny.steps)
    run_dir = tiny.workdir / f"{action}-phases"
    sent: list[dict[str, Any]] = []

    def strike(proc: Proc) -> dict[str, Any]:
        for phase in ("queued", "measuring", "training"):
            cid = wait_until(lambda phase=phase: proc.popen.poll() is not None or _in_phase(
                run_dir, phase, rungs), tiny.timeout_s, poll=0.01)
            if not isinstance(cid, str):
                sent.append({"phase": phase, "observed": False})
                continue
            with RunStore.open(run_dir) as store:
                store.request(cid, action)
            sent.append({"phase": phase, "observed": True, "candidate": cid})
            wait_until(lambda cid=cid: not any(
                c["candidate"] == cid and c["status"] == "pending"
                for c in commands(run_dir)), 60)  # answered before the next phase
        return {}

    trial = strike_and_resume(tiny, run_dir, strike, resume=False)
    cands = candidates(run_dir)
    outcomes = []
    for s in sent:
        if s["observed"]:
            cmds = [c for c in commands(run_dir) if c["candidate"] == s["candidate"]]
            s["command"] = {k: cmds[-1][k] for k in ("status", "outcome")} if cmds else None
            s["final_status"] = cands.get(s["candidate"], {}).get("status")
        outcomes.append(s)
    case.figures.update({"phases": outcomes, "exit": trial["exit"]})
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
    case.expect("the run ends (exit 0)", trial["exit"] == 0, trial["exit"])
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
        rcode, rerr = run_cli([*resume_args(run_dir)], tiny.workdir / "disk-full.r.err",
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


def bad_init_checkpoint(tiny: Tiny, trials: int) -> Case:
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
    "pause_phases": pause_phases, "kill_phases": kill_phases, "disk_full": disk_full,
    "bad_init_checkpoint": bad_init_checkpoint}
