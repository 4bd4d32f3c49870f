"""``evotui ablate``: controls and variants trained from the candidate's weights under one budget;
each motif's effect with its spread; a crashing variant fails alone."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections import deque
from pathlib import Path

import pytest

from evotui.commands.experiments import format_table
from evotui.dsl import ModelSpec, manifest, to_data
from evotui.model.lm import build_model
from evotui.model.memory import Retro
from evotui.post.ablate import Settings, ablate, ranking
from evotui.post.seed import open_source
from evotui.train import checkpoint as ckpt


def _default_theta(spec: ModelSpec) -> bool:
    """Every RoPE attention of ``spec`` uses the default theta (10000)."""
    return all(b.attn is None or b.attn.rope == "none" or b.attn.rope_theta in (None, 10000)
               for b in spec.blocks)


def _best(run_dir: Path) -> dict:
    """The frontier entry the documented rule picks: best by the first objective, ties broken
    by the next ones."""
    doc = json.loads((run_dir / "frontier.json").read_text())
    signs = {k: 1 if d == "min" else -1 for k, d in doc["objectives"].items()}
    return min(doc["frontier"], key=lambda e: [signs[k] * e["objectives"][k] for k in signs])


def test_ablate_a_tiny_run_end_to_end(tiny_run, run_cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, out, err = run_cli("ablate", run, "--top", "1", "--steps", "2", "--seeds", "2",
                             "--device", "cpu", "--motif", "retro",
                             "--motif", "rope_theta-to-default", "--keep-checkpoints", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc == json.loads((run / "ablations" / "ablation.json").read_text()) | {
        "path": str(run / "ablations" / "ablation.json")}
    best = _best(tiny_run)
    (cand,) = doc["candidates"]
    assert cand["id"] == best["id"] and cand["rank"] == 1
    seeds = doc["seeds"]
    assert len(seeds) == 2 and doc["steps"] == 2
    spec = ModelSpec.model_validate(best["spec"])
    n_tensors = len(manifest(spec))

    # the control is the candidate, started from all of its weights
    assert cand["control"]["spec"] == to_data(spec)
    control = cand["control"]["runs"]
    assert [r["seed"] for r in control] == seeds
    for r in control:
        assert r["status"] == "done" and r["step"] == 2
        assert (r["inherited"], r["fresh"]) == (n_tensors, 0)

    # the variant really has no retro memory, and started from the same checkpoint
    retro = cand["motifs"]["retro"]
    assert retro["applies"] and "retro extra" in retro["change"]
    vspec = ModelSpec.model_validate(retro["spec"])
    assert all(e.type != "retro" for b in vspec.blocks for e in b.extras)
    assert any(e.type == "retro" for b in spec.blocks for e in b.extras)
    model = build_model(vspec, 128)
    assert not any(isinstance(m, Retro) for m in model.modules())
    v_tensors = len(manifest(vspec))
    assert v_tensors < n_tensors
    for r in retro["runs"]:
        assert r["status"] == "done" and r["step"] == 2
        assert (r["inherited"], r["fresh"]) == (v_tensors, 0)  # every tensor: the candidate's
        ckpt.load(r["checkpoint"], model, strict=True)  # what was trained is that model
        assert Path(r["checkpoint"]).parent == run / "ablations" / "checkpoints"

    # effects: variant - control per seed, for every objective, with the direction
    for obj, direction in doc["objectives"].items():
        e = retro["effects"][obj]
        diffs = [v["metrics"][obj] - c["metrics"][obj]
                 for v, c in zip(retro["runs"], control, strict=True)]
        assert e["n"] == 2 and e["direction"] == direction
        assert e["mean"] == pytest.approx(statistics.fmean(diffs))
        assert e["std"] == pytest.approx(statistics.stdev(diffs))
        if e["mean"] != 0 and abs(e["mean"]) > 2 * e["std"] / math.sqrt(2):
            assert e["verdict"] == ("worse" if (e["mean"] > 0) == (direction == "min")
                                    else "better")
        elif e["mean"] != 0:
            assert e["verdict"] == "within noise"
    # a motif the candidate lacks is reported, not dropped (which candidate wins, and so its
    # RoPE theta, depends on how the run went)
    rope = cand["motifs"]["rope_theta->default"]
    table = format_table(doc)
    assert "rope_theta->default" in table
    if _default_theta(spec):
        assert rope == {"applies": False,
                        "reason": "every RoPE attention uses the default theta 10000"}
        assert "n/a: every RoPE attention" in table
    else:
        assert rope["applies"] and rope["change"].endswith("-> 10000")
        assert [r["status"] for r in rope["runs"]] == ["done", "done"]
    assert f"{best['id']} (rank 1" in table


class FakeExecutor:
    """Finishes each job at once with made-up metrics: control ppl 100 + seed index, retro
    +2 / +4 ppl and -100 tokens/s; every kv_groups->1 job fails as a killed worker does."""

    def __init__(self) -> None:
        self.jobs: list = []
        self.items: deque = deque()
        self.shutdown_kill: bool | None = None

    def free_slots(self) -> list[str]:
        return ["cpu"]

    def submit(self, job) -> None:
        self.jobs.append(job)
        _, motif, _ = job.candidate_id.split("/")
        i = job.seed - self.jobs[0].seed
        if motif == "kv_groups->1":
            self.items.append((job.candidate_id, {"kind": "failed", "exitcode": -9,
                                                  "reason": "worker exited with code -9"}))
            return
        bump = {"retro": 2.0 * (i + 1)}.get(motif, 0.0)  # control, and a theta change
        metrics = {"ppl_code": 100.0 + i + bump, "ppl_math": 50.0, "ppl_text": 70.0 + i,
                   "passkey_acc": 0.0,
                   "throughput": 1000.0 - (100.0 if motif == "retro" else 0.0)}
        self.items.append((job.candidate_id, {
            "kind": "result", "status": "done", "step": job.until_step, "metrics": metrics,
            "inherited": len(job.inherit), "fresh": 0}))

    def events(self):
        return self

    def __aiter__(self):
        return self

    async def __anext__(self):
        return self.items.popleft()

    async def shutdown(self, kill: bool = False) -> None:
        self.shutdown_kill = kill


def test_same_start_budget_and_seeds_and_a_failed_variant_fails_alone(tiny_run, tmp_path):
    source = open_source(tiny_run)
    fake = FakeExecutor()
    said: list[str] = []
    settings = Settings(top=1, steps=3, seeds=2, slots=["cpu"], out_dir=tmp_path,
                        motifs=["retro", "kv_groups->1", "rope_theta->default"])
    doc = ablate(source, settings, said.append, executor=fake)
    assert fake.shutdown_kill is False

    best = _best(tiny_run)
    start = str(source.checkpoint(best))
    seeds = [source.config().train.seed, source.config().train.seed + 1]
    by_motif: dict[str, list] = {}
    for job in fake.jobs:  # one budget, the same seeds, one starting checkpoint for all
        by_motif.setdefault(job.candidate_id.split("/")[1], []).append(job)
        assert (job.until_step, job.total_steps, job.resume_from) == (3, 3, None)
        assert {path for _, path, _ in job.inherit} == {start}
        assert "init_checkpoint" not in job.config["train"]
    rope = [] if _default_theta(ModelSpec.model_validate(best["spec"])) else [
        "rope_theta->default"]  # trained only where the candidate's theta is not the default
    assert sorted(by_motif) == ["control", "kv_groups->1", "retro", *rope]
    for jobs in by_motif.values():
        assert [j.seed for j in jobs] == seeds
    control = by_motif["control"][0]
    assert control.config["model"] == best["spec"]
    assert {c for c, _, p in control.inherit if c == p} == set(manifest(
        ModelSpec.model_validate(best["spec"])))  # every tensor, under its own name

    (cand,) = doc["candidates"]
    retro = cand["motifs"]["retro"]["effects"]
    assert retro["ppl_code"]["mean"] == pytest.approx(3.0)
    assert retro["ppl_code"]["std"] == pytest.approx(math.sqrt(2))
    assert retro["ppl_code"]["verdict"] == "worse"  # min objective, higher without retro
    assert retro["throughput"]["verdict"] == "worse"  # max objective, lower without retro
    assert retro["ppl_text"] == {"mean": 0.0, "std": 0.0, "n": 2, "relative": 0.0,
                                 "direction": "min", "verdict": "same", "diffs": [0.0, 0.0]}
    failed = cand["motifs"]["kv_groups->1"]
    assert [r["status"] for r in failed["runs"]] == ["failed", "failed"]
    assert failed["effects"]["ppl_code"]["n"] == 0
    assert doc["pooled"]["retro"]["ppl_code"]["n"] == 2
    table = format_table(doc)
    assert "[2/2 failed: worker exited with code -9]" in table
    assert (tmp_path / "ablation.json").is_file()
    assert any("kv_groups->1" in line and "failed" in line for line in said)


@pytest.fixture
def wide_run(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run whose frontier lists every finished candidate: how many the real
    frontier holds depends on measured throughput, which depends on the machine."""
    from evotui.engine.exports import write_frontier
    from evotui.engine.store import RunStore

    run = tmp_path / "wide"
    shutil.copytree(tiny_run, run)
    with RunStore.open(run) as store:
        ids = [c["id"] for c in store.candidates(("done", "stopped"))]
        assert len(ids) >= 2
        write_frontier(store, run / "frontier.json", store.get_state("objectives"), ids)
    return run


def test_effects_pool_over_candidates(wide_run, tmp_path):
    doc = ablate(open_source(wide_run), Settings(top=2, steps=1, seeds=2, slots=["cpu"],
                                                 motifs=["retro"], out_dir=tmp_path),
                 lambda _: None, FakeExecutor())
    assert [c["rank"] for c in doc["candidates"]] == [1, 2]
    with_retro = [c for c in doc["candidates"] if c["motifs"]["retro"]["applies"]]
    pooled = doc["pooled"]["retro"]["ppl_code"]
    assert pooled["n"] == 2 * len(with_retro) and pooled["mean"] == pytest.approx(3.0)
    assert "pooled over 2 candidates" in format_table(doc)


def test_candidates_without_a_checkpoint_are_skipped(wide_run, tmp_path):
    doc = json.loads((wide_run / "frontier.json").read_text())
    best = _best(wide_run)
    for e in doc["frontier"]:
        if e["id"] == best["id"]:
            e["checkpoint"] = str(tmp_path / "gone.safetensors")
    frontier = tmp_path / "frontier.json"
    frontier.write_text(json.dumps(doc))
    shutil.copy(wide_run / "config.yaml", tmp_path / "config.yaml")
    fake = FakeExecutor()
    out = ablate(open_source(frontier), Settings(top=1, steps=1, seeds=1, slots=["cpu"],
                                                 motifs=["retro"]), lambda _: None, fake)
    assert out["skipped"][0]["id"] == best["id"]
    assert out["candidates"][0]["id"] != best["id"] and out["candidates"][0]["rank"] == 2
    assert Path(out["path"]) == tmp_path / "ablations" / "ablation.json"


def test_ranking_rule():
    objectives = {"passkey_acc": "max", "ppl_code": "min"}
    assert ranking(objectives, None) == [("passkey_acc", "max"), ("ppl_code", "min")]
    assert ranking(objectives, "ppl_code") == [("ppl_code", "min"), ("passkey_acc", "max")]


@pytest.mark.parametrize("args, message", [
    (["--by", "nope"], "--by: not an objective of this run; use one of"),
    (["--motif", "attention"], "--motif: unknown motif 'attention'"),
])
def test_bad_flags_are_one_line(tiny_run, run_cli, args, message):
    code, out, err = run_cli("ablate", tiny_run, "--top", "1", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_frontier_without_its_config(tiny_run, run_cli, tmp_path):
    frontier = tmp_path / "f.json"
    shutil.copy(tiny_run / "frontier.json", frontier)
    code, _, err = run_cli("ablate", frontier, "--top", "1")
    assert code == 2 and "pass --config" in err and len(err.strip().splitlines()) == 1


def test_one_seed_measures_no_spread_and_noise_is_not_a_verdict():
    from evotui.post.effects import effect

    one = effect([1.5], [0.1], "min")
    assert one["std"] is None and one["verdict"] == "one seed"
    noisy = effect([2.0, -1.0, 0.5], [0.0, 0.0, 0.0], "min")  # mean 0.5, std 1.5
    assert noisy["verdict"] == "within noise"
    clear = effect([2.0, 2.2, 1.8], [0.0, 0.0, 0.0], "max")
    assert clear["verdict"] == "better"


class InterruptedExecutor(FakeExecutor):
    """Ctrl-C after two trainings have finished."""

    async def __anext__(self):
        if not hasattr(self, "given"):
            self.given = 0
        if self.given == 2:
            raise KeyboardInterrupt
        self.given += 1
        return self.items.popleft()


def test_an_interrupted_ablation_keeps_what_finished(wide_run, tmp_path):
    fake = InterruptedExecutor()
    with pytest.raises(KeyboardInterrupt):
        ablate(open_source(wide_run), Settings(top=1, steps=1, seeds=2, slots=["cpu"],
                                               motifs=["retro"], out_dir=tmp_path),
               lambda _: None, fake)
    assert fake.shutdown_kill is True  # what still ran was killed
    doc = json.loads((tmp_path / "ablation.json").read_text())
    assert doc["interrupted"] is True
    (cand,) = doc["candidates"]
    runs = cand["control"]["runs"] + cand["motifs"]["retro"]["runs"]
    assert sorted(r["status"] for r in runs) == ["done", "done", "failed", "failed"]
    assert {r["error"] for r in runs if r["status"] == "failed"} == {"not run (interrupted)"}
