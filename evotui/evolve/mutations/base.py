"""The mutation family: one base class, a registry, and the context operators read.

An operator is a :class:`Mutation` subclass registered with :func:`register`. ``applicable``
looks at the validated parent (a :class:`ModelSpec`); ``apply`` edits the model's plain data
(``to_data(spec)``) in place. The caller validates the result inside the run config and
redraws an operator whose result is invalid or unchanged, so an operator may be optimistic:
it raises :class:`Skip` when a random choice leads nowhere.

A new operator is a new class in a group module (``attention.py``, ``ffn.py``, ...) or a new
module imported by ``mutations/__init__.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evotui.dsl import components
from evotui.dsl.model import BlockSpec, ModelSpec
from evotui.dsl.run import RunConfig

Data = dict[str, Any]


class Skip(Exception):
    """Raised by ``apply`` when this draw cannot produce a change; the caller redraws."""


@dataclass
class MutationContext:
    """What operators may read besides the genome: the run's limits and priors, the
    registered custom components, the ids already used, and where the current child stands.

    ``spec`` is the validated model that ``data`` was dumped from (set by the caller before
    each ``apply``). An operator writes ``note`` (shown in the mutation log) and records in
    ``copies`` the fresh id of every block it copied from another (new id -> source id)."""

    seq_len: int
    window_scale: float | None = None
    rope_theta_default: float = 10000.0
    components: tuple[str, ...] = ()
    min_layers: int = 1
    max_layers: int | None = None
    taken: set[str] = field(default_factory=set)
    spec: ModelSpec | None = None
    note: str = ""
    copies: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> MutationContext:
        r0 = cfg.evolution.rung0_thresholds
        return cls(
            seq_len=cfg.data.seq_len,
            window_scale=cfg.priors.window_scale,
            rope_theta_default=cfg.priors.rope_theta_default,
            components=tuple(components.names()),
            min_layers=max(1, r0.min_layers or 1),
            max_layers=r0.max_layers,
        )

    @property
    def current(self) -> ModelSpec:
        if self.spec is None:
            raise RuntimeError("MutationContext.spec is unset; the caller sets it before apply")
        return self.spec


class Mutation:
    """One mutation operator. ``name`` is ``group.op``; ``weight`` its default deck weight."""

    name: ClassVar[str] = ""
    weight: ClassVar[float] = 1.0

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return True

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} weight={self.weight}>"


class BlockMutation(Mutation):
    """An operator that edits one block, drawn among those ``block_ok`` accepts.

    Subclasses implement ``block_ok`` and ``edit``; ``edit`` returns a short description of
    the change ("hidden 256 -> 384") for the mutation log."""

    def block_ok(self, block: BlockSpec, spec: ModelSpec, ctx: MutationContext) -> bool:
        raise NotImplementedError

    def edit(self, block: Data, data: Data, rng: random.Random, ctx: MutationContext) -> str:
        raise NotImplementedError

    def applicable(self, spec: ModelSpec, ctx: MutationContext) -> bool:
        return any(self.block_ok(b, spec, ctx) for b in spec.blocks)

    def apply(self, data: Data, rng: random.Random, ctx: MutationContext) -> None:
        spec = ctx.current
        ok = [i for i, b in enumerate(spec.blocks) if self.block_ok(b, spec, ctx)]
        if not ok:
            raise Skip
        i = rng.choice(ok)
        block = data["blocks"][i]
        detail = self.edit(block, data, rng, ctx)
        ctx.note = f"block {block['id']}" + (f": {detail}" if detail else "")


DECK: dict[str, Mutation] = {}


def register(cls: type[Mutation]) -> type[Mutation]:
    """Class decorator: add one instance of ``cls`` to :data:`DECK` under its name."""
    if not cls.name or "." not in cls.name:
        raise ValueError(f"{cls.__name__}.name must be 'group.op', got {cls.name!r}")
    if cls.name in DECK:
        raise ValueError(f"mutation {cls.name!r} is registered twice")
    DECK[cls.name] = cls()
    return cls


def operators(group: str | None = None) -> list[Mutation]:
    """Registered operators (of one group, e.g. ``"ffn"``), in registration order."""
    return [m for n, m in DECK.items() if group is None or n.split(".")[0] == group]
