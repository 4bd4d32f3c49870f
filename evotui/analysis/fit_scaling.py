"""``evotui fit-scaling``: read runs, fit, write ``scaling.json`` and plots, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evotui import jsonio
from evotui.analysis.points import PARAMS_MEASURE, read_sources
from evotui.analysis.recipe import recipe, reference
from evotui.analysis.scaling import FORM, fit_loss, fit_throughput
from evotui.errors import UserError
from evotui.summary import si

PLOTS = ("loss_vs_params.png", "loss_vs_tokens.png", "throughput_vs_width.png")


def analyse(paths: list[Path], bootstrap: int = 200, seed: int = 0,
            fresh_only: bool = False) -> tuple[dict[str, Any], Any, Any, list]:
    """The scaling document, the two fits and the points used."""
    sources = read_sources(paths)
    points = [p for s in sources for p in s.points]
    skipped = [f"{s.run_dir}: {line}" for s in sources for line in s.skipped]
    if fresh_only:
        skipped += [f"{p.run}: {p.id}: started from a parent's weights (--fresh-only)"
                    for p in points if p.inherited]
        points = [p for p in points if not p.inherited]
    if not points:
        raise UserError.single("no finished candidate with a measured loss and tokens to fit"
                               + (" (--fresh-only left none)" if fresh_only else ""),
                               source=", ".join(str(p) for p in paths))
    fit = fit_loss(np.array([p.params for p in points]), np.array([p.tokens for p in points]),
                   np.array([p.loss for p in points]), bootstrap, seed)
    tp_points = [p for p in points if p.throughput]
    tp = fit_throughput(np.array([p.width for p in tp_points]),
                        np.array([p.throughput for p in tp_points]))
    ref_source = next((s for s in sources if s.config is not None), None)
    warnings = list(fit.warnings)
    if any(p.inherited for p in points):
        n = sum(p.inherited for p in points)
        warnings.append(f"{n} of {len(points)} candidates started from a parent's weights; D "
                        "counts only their own tokens (--fresh-only leaves them out)")
    plan = None
    if ref_source is None:
        warnings.append("no run config validates, so there is no recipe")
    else:
        plan = recipe(fit, tp, reference(ref_source.config, str(ref_source.run_dir)))
    doc = {
        "sources": [str(s.run_dir) for s in sources],
        "params_measure": PARAMS_MEASURE,
        "tokens_measure": "tokens trained by the candidate (its last training metrics row)",
        "loss_measure": "held-out loss, mean over eval shards (metrics.loss)",
        "identifiable": fit.identifiable,
        "warnings": warnings + tp.warnings,
        "loss_fit": fit.as_json(),
        "throughput_fit": tp.as_json(),
        "recipe": plan,
        "points": [p.as_dict() for p in points],
        "skipped": skipped,
    }
    return jsonio.clean(doc), fit, tp, points


def write(doc: dict[str, Any], fit: Any, tp: Any, points: list, out: Path) -> list[Path]:
    from evotui.analysis import scaling_plots as plots

    if out.exists() and not out.is_dir():
        raise UserError.single("exists and is not a directory", path="--out", source=str(out))
    rows = (doc.get("recipe") or {}).get("rows", [])
    written = [
        plots.loss_plot(out / PLOTS[0], points, fit, "N", rows),
        plots.loss_plot(out / PLOTS[1], points, fit, "D", rows),
        plots.throughput_plot(out / PLOTS[2], points, tp),
    ]
    doc = doc | {"plots": [p.name for p in written]}
    jsonio.write(out / "scaling.json", doc)
    return [out / "scaling.json", *written]


def _interval(row: dict[str, Any] | None, fmt: str = "{:.3g}") -> str:
    if not row:
        return "-"
    text = fmt.format(row["median"] if row.get("median") is not None else row["best"])
    if row.get("lo") is not None:
        text += f" [{fmt.format(row['lo'])}, {fmt.format(row['hi'])}]"
    return text


def as_text(doc: dict[str, Any]) -> str:
    lf, tf, plan = doc["loss_fit"], doc["throughput_fit"], doc["recipe"]
    runs = len(doc["sources"])
    lines = [f"scaling fit over {len(doc['points'])} finished candidate(s) from {runs} run(s)"
             f" (N = {doc['params_measure']}, D = tokens trained, L = held-out loss)",
             f"loss fit   {FORM}: "
             + ("identifiable" if lf["identifiable"] else "NOT IDENTIFIABLE")
             + (f", {lf['bootstrap']['samples']} bootstrap fits; median [90% interval]"
                if lf["params"] else "")]
    for name, row in lf["params"].items():
        lines.append(f"  {name:<6} {_interval(row)}")
    for name, why in lf["fixed"].items():
        lines.append(f"  {name:<6} fixed: {why}")
    if lf["rms_log_residual"] is not None:
        lines.append(f"  rms residual of log-loss {lf['rms_log_residual']:.3g}")
    if tf["identifiable"]:
        lines.append(f"throughput {tf['form']}: b = {tf['b']:.3f} ± {tf['b_stderr']:.3f}, "
                     f"rms log error {tf['rms_log_error']:.3g}")
    else:
        lines.append(f"throughput {tf['form']}: NOT IDENTIFIABLE")
    if plan:
        lines += [f"recipe     tokens: {plan['tokens_rule']}",
                  f"           shape: {plan['shape_rule']}",
                  f"           batch: {plan['batch_rule']}",
                  f"           lr: {plan['lr_rule']}",
                  f"  {'target':<6} {'params':>8} {'width':>6} {'layers':>6} {'tokens':>9} "
                  f"{'tok/p':>6} {'batch':>12} {'steps':>9} {'lr':>9}  predicted loss [90%]"]
        for r in plan["rows"]:
            pred = "- (fit not identifiable)"
            if r["predicted_loss"] is not None:
                pred = f"{r['predicted_loss']:.3f}"
                if r["predicted_loss_lo"] is not None:
                    pred += f" [{r['predicted_loss_lo']:.3f}, {r['predicted_loss_hi']:.3f}]"
            batch = f"{r['batch_sequences']}x{r['seq_len']}"
            lines.append(f"  {r['target']:<6} {si(r['params_shape']):>8} {r['width']:>6} "
                         f"{r['layers']:>6} {si(r['tokens']):>9} {r['tokens_per_param']:>6.1f} "
                         f"{batch:>12} {r['steps']:>9,} {r['lr']:>9.2e}  {pred}")
    return "\n".join(lines)
