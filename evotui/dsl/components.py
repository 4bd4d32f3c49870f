"""The registry of named ``custom`` components a genome may use.

A config names a component (``type: custom, name: exp-gater, params: {dim: 512}``); it never
carries code. Each component is described here without torch: its parameter model (validated
strictly), the exact shapes of the tensors it owns (so the estimator counts them) and the dotted
path of its ``torch.nn.Module`` (imported by the model layer only when a model is built).

The package registers its own components below. A plugin registers more by exposing a
:class:`Component` instance under the ``evotui.components`` entry-point group::

    [project.entry-points."evotui.components"]
    my-mixer = "my_pkg.evotui_plugin:COMPONENT"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import BaseModel, ConfigDict, Field

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Component:
    """A custom block component: what it takes, what it owns, where its module lives.

    ``shapes(model_dim, params)`` lists every trainable tensor the module registers, relative
    to the component (its pre-norm is added by the block and is not listed here).
    ``module`` is ``"package.module:ClassName"``; the class is constructed as
    ``Class(model_dim, params)`` and called as ``module(h, x0)`` where ``h`` is the normed
    block input and ``x0`` the token embeddings; it returns the branch output.
    """

    name: str
    params: type[BaseModel]
    shapes: Callable[[int, BaseModel], Shapes]
    module: str
    summary: str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BottleneckParams(_Strict):
    dim: int = Field(gt=0, description="Bottleneck width of the component.")


def _gater_shapes(d: int, p: BaseModel) -> Shapes:
    r = p.dim  # type: ignore[attr-defined]
    return {"wg.weight": (r, d), "wv.weight": (r, d), "wo.weight": (d, r)}


def _bridge_shapes(d: int, p: BaseModel) -> Shapes:
    r = p.dim  # type: ignore[attr-defined]
    return {"w_in.weight": (r, 2 * d), "w_out.weight": (d, r)}


BUILTIN: tuple[Component, ...] = (
    Component(
        name="exp-gater",
        params=BottleneckParams,
        shapes=_gater_shapes,
        module="evotui.model.components:ExpGater",
        summary="sigmoid-gated bottleneck branch: wo(sigmoid(wg h) * wv h)",
    ),
    Component(
        name="exp-bridge",
        params=BottleneckParams,
        shapes=_bridge_shapes,
        module="evotui.model.components:ExpBridge",
        summary="bottleneck bridge from the token embeddings: wo(silu(w_in [h, x0]))",
    ),
)

_registry: dict[str, Component] = {c.name: c for c in BUILTIN}
_plugins_loaded = False


def register(component: Component) -> None:
    """Add a component (plugins call this, or expose it through the entry point)."""
    _registry[component.name] = component


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="evotui.components"):
        component = ep.load()
        if not isinstance(component, Component):
            raise TypeError(f"entry point {ep.name!r} did not give an evotui Component")
        _registry.setdefault(component.name, component)


def get(name: str) -> Component | None:
    _load_plugins()
    return _registry.get(name)


def names() -> list[str]:
    _load_plugins()
    return sorted(_registry)
