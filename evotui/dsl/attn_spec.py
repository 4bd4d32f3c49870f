"""The attention branch of a block: its kinds, RoPE, sparsity pattern and options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from evotui.dsl.base import PosInt, Prob, Strict, fail
from evotui.dsl.patterns import ALL_KNOBS, OPTIONAL_KNOBS, REQUIRED_KNOBS, Pattern

RopeKind = Literal["standard", "linear", "ntk", "yarn", "none"]
SCALED_ROPE = ("linear", "ntk", "yarn")
DEFAULT_ROPE_FACTOR = 4.0


class AttnSpec(Strict):
    """Softmax attention: MHA, GQA or MQA; RoPE variants; a causal sparsity pattern."""

    legacy = {"qk_norm_max": "remove it (attention logits are not capped)"}

    kind: Literal["MHA", "GQA", "MQA"] = "GQA"
    heads: PosInt
    head_dim: PosInt = 64
    kv_groups: PosInt | None = Field(
        None, description="Query heads per KV head (heads 24, kv_groups 2 -> 12 KV heads)."
    )
    rope: RopeKind = "standard"
    rope_theta: Annotated[float, Field(gt=0.0)] | None = None
    rope_factor: Annotated[float, Field(ge=1.0)] | None = Field(
        None, description="Context multiple for linear / ntk / yarn RoPE scaling."
    )
    dropout: Prob = 0.0
    sparsity: Literal["none", "sliding", "block", "local_global", "dilated", "local_block"] = (
        "none"
    )
    sw: PosInt | None = Field(None, description="Window in tokens (query included).")
    block_size: PosInt | None = None
    block_stride: PosInt | None = None
    global_stride: PosInt | None = None
    dilation: Annotated[int, Field(ge=2)] | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.upper()
            if v in ("LINEAR", "MLA"):
                raise fail(
                    None,
                    f"kind {v} is not supported; use MHA, GQA or MQA "
                    "(for linear cost use sparsity: sliding, or add an ssm branch)",
                )
        return v

    @field_validator("rope", "sparsity", mode="before")
    @classmethod
    def _null_is_none(cls, v: Any) -> Any:
        return "none" if v is None else v

    @model_validator(mode="after")
    def _check(self) -> AttnSpec:
        if self.kind == "MHA":
            if self.kv_groups not in (None, 1):
                raise fail("kv_groups", "MHA has one KV head per query head; use 1 or kind: GQA")
            self.kv_groups = 1
        elif self.kind == "MQA":
            if self.kv_groups not in (None, self.heads):
                raise fail("kv_groups", f"MQA shares one KV head; use {self.heads} or kind: GQA")
            self.kv_groups = self.heads
        elif self.kv_groups is None:
            self.kv_groups = 1
        if self.heads % self.kv_groups:
            allowed = ", ".join(str(d) for d in range(1, self.heads + 1) if self.heads % d == 0)
            raise fail("kv_groups", f"must divide heads ({self.heads}); allowed: {allowed}")
        if self.rope == "none":
            for f in ("rope_theta", "rope_factor"):
                if getattr(self, f) is not None:
                    raise fail(f, "has no effect with rope: none; remove it or set a rope kind")
        else:
            if self.head_dim % 2 or self.head_dim < 4:
                raise fail("head_dim", "RoPE rotates pairs of channels; use an even head_dim "
                           "of at least 4")
            if self.rope == "standard" and self.rope_factor is not None:
                raise fail("rope_factor", "applies to rope linear, ntk or yarn only")
            if self.rope in SCALED_ROPE and self.rope_factor is None:
                self.rope_factor = DEFAULT_ROPE_FACTOR
        required = REQUIRED_KNOBS[self.sparsity]
        usable = required + OPTIONAL_KNOBS[self.sparsity]
        for knob in ALL_KNOBS:
            if getattr(self, knob) is not None and knob not in usable:
                uses = ", ".join(usable) or "no knobs"
                raise fail(knob, f"is not used by sparsity {self.sparsity} (it uses {uses})")
        for knob in required:
            if knob != "sw" and getattr(self, knob) is None:  # sw may come from the priors
                raise fail(knob, f"sparsity {self.sparsity} needs {knob}")
        if (
            self.sparsity == "block"
            and self.block_stride is not None
            and self.block_stride > self.block_size
        ):
            raise fail(
                "block_stride",
                f"must be <= block_size ({self.block_size}) for sparsity block, or positions "
                "between blocks attend only to themselves (use local_block to add a window)",
            )
        return self

    @property
    def kv_heads(self) -> int:
        return self.heads // (self.kv_groups or 1)

    def pattern(self) -> Pattern:
        return Pattern(self.sparsity, **{k: getattr(self, k) for k in ALL_KNOBS})
