"""``evotui scale``: a genome widened, deepened or lengthened by the scale-hop rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from evotui.dsl import estimate, load, to_data
from evotui.dsl.run import derive_window
from evotui.summary import si

SMALL = """
model:
  name: small
  emb: {dim: 128, vocab: 257}
  blocks:
    - attn: {kind: GQA, heads: 2, head_dim: 64, kv_groups: 2, sparsity: local_global,
             global_stride: 16}
      ffn: {type: dense, hidden: 512}
    - attn: {kind: MQA, heads: 2, head_dim: 64, sparsity: sliding, sw: 32, rope: yarn}
      ffn: {type: moe, hidden: 256, n_experts: 4, k: 1, shared: 1}
      extras:
        - {type: custom, name: exp-gater, params: {dim: 32}}
    - ssm: {d_state: 16, expand: 2, head_dim: 32, chunk: 32}
      ffn: {type: dense, hidden: 384, activation: gelu}
      extras:
        - {type: retro, memory_tokens: 64, stride: 16}
    - attn: {kind: MHA, heads: 2, head_dim: 64, sparsity: dilated, dilation: 2, sw: 64}
  recurrences:
    - {start: 1, end: 2, train_recurrence: 2}
data:
  tokenizer: byte
  seq_len: 128
  shards: [{name: "builtin:code"}]
evolution: {rung0_thresholds: {max_params: 2000000}}
priors: {window_scale: 4.0}
"""


def _write(tmp_path, text, name="small.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _scale(run_cli, *args):
    code, out, err = run_cli("scale", *map(str, args), "--json")
    assert code == 0, err
    return json.loads(out)


def _built(run_cli, path):
    code, out, err = run_cli("validate", str(path), "--json")
    assert code == 0, err
    return json.loads(out)


def test_widening_follows_the_shape_rules_and_back_down_round_trips(tmp_path, run_cli):
    src = _write(tmp_path, SMALL)
    up, down = tmp_path / "up.yaml", tmp_path / "down.yaml"
    report = _scale(run_cli, src, "--dim", 512, "--out", up)
    cfg = load(up)
    b = cfg.model.blocks
    assert cfg.model.emb.dim == 512
    for block in (b[0], b[1], b[3]):  # head_dim stays 64: heads come from the width
        assert block.attn.head_dim == 64 and block.attn.heads == 8
    assert b[0].attn.kv_groups == 2  # GQA keeps its grouping
    assert b[1].attn.kv_heads == 1 and b[3].attn.kv_heads == 8  # MQA one KV head, MHA all
    assert b[0].ffn.hidden == 4 * 512 and b[2].ffn.hidden == 3 * 512  # same ratio to the width
    moe = b[1].ffn
    assert moe.hidden == 4 * 256 and moe.hidden % moe.n_experts == 0
    assert (moe.n_experts, moe.k, moe.shared) == (4, 1, 1)  # MoE carried over
    assert b[1].attn.rope == "yarn" and b[1].extras[0].params == {"dim": 128}
    ssm = b[2].ssm
    assert (ssm.d_state, ssm.expand, ssm.dt_rank) == (16, 2, math.ceil(512 / 16))
    assert b[2].extras[0].mem_dim == 512 // 4  # the default retro width, re-derived
    # a width hop leaves the sequence rules alone
    assert b[0].attn.sw == derive_window(128, 4.0) and b[1].attn.sw == 32
    assert [(r.start, r.end) for r in cfg.model.recurrences] == [(1, 2)]
    # what scale prints is the estimate of what it wrote, and the built model agrees
    est = estimate(cfg.model, cfg.data.seq_len)
    assert report["after"]["params_total"] == est.params_total
    assert report["after"]["flops_per_token"] == est.flops_per_token
    # K and V, bf16, head_dim 64: 4 + 8 KV heads, and MQA's one looped twice by the recurrence
    assert report["after"]["kv_bytes_per_token"] == (4 + 8 + 2 * 1) * 2 * 64 * 2
    assert report["before"]["params_total"] == estimate(load(src).model, 128).params_total
    assert _built(run_cli, up)["params_built"] == est.params_total
    # the wider seed would fail the run's own rung-0 gate: said, not silently written
    assert report["before"]["params_total"] < 2_000_000 < est.params_total
    assert any("rung0_thresholds.max_params" in n for n in report["notes"])
    # and back down to the original width: the same genome
    _scale(run_cli, up, "--dim", 128, "--out", down)
    assert to_data(load(down).model) == to_data(load(src).model)


def test_depth_and_sequence_length(tmp_path, run_cli):
    src = _write(tmp_path, SMALL)
    deep = tmp_path / "deep.yaml"
    _scale(run_cli, src, "--dim", 128, "--layers", 7, "--out", deep)
    blocks = load(deep).model.blocks
    original = load(src).model.blocks
    assert len(blocks) == 7 and len({b.id for b in blocks}) == 7  # fresh ids
    for i, b in enumerate(blocks):  # the block pattern repeats
        assert b.branches() == original[i % 4].branches()
    assert [(r.start, r.end) for r in load(deep).model.recurrences] == [(1, 2)]

    short = tmp_path / "short.yaml"
    report = _scale(run_cli, src, "--dim", 128, "--layers", 2, "--out", short)
    model = load(short).model
    assert len(model.blocks) == 2
    assert [(r.start, r.end) for r in model.recurrences] == [(1, 1)]  # clipped to the end
    assert any("clipped" in n for n in report["notes"])

    longer = tmp_path / "long.yaml"
    _scale(run_cli, src, "--dim", 128, "--seq-len", 512, "--out", longer)
    cfg = load(longer)
    a = [b.attn for b in cfg.model.blocks]
    assert cfg.data.seq_len == 512
    assert a[0].sw == derive_window(512, 4.0)  # the run's default window, re-derived
    assert a[0].global_stride == round(16 * a[0].sw / derive_window(128, 4.0))
    assert a[1].sw == 64 and a[3].sw == 128  # own windows follow sqrt(512 / 128) = 2
    assert a[3].dilation == 2
    retro = cfg.model.blocks[2].extras[0]
    assert (retro.stride, retro.memory_tokens) == (32, 128)


BASE = """
model:
  name: base
  emb: {dim: 768, vocab: 50304}
  norm: layernorm
  blocks:
""" + "".join(
    "    - attn: {kind: GQA, heads: 12, head_dim: 64, kv_groups: 3, sparsity: local_global,\n"
    "             global_stride: 64}\n      ffn: {type: dense, hidden: 3072, activation: gelu}\n"
    if i % 2 == 0 else
    "    - attn: {kind: GQA, heads: 12, head_dim: 64, kv_groups: 3}\n"
    "      ffn: {type: dense, hidden: 3072, activation: gelu}\n"
    for i in range(12)) + """
data:
  tokenizer: gpt2
  seq_len: 1024
  shards: [{name: "builtin:prose"}]
priors: {window_scale: 4.0}
"""


def test_a_124m_style_genome_hops_to_half_a_billion(tmp_path, run_cli):
    src = _write(tmp_path, BASE, "base.yaml")
    before = estimate(load(src).model, 1024).params_total
    assert 100e6 < before < 150e6
    out = tmp_path / "hop.yaml"
    code, text, err = run_cli("scale", src, "--dim", 1536, "--layers", 14, "--seq-len", 2048,
                              "--out", out)
    assert code == 0, err
    cfg = load(out)
    est = estimate(cfg.model, 2048)
    assert 400e6 < est.params_total < 500e6 and est.layers == 14
    for block in cfg.model.blocks:
        assert (block.attn.head_dim, block.attn.heads, block.attn.kv_groups) == (64, 24, 3)
    windows = {b.attn.sw for b in cfg.model.blocks if b.attn.sparsity == "local_global"}
    assert windows == {round(math.sqrt(2048) * 4.0)}
    # the printed figures are the new genome's
    assert si(est.params_total) in text and si(est.flops_per_token) in text
    assert si(before) in text
    assert yaml.safe_load(out.read_text())["data"]["seq_len"] == 2048


def test_bad_widths_are_one_line_errors_naming_the_fix(tmp_path, run_cli):
    src = _write(tmp_path, BASE, "base.yaml")
    out = tmp_path / "x.yaml"
    code, _, err = run_cli("scale", src, "--dim", 1000, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--dim" in err and "960 or 1152" in err  # multiples of 64 x kv_groups 3
    code, _, err = run_cli("scale", src, "--dim", 1024, "--out", out)  # 16 heads, groups 3
    assert code == 2 and "kv_groups 3" in err and "960 or 1152" in err
    assert not out.exists()  # nothing half-written
    code, _, err = run_cli("scale", src, "--dim", 1536, "--out", src)
    assert code == 2 and "overwrite" in err


def test_a_hop_drops_an_init_checkpoint_of_the_old_shapes(tmp_path):
    from evotui.dsl import load
    from evotui.dsl.scale import scale

    cfg = load(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
    cfg.train.init_checkpoint = str(tmp_path / "old.safetensors")
    result = scale(cfg, 256)
    assert result.config.train.init_checkpoint is None
    assert any("init_checkpoint dropped" in n for n in result.notes)
