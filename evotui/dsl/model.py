"""The model genome: a decoder-only LM as a list of pre-norm residual blocks.

Every field here either changes the built model or is rejected. Fields that other fields or
the run config can supply (``kv_groups`` of MHA/MQA, ``dt_rank``, the retro memory width,
MoE ``balance``, windows from ``priors.window_scale``, ``rope_theta`` from the priors) are
filled in when a config is loaded, so a dumped config shows exactly what is built.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from evotui.dsl import components
from evotui.dsl.base import Strict, fail, note
from evotui.dsl.patterns import ALL_KNOBS, OPTIONAL_KNOBS, REQUIRED_KNOBS, Pattern

PosInt = Annotated[int, Field(gt=0, le=1 << 40)]  # sizes; the bound keeps builds in range
Prob = Annotated[float, Field(ge=0.0, lt=1.0)]

RopeKind = Literal["standard", "linear", "ntk", "yarn", "none"]
SCALED_ROPE = ("linear", "ntk", "yarn")
DEFAULT_ROPE_FACTOR = 4.0
BRANCHES = ("attn", "ssm", "ffn", "retro", "custom")


class EmbSpec(Strict):
    """Token embedding. There are no learned positions: attention uses RoPE (or none)."""

    legacy = {"rope": "set rope per block in model.blocks[i].attn.rope"}

    dim: PosInt = Field(description="Model width (residual stream).")
    vocab: PosInt = Field(description="Embedding rows; must fit the tokenizer.")
    dropout: Prob = 0.0
    init_std: Annotated[float, Field(gt=0.0)] = Field(0.02, description="Normal init std.")


class HeadSpec(Strict):
    tie_embeddings: bool = True
    vocab: PosInt | None = Field(None, description="Output vocabulary; equals emb.vocab.")


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


class DenseFFN(Strict):
    type: Literal["dense"] = "dense"
    hidden: PosInt
    activation: Literal["silu", "gelu", "relu", "swiglu"] = "swiglu"
    dropout: Prob = 0.0


class MoEFFN(Strict):
    """Mixture of experts. ``hidden`` is the routed width of the whole layer, split evenly
    over ``n_experts`` fine-grained experts; each shared expert is one expert wide."""

    type: Literal["moe"] = "moe"
    hidden: PosInt
    n_experts: Annotated[int, Field(ge=2)]
    k: PosInt = Field(description="Experts each token is routed to.")
    capacity_factor: Annotated[float, Field(gt=0.0)] = 1.25
    balance: Annotated[float, Field(ge=0.0)] | None = Field(
        None, description="Load-balance loss weight (default: train.router_lb_coeff)."
    )
    shared: Annotated[int, Field(ge=0)] = 0
    router: Literal["softmax", "sigmoid"] = "softmax"
    router_temperature: Annotated[float, Field(gt=0.0)] = 1.0
    activation: Literal["silu", "gelu", "relu", "swiglu"] = "swiglu"

    @field_validator("router_temperature", mode="before")
    @classmethod
    def _temp(cls, v: Any) -> Any:
        return 1.0 if v is None else v

    @model_validator(mode="after")
    def _check(self) -> MoEFFN:
        if self.k > self.n_experts:
            raise fail("k", f"must be <= n_experts ({self.n_experts})")
        if self.hidden % self.n_experts:
            raise fail(
                "hidden",
                f"is split evenly over n_experts ({self.n_experts}); use a multiple of it",
            )
        return self

    @property
    def expert_hidden(self) -> int:
        return self.hidden // self.n_experts


def _ffn_type(v: Any) -> str:
    return (v.get("type") or "dense") if isinstance(v, dict) else v.type


# an ffn without a type is dense
FFNSpec = Annotated[
    Annotated[DenseFFN, Tag("dense")] | Annotated[MoEFFN, Tag("moe")], Discriminator(_ffn_type)
]


class SSMSpec(Strict):
    """A Mamba2-style selective state-space branch."""

    kind: Literal["mamba2"] = "mamba2"
    d_state: PosInt = 16
    d_conv: PosInt = 4
    dt_rank: PosInt | None = Field(None, description="Rank of the step-size projection.")
    chunk: PosInt = Field(64, description="Chunk length of the chunked scan.")
    expand: PosInt = Field(2, description="Inner width = expand x model dim.")
    head_dim: PosInt = 64
    gate: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="Initial value of a learnable per-channel output scale."
    )


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


class BlockSpec(Strict):
    """One pre-norm residual block: x += branch(norm(x)) for attn, ssm, ffn, then extras."""

    id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Stable identity (set by evotui when absent): inherited weights follow it "
        "when mutations move blocks.",
    )
    name: str | None = Field(None, description="A label shown in summaries.")
    attn: AttnSpec | None = None
    ssm: SSMSpec | None = None
    ffn: FFNSpec | None = None
    extras: list[ExtraSpec] = Field(default_factory=list)

    @field_validator("extras", mode="before")
    @classmethod
    def _legacy_extras(cls, v: Any) -> Any:
        if isinstance(v, list):
            for i, e in enumerate(v):
                if isinstance(e, dict) and e.get("type") in LEGACY_EXTRAS:
                    t = e["type"]
                    raise fail(f"{i}.type", f"extra {t!r} is not supported; "
                               + LEGACY_EXTRAS[t])
        return [] if v is None else v

    @model_validator(mode="after")
    def _check(self) -> BlockSpec:
        if not (self.attn or self.ssm or self.ffn or self.extras):
            raise fail(None, "a block needs at least one of attn, ssm, ffn or extras")
        gated = [e for e in self.extras if isinstance(e, GatedExtra)]
        if len(gated) > 1:
            raise fail("extras", "at most one gated extra per block; merge their targets")
        if gated and not set(gated[0].targets) & set(self.branches()):
            raise fail("extras", "the gated extra names no branch this block has")
        return self

    def branches(self) -> list[str]:
        """Branch kinds present, in forward order."""
        out = [b for b in ("attn", "ssm", "ffn") if getattr(self, b) is not None]
        out += [e.type for e in self.extras if not isinstance(e, GatedExtra)]
        return out

    def gated(self) -> GatedExtra | None:
        return next((e for e in self.extras if isinstance(e, GatedExtra)), None)


class Recurrence(Strict):
    """Loop blocks ``start``..``end`` (inclusive) several times with shared weights."""

    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]
    adapter: Literal["none", "linear"] | None = Field(
        None, description="Maps the loop input back to model width (default: linear "
        "when concat_prelude, else none)."
    )
    concat_prelude: bool = Field(
        False, description="Feed [state, span input] to the adapter on every loop."
    )
    train_recurrence: PosInt = Field(2, description="Loops per training step (after curriculum).")
    max_train_recurrence: PosInt | None = Field(
        None, description="If set, each step draws its loop count in [train, max]."
    )
    curriculum_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="Fraction of training over which loops ramp up from 1."
    )
    test_recurrences: list[PosInt] = Field(
        default_factory=list, description="Extra loop counts evaluated on held-out data."
    )

    @model_validator(mode="after")
    def _check(self) -> Recurrence:
        if self.end < self.start:
            raise fail("end", f"must be >= start ({self.start}); the span is inclusive")
        if self.adapter is None:
            self.adapter = "linear" if self.concat_prelude else "none"
        if self.concat_prelude and self.adapter != "linear":
            raise fail("adapter", "concat_prelude needs adapter: linear to map 2*dim back")
        if self.max_train_recurrence is not None and (
            self.max_train_recurrence < self.train_recurrence
        ):
            raise fail("max_train_recurrence", f"must be >= train_recurrence "
                       f"({self.train_recurrence})")
        if (
            self.train_recurrence == 1
            and self.max_train_recurrence in (None, 1)
            and not self.test_recurrences
        ):
            raise fail("train_recurrence", "1 runs the span once (no recurrence); use 2 or "
                       "more, or set max_train_recurrence / test_recurrences")
        return self


class ModelSpec(Strict):
    """The whole genome of a decoder-only language model."""

    name: str | None = None
    emb: EmbSpec
    blocks: list[BlockSpec] = Field(min_length=1)
    head: HeadSpec = Field(default_factory=HeadSpec)
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    recurrences: list[Recurrence] = Field(default_factory=list)

    @field_validator("recurrences", mode="before")
    @classmethod
    def _null_list(cls, v: Any) -> Any:
        return [] if v is None else v

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ModelSpec:
        d = self.emb.dim
        if self.head.vocab is None:
            self.head.vocab = self.emb.vocab
        elif self.head.vocab != self.emb.vocab:
            raise fail("head.vocab", f"must equal emb.vocab ({self.emb.vocab})"
                       + ("; tied embeddings share one matrix" if self.head.tie_embeddings
                          else "; the model predicts the tokens it reads"))
        for i, b in enumerate(self.blocks):
            if b.ssm is not None:
                if b.ssm.dt_rank is None:
                    b.ssm.dt_rank = math.ceil(d / 16)
                inner = b.ssm.expand * d
                if inner % b.ssm.head_dim:
                    raise fail(f"blocks.{i}.ssm.head_dim", f"must divide expand*dim ({inner})")
            for e in b.extras:
                if isinstance(e, RetroExtra) and e.mem_dim is None:
                    e.mem_dim = max(1, d // 4)
            gated = b.gated()
            absent = [t for t in gated.targets if t not in b.branches()] if gated else []
            if absent:
                note(info, f"model.blocks[{i}]: gated targets {', '.join(absent)} are not in "
                     "this block; they take effect if a mutation adds those branches")
        seen: set[str] = set()
        for i, b in enumerate(self.blocks):
            if b.id is None:
                b.id = f"b{i}"
                while b.id in seen or any(o.id == b.id for o in self.blocks[i + 1:]):
                    b.id += "x"
            if b.id in seen:
                raise fail(f"blocks.{i}.id", f"{b.id!r} is used by another block; ids are unique")
            seen.add(b.id)
        spans: list[tuple[int, int]] = []
        for r, rec in enumerate(self.recurrences):
            if rec.end >= len(self.blocks):
                raise fail(f"recurrences.{r}.end",
                           f"must be < the number of blocks ({len(self.blocks)})")
            for s, e in spans:
                if rec.start <= e and s <= rec.end:
                    raise fail(f"recurrences.{r}", f"overlaps the span {s}..{e}")
            spans.append((rec.start, rec.end))
        return self

    def recurrence_of(self, block: int) -> Recurrence | None:
        return next((r for r in self.recurrences if r.start <= block <= r.end), None)

