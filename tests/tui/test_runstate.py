"""The run's state as the status line and ``evotui status`` report it: the engine's state from
its heartbeat, elapsed time, the age of the newest write, and ETAs from measured rung times."""

from __future__ import annotations

from evotui.engine.store import RunStore
from evotui.tui.feed import Feed
from evotui.tui.runstate import RungClock, plan_of, run_state
from tests.tui.conftest import NOW, T0


def state_at(run_dir, now, **engine):
    with RunStore.open(run_dir) as store:
        if engine:
            store.set_state("engine_state", {"pid": 4241, "since": T0, **engine})
        feed = Feed(store)
        feed.poll()
        clock = RungClock()
        clock.observe(store.events(0, 10_000))
        return run_state(store, feed.candidates.values(), clock, plan_of(store), now,
                         {"cpu": {}}), clock


def test_a_running_engine_with_a_fresh_heartbeat(fixture_run):
    s, clock = state_at(fixture_run, NOW)
    assert s.state == "running" and s.responding
    assert (s.generation, s.generations) == (2, 3)
    assert s.elapsed_s == 605 and s.age_s == 5  # heartbeat at T0 + 600
    assert s.counts["running"] == 1 and s.counts["done"] == 2
    # rung 1 of c0000 ran from its start event to its finish event: 61 s; rung 2 is not
    # measured yet, so it is rung 1's time per step over rung 2's 16 steps
    assert s.rung_s == {1: 61.0}
    assert clock.seconds(2, [4, 20]) == 61.0 * 16 / 4
    # generation 2 (index 1): c0004 waits for rung 1 (61 s); then round(0.5 * 5) = 2
    # promotions of 244 s each on one slot
    assert s.eta_generation_s == 61 + 2 * 244
    assert s.eta_run_s > s.eta_generation_s  # one more generation to go
    assert "running · gen 2/3" in s.line() and "ETA" in s.line()


def test_a_stale_heartbeat_is_an_engine_not_responding(fixture_run):
    s, _ = state_at(fixture_run, T0 + 700, state="running", heartbeat=T0 + 600)
    assert s.state == "not responding" and not s.responding
    assert s.eta_generation_s is None  # no ETA for an engine that is not there


def test_stopped_and_finished_runs_have_no_eta_and_stop_the_clock(fixture_run):
    for said in ("stopped", "finished"):
        s, _ = state_at(fixture_run, T0 + 5000, state=said, heartbeat=T0 + 600)
        assert s.state == said and s.responding
        assert s.eta_generation_s is None and s.eta_run_s is None
        assert s.elapsed_s == 600  # to its last write, not to now


def test_the_clock_measures_only_rungs_that_finished():
    clock = RungClock()
    clock.observe([
        {"id": 1, "kind": "start", "candidate": "a", "time": 0.0, "text": "a rung 1 on cpu"},
        {"id": 2, "kind": "start", "candidate": "b", "time": 1.0, "text": "b rung 1 on cpu"},
        {"id": 3, "kind": "failure", "candidate": "b", "time": 5.0, "text": "b failed"},
        {"id": 4, "kind": "finish", "candidate": "a", "time": 30.0, "text": "a rung 1 done"},
        {"id": 5, "kind": "finish", "candidate": "b", "time": 40.0, "text": "b rung 1 done"},
    ])
    assert clock.seconds(1) == 30.0 and clock.seconds(2) is None
    clock.observe([{"id": 4, "kind": "finish", "candidate": "a", "time": 99.0}])  # seen
    assert list(clock.times[1]) == [30.0]


def test_status_command_reads_as_a_table_and_exits_1_when_the_engine_is_gone(fixture_run,
                                                                              run_cli):
    import json
    import time

    code, out, _ = run_cli("status", fixture_run)  # its heartbeat is long stale
    assert code == 1
    lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert lines["state"].startswith("not responding (engine pid 4241)")
    assert lines["generation"] == "2/3" and lines["ETA"] == "-"
    assert "c0002  12/20 r2  loss 3.041" in out  # rung progress, not 12/20 of the run
    code, out, _ = run_cli("status", fixture_run, "--json")
    assert code == 1 and json.loads(out)["state"]["state"] == "not responding"

    with RunStore.open(fixture_run) as store:  # a live engine
        store.set_state("engine_state", {"state": "running", "pid": 4241, "since": T0,
                                         "heartbeat": time.time()})
    code, out, _ = run_cli("status", fixture_run, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["state"]["state"] == "running"
    assert doc["state"]["eta_generation_s"] > 0 and doc["counts"]["running"] == 1
