"""``--data offline``: any config's data section moved onto the corpus evotui ships.

Each shard becomes the builtin corpus its tag suggests (``code`` -> builtin:code, ``math`` ->
builtin:math, anything else -> builtin:prose), keeping its weight and tag, so objectives such
as ``ppl_code`` still exist; eval shards likewise. A tokenizer that may need the network
(a Hub name or a file) becomes ``byte``; ``byte`` and ``bpe:<N>`` are kept. The model is
not touched: its vocabulary stays (with ``byte`` only ids 0..256 are used; perplexities are
per byte and do not compare with a run on the config's own tokenizer).
"""

from __future__ import annotations

from typing import Any

from evotui.dsl.run import RunConfig

BY_TAG = {"code": "builtin:code", "math": "builtin:math"}


def offline(cfg: RunConfig) -> RunConfig:
    """A copy of ``cfg`` whose data is the offline corpus (see the module docstring)."""

    def moved(shard: Any) -> Any:
        name = shard.name if shard.name in ("builtin:code", "builtin:prose", "builtin:math") \
            else BY_TAG.get(shard.tag or "", "builtin:prose")
        return type(shard)(name=name, weight=shard.weight, tag=shard.tag,
                           max_tokens=shard.max_tokens)

    d = cfg.data
    keep = d.tokenizer == "byte" or d.tokenizer.startswith("bpe:")
    data = d.model_copy(update={
        "tokenizer": d.tokenizer if keep else "byte", "hf_revision": None,
        "shards": [moved(s) for s in d.shards], "eval_shards": [moved(s) for s in d.eval_shards]})
    return cfg.model_copy(update={"data": data})
