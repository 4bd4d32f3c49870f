"""The feed-forward (dense or MoE) and state-space branches of a block."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from evotui.dsl.base import PosInt, Prob, Strict, fail


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
