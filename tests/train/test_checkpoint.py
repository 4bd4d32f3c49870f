"""Checkpoints: exact resume for every optimizer, bf16 files, tied weights, strictness, the
file is plain safetensors (no pickle), and a failed save leaves the old checkpoint alone."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from evotui.dsl import TrainConfig
from evotui.model.lm import LM
from evotui.train import checkpoint
from evotui.train.checkpoint import CheckpointError, load, load_state, read_meta, save
from evotui.train.optim import build_optimizer
from evotui.train.schedule import apply_lr, lr_factor
from tests.train.test_optim import batches, lm_loss, tiny_lm

TOTAL = 8


def train_cfg(name: str) -> TrainConfig:
    return TrainConfig.model_validate({"lr": 3e-3, "warmup": 2, "weight_decay": 0.1,
                                       "optimizer": {"name": name}})


def step(model: LM, opt: torch.optim.Optimizer, cfg: TrainConfig, i: int,
         batch: torch.Tensor) -> float:
    apply_lr(opt, lr_factor(i, TOTAL, cfg))
    loss = lm_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
    opt.step()
    return loss.item()


def params(model: LM) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


@pytest.mark.parametrize("name", ["adamw", "lion", "muon"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, name):
    cfg, data, k = train_cfg(name), batches(5, seed=1), 3
    model = tiny_lm(seed=0)
    opt = build_optimizer(model, cfg, "cpu")
    for i in range(k):
        step(model, opt, cfg, i, data[i])
    path = tmp_path / "ckpt.safetensors"
    save(path, model, opt, meta={"step": k, "name": name})
    straight = [step(model, opt, cfg, i, data[i]) for i in range(k, 5)]

    fresh = tiny_lm(seed=123)  # different initial weights: everything must come from the file
    fresh_opt = build_optimizer(fresh, cfg, "cpu")
    meta = load(path, fresh, fresh_opt)
    assert meta == {"step": k, "name": name}
    resumed = [step(fresh, fresh_opt, cfg, i, data[i]) for i in range(meta["step"], 5)]
    assert resumed == straight
    want, got = params(model), params(fresh)
    assert all(torch.equal(want[n], got[n]) for n in want)
    for a, b in zip(opt.param_groups, fresh_opt.param_groups, strict=True):
        assert {k: v for k, v in a.items() if k != "params"} == \
            {k: v for k, v in b.items() if k != "params"}


def test_bf16_checkpoint_loads_into_fp32_model(tmp_path):
    model = tiny_lm(seed=0)
    opt = build_optimizer(model, train_cfg("adamw"), "cpu")
    step(model, opt, train_cfg("adamw"), 0, batches(1)[0])
    full, half = tmp_path / "fp32.safetensors", tmp_path / "bf16.safetensors"
    save(full, model, opt)
    save(half, model, opt, dtype=torch.bfloat16)
    stored = load_file(half)
    assert {t.dtype for k, t in stored.items() if k.startswith("model.")} == {torch.bfloat16}
    assert {t.dtype for k, t in stored.items() if k.startswith("optim.")} == {torch.float32}
    fresh = tiny_lm(seed=5)
    load(half, fresh)
    for n, t in fresh.state_dict().items():
        assert t.dtype == torch.float32
        assert torch.equal(t, model.state_dict()[n].to(torch.bfloat16).float())
    assert {k: t.dtype for k, t in load_state(half).items()} == \
        {k: torch.bfloat16 for k in model.state_dict()}


def test_tied_embeddings_stay_tied(tmp_path):
    model = tiny_lm(seed=0, tie=True)  # the head reads tok_emb.weight: no lm_head tensor
    save(tmp_path / "tied.safetensors", model)
    fresh = tiny_lm(seed=1, tie=True)
    load(tmp_path / "tied.safetensors", fresh)
    assert not hasattr(fresh, "lm_head")
    assert torch.equal(fresh.tok_emb.weight, model.tok_emb.weight)

    # A parameter registered under two names is stored once and stays one parameter.
    shared = tiny_lm(seed=0)
    shared.lm_head.weight = shared.tok_emb.weight
    path = tmp_path / "shared.safetensors"
    save(path, shared)
    assert "model.lm_head.weight" not in load_file(path)
    again = tiny_lm(seed=2)
    again.lm_head.weight = again.tok_emb.weight
    load(path, again)
    assert again.lm_head.weight is again.tok_emb.weight
    assert torch.equal(again.tok_emb.weight, shared.tok_emb.weight)
    state = load_state(path)
    assert state["lm_head.weight"] is state["tok_emb.weight"]


def test_file_is_plain_safetensors_without_pickle(tmp_path):
    model = tiny_lm()
    opt = build_optimizer(model, train_cfg("muon"), "cpu")
    step(model, opt, train_cfg("muon"), 0, batches(1)[0])
    path = tmp_path / "c.safetensors"
    save(path, model, opt, meta={"step": 1})
    raw = path.read_bytes()
    assert raw[0] != 0x80 and not raw.startswith(b"PK")  # not a pickle, not a torch zip
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "evotui-checkpoint" and json.loads(meta["meta"]) == {"step": 1}
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["optim"])["class"] == "Muon"
    assert all(k.startswith(("model.", "optim.")) for k in header)
    assert {k.removeprefix("model.") for k in header if k.startswith("model.")} == \
        set(model.state_dict())
    assert read_meta(path) == {"step": 1}


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save(path, tiny_lm(seed=0), meta={"step": 1})
    before = path.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save(path, tiny_lm(seed=1), meta={"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left
    assert read_meta(path) == {"step": 1}


def test_strictness_and_shape_checks(tmp_path):
    path = tmp_path / "c.safetensors"
    model = tiny_lm(seed=0)
    save(path, model, meta={"a": 1})
    other = tiny_lm(seed=1, tie=True)  # no lm_head: the file has an unexpected tensor
    with pytest.raises(CheckpointError, match="unexpected"):
        load(path, other)
    meta = load(path, other, strict=False)
    assert meta == {"a": 1, "missing_keys": [], "unexpected_keys": ["lm_head.weight"]}
    assert torch.equal(other.tok_emb.weight, model.tok_emb.weight)

    wrong = tiny_lm(seed=1)
    wrong.lm_head.weight = torch.nn.Parameter(torch.zeros(3, 32))
    untouched = wrong.tok_emb.weight.detach().clone()
    with pytest.raises(CheckpointError, match="shape"):
        load(path, wrong, strict=False)
    assert torch.equal(wrong.tok_emb.weight, untouched)  # nothing loaded before the error


def test_optimizer_mismatch_and_foreign_files(tmp_path):
    model = tiny_lm()
    path = tmp_path / "c.safetensors"
    save(path, model, build_optimizer(model, train_cfg("adamw"), "cpu"))
    with pytest.raises(CheckpointError, match="AdamW"):
        load(path, tiny_lm(), build_optimizer(tiny_lm(), train_cfg("lion"), "cpu"))
    save(path, model)
    with pytest.raises(CheckpointError, match="no optimizer"):
        load(path, tiny_lm(), build_optimizer(tiny_lm(), train_cfg("adamw"), "cpu"))
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an evotui checkpoint"):
        read_meta(plain)


def test_checkpoint_gets_the_umask_mode(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(checkpoint, "_UMASK", 0o022)  # the umask read at start-up
    path = tmp_path / "m.safetensors"
    save(path, tiny_lm(seed=0))
    assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600


@pytest.mark.parametrize("keep", [0, 5, 8, -100])
def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path, keep):
    path = tmp_path / "t.safetensors"
    save(path, tiny_lm(seed=0), meta={"step": 1})
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    for read in (read_meta, load_state, lambda p: load(p, tiny_lm(seed=1)), checkpoint.verify):
        with pytest.raises(CheckpointError, match=r"t\.safetensors: not a whole safetensors"):
            read(path)


def test_verify_finds_non_finite_values_and_foreign_shapes(tmp_path):
    model = tiny_lm(seed=0)
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    path = tmp_path / "v.safetensors"
    save(path, model)
    assert checkpoint.verify(path, shapes) == {"tensors": len(shapes), "matched": len(shapes),
                                               "fresh": 0}
    name = next(n for n, t in model.state_dict().items() if t.is_floating_point())
    with torch.no_grad():
        model.state_dict()[name].view(-1)[0] = float("nan")
    save(path, model)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        checkpoint.verify(path)
    save(path, tiny_lm(seed=0))
    with pytest.raises(CheckpointError, match="has shape"):
        checkpoint.verify(path, {**shapes, name: (3, 3)})
    with pytest.raises(CheckpointError, match="none of its"):
        checkpoint.verify(path, {"other.weight": (3, 3)})
