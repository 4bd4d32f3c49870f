"""Objective names the search can optimise, with their default directions.

Every objective is either measured by the trainer (held-out perplexity per data shard tag,
passkey recall, throughput, peak memory, MFU), computed by the evolution layer from the
population (novelty), or read exactly off the genome (parameter counts, FLOPs, KV bytes,
layer counts). Nothing here is a formula standing in for a measurement.
"""

from __future__ import annotations

import re

Direction = str  # "min" | "max"

MEASURED: dict[str, Direction] = {
    "loss": "min",  # mean held-out loss over the eval shards
    "ppl": "min",  # perplexity of that mean loss
    "passkey_acc": "max",  # passkey retrieval accuracy over the probe distances
    "passkey_loss": "min",  # loss on the passkey digits
    "throughput": "max",  # training tokens/s over training steps only
    "peak_mem_mb": "min",  # CUDA max allocated, or process RSS on CPU
    "mfu": "max",  # model FLOPs utilisation on CUDA
    "novelty": "max",  # distance to the nearest genomes seen so far
}
STRUCTURAL: dict[str, Direction | None] = {
    "params_total": "min",
    "params_active": "min",
    "flops_per_token": "min",
    "kv_bytes_per_token": "min",
    "layers": None,  # no natural direction: say min or max
    "moe_blocks": None,
    "ssm_blocks": None,
}
ALIASES = {"long_recall": "passkey_acc", "ram": "peak_mem_mb", "tokens_per_s": "throughput"}
PPL_TAG = re.compile(r"^ppl_([a-z0-9][a-z0-9_]*)$")


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def default_direction(name: str) -> Direction | None:
    if PPL_TAG.match(name):
        return "min"
    if name in MEASURED:
        return MEASURED[name]
    return STRUCTURAL.get(name)


def is_known(name: str) -> bool:
    return bool(PPL_TAG.match(name)) or name in MEASURED or name in STRUCTURAL


def known_names() -> str:
    return ", ".join(["ppl_<shard tag>", *MEASURED, *STRUCTURAL])
