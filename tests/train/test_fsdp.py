"""FSDP2 on CPU with gloo over two processes: the tiny candidate trained sharded matches the
same candidate trained unsharded, and its checkpoint is one ordinary file that loads unsharded."""

from __future__ import annotations

import multiprocessing
import socket

import pytest
import torch

from evotui.dsl import load
from tests.conftest import ROOT

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

STEPS = 3
pytestmark = pytest.mark.slow  # two spawned ranks import torch and train: a minute and more


def tiny():
    cfg = load(ROOT / "configs" / "tiny.yaml")
    cfg.train.eval_batches = 1
    cfg.train.passkey_eval_batches = 1
    cfg.train.log_interval = 1
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_rank(rank: int, world: int, master: str, path: str, cache: str, out) -> None:
    """A spawned rank: train the tiny candidate sharded; report its losses and result."""
    torch.set_num_threads(1)
    from evotui.data import prepare
    from evotui.train.fsdp import train_rank

    cfg = tiny()
    losses: list[float] = []
    try:
        result = train_rank(rank, world, cfg, prepare(cfg, cache), until_step=STEPS,
                            total_steps=STEPS, seed=7, checkpoint_path=path, master=master,
                            callback=lambda e: losses.append(e["loss"])
                            if e["kind"] == "step" else None)
        out.put((rank, losses, str(result.status), result.metrics, result.checkpoint))
    except Exception as e:  # noqa: BLE001 - reported to the test
        out.put((rank, repr(e), None, None, None))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, token_cache):
    path = tmp_path_factory.mktemp("fsdp") / "c.safetensors"
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    master = f"127.0.0.1:{_free_port()}"
    procs = [ctx.Process(target=one_rank, args=(r, 2, master, str(path), str(token_cache), out))
             for r in range(2)]
    for p in procs:
        p.start()
    got = dict((item[0], item[1:]) for item in (out.get(timeout=240) for _ in procs))
    for p in procs:
        p.join(30)
    return path, got


def test_sharded_training_matches_unsharded(sharded, token_cache):
    from evotui.data import prepare
    from evotui.train.trainer import CandidateTrainer

    path, got = sharded
    losses, status, metrics, checkpoint = got[0]
    assert status.endswith("done"), losses
    assert got[1][0] == []  # rank 1 reports nothing and measures alike
    assert got[1][2]["loss"] == metrics["loss"] and got[1][2]["ppl"] == metrics["ppl"]
    torch.set_num_threads(1)
    cfg = tiny()
    steps: list[float] = []
    whole = CandidateTrainer(cfg, prepare(cfg, token_cache), seed=7,
                             callback=lambda e: steps.append(e["loss"])
                             if e["kind"] == "step" else None)
    result = whole.run(STEPS, STEPS)
    assert len(losses) == STEPS
    # the same step on the same rows; MoE balance terms are per rank, hence a tolerance
    assert losses == pytest.approx(steps, rel=2e-3)
    assert losses[-1] < losses[0]
    assert metrics["loss"] == pytest.approx(result.metrics["loss"], rel=2e-3)
    assert checkpoint == str(path)


def test_the_sharded_checkpoint_loads_unsharded(sharded, token_cache):
    from evotui.data import prepare
    from evotui.train import checkpoint as ckpt
    from evotui.train.trainer import CandidateTrainer

    path, got = sharded
    metrics = got[0][2]
    cfg = tiny()
    trainer = CandidateTrainer(cfg, prepare(cfg, token_cache), seed=7)
    meta = ckpt.load(path, trainer.model, trainer.optimizer)  # weights and optimizer state
    assert (meta["step"], meta["shards"]) == (STEPS, 2)
    assert trainer.optimizer.state  # the gathered moments came with it
    trainer.step = STEPS
    assert trainer.measure()["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
