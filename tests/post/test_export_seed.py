"""``evotui export-seed``: the next run's config holds the candidate's genome and starts from its
weights; bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from evotui.dsl import ModelSpec, load, to_data
from evotui.model.lm import build_model
from evotui.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def frontier(tiny_run):
    return json.loads((tiny_run / "frontier.json").read_text())


def test_export_with_weights(tiny_run, run_cli, tmp_path, frontier, token_cache):
    # the best-trained frontier entry: which entries the frontier holds depends on measured
    # throughput, and a barely trained one (a child with fresh tensors) sits near a fresh loss
    entry = min(frontier["frontier"], key=lambda e: e["metrics"]["loss"])
    out_cfg, out_ckpt = tmp_path / "seed.yaml", tmp_path / "seed.safetensors"
    code, out, err = run_cli("export-seed", tiny_run, "--id", entry["id"], "--out-config",
                             out_cfg, "--out-checkpoint", out_ckpt)
    assert code == 0, err
    assert str(out_cfg) in out and str(out_ckpt) in out

    code, out, err = run_cli("validate", out_cfg)
    assert code == 0, err
    cfg = load(out_cfg)
    spec = ModelSpec.model_validate(entry["spec"])
    assert to_data(cfg.model) == to_data(spec)
    assert cfg.train.init_checkpoint == str(out_ckpt.resolve())
    run_cfg = load(tiny_run / "config.yaml")  # everything but the genome is the run's
    assert to_data(cfg.data) == to_data(run_cfg.data)
    assert to_data(cfg.evolution) == to_data(run_cfg.evolution)

    # weights only, loading strictly into the candidate's model, equal to its checkpoint
    with safe_open(str(out_ckpt), framework="pt") as f:
        assert all(k.startswith("model.") for k in f.keys())  # noqa: SIM118 - not iterable
    model = build_model(spec, cfg.data.seq_len)
    ckpt.load(out_ckpt, model, strict=True)
    original = ckpt.load_state(entry["checkpoint"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, original[name].to(tensor.dtype)), name

    # a training started from the exported config starts where the candidate ended
    from evotui.data import prepare
    from evotui.train.trainer import CandidateTrainer

    dataset = prepare(cfg, cache_dir=token_cache)
    trainer = CandidateTrainer(cfg, dataset, device="cpu")
    assert trainer.inherited == len(model.state_dict()) and trainer.fresh == 0
    losses = trainer.heldout_losses()
    start = sum(losses.values()) / len(losses)
    assert start == pytest.approx(entry["metrics"]["loss"], rel=1e-4)
    cfg.train.init_checkpoint = None
    fresh = CandidateTrainer(cfg, dataset, device="cpu").heldout_losses()
    assert sum(fresh.values()) / len(fresh) > start + 0.3  # far from a fresh model's loss
    result = trainer.run(1, 1, measure=False)
    assert result.status == "done" and abs(result.curve[-1]["loss"] - start) < 0.5


def test_export_genome_only_from_a_frontier_file(tiny_run, run_cli, tmp_path, frontier):
    src = tmp_path / "f.json"
    shutil.copy(tiny_run / "frontier.json", src)
    entry = frontier["frontier"][0]
    out_cfg = tmp_path / "genome.yaml"
    code, _, err = run_cli("export-seed", src, "--id", entry["id"], "--out-config", out_cfg,
                           "--config", tiny_run / "config.yaml")
    assert code == 0, err
    cfg = load(out_cfg)
    assert to_data(cfg.model) == entry["spec"] and cfg.train.init_checkpoint is None
    assert out_cfg.read_text().startswith(f"# exported by `evotui export-seed` from {src}")


def test_any_candidate_of_a_run_directory(tiny_run, run_cli, tmp_path, frontier):
    on_frontier = {e["id"] for e in frontier["frontier"]}
    off = next(f"c{i:04d}" for i in range(20) if f"c{i:04d}" not in on_frontier)
    code, _, err = run_cli("export-seed", tiny_run, "--id", off, "--out-config",
                           tmp_path / "x.yaml")
    assert code == 0, err
    assert load(tmp_path / "x.yaml").model.blocks


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_id(tiny_run, run_cli, tmp_path, frontier):
    code, _, err = run_cli("export-seed", tiny_run / "frontier.json", "--id", "c9999",
                           "--out-config", tmp_path / "x.yaml")
    assert code == 2
    line = _one_line(err)
    assert "--id: no candidate 'c9999' on this frontier" in line
    assert frontier["frontier"][0]["id"] in line
    assert not (tmp_path / "x.yaml").exists()


def test_missing_checkpoint(tiny_run, run_cli, tmp_path, frontier):
    doc = dict(frontier)
    entry = dict(doc["frontier"][0], checkpoint=str(tmp_path / "gone.safetensors"))
    doc["frontier"] = [entry]
    src = tmp_path / "frontier.json"
    src.write_text(json.dumps(doc))
    shutil.copy(tiny_run / "config.yaml", tmp_path / "config.yaml")
    code, _, err = run_cli("export-seed", src, "--id", entry["id"], "--out-config",
                           tmp_path / "x.yaml", "--out-checkpoint", tmp_path / "x.safetensors")
    assert code == 2
    assert "--out-checkpoint: candidate" in _one_line(err) and "no checkpoint on disk" in err
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "x.safetensors").exists()


def test_frontier_without_specs(tiny_run, run_cli, tmp_path, frontier):
    doc = {**frontier, "frontier": [{k: v for k, v in e.items() if k != "spec"}
                                    for e in frontier["frontier"]]}
    src = tmp_path / "frontier.json"
    src.write_text(json.dumps(doc))
    shutil.copy(tiny_run / "config.yaml", tmp_path / "config.yaml")
    code, _, err = run_cli("export-seed", src, "--id", doc["frontier"][0]["id"],
                           "--out-config", tmp_path / "x.yaml")
    assert code == 2 and "has no spec" in _one_line(err)


def test_not_a_frontier(run_cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli("export-seed", bad, "--id", "c0001", "--out-config",
                           tmp_path / "x.yaml")
    assert code == 2 and "not valid JSON" in _one_line(err)


def test_outputs_never_replace_the_runs_files_or_each_other(tiny_run, run_cli, tmp_path,
                                                            frontier):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    first, last = frontier["frontier"][0], frontier["frontier"][-1]
    other = run / "checkpoints" / f"{first['id']}.safetensors"
    before = {p: p.read_bytes() for p in [other, run / "config.yaml", run / "frontier.json"]}
    for args in (["--out-config", tmp_path / "s.yaml", "--out-checkpoint", other],
                 ["--out-config", run / "config.yaml"],
                 ["--out-config", run / "frontier.json"],
                 ["--out-config", tmp_path / "x", "--out-checkpoint", tmp_path / "x"]):
        code, _, err = run_cli("export-seed", run, "--id", last["id"], *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not (tmp_path / "x").exists() and not (tmp_path / "s.yaml").exists()


def test_a_moved_run_reads_its_own_checkpoints(tiny_run, run_cli, tmp_path, frontier):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    entry = frontier["frontier"][-1]
    own = moved / "checkpoints" / f"{entry['id']}.safetensors"
    from safetensors.torch import load_file, save_file

    with safe_open(str(own), framework="pt") as f:
        metadata = f.metadata()
    raw = load_file(str(own))
    key = next(k for k in raw if k.startswith("model."))
    raw[key] = raw[key] + 1.0  # the copy's checkpoint differs from the original's
    save_file(raw, str(own), metadata=metadata)
    marker, changed = key.removeprefix("model."), raw[key]
    out_cfg, out_ckpt = tmp_path / "seed.yaml", tmp_path / "seed.safetensors"
    code, _, err = run_cli("export-seed", moved, "--id", entry["id"], "--out-config", out_cfg,
                           "--out-checkpoint", out_ckpt)
    assert code == 0, err
    exported = ckpt.load_state(out_ckpt)
    assert torch.equal(exported[marker], changed.to(exported[marker].dtype))
