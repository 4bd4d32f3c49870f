"""The run config around a genome: training, data, evolution and priors.

``RunConfig`` is what a YAML file holds. Loading it also resolves what the genome leaves to
the run (windows from ``priors.window_scale`` and ``data.seq_len``, ``rope_theta`` from the
priors, MoE balance from ``train.router_lb_coeff``) and checks the rules that span sections.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from evotui.dsl import objectives as obj
from evotui.dsl.base import Strict, fail, note
from evotui.dsl.model import ModelSpec, MoEFFN, RetroExtra

PosInt = Annotated[int, Field(gt=0, le=1 << 40)]
PosFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]

BUILTIN_SHARDS = {"builtin:code": "code", "builtin:prose": "text", "builtin:math": "math"}
TOKENIZER_VOCAB = {"byte": 257, "gpt2": 50257}
SPLIT_NAMES = re.compile(r"^(train|test|validation|valid|dev|eval)(\[.*\])?$")
TAG_RULES = (
    (re.compile(r"code|mbpp|humaneval|stack|github"), "code"),
    (re.compile(r"math|gsm8k|arith"), "math"),
    (re.compile(r"news"), "news"),
    (re.compile(r"wiki|openwebtext|c4|fineweb|pile|book|prose|tinystories"), "text"),
)


def tokenizer_vocab(name: str) -> int | None:
    """Vocabulary size of a tokenizer known without loading it, else None."""
    if name in TOKENIZER_VOCAB:
        return TOKENIZER_VOCAB[name]
    m = re.fullmatch(r"bpe:(\d+)", name)
    return int(m.group(1)) if m else None


class OptimizerConfig(Strict):
    name: Literal["adamw", "lion", "muon"] = "adamw"
    lr: PosFloat | None = Field(None, description="Overrides train.lr.")
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] | None = Field(
        None, min_length=2, max_length=2
    )
    eps: PosFloat | None = None
    weight_decay: NonNegFloat | None = Field(None, description="Overrides train.weight_decay.")


class TrainConfig(Strict):
    lr: PosFloat = 3e-4
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    warmup: Annotated[int, Field(ge=0)] = Field(0, description="Warm-up steps.")
    clip: NonNegFloat = Field(1.0, description="Gradient-norm clip (0 disables).")
    weight_decay: NonNegFloat = 0.0
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    bf16: bool = True
    grad_ckpt: bool = False
    compile: bool = False
    parallel: Literal["auto", "none", "fsdp"] = Field(
        "auto", description="fsdp: train sharded over train.shards GPUs of one node; auto: "
        "sharded when the memory estimate exceeds one GPU slot (evotui.dsl.memory); none: never."
    )
    shards: Literal[1, 2, 4, 8] = Field(1, description="FSDP ranks with parallel: fsdp.")
    grad_accum: PosInt | None = Field(None, description="Micro-batches per optimizer step.")
    global_batch_tokens: PosInt | None = Field(
        None, description="Tokens per optimizer step (sets grad_accum)."
    )
    max_tokens: PosInt | None = Field(None, description="Cap on training tokens per candidate.")
    init_checkpoint: str | None = Field(
        None, description="A safetensors checkpoint whose matching tensors start the model."
    )
    checkpoint_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Weights in checkpoints (bfloat16 halves them; resume is then "
        "approximate)."
    )
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    eval_batches: PosInt = Field(8, description="Held-out batches per shard per evaluation.")
    eval_interval: PosInt = Field(100, description="Steps between held-out evaluations.")
    log_interval: PosInt = Field(10, description="Steps between progress events.")
    router_lb_coeff: NonNegFloat = Field(0.01, description="Default MoE load-balance weight.")
    router_entropy_coeff: NonNegFloat = 0.0
    entropy_threshold: NonNegFloat | None = None
    entropy_patience: PosInt = 3
    instability_threshold: PosFloat | None = None
    no_improve_patience: PosInt | None = None
    improvement_tolerance: NonNegFloat = 0.001
    ppl_stop_threshold: PosFloat | None = None
    passkey_eval_steps: Annotated[int, Field(ge=0)] = 0
    passkey_eval_batches: PosInt = 4
    passkey_eval_seq_len: PosInt | None = None
    passkey_eval_min_distance: PosInt | None = None
    passkey_eval_batch_size: PosInt = 1
    passkey_eval_lr: PosFloat | None = None
    passkey_eval_vocab_limit: PosInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grad_checkpoint" in data:
            data = dict(data)
            if "grad_ckpt" in data:
                raise fail("grad_checkpoint", "is the same as grad_ckpt; keep one")
            data["grad_ckpt"] = data.pop("grad_checkpoint")
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        o = self.optimizer
        for f in ("lr", "weight_decay"):
            if getattr(o, f) is None:
                continue
            if f in self.model_fields_set:
                raise fail(f"optimizer.{f}", f"set {f} in one place (train.{f} is also set)")
            setattr(self, f, getattr(o, f))  # one place from now on: train.<f>
            setattr(o, f, None)
        if self.grad_accum is not None and self.global_batch_tokens is not None:
            raise fail("global_batch_tokens", "give grad_accum or global_batch_tokens, not both")
        if self.passkey_eval_steps and self.passkey_eval_lr is None:
            raise fail("passkey_eval_lr", "passkey_eval_steps > 0 fine-tunes the probe; set an lr")
        if self.parallel == "fsdp" and self.shards == 1:
            raise fail("shards", "parallel: fsdp needs 2, 4 or 8 shards; set train.shards")
        if self.parallel != "fsdp" and self.shards > 1:
            raise fail("shards", f"{self.shards} shards need parallel: fsdp; set train.parallel")
        return self


class ShardSpec(Strict):
    """A text source: a Hugging Face dataset, a local file, or a corpus evotui ships."""

    legacy = {"cache_path": "evotui caches tokens itself (keyed by source and tokenizer)"}

    name: str | None = Field(None, description="HF dataset name or builtin:code|prose|math.")
    path: str | None = Field(None, description="Local txt, jsonl, json, csv or parquet file.")
    config: str | None = Field(None, description="HF dataset config (subset).")
    split: str = "train"
    revision: str | None = None
    weight: PosFloat = 1.0
    tag: str | None = Field(None, description="Metric suffix: held-out ppl is ppl_<tag>.")
    text_field: str | None = Field(None, description="Default: detected (text, content...).")
    max_tokens: PosInt | None = Field(
        None, description="Token budget: read the source until this many tokens (default: "
        "derived from the run: its training tokens by weight plus the held-out part).")

    @model_validator(mode="before")
    @classmethod
    def _legacy_split(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or data.get("config") is not None:
            return data
        split = data.get("split")
        if not isinstance(split, str) or SPLIT_NAMES.match(split):
            return data
        data = dict(data)
        config, _, rest = split.partition(":")
        data["config"], data["split"] = config, rest or "train"
        note(info, f"shard {data.get('name')}: split {split!r} read as config {config!r}, "
             f"split {data['split']!r}; write config: explicitly")
        return data

    @model_validator(mode="after")
    def _check(self) -> ShardSpec:
        if (self.name is None) == (self.path is None):
            raise fail("name", "give exactly one of name (a dataset) or path (a local file)")
        if self.name and self.name.startswith("builtin:") and self.name not in BUILTIN_SHARDS:
            raise fail("name", "unknown builtin corpus; available: " + ", ".join(BUILTIN_SHARDS))
        if self.tag is None:
            self.tag = infer_tag(self.name or self.path or "")
        elif not re.fullmatch(r"[a-z0-9][a-z0-9_]*", self.tag):
            raise fail("tag", "use lowercase letters, digits and _ (it names ppl_<tag>)")
        return self


def infer_tag(source: str) -> str:
    if source in BUILTIN_SHARDS:
        return BUILTIN_SHARDS[source]
    low = source.lower()
    for pattern, tag in TAG_RULES:
        if pattern.search(low):
            return tag
    stem = re.sub(r"\.[a-z0-9]+$", "", low.rstrip("/").split("/")[-1])
    return re.sub(r"[^a-z0-9]+", "_", stem).strip("_") or "data"


class DataConfig(Strict):
    legacy = {
        "streaming": "evotui tokenises once into a memory-mapped cache; remove it",
        "healing_shards": "remove it (no healing phase)",
        "healing_tokens": "remove it (no healing phase)",
    }

    tokenizer: str = Field("byte", description="byte | gpt2 | bpe:<vocab> | a tokenizer path.")
    seq_len: Annotated[int, Field(ge=8, le=1 << 20)] = 256
    batch_size: PosInt = Field(8, description="Sequences per micro-batch.")
    workers: Annotated[int, Field(ge=0)] = Field(0, description="Tokeniser processes.")
    hf_revision: str | None = Field(None, description="Default dataset revision.")
    shards: list[ShardSpec] = Field(min_length=1)
    eval_shards: list[ShardSpec] = Field(
        default_factory=list, description="Default: a held-out split of each training shard."
    )
    eval_tokens: PosInt = Field(32768, description="Held-out tokens per eval shard.")

    def eval_tags(self) -> list[str]:
        src = self.eval_shards or self.shards
        return list(dict.fromkeys(s.tag for s in src if s.tag))


class Rung0Thresholds(Strict):
    """Static gates checked before any training, plus the router-entropy gate on rung 1."""

    legacy = {"min_throughput_proxy": "use max_flops_per_token (a static throughput bound)"}

    max_params: PosInt | None = None
    max_active_params: PosInt | None = None
    max_flops_per_token: PosFloat | None = None
    max_kv_bytes_per_token: PosInt | None = None
    min_layers: PosInt | None = None
    max_layers: PosInt | None = None
    gate_entropy_min: NonNegFloat | None = Field(
        None, description="MoE candidates whose rung-1 router entropy (nats) is below are cut."
    )
    gate_entropy_max: NonNegFloat | None = None


class EvolutionConfig(Strict):
    legacy = {
        "composite_metrics": "list the parts as separate objectives (lexicase uses them all)",
        "promotion_prob": "promotion keeps the best topk_keep fraction",
        "promotion_min_layers": "use rung0_thresholds.min_layers",
        "promotion_min_moe_blocks": "add moe_blocks to objectives",
        "promotion_steps_multiplier": "set rung2_steps",
        "promotion_tokens_multiplier": "set rung2_tokens",
        "promotion_min_router_entropy": "use rung0_thresholds.gate_entropy_min",
        "promotion_min_recurrence_gain": "remove it",
        "promotion_max_instability": "use train.instability_threshold",
    }

    population: Annotated[int, Field(ge=2)] = 16
    generations: PosInt = 10
    topk_keep: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    crossover_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    parent_selection: Literal[
        "lexicase", "epsilon_lexicase", "pareto", "tournament", "map_elites", "random"
    ] = "lexicase"
    tournament_size: Annotated[int, Field(ge=2)] = 3
    archive_max_elites: PosInt = 64
    objectives: dict[str, Literal["min", "max"] | None] = Field(default_factory=dict)
    pareto_objectives: list[str] = Field(
        default_factory=list, description="Earlier dialect: merged into objectives."
    )
    rung0_thresholds: Rung0Thresholds = Field(default_factory=Rung0Thresholds)
    rung1_tokens: PosInt | None = None
    rung1_steps: PosInt | None = None
    rung2_tokens: PosInt | None = None
    rung2_steps: PosInt | None = None
    adaptive_mutation: bool = False
    adaptive_mutation_eta: PosFloat = 0.1
    adaptive_mutation_min_weight: PosFloat = 0.05
    adaptive_mutation_max_weight: PosFloat = 5.0
    weight_inheritance: Literal["parent", "init", "scratch"] = "parent"
    function_preserving: bool = Field(
        True, description="With weight_inheritance: parent, a tensor whose shape a mutation "
        "changed starts from a function-preserving (Net2Net) transform of its parent's "
        "(wider FFN / heads / kv heads / experts; new blocks start as the identity) instead "
        "of fresh; false: such tensors start fresh")

    @field_validator("parent_selection", mode="before")
    @classmethod
    def _dash(cls, v: Any) -> Any:
        return v.replace("-", "_") if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> EvolutionConfig:
        merged: dict[str, str | None] = {}
        for i, name in enumerate(self.pareto_objectives):
            merged[obj.canonical(name)] = self.objectives.get(name)
            if not obj.is_known(obj.canonical(name)):
                raise fail(f"pareto_objectives.{i}",
                           f"unknown metric {name!r}; known: {obj.known_names()}")
        for name, direction in self.objectives.items():
            c = obj.canonical(name)
            if not obj.is_known(c):
                raise fail(f"objectives.{name}",
                           f"unknown metric; known: {obj.known_names()}")
            merged[c] = direction
        for name, direction in list(merged.items()):
            merged[name] = direction or obj.default_direction(name)
            if merged[name] is None:
                raise fail(f"objectives.{name}", "has no default direction; write min or max")
        self.objectives = merged or {"loss": "min"}
        self.pareto_objectives = []
        for rung in ("rung1", "rung2"):
            if getattr(self, f"{rung}_tokens") and getattr(self, f"{rung}_steps"):
                raise fail(f"{rung}_steps", f"give {rung}_tokens or {rung}_steps, not both")
        r0 = self.rung0_thresholds
        if r0.min_layers and r0.max_layers and r0.min_layers > r0.max_layers:
            raise fail("rung0_thresholds.min_layers", "must be <= max_layers")
        return self


class Priors(Strict):
    legacy = {
        "prior_weight": "express preferences as objectives",
        "compute_penalty_weight": "add flops_per_token: min to evolution.objectives",
    }

    tokens_per_param: PosFloat = Field(20.0, description="Token budget per parameter.")
    window_scale: PosFloat | None = Field(
        None, description="Windows default to sqrt(seq_len) x window_scale."
    )
    rope_theta_default: PosFloat = 10000.0


class RunConfig(Strict):
    """A whole evotui config file."""

    legacy = {
        "templates": "its mutation operators are built in and cover every part of the genome "
        "(mutation templates are not read)",
    }

    model: ModelSpec
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    priors: Priors = Field(default_factory=Priors)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> RunConfig:
        n = self.data.seq_len
        for i, block in enumerate(self.model.blocks):
            here = f"model.blocks.{i}"
            a = block.attn
            if a is not None:
                if a.sparsity in ("sliding", "local_global", "local_block") and a.sw is None:
                    if self.priors.window_scale is None:
                        raise fail(f"{here}.attn.sw", f"sparsity {a.sparsity} needs sw (or set "
                                   "priors.window_scale to derive it from data.seq_len)")
                    a.sw = derive_window(n, self.priors.window_scale)
                if a.rope != "none" and a.rope_theta is None:
                    a.rope_theta = self.priors.rope_theta_default
                for knob in ("sw", "block_size", "block_stride", "global_stride", "dilation"):
                    v = getattr(a, knob)
                    if v is not None and v > n:
                        raise fail(f"{here}.attn.{knob}", f"{v} exceeds data.seq_len ({n})")
                if a.sparsity == "local_block" and a.block_size <= a.sw:
                    note(info, f"{here}.attn: block_size {a.block_size} <= sw {a.sw}, so the "
                         "block part of local_block lies inside the window")
            if block.ssm is not None and block.ssm.chunk > n:
                raise fail(f"{here}.ssm.chunk", f"{block.ssm.chunk} exceeds data.seq_len ({n})")
            if isinstance(block.ffn, MoEFFN) and block.ffn.balance is None:
                block.ffn.balance = self.train.router_lb_coeff
            for j, e in enumerate(block.extras):
                if isinstance(e, RetroExtra):
                    for f in ("stride", "memory_tokens"):
                        if getattr(e, f) > n:
                            raise fail(f"{here}.extras.{j}.{f}",
                                       f"{getattr(e, f)} exceeds data.seq_len ({n})")
        vocab = tokenizer_vocab(self.data.tokenizer)
        if vocab is not None and self.model.emb.vocab < vocab:
            raise fail("model.emb.vocab", f"{self.model.emb.vocab} is smaller than tokenizer "
                       f"{self.data.tokenizer}'s vocabulary ({vocab}); use at least {vocab}")
        tags = self.data.eval_tags()
        for name in self.evolution.objectives:
            m = obj.PPL_TAG.match(name)
            if m and m.group(1) not in tags:
                raise fail(f"evolution.objectives.{name}",
                           f"no eval shard is tagged {m.group(1)!r} (tags: {', '.join(tags)}); "
                           "add one (data.eval_shards or data.shards, with tag:) or drop it")
        t = self.train
        micro = self.data.batch_size * n
        if t.global_batch_tokens is not None:
            if t.global_batch_tokens % micro:
                near = max(1, round(t.global_batch_tokens / micro)) * micro
                raise fail("train.global_batch_tokens", f"must be a multiple of batch_size x "
                           f"seq_len ({micro}); e.g. {near}")
            t.grad_accum = t.global_batch_tokens // micro
            t.global_batch_tokens = None
        if self.data.batch_size % t.shards:
            raise fail("train.shards", f"each of {t.shards} shards trains batch_size / shards "
                       f"rows; make data.batch_size ({self.data.batch_size}) a multiple of it")
        if (
            t.passkey_eval_seq_len is not None
            and t.passkey_eval_min_distance is not None
            and t.passkey_eval_min_distance >= t.passkey_eval_seq_len
        ):
            raise fail("train.passkey_eval_min_distance",
                       f"must be < passkey_eval_seq_len ({t.passkey_eval_seq_len})")
        return self


def derive_window(seq_len: int, window_scale: float) -> int:
    """The default attention window: about sqrt(seq_len) x window_scale, at most seq_len."""
    return max(1, min(seq_len, round(math.sqrt(seq_len) * window_scale)))
