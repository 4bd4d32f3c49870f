"""The candidate trainer on the embedded default: loss falls, resume is exact, guards fire,
pause and kill obey, weights are inherited, metrics are measured."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from evotui.dsl import load, loads, to_data
from evotui.train import checkpoint as ckpt
from evotui.train.trainer import CandidateTrainer
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def cache_dir(token_cache):
    return token_cache  # tiny's corpus, tokenised once for the session


@pytest.fixture(scope="session")
def tiny_cfg():
    cfg = load(TINY)
    cfg.train.eval_batches = 2
    cfg.train.passkey_eval_batches = 1
    return cfg


@pytest.fixture(scope="session")
def dataset(tiny_cfg, cache_dir):
    from evotui.data import prepare

    return prepare(tiny_cfg, cache_dir=cache_dir)


def variant(cfg, **train):
    data = to_data(cfg)
    data["train"].update(train)
    return loads(yaml.safe_dump(data))


def test_loss_falls_on_tiny(tiny_cfg, dataset, tmp_path):
    trainer = CandidateTrainer(tiny_cfg, dataset, checkpoint_path=tmp_path / "c.safetensors")
    before = trainer.heldout_losses()
    result = trainer.run(40, total_steps=40)
    assert result.status == "done", result
    after = trainer.heldout_losses()
    for tag in before:
        assert after[tag] < before[tag] - 0.3, (tag, before[tag], after[tag])
    m = result.metrics
    for key in ("ppl_code", "ppl_text", "ppl_math", "loss", "throughput", "peak_mem_mb",
                "params_total", "flops_per_token", "passkey_acc", "passkey_loss",
                "loss@loops1", "loss@loops2", "loss@loops4", "router_entropy"):
        assert key in m, key
    assert m["ppl_code"] == pytest.approx(math.exp(m["loss_code"]))
    assert m["throughput"] > 0 and m["peak_mem_mb"] > 0
    assert result.curve[-1]["step"] == 40 and result.checkpoint
    assert ckpt.read_meta(result.checkpoint)["step"] == 40


def test_resume_reproduces_the_next_step(tiny_cfg, dataset, tmp_path):
    straight = CandidateTrainer(tiny_cfg, dataset)
    for _ in range(6):
        straight.train_step(total_steps=20)
    expected, _ = straight.train_step(total_steps=20)

    first = CandidateTrainer(tiny_cfg, dataset, checkpoint_path=tmp_path / "r.safetensors")
    first.run(6, total_steps=20, measure=False)
    second = CandidateTrainer(tiny_cfg, dataset, seed=999)  # its own init is overwritten
    second.seed = first.seed
    second.resume(tmp_path / "r.safetensors")
    assert second.step == 6
    got, _ = second.train_step(total_steps=20)
    assert got == pytest.approx(expected, abs=1e-6)


def test_candidates_with_other_seeds_see_other_batches(dataset):
    a = dataset.train_batch(0, 1, 4, 128)[0]
    b = dataset.train_batch(0, 2, 4, 128)[0]
    assert not torch.equal(a, b)


@pytest.mark.parametrize("train,reason,status", [
    ({"instability_threshold": 1e-6}, "grad_instability", "stopped"),
    ({"entropy_threshold": 100.0, "entropy_patience": 1, "log_interval": 1}, "router_collapse",
     "stopped"),
    ({"no_improve_patience": 2, "improvement_tolerance": 0.9}, "no_improvement", "stopped"),
    ({"ppl_stop_threshold": 1.0}, "ppl_gate", "stopped"),
    ({"lr": 1e12, "clip": 0.0}, "nonfinite", "failed"),
])
def test_each_guard_fires(tiny_cfg, dataset, train, reason, status):
    cfg = variant(tiny_cfg, **train)
    result = CandidateTrainer(cfg, dataset).run(12, total_steps=12)
    assert (result.status, result.stop_reason) == (status, reason)
    if reason == "nonfinite":
        assert result.telemetry["nan_seen"] and not result.metrics
    else:
        assert result.telemetry["max_grad_norm"] > 0


def test_pause_checkpoints_and_kill_stops(tiny_cfg, dataset, tmp_path):
    answers = iter([None, None, "pause"])
    t = CandidateTrainer(tiny_cfg, dataset, checkpoint_path=tmp_path / "p.safetensors",
                         control=lambda: next(answers))
    result = t.run(10)
    assert result.status == "paused" and result.step == 2
    assert ckpt.read_meta(result.checkpoint)["step"] == 2
    killed = CandidateTrainer(tiny_cfg, dataset, control=lambda: "kill").run(10)
    assert killed.status == "killed" and killed.step == 0 and killed.checkpoint is None


def test_inherit_copies_matching_tensors(tiny_cfg, dataset):
    parent = CandidateTrainer(tiny_cfg, dataset, seed=1)
    data = to_data(tiny_cfg)
    data["model"]["blocks"][6]["ffn"]["hidden"] = 384  # one resized tensor group
    child_cfg = loads(yaml.safe_dump(data))
    child = CandidateTrainer(child_cfg, dataset, seed=2)
    inherited, fresh = child.inherit(parent.model.state_dict())
    assert fresh == 3 and inherited == len(child.model.state_dict()) - 3
    a = child.model.blocks[0].attn.wq.weight
    assert torch.equal(a, parent.model.blocks[0].attn.wq.weight)
    assert not torch.equal(child.model.blocks[6].ffn.w1.weight[:256],
                           parent.model.blocks[6].ffn.w1.weight)


def test_events_reach_the_callback(tiny_cfg, dataset):
    events = []
    cfg = variant(tiny_cfg, log_interval=2, eval_interval=4)
    CandidateTrainer(cfg, dataset, callback=events.append).run(8, total_steps=8, measure=False)
    kinds = [e["kind"] for e in events]
    assert kinds.count("step") == 4 and kinds.count("eval") == 1 and kinds[-1] == "done"
    step = next(e for e in events if e["kind"] == "step")
    assert {"step", "loss", "lr", "tokens", "tokens_per_s"} <= set(step)


def test_train_command_writes_checkpoint_and_metrics(run_cli, tmp_path, cache_dir,
                                                     monkeypatch):
    monkeypatch.setenv("EVOTUI_CACHE", str(cache_dir))
    code, _, err = run_cli("train", TINY, "--steps", "4", "--device", "cpu", "--out",
                           tmp_path / "out", "--eval-batches", "1")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["status"] == "done" and report["step"] == 4
    assert (tmp_path / "out" / "checkpoint.safetensors").is_file()
    assert report["curve"] and "ppl_code" in report["metrics"]


def test_bench_train_cli(run_cli):
    code, out, err = run_cli("bench", "train", "--device", "cpu", "--steps", "1", "--warmup",
                             "0", "--no-optimizers", "--json")
    assert code == 0, err
    data = json.loads(out)
    (row,) = data["runs"]
    assert row["name"] == "tiny"
    for key in ("fast", "plain"):
        assert row[key]["tokens_per_s"] > 0 and row[key]["peak_mem_mb"] > 0
        assert row[key]["mfu"] is None  # no device peak on a CPU
    assert row["fast"]["backend"] == "auto" and row["plain"]["backend"] == "sdpa"


def test_max_tokens_caps_training(tiny_cfg, dataset):
    per_step = tiny_cfg.data.batch_size * tiny_cfg.data.seq_len
    cfg = variant(tiny_cfg, max_tokens=3 * per_step)
    result = CandidateTrainer(cfg, dataset).run(10, measure=False)
    assert result.status == "done" and result.step == 3 and result.tokens == 3 * per_step
