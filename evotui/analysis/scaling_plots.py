"""The plots of ``evotui fit-scaling``: loss against parameters and against tokens with the fit's
curves, and throughput against width with its power law."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evotui.analysis.figures import FRONT, figure, log_if_wide, note, save
from evotui.analysis.points import Point
from evotui.analysis.scaling import LossFit, ThroughputFit
from evotui.summary import si


def _scatter(ax: Any, x: np.ndarray, y: np.ndarray, colour: np.ndarray, front: np.ndarray,
             label: str) -> Any:
    sc = ax.scatter(x, y, c=colour, cmap="viridis", s=28, zorder=3, label="candidates")
    if front.any():
        ax.scatter(x[front], y[front], facecolors="none", edgecolors=FRONT, s=90, lw=1.5,
                   zorder=4, label="frontier")
    fig = ax.get_figure()
    fig.colorbar(sc, ax=ax, label=label)
    return sc


def _status(fit: LossFit) -> str:
    if fit.identifiable:
        return "fit identifiable"
    return "NOT identifiable: " + ("; ".join(fit.warnings[:2]) or "too little data")


def loss_plot(path: Path, points: list[Point], fit: LossFit, axis: str,
              recipe_rows: list[dict[str, Any]]) -> Path:
    """Loss against N (``axis`` "N", coloured by D) or D (coloured by N), with fit curves at
    the low, middle and high value of the other variable, and the recipe's predictions."""
    fig = figure()
    ax = fig.add_subplot()
    if not points:
        note(ax, "no measured candidates")
        return save(fig, path)
    n = np.array([p.params for p in points])
    d = np.array([p.tokens for p in points])
    loss = np.array([p.loss for p in points])
    front = np.array([p.frontier for p in points])
    x, other = (n, d) if axis == "N" else (d, n)
    _scatter(ax, x, loss, np.log10(other), front,
             "log10 tokens D" if axis == "N" else "log10 params N")
    lo, hi = x.min(), x.max()
    if fit.theta is not None and axis in fit.terms:
        targets = [r for r in recipe_rows if r.get("predicted_loss") is not None]
        if targets and axis == "N":
            hi = max(hi, max(r["params"] for r in targets))
        if targets and axis == "D":
            hi = max(hi, max(r["tokens"] for r in targets))
        grid = np.geomspace(lo / 1.5, hi * 1.5, 200)
        for q in np.quantile(other, [0.0, 0.5, 1.0]):
            nn, dd = (grid, np.full_like(grid, q)) if axis == "N" else (np.full_like(grid, q),
                                                                         grid)
            ax.plot(grid, fit.predict(nn, dd), lw=1.2, alpha=0.8,
                    label=f"fit at {'D' if axis == 'N' else 'N'} = {si(q)}")
        for r in targets:
            xr = r["params"] if axis == "N" else r["tokens"]
            err = [[r["predicted_loss"] - (r["predicted_loss_lo"] or r["predicted_loss"])],
                   [(r["predicted_loss_hi"] or r["predicted_loss"]) - r["predicted_loss"]]]
            ax.errorbar([xr], [r["predicted_loss"]], yerr=err, fmt="D", color="black",
                        capsize=3, zorder=5)
            ax.annotate(r["target"], (xr, r["predicted_loss"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
    log_if_wide(ax, "x", [*x, *ax.get_xlim()], 5.0)
    ax.set_xlabel("parameters N (params_active)" if axis == "N" else "tokens trained D")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"loss against {'parameters' if axis == 'N' else 'tokens'} ({_status(fit)})",
                 fontsize=9, wrap=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save(fig, path)


def throughput_plot(path: Path, points: list[Point], fit: ThroughputFit) -> Path:
    fig = figure()
    ax = fig.add_subplot()
    pts = [p for p in points if p.throughput and p.throughput > 0 and p.width > 0]
    if not pts:
        note(ax, "no measured throughput")
        return save(fig, path)
    w = np.array([p.width for p in pts], float)
    t = np.array([p.throughput for p in pts], float)
    ax.scatter(w, t, s=28, color="#1f77b4", zorder=3, label="candidates")
    log_if_wide(ax, "x", w, 5.0)
    log_if_wide(ax, "y", t, 5.0)
    if fit.identifiable and fit.exponent is not None and fit.rms_log is not None:
        grid = np.geomspace(w.min() / 1.3, w.max() * 1.3, 100)
        pred = np.array([fit.predict(g) for g in grid], float)
        ax.plot(grid, pred, color="black",
                label=f"tokens/s ~ width^{fit.exponent:.2f} ± {fit.exponent_se:.2f}")
        band = np.exp(fit.rms_log)
        ax.fill_between(grid, pred / band, pred * band, color="black", alpha=0.1,
                        label="± rms error")
        title = "throughput against width"
    else:
        title = "throughput against width (NOT identifiable: " + "; ".join(fit.warnings) + ")"
    ax.set_xlabel("model width (emb.dim)")
    ax.set_ylabel("measured training tokens/s")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)
