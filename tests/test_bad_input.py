"""Every kind of bad input: exit 2, one short line naming the file, the field and the fix."""

from __future__ import annotations

import pytest
import yaml

BASE = {
    "model": {
        "emb": {"dim": 64, "vocab": 257},
        "blocks": [
            {"attn": {"kind": "GQA", "heads": 4, "head_dim": 16, "kv_groups": 2},
             "ffn": {"type": "dense", "hidden": 128}},
            {"attn": {"heads": 4, "head_dim": 16},
             "ffn": {"type": "moe", "hidden": 128, "n_experts": 4, "k": 2}},
        ],
    },
    "data": {"seq_len": 64, "shards": [{"name": "builtin:code"}]},
}


def with_change(path: str, value, base=BASE):
    """A deep copy of base with the dotted path set (a value of DELETE removes it)."""
    data = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return yaml.safe_dump(data)


DELETE = object()
B0 = "model.blocks.0"

# (case id, file text, expected field path in the message, expected words in the message)
CASES = [
    ("yaml-syntax", "model: {emb: [1, 2\n", "", "YAML syntax error"),
    ("empty", "", "", "empty"),
    ("list", "- 1\n- 2\n", "", "got a list"),
    ("scalar", "hello\n", "", "got a string"),
    ("duplicate-key", "model: {}\nmodel: {}\n", "model", "duplicate key"),
    ("wrong-type", with_change(f"{B0}.attn.heads", "four"), "model.blocks[0].attn.heads",
     "valid integer"),
    ("bool-for-int", with_change(f"{B0}.attn.heads", True), "model.blocks[0].attn.heads",
     "integer"),
    ("unknown-key", with_change(f"{B0}.attn.haeds", 4), "model.blocks[0].attn.haeds",
     "unknown key; allowed: kind, heads"),
    ("unknown-section", with_change("optimiser", {}), "optimiser", "unknown key"),
    ("missing", with_change("model.emb.dim", DELETE), "model.emb.dim", "required"),
    ("kv-groups-divide", with_change(f"{B0}.attn.kv_groups", 3),
     "model.blocks[0].attn.kv_groups", "must divide heads (4); allowed: 1, 2, 4"),
    ("mha-kv-groups", with_change(f"{B0}.attn.kind", "MHA"),
     "model.blocks[0].attn.kv_groups", "MHA"),
    ("mla", with_change(f"{B0}.attn.kind", "MLA"), "model.blocks[0].attn.kv_groups",
     "MLA up-projects keys and values for every head"),
    ("k-gt-experts", with_change("model.blocks.1.ffn.k", 5), "model.blocks[1].ffn.k",
     "<= n_experts (4)"),
    ("moe-hidden-split", with_change("model.blocks.1.ffn.hidden", 130),
     "model.blocks[1].ffn.hidden", "multiple"),
    ("unknown-ffn-type", with_change("model.blocks.1.ffn.type", "mlp"),
     "model.blocks[1].ffn", "'dense', 'moe'"),
    ("negative-size", with_change("model.emb.dim", -8), "model.emb.dim", "greater than 0"),
    ("rope-kind", with_change(f"{B0}.attn.rope", "alibi"), "model.blocks[0].attn.rope",
     "'standard', 'linear', 'ntk', 'yarn'"),
    ("rope-theta-without-rope", with_change(f"{B0}.attn", {"heads": 4, "head_dim": 16,
     "rope": None, "rope_theta": 500.0}), "model.blocks[0].attn.rope_theta", "no effect"),
    ("odd-head-dim-rope", with_change(f"{B0}.attn.head_dim", 15),
     "model.blocks[0].attn.head_dim", "even"),
    ("sliding-without-sw", with_change(f"{B0}.attn.sparsity", "sliding"),
     "model.blocks[0].attn.sw", "window_scale"),
    ("block-without-size", with_change(f"{B0}.attn.sparsity", "block"),
     "model.blocks[0].attn.block_size", "needs block_size"),
    ("global-without-stride", with_change(f"{B0}.attn", {"heads": 4, "head_dim": 16,
     "sparsity": "local_global", "sw": 8}), "model.blocks[0].attn.global_stride", "needs"),
    ("dilated-without-dilation", with_change(f"{B0}.attn.sparsity", "dilated"),
     "model.blocks[0].attn.dilation", "needs dilation"),
    ("dilation-one", with_change(f"{B0}.attn", {"heads": 4, "head_dim": 16,
     "sparsity": "dilated", "dilation": 1}), "model.blocks[0].attn.dilation",
     "greater than or equal to 2"),
    ("knob-unused", with_change(f"{B0}.attn.sw", 16), "model.blocks[0].attn.sw",
     "not used by sparsity none"),
    ("window-gt-seq", with_change(f"{B0}.attn", {"heads": 4, "head_dim": 16,
     "sparsity": "sliding", "sw": 100}), "model.blocks[0].attn.sw", "exceeds data.seq_len (64)"),
    ("block-gap", with_change(f"{B0}.attn", {"heads": 4, "head_dim": 16, "sparsity": "block",
     "block_size": 8, "block_stride": 16}), "model.blocks[0].attn.block_stride", "<= block_size"),
    ("unknown-pattern", with_change(f"{B0}.attn.sparsity", "strided"),
     "model.blocks[0].attn.sparsity", "'sliding'"),
    ("tied-vocab", with_change("model.head", {"tie_embeddings": True, "vocab": 300}),
     "model.head.vocab", "emb.vocab (257)"),
    ("vocab-below-tokenizer", with_change("model.emb.vocab", 200), "model.emb.vocab",
     "smaller than tokenizer byte"),
    ("recurrence-outside", with_change("model.recurrences", [{"start": 1, "end": 2}]),
     "model.recurrences[0].end", "< the number of blocks (2)"),
    ("recurrence-reversed", with_change("model.recurrences", [{"start": 1, "end": 0}]),
     "model.recurrences[0].end", ">= start"),
    ("recurrence-overlap", with_change("model.recurrences", [{"start": 0, "end": 1},
     {"start": 1, "end": 1}]), "model.recurrences[1]", "overlaps"),
    ("recurrence-once", with_change("model.recurrences", [{"start": 0, "end": 0,
     "train_recurrence": 1}]), "model.recurrences[0].train_recurrence", "no recurrence"),
    ("custom-unknown", with_change(f"{B0}.extras", [{"type": "custom", "name": "nope"}]),
     "model.blocks[0].extras[0].name", "registered: exp-bridge, exp-gater"),
    ("custom-params", with_change(f"{B0}.extras", [{"type": "custom", "name": "exp-gater",
     "params": {"dim": 8, "depth": 2}}]), "model.blocks[0].extras[0].params.depth",
     "Extra inputs"),
    ("legacy-extra", with_change(f"{B0}.extras", [{"type": "feedback"}]),
     "model.blocks[0].extras[0].type", "use type: gated or a recurrence"),
    ("retro-memory-lt-stride", with_change(f"{B0}.extras", [{"type": "retro",
     "memory_tokens": 8, "stride": 16}]), "model.blocks[0].extras[0].memory_tokens", ">= stride"),
    ("retro-stride-gt-seq", with_change(f"{B0}.extras", [{"type": "retro",
     "memory_tokens": 128, "stride": 128}]), "model.blocks[0].extras[0].stride", "exceeds"),
    ("gate-no-branch", with_change(f"{B0}.extras", [{"type": "gated", "targets": ["ssm"]}]),
     "model.blocks[0].extras", "no branch"),
    ("ssm-head-dim", with_change(f"{B0}.ssm", {"d_state": 8, "head_dim": 48}),
     "model.blocks[0].ssm.head_dim", "divide expand*dim (128)"),
    ("ssm-chunk-gt-seq", with_change(f"{B0}.ssm", {"chunk": 128, "head_dim": 16}),
     "model.blocks[0].ssm.chunk", "exceeds"),
    ("empty-block", with_change("model.blocks.0", {}), "model.blocks[0]", "at least one"),
    ("duplicate-block-id", with_change("model.blocks", [{"id": "a", "ffn": {"hidden": 8}},
     {"id": "a", "ffn": {"hidden": 8}}]), "model.blocks[1].id", "used by another block"),
    ("no-blocks", with_change("model.blocks", []), "model.blocks", "at least 1"),
    ("builtin-shard", with_change("data.shards.0.name", "builtin:nope"),
     "data.shards[0].name", "builtin:code"),
    ("shard-name-and-path", with_change("data.shards.0.path", "x.txt"), "data.shards[0].name",
     "exactly one"),
    ("objective-unknown", with_change("evolution", {"objectives": {"graph_entropy": "max"}}),
     "evolution.objectives.graph_entropy", "unknown metric"),
    ("objective-no-shard", with_change("evolution", {"objectives": {"ppl_math": "min"}}),
     "evolution.objectives.ppl_math", "tagged 'math'"),
    ("objective-direction", with_change("evolution", {"pareto_objectives": ["layers"]}),
     "evolution.objectives.layers", "min or max"),
    ("legacy-noop-only", with_change("priors", {"compute_penalty_weight": 0.5}),
     "priors.compute_penalty_weight", "flops_per_token"),
    ("global-batch", with_change("train", {"global_batch_tokens": 1000}),
     "train.global_batch_tokens", "multiple of batch_size x seq_len (512)"),
    ("lr-twice", with_change("train", {"lr": 0.001, "optimizer": {"lr": 0.002}}),
     "train.optimizer.lr", "one place"),
    ("infinite-float", with_change("model.blocks.1.ffn.capacity_factor", float("inf")),
     "model.blocks[1].ffn.capacity_factor", "finite"),
    ("huge-size", with_change("model.emb.dim", 10**30), "model.emb.dim", "less than or equal"),
    ("rope-head-dim-2", with_change(f"{B0}.attn", {"heads": 2, "head_dim": 2, "rope": "ntk"}),
     "model.blocks[0].attn.head_dim", "at least 4"),
    ("seed-range", with_change("train", {"seed": 2**70}), "train.seed", "less than or equal"),
    ("selection", with_change("evolution", {"parent_selection": "roulette"}),
     "evolution.parent_selection", "'lexicase'"),
]


@pytest.mark.parametrize("case,text,path,words", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_clear_line(run_cli, tmp_path, case, text, path, words):
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_text(text)
    code, out, err = run_cli("validate", cfg)
    assert code == 2, out
    assert out == ""
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 3, err
    first = lines[0]
    assert first.startswith(str(cfg)), first
    if path:
        assert f": {path}: " in first, first
    assert words in first, first
    assert "Traceback" not in err


def test_line_numbers_point_at_the_field(run_cli, tmp_path):
    text = with_change(f"{B0}.attn.kv_groups", 3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    _, _, err = run_cli("validate", cfg)
    line = int(err.split(":")[1])
    assert "kv_groups: 3" in text.splitlines()[line - 1]


def test_base_case_is_valid(run_cli, tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    code, _, err = run_cli("validate", cfg)
    assert code == 0, err


def test_several_problems_are_reported_together(run_cli, tmp_path):
    text = with_change(f"{B0}.attn.heads", "x", base=yaml.safe_load(
        with_change("model.emb.dim", "y")))
    cfg = tmp_path / "two.yaml"
    cfg.write_text(text)
    code, _, err = run_cli("validate", cfg)
    assert code == 2
    assert "model.emb.dim" in err and "model.blocks[0].attn.heads" in err
