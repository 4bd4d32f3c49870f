"""How the Ray executor chooses slots for FSDP jobs (evotui.engine.ray_slots, no cluster): k
slots of one node, the oldest waiting job first, and a reason when no node can hold k."""

from __future__ import annotations

from evotui.engine.jobs import Job
from evotui.engine.ray_slots import Slot, Waiting, hold, idle, refusal, release


def slot(node: str | None, label: str = "cuda", busy: bool = False) -> Slot:
    s = Slot(label, info=None if node is None else {"node": node, "pid": 1, "ip": "10.0.0.1"})
    if busy:
        s.job = job("busy", 1)
    return s


def job(cid: str, shards: int, device: str = "cuda") -> Job:
    return Job(candidate_id=cid, config={}, until_step=1, total_steps=1, rung=1, seed=0,
               checkpoint_path=f"/tmp/{cid}", device=device, shards=shards)


def test_a_job_starts_on_k_slots_of_one_node():
    slots = [slot("a"), slot("b"), slot("b", busy=True), slot("b")]
    waiting = [Waiting(job("w", 2), None)]
    ((w, ranks),) = hold(slots, waiting)
    assert w is waiting[0] and ranks == [slots[1], slots[3]]  # node b's two idle slots
    assert slots[0].held_by == "w" and not idle(slots[0])  # held until the job starts
    release(slots, "w")
    assert idle(slots[0])


def test_a_waiting_job_holds_what_frees_up_before_a_younger_one():
    slots = [slot("a"), slot("a", busy=True), slot("a", busy=True)]
    old, young = Waiting(job("old", 2), None), Waiting(job("young", 2), None)
    assert hold(slots, [old, young]) == []
    assert slots[0].held_by == "old"
    slots[1].job = None  # a job ends: its slot goes to the older waiting job
    assert hold(slots, [old, young]) == [(old, [slots[0], slots[1]])]
    assert slots[2].held_by is None  # still busy: nobody holds it
    assert all(s.held_by != "young" for s in slots)


def test_other_kinds_and_unplaced_actors_are_not_taken():
    slots = [slot("a", label="cpu"), slot(None), slot("a")]
    assert hold(slots, [Waiting(job("w", 2), None)]) == []
    assert [s.held_by for s in slots] == [None, None, "w"]


def test_a_job_no_node_can_hold_is_refused_with_a_reason():
    slots = [slot("a"), slot("b")]
    assert refusal(job("w", 2), slots) == (
        "train.shards 2 needs 2 cuda slots of one node; the most this Ray cluster has on one "
        "node is 1 (add a node with more, or lower train.shards)")
    assert refusal(job("w", 4), slots).endswith("this executor has 2 (more slots, or lower "
                                                 "train.shards)")
    assert refusal(job("w", 2), [slot("a"), slot(None)]) is None  # Ray may place it on a
    assert refusal(job("w", 2), [slot("a"), slot("a")]) is None


def test_a_waiting_job_fails_once_no_node_can_ever_hold_it():
    import pytest

    pytest.importorskip("ray")
    from evotui.engine.ray_executor import RayExecutor

    ex = RayExecutor.__new__(RayExecutor)  # its slot bookkeeping only: no cluster
    ex._slots, ex._waiting, sent = [slot("a"), slot(None)], [], []
    ex._emit = lambda cid, event: sent.append((cid, event))
    w = Waiting(job("w", 2), None)
    ex._waiting.append(w)
    ex._grant()  # the second actor is not placed yet: it may land beside the first
    assert ex._waiting == [w] and not sent and ex._slots[0].held_by == "w"
    ex._slots[1].info = {"node": "b", "pid": 2, "ip": "10.0.0.2"}  # placed on another node
    ex._grant()
    assert ex._waiting == [] and [cid for cid, _ in sent] == ["w"]
    assert sent[0][1]["kind"] == "failed" and "on one node is 1" in sent[0][1]["reason"]
    assert all(s.held_by is None for s in ex._slots)  # what it held is free again
