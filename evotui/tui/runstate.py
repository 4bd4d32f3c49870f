"""Where a run stands, as a person asks it: is the engine alive and what is it doing, how long
has the run gone on, when will this generation and the whole run end, how old is the newest
write. Computed from the run store alone, so the app's status line and ``evotui status`` say
the same thing. Imports no Textual and no torch.

The state comes from what the engine says about itself (its state and heartbeat in the store,
read by :func:`evotui.tui.feed.engine_said`); a running engine whose heartbeat has gone stale is
``not responding`` (killed, or its machine is gone). ETAs come from measured rung times: the
wall time from a candidate's ``start`` event to its ``finish`` event, per rung (setup, training
and the end-of-rung measurement, as the run really spends it), median of the recent ones.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evotui.engine.records import STALE_S  # a heartbeat older: not responding
from evotui.tui.feed import engine_said

STATES = ("running", "stopping", "stopped", "finished", "not responding", "not started")
STALE_NO_BEAT_S = 120.0  # a run store from before heartbeats: its newest write, this old
RECENT = 20  # rung times kept per rung (the median of these is the estimate)
ENDS = frozenset({"failed", "failure", "killed", "kill", "paused", "stopped"})  # no measure
_RUNG = re.compile(r"\brung (\d+)\b")


class RungClock:
    """Measured wall time per rung, from the run's ``start`` and ``finish`` events (fed in
    event-id order, in any number of batches)."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[int, float]] = {}  # candidate -> (rung, started at)
        self.times: dict[int, deque[float]] = {}
        self.last_id = 0

    def observe(self, events: Iterable[Mapping[str, Any]]) -> None:
        for e in events:
            if e.get("id", 0) <= self.last_id and e.get("id"):
                continue
            self.last_id = max(self.last_id, int(e.get("id") or 0))
            cid, kind, at = e.get("candidate"), e.get("kind"), e.get("time")
            if not cid or at is None:
                continue
            if kind == "start":
                m = _RUNG.search(str(e.get("text", "")))
                if m:
                    self.open[cid] = (int(m.group(1)), float(at))
            elif kind == "finish" and cid in self.open:
                rung, t0 = self.open.pop(cid)
                self.times.setdefault(rung, deque(maxlen=RECENT)).append(float(at) - t0)
            elif kind in ENDS:
                self.open.pop(cid, None)

    def seconds(self, rung: int, steps: Sequence[int] = ()) -> float | None:
        """The median measured time of ``rung``; before any was measured, another rung's
        time per step scaled to this rung's steps (``steps``: the rung ends); else None."""
        if self.times.get(rung):
            return statistics.median(self.times[rung])
        for other, times in sorted(self.times.items()):
            if times and steps and 0 < other <= len(steps) and 0 < rung <= len(steps):
                return statistics.median(times) * _span(steps, rung) / _span(steps, other)
        return None


def _span(steps: Sequence[int], rung: int) -> int:
    return max(1, steps[rung - 1] - (steps[rung - 2] if rung > 1 else 0))


@dataclass(frozen=True)
class RunState:
    """``generation``: the current one, counted from 1; ``elapsed_s``: since the run was
    created (to its last write once it stopped); ``age_s``: since the newest write;
    ``eta_*``: seconds left (None: not measured yet, or the engine is not running);
    ``rung_s``: the measured time of each rung."""

    state: str
    run: str
    generation: int
    generations: int | None
    counts: dict[str, int]
    elapsed_s: float | None
    updated: float | None
    age_s: float | None
    eta_generation_s: float | None
    eta_run_s: float | None
    slots: int
    rung_s: dict[int, float] = field(default_factory=dict)
    pid: int | None = None

    @property
    def responding(self) -> bool:
        return self.state != "not responding"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rung_s"] = {str(k): v for k, v in self.rung_s.items()}
        return out

    def line(self) -> str:
        """One line: ``running · gen 2/3 · 12:05 elapsed · gen ETA 3:10 · run ETA 9:30 ·
        updated 1s ago``."""
        parts = [self.state]
        of = f"/{self.generations}" if self.generations else ""
        parts.append(f"gen {self.generation}{of}")
        if self.elapsed_s is not None:
            parts.append(f"{duration(self.elapsed_s)} elapsed")
        if self.eta_generation_s is not None:
            parts.append(f"gen ETA {duration(self.eta_generation_s)}")
        if self.eta_run_s is not None:
            parts.append(f"run ETA {duration(self.eta_run_s)}")
        if self.age_s is not None:
            parts.append(f"updated {duration(self.age_s)} ago")
        return " · ".join(parts)


def duration(seconds: float) -> str:
    """``42s``, ``3:07``, ``2:03:07``, ``3d04h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    if s < 86400:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@dataclass(frozen=True)
class Plan:
    """What the run's config says about its shape (read once)."""

    generations: int | None = None
    population: int | None = None
    keep: float = 0.5  # the fraction of a generation promoted to rung 2
    rungs: tuple[int, ...] = ()


def plan_of(store: Any) -> Plan:
    import yaml

    try:
        evo = (yaml.safe_load(store.config_yaml or "") or {}).get("evolution") or {}
    except Exception:  # noqa: BLE001 - a config we cannot read only loses the ETAs
        evo = {}
    rungs = tuple(int(s) for s in ((store.get_state("rungs") or {}).get("steps") or []))
    return Plan(generations=evo.get("generations"), population=evo.get("population"),
                keep=float(evo.get("topk_keep") or 0.5), rungs=rungs)


def _phase(items: list[float], slots: int) -> float:
    """How long ``items`` take on ``slots`` slots: the work spread, never less than the
    longest item."""
    return max(sum(items) / slots, max(items)) if items else 0.0


def run_state(store: Any, candidates: Iterable[Mapping[str, Any]], clock: RungClock,
              plan: Plan, now: float, workers: Mapping[str, Any] | None = None) -> RunState:
    """The run's state at ``now`` from the store, its candidates and the measured rungs."""
    cands = list(candidates)
    counts: dict[str, int] = {}
    for c in cands:
        counts[str(c["status"])] = counts.get(str(c["status"]), 0) + 1
    said, beat, pid = engine_said(store)
    updated = store.last_activity()
    newest = max((t for t in (beat, updated) if t is not None), default=None)
    if said is None:  # a store from before heartbeats: its run events and newest write
        said = _from_events(store)
        beat = updated
        stale = STALE_NO_BEAT_S
    else:
        stale = STALE_S
    if said in ("running", "stopping") and (beat is None or now - beat > stale):
        state = "not responding"
    else:
        state = said or "not started"
    created = store.get_state("created")
    end = now if state in ("running", "stopping") else newest
    elapsed = end - created if created is not None and end is not None else None
    generation = max((int(c["generation"]) for c in cands), default=0)
    slots = max(1, len(workers or {}), counts.get("running", 0))
    eta_gen = eta_run = None
    if state in ("running", "stopping"):
        eta_gen = _eta_generation(cands, generation, clock, plan, now, slots,
                                  store.get_state(f"promoted.{generation}"))
        if eta_gen is not None and plan.generations:
            later = max(0, plan.generations - generation - 1)
            per = _generation_time(clock, plan, slots)
            eta_run = eta_gen + later * per if per is not None or later == 0 else None
    rung_s = {r: s for r in range(1, len(plan.rungs) + 1)
              if (s := clock.seconds(r)) is not None and clock.times.get(r)}
    return RunState(state=state, run=str(store.meta.get("name") or store.run_dir.name),
                    generation=generation + 1, generations=plan.generations, counts=counts,
                    elapsed_s=elapsed, updated=newest,
                    age_s=None if newest is None else max(0.0, now - newest),
                    eta_generation_s=eta_gen, eta_run_s=eta_run, slots=slots, rung_s=rung_s,
                    pid=pid)


def _from_events(store: Any) -> str | None:
    """``stopped`` or ``finished`` when the run's last event says so, ``running`` when
    anything happened, None for an empty run."""
    last = store.recent_events(1)
    if not last:
        return None
    if last[0]["kind"] == "run":
        text = str(last[0]["text"])
        if text.startswith("finished"):
            return "finished"
        if text.startswith("stopped"):
            return "stopped"
    return "running"


def _eta_generation(cands: list[Mapping[str, Any]], g: int, clock: RungClock, plan: Plan,
                    now: float, slots: int, promoted: list[str] | None) -> float | None:
    d1, d2 = clock.seconds(1, plan.rungs), clock.seconds(2, plan.rungs)
    two = len(plan.rungs) > 1
    if d1 is None or (two and d2 is None):
        return None
    members = [c for c in cands if int(c["generation"]) == g]

    def left(c: Mapping[str, Any], full: float) -> float:
        started = clock.open.get(c["id"])
        return max(0.0, full - (now - started[1])) if started else full

    def at(c: Mapping[str, Any], status: str, rung: int) -> bool:
        return str(c["status"]) == status and int(c.get("rung") or 0) == rung

    # a new candidate waits at rung 0; a promoted one waits with rung 1 done
    first = [d1 if at(c, "queued", 0) else left(c, d1) for c in members
             if at(c, "queued", 0) or at(c, "running", 1)]
    second: list[float] = []
    if two:
        if promoted is None:  # decided when rung 1 ends: the configured fraction
            second = [d2] * max(1, round(plan.keep * len(members)))
        else:
            second = [d2 if at(c, "queued", 1) else left(c, d2) for c in members
                      if c["id"] in promoted and (at(c, "queued", 1) or at(c, "running", 2))]
    return _phase(first, slots) + _phase(second, slots)


def _generation_time(clock: RungClock, plan: Plan, slots: int) -> float | None:
    d1, d2 = clock.seconds(1, plan.rungs), clock.seconds(2, plan.rungs)
    if d1 is None or not plan.population:
        return None
    total = _phase([d1] * plan.population, slots)
    if len(plan.rungs) > 1 and d2 is not None:
        total += _phase([d2] * max(1, round(plan.keep * plan.population)), slots)
    return total


def read_state(store: Any, now: float | None = None) -> RunState:
    """The run's state read whole from the store (``evotui status``; the app keeps the same
    pieces up to date poll by poll)."""
    clock = RungClock()
    clock.observe(store.events(0, 1_000_000))
    return run_state(store, store.candidates(with_spec=False), clock, plan_of(store),
                     time.time() if now is None else now, store.get_state("workers", {}) or {})


def _num(value: Any, fmt: str = ".4g") -> str:
    return "-" if not isinstance(value, int | float) else f"{value:{fmt}}"


def report(state: RunState, summary: Mapping[str, Any], rungs: Sequence[int] = ()) -> str:
    """``evotui status`` for a person: the state first, then progress, ETAs, what runs, the
    best so far and the commands waiting for the engine."""
    of = f"/{state.generations}" if state.generations else ""
    engine = state.state + (f" (engine pid {state.pid})" if state.pid else "")
    rows = [("run", f"{state.run}  ({summary.get('run_dir', '')})"), ("state", engine),
            ("generation", f"{state.generation}{of}")]
    if state.elapsed_s is not None:
        rows.append(("elapsed", duration(state.elapsed_s)))
    if state.age_s is not None:
        rows.append(("updated", f"{duration(state.age_s)} ago"))
    eta = [f"{what} {duration(s)}" for what, s in (("generation", state.eta_generation_s),
                                                    ("run", state.eta_run_s)) if s is not None]
    rows.append(("ETA", ", ".join(eta) if eta else "-"))
    if state.rung_s:
        rows.append(("rung time", ", ".join(f"r{r} {duration(s)}"
                                             for r, s in sorted(state.rung_s.items()))))
    rows.append(("candidates", "  ".join(f"{n} {k}" for k, n in state.counts.items() if n)
                 or "none yet"))
    for r in summary.get("running") or []:
        rung = int(r.get("rung") or 0)
        end = rungs[min(max(rung, 1), len(rungs)) - 1] if rungs else r.get("total_steps")
        rows.append(("running", f"{r['id']}  {r.get('step', 0)}/{end} r{rung}  loss "
                     f"{_num(r.get('loss'))}  {_num(r.get('tokens_per_s'), '.0f')} tok/s  on "
                     f"{r.get('device') or '-'}"))
    for name, best in (summary.get("best") or {}).items():
        if best:
            rows.append(("best", f"{name} {_num(best.get('value'))} ({best.get('id')})"))
    for cmd in summary.get("pending_commands") or []:
        rows.append(("pending", f"{cmd['action']} {cmd['candidate']} (command {cmd['id']})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
