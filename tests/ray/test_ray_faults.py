"""The Ray executor's faults on a real local Ray cluster: a node that leaves the cluster fails
its candidate as ``node lost``; actors' scratch directories do not outlive them; an FSDP
candidate is refused with a reason."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ray.test_ray_executor import LONG, drive, job, shut, terminal

ray_executor = pytest.importorskip("evotui.engine.ray_executor")
from evotui.engine import ray_actor  # noqa: E402


def test_a_new_actor_removes_the_scratch_of_dead_ones(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f"{ray_actor.SCRATCH}{dead.pid}-abc"
    (left / "c1").mkdir(parents=True)
    (left / "c1" / "in0-p.safetensors").write_bytes(b"x")
    mine = tmp_path / f"{ray_actor.SCRATCH}{os.getpid()}-def"
    mine.mkdir()
    other = tmp_path / f"evotui-ray-{dead.pid}"  # not an actor's (the test cluster's kind)
    other.mkdir()
    assert ray_actor.sweep(tmp_path) == [left]
    assert not left.exists() and mine.is_dir() and other.is_dir()


def test_ray_errors_map_to_node_lost_or_actor_died():
    """Ray's own error for an actor whose node died (as its GCS words it) is 'node lost'; a
    dead worker process on a live node is not; a raylet that does not answer is."""
    from ray.core.generated.common_pb2 import NodeDeathInfo
    from ray.exceptions import ActorDiedError, ActorDiedErrorContext

    def died(message: str, **kw) -> ActorDiedError:
        return ActorDiedError(ActorDiedErrorContext(
            error_message=message, actor_id=os.urandom(16), class_name="SlotActor", **kw))

    node = died("The actor died because its node has died. Node Id: ab12",
                node_death_info=NodeDeathInfo(reason=NodeDeathInfo.UNEXPECTED_TERMINATION))
    assert ray_executor.node_lost(None, node)
    assert not ray_executor.node_lost(None, died("The actor is dead because its worker "
                                                  "process has died."))
    port = _free_port()  # nothing listens there
    assert not ray_executor.answers("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert ray_executor.answers("127.0.0.1", s.getsockname()[1])


def fsdp(config: dict, shards: int) -> dict:
    data = copy.deepcopy(config)
    data["train"].update(parallel="fsdp", shards=shards)
    return data


def test_an_fsdp_candidate_no_node_can_hold_fails_with_a_reason(ray_cluster, config,
                                                                token_cache, tmp_path):
    ex = ray_executor.RayExecutor(["cpu", "cpu"])
    try:
        (failed,) = drive(ex, [job(fsdp(config, 4), token_cache, tmp_path, "w", 3)])["w"]
        assert failed["kind"] == "failed"
        assert failed["reason"].startswith("train.shards 4 needs 4 cpu slots of one node; "
                                           "this executor has 2")
        assert ex.running() == []
    finally:
        shut(ex)


@pytest.mark.slow  # two actors train one candidate, then one of them is killed
@pytest.mark.parametrize("mode", ["shared", "copy"])
def test_an_fsdp_candidate_trains_on_two_actors_of_one_node(ray_cluster, config, token_cache,
                                                            tmp_path, mode):
    """Two CPU slots of one node: a 2-shard candidate takes both, its checkpoint loads
    unsharded (written where the engine reads it, or copied home from rank 0 alone); then the
    actor of rank 1 is SIGKILLed mid-candidate: the candidate fails naming the rank, and both
    slots come back."""
    from evotui.data import prepare
    from evotui.dsl import RunConfig, parse
    from evotui.train import checkpoint as ckpt
    from evotui.train.trainer import CandidateTrainer

    ex = ray_executor.RayExecutor(["cpu", "cpu"], checkpoints=mode)
    data = fsdp(config, 2)

    def both_free():
        deadline = time.monotonic() + 120
        while ex.free_slots() != ["cpu", "cpu"]:
            assert time.monotonic() < deadline, ex.free_slots()
            time.sleep(0.2)

    def rank_1_dies(ex, cid, event):
        if event["kind"] == "step" and event["step"] == 2:
            (helper,) = [s for s in ex._slots if s.rank == 1]
            os.kill(helper.info["pid"], signal.SIGKILL)

    try:
        both_free()
        events = drive(ex, [job(data, token_cache, tmp_path, "s", 3)], timeout=300)["s"]
        result = terminal(events)
        assert (result["kind"], result["status"], result["step"]) == ("result", "done", 3)
        assert any(e["kind"] == "log" and e["text"].startswith("fsdp: training on 2 cpu")
                   for e in events)
        assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3]
        cfg = parse(data, RunConfig)
        trainer = CandidateTrainer(cfg, prepare(cfg, token_cache), seed=7)
        meta = ckpt.load(result["checkpoint"], trainer.model, trainer.optimizer)
        assert (meta["step"], meta["shards"]) == (3, 2)
        assert trainer.measure()["loss"] == pytest.approx(result["metrics"]["loss"], rel=1e-4)
        if mode == "copy":
            return  # the kill below is the same in either mode

        both_free()
        events = drive(ex, [job(data, token_cache, tmp_path, "k", LONG)], rank_1_dies,
                       timeout=300)["k"]
        failed = terminal(events)
        assert (failed["kind"], failed["reason"]) == ("failed", "FSDP rank 1: actor died")
        both_free()  # two new actors
    finally:
        shut(ex)


@pytest.mark.slow
def test_a_killed_actor_leaves_no_scratch_directory(ray_cluster, config, token_cache,
                                                    tmp_path):
    """SIGKILL the actor mid-candidate: its scratch directory is removed by the actor that
    replaces it; at shutdown the executor's actors remove theirs."""
    ex = ray_executor.RayExecutor(["cpu"], checkpoints="copy")
    first: dict = {}

    def react(ex, cid, event):
        if event["kind"] == "step" and event["step"] == 2:
            first.update(ex._slots[0].info)
            assert Path(first["scratch"]).is_dir()
            os.kill(first["pid"], signal.SIGKILL)

    try:
        failed = terminal(drive(ex, [job(config, token_cache, tmp_path, "v", LONG)], react)["v"])
        assert (failed["kind"], failed["reason"]) == ("failed", "actor died")
        done = terminal(drive(ex, [job(config, token_cache, tmp_path, "n", 1)])["n"])
        assert done["status"] == "done"
        assert not Path(first["scratch"]).exists()  # the new actor swept it
        second = ex._slots[0].info["scratch"]
        assert second != first["scratch"] and Path(second).is_dir()
    finally:
        shut(ex)
    assert not Path(second).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def extra_node(ray_cluster, tmp_path):
    """A second Ray node (one CPU) that the test can take away: (its process, its node id)."""
    import ray

    before = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    node_id = None
    ports = [f"--{name}={_free_port()}" for name in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")]
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        node = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", f"--address={ray_cluster}",
             "--block", "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
             *ports], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "RAY_ACCEPT_CLUSTER_DEFAULTS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (added := {n["NodeID"] for n in ray.nodes() if n.get("Alive")} - before):
            if node.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second node did not join: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        node_id = added.pop()
        yield node, node_id
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(30)
        deadline = time.monotonic() + 120  # gone from the cluster before the next test
        while any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes()):
            if time.monotonic() > deadline:
                break
            time.sleep(1)


@ray_executor.ray.remote(num_cpus=2)
class _Hog:
    """Holds the head's two CPUs, so the slot's actor can only go to the second node."""

    def ready(self) -> bool:
        return True


@pytest.mark.slow
def test_a_lost_node_fails_its_candidate_as_node_lost(ray_cluster, extra_node, config,
                                                      token_cache, tmp_path):
    import ray

    node, node_id = extra_node
    hog = _Hog.remote()
    ray.get(hog.ready.remote(), timeout=120)
    ex = ray_executor.RayExecutor(["cpu"])
    where: dict = {}

    def react(ex, cid, event):
        if event["kind"] == "step" and event["step"] == 2 and not where:
            where.update(ex._slots[0].info)
            os.killpg(node.pid, signal.SIGKILL)  # the whole node: raylet, workers, all

    try:
        seen = drive(ex, [job(config, token_cache, tmp_path, "lost", LONG)], react,
                     timeout=300)
        failed = terminal(seen["lost"])
        assert where["node"] == node_id  # it ran on the node that went away
        assert (failed["kind"], failed["reason"]) == ("failed", "node lost"), failed
        assert ex.running() == []
    finally:
        ray.kill(hog)
        shut(ex)
