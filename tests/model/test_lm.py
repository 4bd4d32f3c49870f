"""The assembled LM: it is exactly the estimator's manifest, causal in every block kind,
trains, and its recurrence, gates and MoE losses do what the genome says."""

from __future__ import annotations

import pytest
import torch

from evotui.dsl import ModelSpec, estimate, load, manifest, parse
from evotui.dsl.loader import read_yaml
from evotui.model.lm import build_model, count_parameters
from tests.conftest import ANCHORS, CONFIGS, ROOT

TINY = ROOT / "configs" / "tiny.yaml"


def shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_built_model_is_the_manifest(path):
    cfg = load(path)
    model = build_model(cfg.model, cfg.data.seq_len, device="meta")
    want = {k: t.shape for k, t in manifest(cfg.model).items()}
    got = shapes(model)
    if cfg.model.head.tie_embeddings:
        assert model.logits  # tied: the head reads tok_emb.weight, no lm_head tensor
    assert got == want
    assert count_parameters(model) == estimate(cfg.model, cfg.data.seq_len).params_total


@pytest.mark.skipif(not ANCHORS.is_dir(), reason="shared/reference not present")
@pytest.mark.parametrize("path", sorted(ANCHORS.glob("*.yaml")), ids=lambda p: p.name)
def test_anchor_models_build_to_their_manifest(path):
    data, _ = read_yaml(path.read_text())
    if "model" not in data:
        pytest.skip("no model section")
    spec = parse(data["model"], ModelSpec)
    model = build_model(spec, 512, device="meta")
    assert shapes(model) == {k: t.shape for k, t in manifest(spec).items()}


@pytest.fixture(scope="module")
def tiny():
    cfg = load(TINY)
    torch.manual_seed(0)
    return cfg, build_model(cfg.model, cfg.data.seq_len)


def test_forward_backward_and_aux_loss(tiny):
    cfg, model = tiny
    model.train()
    idx = torch.randint(0, cfg.model.emb.vocab, (2, 64))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 64, cfg.model.emb.vocab)
    aux = model.aux_loss()
    (loss + aux).backward()
    assert torch.isfinite(loss) and aux.item() > 0
    router = model.blocks[1].ffn.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    stats = model.router_stats()
    assert len(stats) == 2 and all(s["entropy"] >= 0 for s in stats)
    model.zero_grad(set_to_none=True)


def test_every_block_kind_is_causal(tiny):
    cfg, model = tiny
    model.eval()
    torch.manual_seed(1)
    idx = torch.randint(0, cfg.model.emb.vocab, (1, 128))
    with torch.no_grad():
        x = model.tok_emb(idx)
        for i, block in enumerate(model.blocks):
            for t in (0, 17, 63, 100):
                x2 = x.clone()
                x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:])
                a, b = block(x, x), block(x2, x2)
                assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5), (i, t)
        # the whole model, recurrence included
        for t in (5, 70):
            idx2 = idx.clone()
            idx2[:, t + 1:] = torch.randint(0, cfg.model.emb.vocab, (1, 127 - t))
            a, _ = model(idx)
            b, _ = model(idx2)
            assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)


def test_recurrence_count_changes_the_computation(tiny):
    cfg, model = tiny
    model.eval()
    idx = torch.randint(0, cfg.model.emb.vocab, (1, 32))
    with torch.no_grad():
        base, _ = model(idx)
        for n in cfg.model.recurrences[0].test_recurrences:
            model.loop_override = n
            other, _ = model(idx)
            assert not torch.allclose(base, other)
        model.loop_override = None
    rec = cfg.model.recurrences[0]
    model.train()
    model.progress = 0.0
    assert model.loops_for(rec, training=True) == 1  # curriculum starts at one loop
    model.progress = 1.0
    counts = {model.loops_for(rec, training=True) for _ in range(50)}
    assert counts == set(range(rec.train_recurrence, rec.max_train_recurrence + 1))


def test_gates_start_at_init_weight(tiny):
    cfg, model = tiny
    gates = model.blocks[2].gates
    assert gates.targets == ["ssm", "ffn"]
    assert torch.allclose(torch.sigmoid(gates.gate_ssm), torch.tensor(0.5))


def test_residual_projections_are_scaled_down(tiny):
    cfg, model = tiny
    std = cfg.model.emb.init_std
    wq = model.blocks[6].attn.wq.weight.std().item()
    wo = model.blocks[6].attn.wo.weight.std().item()
    assert abs(wq - std) < 0.2 * std and wo < 0.5 * wq


def test_untied_head_and_layernorm():
    spec = ModelSpec.model_validate({
        "emb": {"dim": 32, "vocab": 50}, "norm": "layernorm", "head": {"tie_embeddings": False},
        "blocks": [{"attn": {"heads": 2, "head_dim": 16}, "ffn": {"type": "dense",
                                                                  "hidden": 64}}]})
    model = build_model(spec, 16)
    assert model.lm_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    assert shapes(model) == {k: t.shape for k, t in manifest(spec).items()}
    logits, _ = model(torch.randint(0, 50, (1, 16)))
    assert logits.shape == (1, 16, 50)


def test_validate_reports_params_built(run_cli):
    import json

    code, out, err = run_cli("validate", TINY, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["params_built"] == data["params_total"]


def test_bench_attention_cli(run_cli):
    import json

    code, out, err = run_cli("bench", "attention", "--device", "cpu", "--seq-len", "64",
                             "--window", "16", "--repeats", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    patterns = {r["pattern"] for r in data["results"]}
    assert patterns == {"none", "sliding", "local_global", "block", "local_block", "dilated"}
    for r in data["results"]:
        assert r["ms"] > 0 and r["max_err"] < 1e-4 and 0 < r["density"] <= 1
    sliding = next(r for r in data["results"] if r["pattern"] == "sliding")
    assert sliding["density"] < 0.5


def test_bench_attention_refuses_missing_cuda(run_cli):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run_cli("bench", "attention", "--device", "cuda")
    assert code == 2 and "no CUDA device" in err


def test_bench_attention_times_only_the_chosen_backends(run_cli):
    import json

    code, out, err = run_cli("bench", "attention", "--device", "cpu", "--seq-len", "64",
                             "--window", "16", "--repeats", "1", "--backends", "chunked",
                             "--no-kinds", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {r["backend"] for r in data["results"]} == {"chunked"} and data["kinds"] == []
    assert all(r["max_err"] < 1e-4 for r in data["results"])  # still against the reference
    code, _, err = run_cli("bench", "attention", "--backends", "sdpa,fast")
    assert code == 2 and "--backends" in err and "fast" in err
