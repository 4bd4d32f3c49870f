"""The model genome: a decoder-only LM as a list of pre-norm residual blocks.

Every field here either changes the built model or is rejected. Fields that other fields or
the run config can supply (``kv_groups`` of MHA/MQA, ``dt_rank``, the retro memory width,
MoE ``balance``, windows from ``priors.window_scale``, ``rope_theta`` from the priors) are
filled in when a config is loaded, so a dumped config shows exactly what is built.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from evotui.dsl.attn_spec import DEFAULT_ROPE_FACTOR, SCALED_ROPE, AttnSpec, RopeKind
from evotui.dsl.base import PosInt, Prob, Strict, fail, note
from evotui.dsl.extras_spec import (
    BRANCHES,
    LEGACY_EXTRAS,
    MEMORY,
    MODIFIERS,
    AssocMemoryExtra,
    BranchRouterExtra,
    ChunkMemoryExtra,
    CustomExtra,
    ExtraSpec,
    GatedExtra,
    LayerScaleExtra,
    MemoryTokensExtra,
    RetroExtra,
)
from evotui.dsl.ffn_spec import DenseFFN, FFNSpec, MoEFFN, SSMSpec

__all__ = [
    "BRANCHES", "DEFAULT_ROPE_FACTOR", "LEGACY_EXTRAS", "MEMORY", "MODIFIERS", "SCALED_ROPE",
    "AssocMemoryExtra", "AttnSpec", "BlockSpec", "BranchRouterExtra", "ChunkMemoryExtra",
    "LayerScaleExtra", "MemoryTokensExtra", "CustomExtra", "DenseFFN", "EmbSpec", "ExtraSpec",
    "FFNSpec", "GatedExtra", "HeadSpec",
    "ModelSpec", "MoEFFN", "Recurrence", "RetroExtra", "RopeKind", "SSMSpec",
]


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
        present = set(self.branches())
        for kind in MODIFIERS:
            found = [e for e in self.extras if e.type == kind]
            if len(found) > 1:
                raise fail("extras", f"at most one {kind} extra per block; merge their targets")
            if found and not set(found[0].targets) & present:  # type: ignore[attr-defined]
                raise fail("extras", f"the {kind} extra names no branch this block has")
        router = self.router()
        if router is not None and len(set(router.targets) & present) < 2:
            raise fail("extras", "the branch_router extra needs at least two of its targets in "
                       "this block (it mixes them)")
        return self

    def branches(self) -> list[str]:
        """Branch kinds present, in forward order."""
        out = [b for b in ("attn", "ssm", "ffn") if getattr(self, b) is not None]
        out += [e.type for e in self.extras if e.type not in MODIFIERS]
        return out

    def gated(self) -> GatedExtra | None:
        return next((e for e in self.extras if isinstance(e, GatedExtra)), None)

    def layer_scale(self) -> LayerScaleExtra | None:
        return next((e for e in self.extras if isinstance(e, LayerScaleExtra)), None)

    def router(self) -> BranchRouterExtra | None:
        return next((e for e in self.extras if isinstance(e, BranchRouterExtra)), None)


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
            for kind in MODIFIERS:
                mod = next((e for e in b.extras if e.type == kind), None)
                absent = [t for t in mod.targets if t not in b.branches()] if mod else []
                if absent:
                    note(info, f"model.blocks[{i}]: {kind} targets {', '.join(absent)} are not "
                         "in this block; they take effect if a mutation adds those branches")
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

