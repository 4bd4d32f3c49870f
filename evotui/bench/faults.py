"""``evotui bench faults``: faults injected into tiny runs, each checked against what it must
cost (nothing finished) and measured.

Every case runs real ``evotui run`` processes (``configs/tiny.yaml``, one generation, a few
steps, ``--device cpu``) in their own process group and session, then reads the run's
``run.db`` (read-only SQLite) and exports. The figures of a case:

* ``finished_before`` / ``finished_after``: finished candidates (done or stopped) when the
  fault struck and after ``--resume`` ran the run to its end; ``lost``: finished before and not
  after (or at a lower rung); ``duplicates``: a rung recorded as finished more than once for a
  candidate (the ``finish`` events);
* ``orphans``: processes of the run's session still alive once its engine has exited;
* ``inconsistent_exports``: ``frontier.json`` not the store's Pareto front of finished
  candidates, or ``lineage.json`` not counting every candidate.

Each case lists ``expectations`` (``name``, ``ok``, ``detail``); one that fails makes the
report's ``ok`` false and the command's exit code 1. The cases themselves are in
:mod:`evotui.bench.fault_cases` (signals, a second engine) and :mod:`evotui.bench.fault_steer`
(commands at each phase, a full disk, a damaged ``init_checkpoint``): :func:`all_cases`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui.lifecycle import FINISHED

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
FINISH_TEXT = re.compile(r"^(c\d+) rung (\d+) (done|stopped)\b")


@dataclass
class Tiny:
    """The run every case starts: tiny, one generation, on CPU."""

    workdir: Path
    population: int = 2
    steps: int = 10
    generations: int = 1
    seed: int = 0
    timeout_s: float = 900.0  # a shared, loaded machine is slow

    def args(self, run_dir: Path, config: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "evotui", "run", str(config or TINY), "--run-dir",
                str(run_dir), "--generations", str(self.generations), "--steps",
                str(self.steps), "--population", str(self.population), "--eval-batches", "1",
                "--device", "cpu", "--seed", str(self.seed), "--quiet"]


@dataclass
class Proc:
    """One ``evotui`` process, the leader of its own session and process group."""

    popen: subprocess.Popen
    err_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.pid, signal.SIGKILL)
            return self.popen.wait(30)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    err = open(log, "w")  # noqa: SIM115 - the child keeps it
    popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                             env={**os.environ, **(env or {})}, start_new_session=True)
    err.close()
    return Proc(popen, log)


def run_cli(args: list[str], log: Path, timeout: float,
            env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = start(args, log, env)
    code = proc.wait(timeout)
    return code, proc.stderr()


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            found.append(int(entry))
    return found


def orphans(sid: int, grace_s: float = 5.0) -> list[int]:
    """Processes of the session alive ``grace_s`` after its leader exited."""
    end = time.monotonic() + grace_s
    while True:
        left = session_members(sid)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def wait_until(predicate: Callable[[], Any], timeout: float, poll: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except sqlite3.Error:  # the store is being created or checkpointed
            value = None
        if value:
            return value
        time.sleep(poll)
    return None


# -- reading a run ------------------------------------------------------------------------
def _query(run_dir: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    db = run_dir / "run.db"
    if not db.is_file() or db.stat().st_size == 0:
        return []
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # no schema yet
        return []
    finally:
        conn.close()


def candidates(run_dir: Path) -> dict[str, dict[str, Any]]:
    rows = _query(run_dir, "SELECT id, status, rung, step, metrics, error FROM candidates")
    return {r["id"]: {"status": r["status"], "rung": r["rung"], "step": r["step"],
                      "metrics": json.loads(r["metrics"] or "{}"), "error": r["error"]}
            for r in rows}


def state(run_dir: Path, key: str) -> Any:
    rows = _query(run_dir, "SELECT value FROM run WHERE key = ?", (key,))
    return json.loads(rows[0]["value"]) if rows else None


def finished(cands: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Finished candidate -> its rung."""
    return {cid: c["rung"] for cid, c in cands.items() if c["status"] in FINISHED}


def duplicates(run_dir: Path) -> int:
    """Rungs recorded as finished more than once (per candidate and rung)."""
    seen = Counter()
    for row in _query(run_dir, "SELECT text FROM events WHERE kind = 'finish'"):
        m = FINISH_TEXT.match(row["text"])
        if m:
            seen[(m.group(1), int(m.group(2)))] += 1
    return sum(n - 1 for n in seen.values() if n > 1)


def commands(run_dir: Path) -> list[dict[str, Any]]:
    return [dict(r) for r in _query(run_dir, "SELECT * FROM commands ORDER BY id")]


def lost(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(cid for cid, rung in before.items() if after.get(cid, -1) < rung)


def inconsistent_exports(run_dir: Path) -> list[str]:
    """What in frontier.json and lineage.json disagrees with the store."""
    from evotui.engine.rundir import RunDir, read_frontier
    from evotui.errors import UserError
    from evotui.evolve.entry import Entry
    from evotui.evolve.pareto import pareto_front

    problems = []
    cands = candidates(run_dir)
    objectives = state(run_dir, "objectives") or {}
    done = [Entry(id=cid, metrics=c["metrics"], status=c["status"], spec=None)
            for cid, c in cands.items() if c["status"] in FINISHED
            and all(k in c["metrics"] for k in objectives)]
    want = set(pareto_front(done, objectives)) if done else set()
    paths = RunDir(run_dir)  # the exports' paths as every reader finds them (default options)
    try:
        frontier = read_frontier(paths.frontier_path)
        got = set(frontier.ids)
        if got != want:
            problems.append(f"frontier.json lists {sorted(got)}, the store's front is "
                            f"{sorted(want)}")
        for e in frontier.entries:
            if e["id"] in cands and e.get("metrics") != cands[e["id"]]["metrics"]:
                problems.append(f"frontier.json metrics of {e['id']} differ from the store")
    except (UserError, OSError, ValueError, KeyError, TypeError) as e:
        problems.append(f"frontier.json unreadable: {e}")
    try:
        lineage = json.loads(paths.lineage_path.read_text())
        if lineage.get("count") != len(cands):
            problems.append(f"lineage.json counts {lineage.get('count')} of {len(cands)}")
    except (OSError, ValueError) as e:
        problems.append(f"lineage.json unreadable: {e}")
    return problems


# -- reporting --------------------------------------------------------------------------------
@dataclass
class Case:
    """One fault's figures and expectations."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    def expect(self, name: str, ok: bool, detail: Any = None) -> bool:
        self.expectations.append({"name": name, "ok": bool(ok), "detail": detail})
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(e["ok"] for e in self.expectations)

    def as_dict(self) -> dict[str, Any]:
        out = {"ok": self.ok, **self.figures, "expectations": self.expectations}
        if self.trials:
            out["trials"] = self.trials
        if self.note:
            out["note"] = self.note
        return out


def all_cases() -> dict[str, Callable[[Tiny, int], Case]]:
    """Every case by name, in the order they run."""
    from evotui.bench import fault_cases, fault_steer

    return {**fault_cases.CASES, **fault_steer.CASES}


def _prepare_data() -> None:
    from evotui.data import prepare
    from evotui.dsl import load

    prepare(load(TINY))


def machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_avg": os.getloadavg()}


def run(trials: int = 10, workdir: Path | None = None, seed: int = 0, steps: int = 10,
        population: int = 2, only: list[str] | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every case (or those named in ``only``); the report as one JSON-ready dict."""
    import tempfile

    say = progress or (lambda msg: None)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evotui-faults-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        old_cache = os.environ.get("EVOTUI_CACHE")
        os.environ["EVOTUI_CACHE"] = old_cache or str(root / "token-cache")  # the runs share
        tiny = Tiny(root, population=population, steps=steps, seed=seed)
        cases: list[Case] = []
        prepare_s = None
        try:
            t0 = time.monotonic()
            _prepare_data()  # tokenised once, before any run is timed
            prepare_s = round(time.monotonic() - t0, 1)
            for name, fn in all_cases().items():
                if only and name not in only:
                    continue
                say(f"{name} ...")
                t0 = time.monotonic()
                try:
                    case = fn(tiny, trials)
                except Exception as e:  # noqa: BLE001 - a case that crashes is a failed case
                    case = Case(name)
                    case.expect("the case ran", False, f"{type(e).__name__}: {e}")
                case.figures["wall_s"] = round(time.monotonic() - t0, 1)
                say(f"{name}: {'ok' if case.ok else 'FAILED'} ({case.figures['wall_s']} s)")
                cases.append(case)
        finally:
            if old_cache is None:
                os.environ.pop("EVOTUI_CACHE", None)
    failed = [f"{c.name}: {e['name']}" for c in cases for e in c.expectations if not e["ok"]]
    totals = {k: sum(int(c.figures.get(k, 0) or 0) for c in cases)
              for k in ("lost", "orphans", "inconsistent_exports", "duplicates")}
    return {"bench": "faults", "machine": machine(), "trials": trials, "steps": steps,
            "prepare_data_s": prepare_s,
            "population": population, "seed": seed, "totals": totals,
            "cases": {c.name: c.as_dict() for c in cases}, "failed_expectations": failed,
            "ok": not failed, "wall_s": round(time.monotonic() - began, 1)}
