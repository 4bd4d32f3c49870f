"""Custom components come from a registry: built-ins, and plugins through an entry point."""

from __future__ import annotations

import pytest

from evotui.dsl import ModelSpec, components, manifest
from evotui.dsl.components import BottleneckParams, Component


class FakeEntryPoint:
    name = "plugin-mixer"

    def load(self):
        return Component(
            name="plugin-mixer", params=BottleneckParams,
            shapes=lambda d, p: {"wg.weight": (p.dim, d), "wv.weight": (p.dim, d),
                                 "wo.weight": (d, p.dim)},
            module="evotui.model.components:ExpGater", summary="a plugin's mixer")


@pytest.fixture
def plugin(monkeypatch):
    monkeypatch.setattr(components, "_registry", dict(components._registry))
    monkeypatch.setattr(components, "_plugins_loaded", False)
    monkeypatch.setattr(components, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == "evotui.components" else [])


def spec_with(name):
    return {"emb": {"dim": 32, "vocab": 50},
            "blocks": [{"extras": [{"type": "custom", "name": name, "params": {"dim": 8}}]}]}


def test_plugin_component_is_found_through_its_entry_point(plugin):
    assert "plugin-mixer" in components.names()
    spec = ModelSpec.model_validate(spec_with("plugin-mixer"))
    assert manifest(spec)["blocks.0.extras.0.wo.weight"].shape == (32, 8)
    from evotui.model.lm import build_model

    model = build_model(spec, 16)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: t.shape for k, t in manifest(spec).items()}


def test_unknown_component_lists_the_registered_ones():
    with pytest.raises(Exception, match="registered: exp-bridge, exp-gater"):
        ModelSpec.model_validate(spec_with("plugin-mixer"))
