"""The extras of a block: memory branches, gates and registered components."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from evotui.dsl import components
from evotui.dsl.base import PosInt, Strict, fail

MEMORY = ("retro", "memory_tokens", "chunk_memory", "assoc_memory")
BRANCHES = ("attn", "ssm", "ffn", *MEMORY, "custom")
Branch = Literal["attn", "ssm", "ffn", "retro", "memory_tokens", "chunk_memory", "assoc_memory",
                 "custom"]
Weight = Annotated[float, Field(gt=0.0)]


def unique_targets(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise fail(None, "lists a branch twice")
    return v


class RetroExtra(Strict):
    """Retrieval memory over summaries of earlier chunks of the same sequence (causal)."""

    type: Literal["retro"] = "retro"
    memory_tokens: PosInt = Field(description="Past positions the memory covers.")
    stride: PosInt = Field(description="Chunk length; one summary per chunk.")
    aggregator: Literal["mean", "attention", "gate"] = "gate"
    gating_weight: Annotated[float, Field(gt=0.0)] = 1.0
    mem_dim: PosInt | None = Field(None, description="Memory width (default model dim / 4).")

    @model_validator(mode="after")
    def _check(self) -> RetroExtra:
        if self.memory_tokens < self.stride:
            raise fail("memory_tokens", f"must be >= stride ({self.stride}) to hold one chunk")
        return self

    @property
    def slots(self) -> int:
        return self.memory_tokens // self.stride


class GatedExtra(Strict):
    """Learnable (or fixed) per-channel sigmoid gates on the named branch outputs."""

    type: Literal["gated"] = "gated"
    targets: list[Branch] = Field(min_length=1)
    init_weight: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    learnable: bool = True

    _unique = field_validator("targets")(lambda v: unique_targets(v))


class CustomExtra(Strict):
    """A registered component (see ``evotui.dsl.components``); configs never carry code."""

    type: Literal["custom"] = "custom"
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CustomExtra:
        comp = components.get(self.name)
        if comp is None:
            raise fail("name", f"unknown component {self.name!r}; registered: "
                       + ", ".join(components.names()))
        try:
            parsed = comp.params.model_validate(self.params)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in ("params", *err["loc"]))
            raise fail(where, err["msg"]) from None
        self.params = parsed.model_dump()
        return self

    def component_params(self) -> Any:
        comp = components.get(self.name)
        assert comp is not None
        return comp.params.model_validate(self.params)


class _Heads(Strict):
    heads: PosInt = Field(4, description="Attention heads of the memory read.")
    head_dim: PosInt = Field(32, description="Width per head.")
    gating_weight: Weight = Field(1.0, description="Fixed scale of the branch output.")


class MemoryTokensExtra(_Heads):
    """Persistent memory (Sukhbaatar et al. 2019): ``tokens`` learned key/value slots that every
    position reads with softmax attention (position-free, so causal)."""

    type: Literal["memory_tokens"] = "memory_tokens"
    tokens: PosInt = Field(description="Learned key/value slots.")


class ChunkMemoryExtra(_Heads):
    """Landmark summaries: every ``stride``-th position stores the mean of the ``chunk`` tokens
    ending there; a position attends to the summaries ending at or before it."""

    type: Literal["chunk_memory"] = "chunk_memory"
    chunk: PosInt = Field(description="Tokens each summary averages.")
    stride: PosInt | None = Field(None, description="Positions between summaries "
                                  "(default chunk).")

    @model_validator(mode="after")
    def _check(self) -> ChunkMemoryExtra:
        if self.stride is None:
            self.stride = self.chunk
        return self


class AssocMemoryExtra(_Heads):
    """An associative (fast-weight) memory branch: causal linear attention with its own
    projections, feature map elu + 1, chunked (Schlag et al. 2021)."""

    type: Literal["assoc_memory"] = "assoc_memory"
    chunk: PosInt = Field(64, description="Chunk length of the chunked form.")


class LayerScaleExtra(Strict):
    """LayerScale (Touvron et al. 2021, CaiT): a per-channel scale on each named branch output,
    starting at ``init``."""

    type: Literal["layer_scale"] = "layer_scale"
    targets: list[Branch] = Field(min_length=1)
    init: Weight = Field(0.1, description="Initial scale (CaiT: 0.1 to 1e-6 with depth).")
    learnable: bool = True

    _unique = field_validator("targets")(lambda v: unique_targets(v))


class BranchRouterExtra(Strict):
    """A per-token mixture of the block's branches: the targeted branches all read the same
    block input in parallel, and their outputs are summed with weights
    ``n * softmax(router(norm(x_t)) / temperature)`` computed from that token alone (uniform
    at start, so the block starts as the plain parallel sum). Never a pool over the sequence,
    which would read the future."""

    type: Literal["branch_router"] = "branch_router"
    targets: list[Branch] = Field(min_length=2)
    temperature: Weight = 1.0
    hidden: PosInt | None = Field(None, description="Width of a hidden router layer "
                                  "(none: a linear router).")

    _unique = field_validator("targets")(lambda v: unique_targets(v))


LEGACY_EXTRAS = {
    "feedback": "use type: gated or a recurrence (model.recurrences)",
}
MODIFIERS = ("gated", "layer_scale", "branch_router")  # extras that act on other branches

ExtraSpec = Annotated[
    RetroExtra | GatedExtra | CustomExtra | MemoryTokensExtra | ChunkMemoryExtra
    | AssocMemoryExtra | LayerScaleExtra | BranchRouterExtra,
    Field(discriminator="type"),
]
