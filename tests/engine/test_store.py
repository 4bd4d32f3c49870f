"""The run store: WAL, several processes, round-trips, run.log, atomic exports, crash safety."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from evotui.engine import exports
from evotui.engine.store import RunStore
from evotui.errors import UserError
from evotui.evolve import pareto
from tests.conftest import ROOT

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[[a-z_]+\] \S.*$")


def strict_json(text: str):
    def refuse(name: str):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, **kw)


@pytest.fixture
def store(tmp_path):
    s = RunStore.create(tmp_path / "run", "model: {}\n", {"name": "demo", "config": "demo.yaml"})
    yield s
    s.close()


def add(store: RunStore, cid: str, **fields) -> None:
    fields.setdefault("generation", 0)
    fields.setdefault("spec", {"id": cid})
    store.add_candidate(cid, **fields)


# -- the database ----------------------------------------------------------------------------

def test_wal_mode_and_pragmas(store):
    with sqlite3.connect(store.db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = store._conn
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_create_writes_config_and_meta(store):
    assert (store.run_dir / "config.yaml").read_text() == "model: {}\n"
    assert store.config_yaml == "model: {}\n"
    assert store.meta == {"name": "demo", "config": "demo.yaml"}
    with pytest.raises(UserError, match="already holds a run"):
        RunStore.create(store.run_dir, "x: 1\n", {})


def test_state_round_trip(store):
    assert store.get_state("generation") is None
    assert store.get_state("generation", 0) == 0
    store.set_state("generation", 3)
    store.set_state("generation", 4)
    store.set_state("rng", {"state": [1, 2, 3], "gauss": None})
    store.set_state("engine", json.dumps({"generation": 4}))  # a JSON string stays a string
    assert store.get_state("generation") == 4
    assert store.get_state("rng") == {"state": [1, 2, 3], "gauss": None}
    assert json.loads(store.get_state("engine")) == {"generation": 4}


def test_candidate_round_trip(store):
    store.add_candidate("c0001", generation=1, spec={"blocks": [{"id": "b0"}]},
                        parents=["c0000"], operator="ffn.dense_to_moe(block b3)",
                        spec_key="k1", provenance={"b0": "c0000"}, total_steps=200,
                        metrics={"params_total": 1000}, device="cuda:0")
    c = store.candidate("c0001")
    assert c["parents"] == ["c0000"] and c["spec"] == {"blocks": [{"id": "b0"}]}
    assert c["operator"] == "ffn.dense_to_moe(block b3)" and c["provenance"] == {"b0": "c0000"}
    assert c["status"] == "queued" and c["rung"] == 0 and c["step"] == 0
    assert c["total_steps"] == 200 and c["metrics"] == {"params_total": 1000}
    assert c["checkpoint"] is None and c["error"] is None and c["device"] == "cuda:0"
    assert c["created"] == pytest.approx(time.time(), abs=60)

    time.sleep(0.01)
    store.update_candidate("c0001", status="running")
    store.update_candidate("c0001", status="done", rung=2, step=200,
                           checkpoint=store.run_dir / "ck" / "c0001.st",
                           metrics={"loss": 3.5, "params_total": 1000})
    c2 = store.candidate("c0001")
    assert c2.status == "done" and c2.rung == 2
    assert c2.checkpoint == str(store.run_dir / "ck" / "c0001.st")
    assert c2["metrics"] == {"loss": 3.5, "params_total": 1000}
    assert c2["updated"] > c["updated"] and c2["created"] == c["created"]

    add(store, "c0002", generation=2, spec_key="k2")
    add(store, "c0003", generation=2, status="failed")
    assert [x["id"] for x in store.candidates()] == ["c0001", "c0002", "c0003"]
    assert [x["id"] for x in store.candidates("done")] == ["c0001"]
    assert [x["id"] for x in store.candidates(["queued", "failed"])] == ["c0002", "c0003"]
    assert [x["id"] for x in store.candidates(generation=2)] == ["c0002", "c0003"]
    assert store.candidates(with_spec=False)[0].spec is None
    assert store.count_candidates() == 3 and store.count_candidates("failed") == 1
    assert store.status_counts()["done"] == 1 and store.status_counts()["running"] == 0
    assert store.find_spec_key("k2")["id"] == "c0002" and store.find_spec_key("nope") is None
    assert store.has_candidate("c0002") and not store.has_candidate("c9999")


def test_candidate_errors(store):
    add(store, "c0001")
    with pytest.raises(ValueError, match="c0001"):
        add(store, "c0001")
    with pytest.raises(ValueError, match="unknown candidate field"):
        store.update_candidate("c0001", colour="red")
    with pytest.raises(ValueError, match="status 'lost'"):
        store.update_candidate("c0001", status="lost")
    with pytest.raises(KeyError):
        store.update_candidate("c9999", status="done")
    with pytest.raises(KeyError):
        store.candidate("c9999")


def test_metrics_round_trip(store):
    add(store, "c0001")
    rows = [{"candidate": "c0001", "rung": 1, "step": i, "loss": 5.0 - i / 100, "lr": 1e-3,
             "tokens": 512 * i, "tokens_per_s": 1e4, "extra": {"grad_norm": 0.5}}
            for i in range(100)]
    rows.append({"candidate": "c0001", "rung": 1, "step": 99, "loss": 4.2, "kind": "eval"})
    assert store.add_metrics(rows) == 101
    assert store.add_metrics([]) == 0
    train = store.metrics_for("c0001", kind="train")
    assert [m["step"] for m in train] == list(range(100))
    assert train[3]["loss"] == pytest.approx(4.97) and train[3]["extra"] == {"grad_norm": 0.5}
    assert train[3]["tokens"] == 1536 and train[3]["kind"] == "train"
    assert [m["kind"] for m in store.metrics_for("c0001", kind="eval")] == ["eval"]
    assert len(store.metrics_for("c0001")) == 101 and store.metrics_for("c0002") == []
    later = store.metrics_for("c0001", since_id=train[49]["id"])
    assert later[0]["step"] == 50 and len(later) == 51
    assert store.latest_metrics("c0001")["step"] == 99
    assert store.latest_metrics("c0001", "eval")["loss"] == 4.2
    with pytest.raises(ValueError, match="unknown metric field"):
        store.add_metrics([{"candidate": "c0001", "step": 1, "los": 1.0}])
    with pytest.raises(ValueError, match="kind"):
        store.add_metrics([{"candidate": "c0001", "step": 1, "kind": "test"}])


def test_transaction_groups_and_rolls_back(store):
    with pytest.raises(RuntimeError), store.transaction():
        add(store, "c0001")
        store.add_event("mutation", "c0001 <- seed", "c0001")
        raise RuntimeError("boom")
    assert store.candidates() == [] and store.events() == []
    assert not store.log_path.exists()
    with store.transaction():
        add(store, "c0001")
        store.set_state("generation", 1)
    assert store.has_candidate("c0001") and store.get_state("generation") == 1


# -- events and run.log ----------------------------------------------------------------------

def test_events_and_run_log(store):
    add(store, "c0003")
    add(store, "c0007", parents=["c0003"])
    texts = [("mutation", "c0007 <- c0003: ffn.dense_to_moe(block b3)", "c0007"),
             ("promote", "to rung 2 (loss 3.91)", "c0003"),
             ("generation", "generation 1 done: 8 candidates", None),
             ("failure", "CUDA out of memory\nTraceback ...\n", "c0007")]
    for n, (kind, text, cid) in enumerate(texts, start=1):
        store.add_event(kind, text, cid)
        lines = store.log_path.read_text().splitlines()
        assert len(lines) == n  # flushed per event, one line each
        assert LOG_LINE.match(lines[-1]), lines[-1]
    lines = store.log_path.read_text().splitlines()
    assert lines[0].endswith("[mutation] c0007 <- c0003: ffn.dense_to_moe(block b3)")
    assert lines[1].endswith("[promote] c0003 to rung 2 (loss 3.91)")
    assert lines[2].endswith("[generation] generation 1 done: 8 candidates")
    assert lines[3].endswith("[failure] c0007 CUDA out of memory | Traceback ...")

    events = store.events()
    assert [e["kind"] for e in events] == [k for k, _, _ in texts]
    assert events[0]["candidate"] == "c0007" and events[2]["candidate"] is None
    assert events[0]["text"] == texts[0][1] and events[0]["time"] <= time.time()
    assert [e["id"] for e in store.events(since_id=events[1]["id"])] == [e["id"] for e in
                                                                      events[2:]]
    assert len(store.events(limit=2)) == 2
    assert [e["kind"] for e in store.events(candidate="c0007")] == ["mutation", "failure"]
    assert [e["id"] for e in store.recent_events(2)] == [events[2]["id"], events[3]["id"]]


def test_log_path_override(tmp_path):
    log = tmp_path / "elsewhere" / "mine.log"
    with RunStore.create(tmp_path / "run", "a: 1\n", {}, log_path=log) as s:
        s.add_event("note", "hello")
    assert log.read_text().endswith("[note] hello\n")
    assert not (tmp_path / "run" / "run.log").exists()
    with RunStore.open(tmp_path / "run", log_path=log) as s:
        s.add_event("note", "again")
    assert len(log.read_text().splitlines()) == 2


# -- commands --------------------------------------------------------------------------------

def test_commands_round_trip(store):
    add(store, "c0001")
    cid = store.request("c0001", "pause")
    kid = store.request("c0001", "kill")
    pending = store.pending_commands()
    assert [(c["id"], c["action"], c["status"]) for c in pending] == [
        (cid, "pause", "pending"), (kid, "kill", "pending")]
    assert store.wait_command(cid, timeout=0.05)["status"] == "pending"

    store.finish_command(cid, "done", "paused at step 40")
    store.finish_command(kid, "rejected", "c0001 is paused, not running")
    done = store.command(cid)
    assert done["status"] == "done" and done["outcome"] == "paused at step 40"
    assert done["done_time"] >= done["time"]
    assert store.wait_command(kid)["status"] == "rejected"
    assert store.pending_commands() == []
    assert [c["id"] for c in store.commands()] == [cid, kid]
    with pytest.raises(ValueError, match="not pending"):
        store.finish_command(cid, "done", "twice")
    with pytest.raises(ValueError):
        store.finish_command(kid, "pending", "")
    with pytest.raises(KeyError):
        store.command(999)


def test_request_validates(store):
    add(store, "c0001")
    with pytest.raises(UserError, match="unknown action 'stop'") as bad:
        store.request("c0001", "stop")
    assert bad.value.exit_code == 2
    with pytest.raises(UserError, match="no candidate 'c0042'") as missing:
        store.request("c0042", "kill")
    assert str(store.run_dir) in str(missing.value) and "\n" not in str(missing.value)
    assert store.commands() == []


CHILD_REQUEST = """
import sys
from evotui.engine.store import RunStore
store = RunStore.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
print(store.request("c0001", "pause"), flush=True)
"""


def test_second_process_inserts_command_while_store_is_open(store):
    add(store, "c0001", status="running")
    child = subprocess.Popen([sys.executable, "-c", CHILD_REQUEST, str(store.run_dir)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    with store.transaction():  # hold the write lock: the child must wait, not fail
        store.update_candidate("c0001", step=10)
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(0.3)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    command_id = int(out.strip())
    assert [(c["id"], c["candidate"], c["action"]) for c in store.pending_commands()] == [
        (command_id, "c0001", "pause")]
    store.finish_command(command_id, "done", "paused")
    with RunStore.open(store.run_dir, readonly=True) as reader:
        assert reader.command(command_id)["status"] == "done"


# -- opening ---------------------------------------------------------------------------------

def test_open_without_run_db_is_a_user_error(tmp_path):
    for where in (tmp_path / "empty", tmp_path / "missing"):
        where.parent.mkdir(exist_ok=True)
        if where.name == "empty":
            where.mkdir()
        with pytest.raises(UserError) as err:
            RunStore.open(where)
        text = err.value.render()
        assert err.value.exit_code == 2 and "\n" not in text
        assert str(where) in text and "run.db" in text


def test_open_rejects_a_file_that_is_not_a_database(tmp_path):
    (tmp_path / "run.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="run.db.*not an SQLite database"):
        RunStore.open(tmp_path, readonly=True)


def test_readonly_store_reads_live_and_refuses_writes(store):
    add(store, "c0001")
    with RunStore.open(store.run_dir, readonly=True) as reader:
        assert [c["id"] for c in reader.candidates()] == ["c0001"]
        add(store, "c0002")
        store.add_event("note", "later")
        assert reader.count_candidates() == 2 and reader.events()[-1]["text"] == "later"
        with pytest.raises(PermissionError):
            reader.set_state("x", 1)


def test_import_does_not_pull_torch():
    proc = python("import sys, evotui.engine.store, evotui.engine.exports; "
                  "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


CHILD_ABANDON = """
import os, sys
from evotui.engine.store import RunStore
store = RunStore.open(sys.argv[1])
for i in range(3):
    store.add_candidate(f"c{i:04d}", generation=0, spec={"i": i}, status="done",
                        metrics={"loss": 4.0 - i})
    store.add_metrics([{"candidate": f"c{i:04d}", "step": s, "loss": 1.0} for s in range(50)])
    store.add_event("done", f"c{i:04d} finished", f"c{i:04d}")
store.set_state("generation", 1)
with store.transaction():
    store.add_candidate("c0009", generation=1, spec={}, status="running")
    store.add_event("mutation", "never committed", "c0009")
    os._exit(0)
"""


def test_store_survives_abandoned_writer(store):
    proc = python(CHILD_ABANDON, str(store.run_dir))
    assert proc.returncode == 0, proc.stderr
    with RunStore.open(store.run_dir) as s:
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [c["id"] for c in s.candidates()] == ["c0000", "c0001", "c0002"]
        assert s.candidate("c0002")["metrics"] == {"loss": 2.0}
        assert len(s.metrics_for("c0001")) == 50 and len(s.events()) == 3
        assert s.get_state("generation") == 1
        add(s, "c0009")  # the run goes on
        assert s.count_candidates() == 4
    assert "never committed" not in store.log_path.read_text()


# -- exports ---------------------------------------------------------------------------------

OBJECTIVES = {"loss": "min", "throughput": "max"}


def populate(store: RunStore) -> None:
    rows = {  # id: (status, loss, throughput)
        "c0000": ("done", 3.0, 100.0),  # front
        "c0001": ("done", 2.0, 50.0),  # front
        "c0002": ("stopped", 3.5, 90.0),  # dominated by c0000
        "c0003": ("done", 1.5, 10.0),  # front
        "c0004": ("failed", 1.0, 1000.0),  # not finished
        "c0005": ("killed", 0.5, 2000.0),  # never on the front
        "c0006": ("done", None, 500.0),  # a missing objective
        "c0007": ("done", math.nan, 700.0),  # a diverged loss
    }
    for i, (cid, (status, loss, tput)) in enumerate(rows.items()):
        metrics = {"throughput": tput} | ({} if loss is None else {"loss": loss})
        add(store, cid, generation=i // 4, parents=[f"c{i - 1:04d}"] if i else [],
            operator="attn.widen" if i else "seed", status=status, rung=2,
            checkpoint=f"checkpoints/{cid}.safetensors", metrics=metrics)


def test_frontier_is_the_non_dominated_finished_set(store, tmp_path):
    populate(store)
    path = tmp_path / "out" / "frontier.json"
    assert exports.write_frontier(store, path, OBJECTIVES) == ["c0003", "c0001", "c0000"]
    doc = strict_json(path.read_text())
    assert doc["objectives"] == OBJECTIVES and doc["count"] == 3
    first = doc["frontier"][0]
    assert first["id"] == "c0003" and first["objectives"] == {"loss": 1.5, "throughput": 10.0}
    assert first["parents"] == ["c0002"] and first["rung"] == 2 and first["status"] == "done"
    assert first["checkpoint"] == str(store.run_dir / "checkpoints" / "c0003.safetensors")
    assert first["spec"] == {"id": "c0003"} and first["metrics"]["loss"] == 1.5

    given = exports.write_frontier(store, path, OBJECTIVES, ["c0000", "c0001", "c0404"])
    assert given == ["c0001", "c0000"]
    assert [e["id"] for e in strict_json(path.read_text())["frontier"]] == given
    assert pareto.dominates_costs([1, 1], [1, 2]) and not pareto.dominates_costs([1, 1], [1, 1])
    assert pareto.non_dominated({"a": [1, 2], "b": [2, 1], "c": [2, 2]}) == ["a", "b"]


def test_lineage_lists_every_candidate(store, tmp_path):
    populate(store)
    path = tmp_path / "lineage.json"
    assert exports.write_lineage(store, path) == 8
    doc = strict_json(path.read_text())
    nodes = {n["id"]: n for n in doc["candidates"]}
    assert len(nodes) == 8 and nodes["c0005"]["status"] == "killed"
    assert nodes["c0005"]["parents"] == ["c0004"] and nodes["c0005"]["operator"] == "attn.widen"
    assert nodes["c0005"]["generation"] == 1 and nodes["c0000"]["parents"] == []


def test_exports_are_atomic_under_a_concurrent_reader(store):
    path = store.run_dir / "frontier.json"
    exports.write_frontier(store, path, OBJECTIVES)
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                strict_json(path.read_text())
                reads += 1
            except Exception as exc:  # a partial file would land here
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(120):
            add(store, f"c{i:04d}", status="done", spec={"pad": "x" * 2000},
                metrics={"loss": 1.0 + i / 10, "throughput": float(i)})  # all on the front
            exports.write_frontier(store, path, OBJECTIVES)
            exports.write_lineage(store, store.run_dir / "lineage.json")
    finally:
        stop.set()
        thread.join()
    assert failures == [] and reads > 0
    assert len(strict_json(path.read_text())["frontier"]) == 120
    leftovers = [p.name for p in store.run_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_summary(store):
    populate(store)
    add(store, "c0100", generation=2, status="running", rung=1, step=40, total_steps=200,
        device="cuda:0")
    store.add_metrics([{"candidate": "c0100", "rung": 1, "step": s, "loss": 4.0 - s / 100,
                        "tokens_per_s": 1000.0 + s} for s in range(41)])
    store.set_state("engine", json.dumps({"generation": 2, "rng": [1]}))
    store.request("c0100", "pause")
    s = exports.summary(store, OBJECTIVES)
    strict_json(json.dumps(s, allow_nan=False))
    assert s["run"] == "demo" and s["config"] == "demo.yaml" and s["generation"] == 2
    assert s["counts"]["done"] == 5 and s["counts"]["running"] == 1 and s["total"] == 9
    assert s["running"] == [{"id": "c0100", "rung": 1, "step": 40, "total_steps": 200,
                             "loss": pytest.approx(3.6), "tokens_per_s": 1040.0,
                             "device": "cuda:0"}]
    assert s["best"]["loss"] == {"id": "c0003", "value": 1.5, "direction": "min"}
    assert s["best"]["throughput"]["id"] == "c0007"
    assert [(c["candidate"], c["action"]) for c in s["pending_commands"]] == [("c0100", "pause")]
    assert s["started"] <= s["updated"] <= time.time()

    store.set_state("objectives", {"loss": "min"})
    assert list(exports.summary(store)["best"]) == ["loss"]


def test_summary_of_a_fresh_run(tmp_path):
    with RunStore.create(tmp_path / "fresh", "a: 1\n", {}) as s:
        out = exports.summary(s)
    assert out["run"] == "fresh" and out["generation"] is None and out["total"] == 0
    assert out["best"] == {"loss": None} and out["running"] == []
    assert out["config"] == str(tmp_path / "fresh" / "config.yaml")
    assert out["updated"] == out["started"]



# -- the lifecycle, paths and the engine's state ---------------------------------------------

def test_a_status_change_the_lifecycle_forbids_is_refused_naming_from_and_to(store):
    from evotui.lifecycle import Status, TransitionError

    add(store, "c0001")
    with pytest.raises(TransitionError, match="c0001: cannot move from queued to done"):
        store.update_candidate("c0001", status="done")
    assert store.candidate("c0001").status == Status.QUEUED  # nothing written
    for status in ("running", "done", "queued", "running", "stopped"):
        assert store.update_candidate("c0001", status=status).status == status
    with pytest.raises(TransitionError, match="from stopped to running"):
        store.update_candidate("c0001", status="running")


def test_candidates_are_frozen_typed_records(store):
    import dataclasses

    from evotui.lifecycle import Status

    add(store, "c0001", parents=["c0000"], metrics={"loss": 2.0})
    c = store.candidate("c0001")
    assert c.status is Status.QUEUED and c.parents == ["c0000"] and c.metrics == {"loss": 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.status = Status.DONE  # type: ignore[misc]
    data = c.to_dict()
    assert data["status"] == "queued" and json.loads(json.dumps(data))["id"] == "c0001"


def test_checkpoint_paths_inside_the_run_are_relative_so_a_moved_run_is_whole(store, tmp_path):
    import shutil

    add(store, "c0001")
    add(store, "c0002")
    inside = store.run_dir / "checkpoints" / "c0001.safetensors"
    outside = tmp_path / "elsewhere" / "c0002.safetensors"
    store.update_candidate("c0001", checkpoint=inside)
    store.update_candidate("c0002", checkpoint=str(outside))
    raw = dict(store._conn.execute("SELECT id, checkpoint FROM candidates").fetchall())
    assert raw == {"c0001": "checkpoints/c0001.safetensors", "c0002": str(outside)}
    store.close()
    moved = tmp_path / "moved"
    shutil.copytree(store.run_dir, moved)
    with RunStore.open(moved, readonly=True) as copy:
        assert copy.candidate("c0001").checkpoint == str(moved / "checkpoints" /
                                                         "c0001.safetensors")
        assert copy.candidate("c0002").checkpoint == str(outside)


def test_the_engine_state_and_its_heartbeat(store):
    import os

    assert store.engine_state() is None
    store.set_engine_state()  # a heartbeat before any state writes nothing
    assert store.engine_state() is None
    store.set_engine_state("running")
    first = store.engine_state()
    assert first.state == "running" and first.pid == os.getpid() and first.alive()
    time.sleep(0.01)
    store.set_engine_state()  # the heartbeat: same state, same since, newer beat
    beat = store.engine_state()
    assert (beat.state, beat.since) == ("running", first.since)
    assert beat.heartbeat > first.heartbeat
    assert not beat.alive(now=beat.heartbeat + 60)  # a stale heartbeat: the engine is gone
    store.set_engine_state("stopped")
    assert store.engine_state().state == "stopped" and not store.engine_state().alive()
    with pytest.raises(ValueError, match="engine state 'lost'"):
        store.set_engine_state("lost")
