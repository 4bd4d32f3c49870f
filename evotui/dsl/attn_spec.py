"""The attention branch of a block: its kinds, RoPE, sparsity pattern and options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from evotui.dsl.base import PosInt, Prob, Strict, fail
from evotui.dsl.patterns import ALL_KNOBS, OPTIONAL_KNOBS, REQUIRED_KNOBS, Pattern

RopeKind = Literal["standard", "linear", "ntk", "yarn", "none"]
SCALED_ROPE = ("linear", "ntk", "yarn")
DEFAULT_ROPE_FACTOR = 4.0


class KeySelect(Strict):
    """A top-k key selector (after DeepSeek-V3.2's sparse attention): a light indexer with its
    own weights scores every earlier key, ``sum_j w_j(x_t) relu(q_j(x_t) . k(x_s))`` over
    ``heads`` indexer heads of width ``dim``; each query attends only to its ``topk`` best keys
    plus its last ``window`` positions (itself included). The indexer is trained by
    distillation: a KL term, weighted ``distill``, pulls its distribution over the selected
    keys towards the attention's own (detached). Attention work follows ``topk + window``,
    not the sequence length."""

    topk: PosInt = Field(description="Keys each query selects besides its window.")
    window: PosInt = Field(16, description="Local window always attended (query included).")
    heads: PosInt = Field(2, description="Indexer heads.")
    dim: PosInt = Field(32, description="Indexer width per head.")
    distill: Annotated[float, Field(ge=0.0)] = Field(
        1.0, description="Weight of the indexer's distillation loss.")


class AttnSpec(Strict):
    """The attention branch: softmax MHA / GQA / MQA with RoPE variants and a causal sparsity
    pattern, multi-head latent attention (``MLA``) or causal linear attention (``LINEAR``);
    options ALiBi, QK-norm, an output gate and a top-k key selector."""

    legacy = {"qk_norm_max": "use qk_norm: true (RMSNorm of queries and keys per head)"}

    kind: Literal["MHA", "GQA", "MQA", "LINEAR", "MLA"] = "GQA"
    heads: PosInt
    head_dim: PosInt = Field(64, description="Query/key/value width per head (MLA: the "
                             "non-rotary query/key part and the value width).")
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
    alibi: bool = Field(False, description="ALiBi: add -slope_h x distance to the scores.")
    qk_norm: bool = Field(False, description="RMSNorm of queries and keys per head.")
    gate: Literal["none", "head", "channel"] = Field(
        "none", description="Sigmoid output gate from the block input, per head or channel.")
    kv_latent: PosInt | None = Field(None, description="MLA: width of the joint KV latent.")
    q_latent: PosInt | None = Field(None, description="MLA: width of the query latent "
                                    "(none: a full query projection).")
    rope_dim: PosInt | None = Field(None, description="MLA: width of the decoupled rotary "
                                    "query/key part per head (default head_dim / 2).")
    chunk: PosInt | None = Field(None, description="LINEAR: chunk length of the chunked form "
                                 "(default 64).")
    key_select: KeySelect | None = Field(None, description="A top-k key selector.")

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("rope", "sparsity", "gate", mode="before")
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
        elif self.kind == "MLA":
            if self.kv_groups not in (None, 1):
                raise fail("kv_groups", "MLA up-projects keys and values for every head from "
                           "the shared latent (the cache is the latent); remove it")
            self.kv_groups = 1
        elif self.kv_groups is None:
            self.kv_groups = 1
        if self.heads % self.kv_groups:
            allowed = ", ".join(str(d) for d in range(1, self.heads + 1) if self.heads % d == 0)
            raise fail("kv_groups", f"must divide heads ({self.heads}); allowed: {allowed}")
        self._check_kind()
        self._check_rope()
        self._check_pattern()
        return self

    def _check_kind(self) -> None:
        only = {"kv_latent": "MLA", "q_latent": "MLA", "rope_dim": "MLA", "chunk": "LINEAR"}
        for f, kind in only.items():
            if getattr(self, f) is not None and self.kind != kind:
                raise fail(f, f"applies to kind {kind} only; remove it")
        if self.kind == "MLA":
            if self.kv_latent is None:
                raise fail("kv_latent", "kind MLA needs kv_latent (the joint KV latent width)")
            if self.qk_norm:
                raise fail("qk_norm", "MLA normalises its latents already; remove it")
        if self.kind == "LINEAR":
            if self.chunk is None:
                self.chunk = 64
            for f in ("alibi", "key_select"):
                if getattr(self, f):
                    raise fail(f, "kind LINEAR has no attention scores to bias or select; "
                               "remove it")
            if self.sparsity != "none":
                raise fail("sparsity", "kind LINEAR attends every earlier token through its "
                           "state; use sparsity: none")
            if self.dropout:
                raise fail("dropout", "kind LINEAR has no attention probabilities; set 0")
        if self.key_select is not None:
            if self.kind == "MLA":
                raise fail("key_select", "is built for MHA, GQA and MQA; remove it")
            if self.sparsity != "none":
                raise fail("key_select", "replaces the static pattern (its window is "
                           "key_select.window); use sparsity: none")

    def _check_rope(self) -> None:
        if self.rope == "none":
            for f in ("rope_theta", "rope_factor", "rope_dim"):
                if getattr(self, f) is not None:
                    raise fail(f, "has no effect with rope: none; remove it or set a rope kind")
            return
        if self.kind == "MLA":
            if self.rope_dim is None:
                self.rope_dim = max(2, self.head_dim // 2 // 2 * 2)
            rotated, what = self.rope_dim, "rope_dim"
        else:
            rotated, what = self.head_dim, "head_dim"
        if rotated % 2 or rotated < 2 + 2 * (self.kind != "MLA"):
            raise fail(what, f"RoPE rotates pairs of channels; use an even {what} of at least "
                       + ("2" if self.kind == "MLA" else "4"))
        if self.rope == "standard" and self.rope_factor is not None:
            raise fail("rope_factor", "applies to rope linear, ntk or yarn only")
        if self.rope in SCALED_ROPE and self.rope_factor is None:
            self.rope_factor = DEFAULT_ROPE_FACTOR

    def _check_pattern(self) -> None:
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

    @property
    def kv_heads(self) -> int:
        return self.heads // (self.kv_groups or 1)

    @property
    def gate_width(self) -> int:
        """Outputs of the gate projection: one per head or one per channel (0: no gate)."""
        return {"none": 0, "head": self.heads, "channel": self.heads * self.head_dim}[self.gate]

    @property
    def softmax(self) -> bool:
        """Whether the branch computes softmax attention over a pattern (not LINEAR)."""
        return self.kind != "LINEAR"

    def pattern(self) -> Pattern:
        return Pattern(self.sparsity, **{k: getattr(self, k) for k in ALL_KNOBS})
