"""Human-readable and JSON summaries of a config (what ``evotui validate`` prints)."""

from __future__ import annotations

from typing import Any

from evotui.dsl.dialect import DIALECT_NOTE
from evotui.dsl.estimate import Estimate
from evotui.dsl.run import RunConfig


def si(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def binary(n: float) -> str:
    for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{n:.0f} B"


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "none"


def dialect(notes: list[str]) -> str:
    """Which dialect the config was read in (the loader notes a translated file first)."""
    return "earlier" if any(n.startswith(DIALECT_NOTE) for n in notes) else "evotui"


def as_json(cfg: RunConfig, est: Estimate, source: str, notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"config": source, "name": cfg.model.name}
    out |= est.as_dict()
    out["recurrences"] = [r.model_dump() for r in cfg.model.recurrences]
    out["dialect"] = dialect(notes)
    out["notes"] = notes
    return out


def as_text(cfg: RunConfig, est: Estimate, source: str, notes: list[str],
            built: int | None = None) -> str:
    m = cfg.model
    kinds = [f"{est.attn_blocks} attn"]
    if est.ssm_blocks:
        kinds.append(f"{est.ssm_blocks} ssm")
    if est.moe_blocks:
        kinds.append(f"{est.moe_blocks} moe")
    rec = "; ".join(f"blocks {r.start}..{r.end} x{r.train_recurrence}" for r in m.recurrences)
    lines = [
        f"{source}: valid",
        "  dialect      " + ("the earlier system's, translated on load (see the notes; "
                             "`evotui convert` writes evotui's form)"
                             if dialect(notes) == "earlier" else "evotui"),
        f"  model        {m.name or '(unnamed)'}: {est.layers} blocks ({', '.join(kinds)}), "
        f"width {m.emb.dim}, vocab {m.emb.vocab}, {m.norm}"
        + (", tied head" if m.head.tie_embeddings else ""),
        f"  params       {si(est.params_total)} total, {si(est.params_active)} active "
        f"(embedding {si(est.params_embedding)})"
        + ("" if built is None else f"; built model: {built:,}"
           + (" (matches)" if built == est.params_total else " (MISMATCH)")),
        f"  FLOPs/token  {si(est.flops_per_token)} (training, forward+backward, "
        f"seq_len {est.seq_len})",
        f"  KV cache     {binary(est.kv_bytes_per_token)}/token; "
        f"{binary(est.cache_bytes_at_seq_len)} per sequence at seq_len {est.seq_len}",
        f"  attention    {_counts(est.patterns)}",
        f"  extras       {_counts(est.extras)}",
        f"  recurrence   {rec or 'none'}",
        f"  objectives   {', '.join(f'{k} ({v})' for k, v in cfg.evolution.objectives.items())}",
        "  blocks",
        "     #  branches                 pattern        density   params",
    ]
    for row in est.blocks:
        density = f"{row['density']:.3f}" if "density" in row else "-"
        branches = " ".join(row["branches"]) + (f" (x{row['loops']})" if row["loops"] > 1 else "")
        lines.append(f"    {row['index']:>2}  {branches:<24} {row.get('pattern', '-'):<14} "
                     f"{density:>7}  {si(row['params']):>7}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)
