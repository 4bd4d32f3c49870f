"""The extras of a block: memory branches, gates and registered components."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from evotui.dsl import components
from evotui.dsl.base import PosInt, Strict, fail

BRANCHES = ("attn", "ssm", "ffn", "retro", "custom")


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
    targets: list[Literal["attn", "ssm", "ffn", "retro", "custom"]] = Field(min_length=1)
    init_weight: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    learnable: bool = True

    @field_validator("targets")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise fail(None, "lists a branch twice")
        return v


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


LEGACY_EXTRAS = {
    "assoc_memory": "use type: retro (memory over earlier chunks)",
    "memory_tokens": "use type: retro with memory_tokens",
    "chunk_memory": "use type: retro with stride set to the chunk length",
    "branch_router": "use type: gated (learnable gates on attn / ssm / ffn)",
    "layer_scale": "use type: gated with learnable: true",
    "feedback": "use type: gated or a recurrence (model.recurrences)",
}

ExtraSpec = Annotated[RetroExtra | GatedExtra | CustomExtra, Field(discriminator="type")]
