"""The Ray executor's slots as data, and the choice of slots for FSDP jobs: plain Python (no
Ray calls), so the choice reads top to bottom and is tested without a cluster.

A waiting FSDP job (:class:`Waiting`) holds every idle slot of its kind (``cpu`` / ``cuda``)
that frees up, the oldest waiting job first and taking those of younger ones, until one node
has k of them (:func:`hold`); it starts there and lets the rest go. A job no node can ever hold
is refused with a reason (:func:`refusal`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from evotui.engine.jobs import Job


@dataclass
class Slot:
    label: str  # "cpu" or "cuda": what the engine sees
    actor: Any = None
    info: dict[str, Any] | None = None  # pid, node, ip once the actor is placed
    ready_ref: Any = None  # pending info() of a new actor
    job: Job | None = None
    run_ref: Any = None
    drain_ref: Any = None
    last_seen: float = 0.0
    cause: str | None = None  # why the executor is ending the job, if it is
    deadline: float | None = None  # when to end an actor that did not obey a kill
    warming: Any = None
    retry_at: float | None = None  # when to place an actor whose creation failed again
    rank: int = 0  # the FSDP rank its job runs here (0: the one whose events go out)
    held_by: str | None = None  # a waiting FSDP candidate that holds this idle slot


@dataclass
class Waiting:
    job: Job
    blobs: dict[str, Any] | None
    paused: bool = False  # a pause asked while it waits: it pauses when it starts


def idle(slot: Slot) -> bool:
    """Placed, running nothing, held by no waiting job: free to the engine."""
    return slot.job is None and slot.info is not None and slot.held_by is None


def refusal(job: Job, slots: list[Slot]) -> str | None:
    """Why no node of the cluster can ever give ``job`` its ``shards`` slots; None if one may."""
    mine = [s for s in slots if s.label == job.device]
    most = max(Counter(s.info["node"] for s in mine if s.info is not None).values(), default=0)
    need = f"train.shards {job.shards} needs {job.shards} {job.device} slots of one node"
    if job.shards > len(mine):
        return f"{need}; this executor has {len(mine)} (more slots, or lower train.shards)"
    if all(s.info is not None for s in mine) and most < job.shards:
        return (f"{need}; the most this Ray cluster has on one node is {most} (add a node with "
                "more, or lower train.shards)")
    return None


def release(slots: list[Slot], candidate_id: str) -> None:
    for s in slots:
        if s.held_by == candidate_id:
            s.held_by = None


def hold(slots: list[Slot], waiting: list[Waiting]) -> list[tuple[Waiting, list[Slot]]]:
    """Each waiting job, oldest first, holds every idle slot of its kind (and those younger
    waiting jobs hold); the jobs that now have k on one node, with those k (rank 0 first)."""
    ready = []
    for i, w in enumerate(waiting):
        younger = {x.job.candidate_id for x in waiting[i + 1:]}
        cid = w.job.candidate_id
        by_node: dict[str, list[Slot]] = {}
        for s in slots:
            if (s.label == w.job.device and s.job is None and s.info is not None
                    and (s.held_by is None or s.held_by in younger or s.held_by == cid)):
                s.held_by = cid
                by_node.setdefault(s.info["node"], []).append(s)
        ranks = next((held for held in by_node.values() if len(held) >= w.job.shards), None)
        if ranks is not None:
            ready.append((w, ranks[:w.job.shards]))
    return ready
