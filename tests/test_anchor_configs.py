"""The earlier system's configs: each loads, or fails with a clear line for what evotui
deliberately does not support; every model section in them parses and is estimated."""

from __future__ import annotations

import pytest

from evotui.dsl import ModelSpec, estimate, load, parse
from evotui.dsl.loader import read_yaml
from evotui.errors import UserError
from tests.conftest import ANCHORS

# file -> (field path in the error, words) for the ones evotui refuses; see docs/dsl.md
EXPECTED_REFUSALS = {
    "exp_longctx_overnight_m4_full_deck.yaml": (
        "evolution.rung0_thresholds.min_throughput_proxy", "max_flops_per_token"),
    "live_smoke.yaml": ("evolution.objectives.ppl_code", "no eval shard is tagged 'code'"),
    "mutation_templates.yaml": ("templates", "mutation operators are built in"),
    "scalehop_xover-68-8a93.yaml": ("evolution.objectives.layers", "write min or max"),
    "seed_xover-48-9237.yaml": ("evolution.composite_metrics", "separate objectives"),
}

pytestmark = pytest.mark.skipif(not ANCHORS.is_dir(), reason="shared/reference not present")


def anchors():
    return sorted(ANCHORS.glob("*.yaml")) if ANCHORS.is_dir() else []


def test_every_anchor_is_covered():
    assert {p.name for p in anchors()} == set(EXPECTED_REFUSALS)


@pytest.mark.parametrize("path", anchors(), ids=lambda p: p.name)
def test_anchor_loads_or_is_refused_clearly(path):
    expected = EXPECTED_REFUSALS[path.name]
    try:
        load(path)
    except UserError as e:
        assert expected is not None, e.render()
        first = e.render().splitlines()[0]
        field, words = expected
        assert first.startswith(str(path)) and f": {field}: " in first and words in first, first
    else:
        assert expected is None


@pytest.mark.parametrize("path", anchors(), ids=lambda p: p.name)
def test_anchor_models_parse_and_estimate(path):
    data, lines = read_yaml(path.read_text(), str(path))
    if "model" not in data:
        pytest.skip("no model section (mutation templates)")
    spec = parse(data["model"], ModelSpec, str(path), lines)
    est = estimate(spec, 512)
    assert est.layers == len(data["model"]["blocks"])
    assert est.params_total >= est.params_active > 0


def test_scalehop_anchor_model_matches_the_shipped_seed_shape():
    from tests.conftest import ROOT

    anchor, _ = read_yaml((ANCHORS / "scalehop_xover-68-8a93.yaml").read_text())
    a = parse(anchor["model"], ModelSpec)
    ours = load(ROOT / "configs" / "scalehop_xover-68-8a93.yaml").model
    assert [b.branches() for b in a.blocks] == [b.branches() for b in ours.blocks]
    assert [b.attn.sparsity for b in a.blocks] == [b.attn.sparsity for b in ours.blocks]


def test_legacy_split_is_read_as_config_with_a_note():
    notes: list[str] = []
    data, _ = read_yaml((ANCHORS / "seed_xover-48-9237.yaml").read_text())
    from evotui.dsl import DataConfig

    cfg = parse(data["data"], DataConfig, notes=notes)
    wiki = cfg.shards[1]
    assert (wiki.name, wiki.config, wiki.split, wiki.tag) == (
        "wikitext", "wikitext-2-raw-v1", "train", "text")
    assert any("wikitext-2-raw-v1" in n for n in notes)


@pytest.mark.parametrize("path", [p for p in anchors() if "model" in p.read_text()],
                         ids=lambda p: p.name)
def test_anchor_files_are_read_in_the_earlier_dialect(path):
    from evotui.dsl import dialect

    data, _ = read_yaml(path.read_text(), str(path))
    assert dialect.detect(data)[0] == dialect.EARLIER


def test_anchor_moe_hidden_is_read_per_expert():
    data, lines = read_yaml((ANCHORS / "seed_xover-48-9237.yaml").read_text())
    notes: list[str] = []
    spec = parse(data["model"], ModelSpec, notes=notes)
    moe = [b.ffn for b in spec.blocks if b.ffn is not None and b.ffn.type == "moe"]
    raw = [b["ffn"] for b in data["model"]["blocks"] if (b.get("ffn") or {}).get("type") == "moe"]
    assert moe and [f.expert_hidden for f in moe] == [f["hidden"] for f in raw]
    assert any("per expert" in n for n in notes)
