"""Getting onto a Ray cluster for the Ray executor: connecting, the cluster's slots, whether
every node reads the checkpoint directory, and ``open_ray`` (the executor of ``evotui run|tui
--executor ray``, with what it chose written to ``run.log``)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError

MODES = ("auto", "shared", "copy")


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray: ``address`` (``auto``, ``HOST:PORT``) or, without one, a
    Ray instance started here. True when this call connected (so it disconnects later)."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ACCEPT_CLUSTER_DEFAULTS", "1")
    ray.init(address=address, num_cpus=num_cpus if address is None else None,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def cluster_slots(device: str, cpu_slots: int = 1) -> list[str]:
    """The slots on the cluster: a ``cuda`` slot per GPU for ``cuda`` (and ``auto`` on a cluster
    with GPUs), else ``cpu_slots`` CPU slots."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device == "cuda" and not gpus:
        raise ValueError("the Ray cluster has no GPU; use --device cpu")
    if device in ("cuda", "auto") and gpus:
        return ["cuda"] * gpus
    return ["cpu"] * max(1, cpu_slots)


def checkpoint_mode(directory: Path, mode: str = "auto") -> tuple[str, str]:
    """(``shared`` | ``copy``, why): whether every alive node reads ``directory``."""
    if mode not in MODES:
        raise ValueError(f"unknown checkpoint mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode, "chosen"
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = directory / f".evotui-probe-{token}"
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        reads = [_reads.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(probe), token) for n in nodes]
        blind = [n.get("NodeManagerAddress", n["NodeID"])
                 for n, ok in zip(nodes, ray.get(reads), strict=True) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        return "copy", f"{', '.join(blind)} cannot read {directory}"
    return "shared", f"all {len(nodes)} node(s) read {directory}"


def open_ray(flags: Any, store: Any, checkpoint_dir: Path) -> Any:
    """The Ray executor of ``evotui run|tui --executor ray`` (``flags``: the run flags): on the
    cluster at ``--ray-address`` (a resumed run's own, else a Ray started here), its slots, and
    the checkpoint mode, written to ``run.log``. Remembered in the store for ``--resume``."""
    from evotui.engine.local import cpu_cores
    from evotui.engine.ray_executor import RayExecutor
    from evotui.errors import UserError

    stored = store.get_state("executor") or {}
    address = getattr(flags, "ray_address", None) or stored.get("address")
    wanted = getattr(flags, "ray_checkpoints", None) or stored.get("checkpoints") or "auto"
    if getattr(flags, "devices", None):
        raise UserError.single("names GPUs of this machine; with --executor ray the slots are "
                               "the cluster's GPUs (or --cpu-slots with --device cpu)",
                               path="--devices")
    threads = flags.cpu_threads or 1
    try:
        owns = connect(address, num_cpus=max(cpu_cores(), flags.cpu_slots * threads))
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError.single(f"cannot reach a Ray cluster at {address}: {_line(e)}; start "
                               "one with `ray start --head` or fix the address",
                               path="--ray-address") from None
    try:
        slots = cluster_slots(flags.device, flags.cpu_slots)
        mode, why = checkpoint_mode(checkpoint_dir, wanted)
    except ValueError as e:
        raise UserError.single(str(e), path="--device") from None
    cpus = ray.cluster_resources().get("CPU", 0)
    if slots[0] == "cpu" and len(slots) * threads > cpus:
        raise UserError.single(f"{len(slots)} CPU slot(s) of {threads} CPU(s) need more than "
                               f"the cluster's {cpus:g} CPUs; use fewer --cpu-slots",
                               path="--cpu-slots")
    executor = RayExecutor(slots, cpu_threads=threads, checkpoints=mode)
    executor._owns_ray = owns
    store.set_state("executor", {"kind": "ray", "address": address, "checkpoints": wanted})
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    store.add_event("run", f"executor: ray ({address or 'a local Ray started here'}, {nodes} "
                    f"node(s)), {len(slots)} {slots[0]} slot(s); checkpoints: "
                    f"{'shared filesystem' if mode == 'shared' else 'copied through the head'}"
                    f" ({why})")
    return executor


def _line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


@ray.remote(num_cpus=0)
def _reads(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def node_lost(node: str | None, error: BaseException) -> bool:
    """Whether an actor died with its node: Ray says so, the node is no longer alive, or its
    raylet does not answer (Ray reports the actor's death seconds before its health checks
    declare the node dead)."""
    text = str(error).lower()
    if "its node" in text or "node has died" in text or getattr(error, "preempted", False):
        return True
    if node is None:
        return False
    try:
        entry = next((n for n in ray.nodes() if n["NodeID"] == node), None)
    except (GetTimeoutError, RuntimeError):
        return False
    if entry is None or not entry.get("Alive"):
        return True
    return not answers(entry.get("NodeManagerAddress"), entry.get("NodeManagerPort"))


def answers(host: str | None, port: int | None, timeout: float = 2.0) -> bool:
    """Whether something accepts a connection at host:port (a node's raylet)."""
    if not host or not port:
        return True  # nothing to ask: no verdict against the node
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False
