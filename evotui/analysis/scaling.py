"""Scaling-law fits over measured candidates (``evotui fit-scaling``). numpy/scipy, no torch.

Loss against parameters N and training tokens D, in the Chinchilla form

    L(N, D) = E + A / N^alpha + B / D^beta

fitted on log-loss, ``log L = logsumexp(e, a - alpha log N, b - beta log D)`` with E = e^e,
A = e^a, B = e^b (Hoffmann et al. 2022), by robust least squares (Huber loss) from a grid of
starts; the uncertainty is a bootstrap over points (median and 90% interval).

A term is only fitted when the data can identify it: enough points, N (or D) spanning at least
a factor ``MIN_SPREAD`` over at least three distinct values, and N and D not moving together.
A term that cannot be fitted is folded into a constant at the points' value (a fit of
``C + B / D^beta`` when all candidates have nearly the same size), and ``identifiable`` is false
unless both terms are fitted and the bootstrap pins both exponents down.

Throughput against width is a power law fitted in log space by ordinary least squares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORM = "L(N, D) = E + A / N^alpha + B / D^beta"
THROUGHPUT_FORM = "tokens/s = c * width^b"
MIN_SPREAD = 3.0  # max/min of N (or D) for its exponent to be fitted
MIN_DISTINCT = 3
MIN_POINTS = {2: 8, 1: 5}  # points needed with two fitted terms, with one
MAX_CORR = 0.95  # |corr(log N, log D)| above this: the two terms cannot be told apart
MAX_EXPONENT_WIDTH = 0.5  # a 90% bootstrap interval wider than this is not a measurement
EXPONENT_BOUNDS = (1e-3, 4.0)
HUBER_DELTA = 1e-3  # on log-loss, as Hoffmann et al.
TERM_NAMES = {"N": ("A", "alpha"), "D": ("B", "beta")}


@dataclass
class LossFit:
    """A fit of the loss law (possibly with a term folded into the constant)."""

    terms: tuple[str, ...]
    n_points: int
    spread: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    fixed: dict[str, str] = field(default_factory=dict)
    theta: np.ndarray | None = None
    boots: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    bootstrap_failed: int = 0
    rms_log: float | None = None
    identifiable: bool = False

    def names(self) -> list[str]:
        out = ["E" if len(self.terms) == 2 else "C"]
        for t in self.terms:
            out += list(TERM_NAMES[t])
        return out

    def natural(self, theta: np.ndarray) -> dict[str, float]:
        """(e, a, alpha, b, beta) -> (E, A, alpha, B, beta), for the fitted terms."""
        out, i = {self.names()[0]: math.exp(theta[0])}, 1
        for t in self.terms:
            scale, exponent = TERM_NAMES[t]
            out[scale], out[exponent] = math.exp(theta[i]), float(theta[i + 1])
            i += 2
        return out

    def predict(self, n: float | np.ndarray, d: float | np.ndarray,
                theta: np.ndarray | None = None) -> np.ndarray:
        theta = self.theta if theta is None else theta
        assert theta is not None
        x = {"N": np.log(np.asarray(n, float)), "D": np.log(np.asarray(d, float))}
        return np.exp(_log_pred(theta, self.terms, x))

    def interval(self, n: float, d: float) -> tuple[float, float | None, float | None]:
        """Predicted loss at (n, d): the best fit and the bootstrap's 5th and 95th percentiles."""
        best = float(self.predict(n, d))
        if len(self.boots) < 2:
            return best, None, None
        preds = np.array([float(self.predict(n, d, th)) for th in self.boots])
        lo, hi = np.percentile(preds, [5, 95])
        return best, float(lo), float(hi)

    def params(self) -> dict[str, dict[str, float | None]]:
        if self.theta is None:
            return {}
        best = self.natural(self.theta)
        samples = [self.natural(th) for th in self.boots]
        out: dict[str, dict[str, float | None]] = {}
        for name, value in best.items():
            row: dict[str, float | None] = {"best": value, "median": None, "lo": None,
                                            "hi": None}
            if len(samples) >= 2:
                vals = np.array([s[name] for s in samples])
                row["median"] = float(np.median(vals))
                row["lo"], row["hi"] = (float(v) for v in np.percentile(vals, [5, 95]))
            out[name] = row
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "form": FORM, "identifiable": self.identifiable, "fitted_terms": list(self.terms),
            "n_points": self.n_points, "params": self.params(), "fixed": self.fixed,
            "warnings": self.warnings, "spread": self.spread, "rms_log_residual": self.rms_log,
            "bootstrap": {"samples": len(self.boots), "failed": self.bootstrap_failed,
                          "interval": "5th-95th percentile"},
            "huber_delta": HUBER_DELTA,
        }


def _log_pred(theta: np.ndarray, terms: tuple[str, ...], x: dict[str, np.ndarray]
              ) -> np.ndarray:
    parts = [np.full(np.broadcast(*x.values()).shape, theta[0])]
    i = 1
    for t in terms:
        parts.append(theta[i] - theta[i + 1] * x[t])
        i += 2
    stacked = np.stack(np.broadcast_arrays(*parts))
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).sum(axis=0))


def _fit_once(theta0: np.ndarray, terms: tuple[str, ...], x: dict[str, np.ndarray],
              log_l: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> Any:
    from scipy.optimize import least_squares

    def residual(theta: np.ndarray) -> np.ndarray:
        return _log_pred(theta, terms, x) - log_l

    def jac(theta: np.ndarray) -> np.ndarray:
        parts = [np.full_like(log_l, theta[0])]
        i = 1
        for t in terms:
            parts.append(theta[i] - theta[i + 1] * x[t])
            i += 2
        stacked = np.stack(parts)
        w = np.exp(stacked - stacked.max(axis=0))
        w /= w.sum(axis=0)
        cols = [w[0]]
        for j, t in enumerate(terms, start=1):
            cols += [w[j], -w[j] * x[t]]
        return np.stack(cols, axis=1)

    theta0 = np.clip(theta0, bounds[0] + 1e-9, bounds[1] - 1e-9)
    return least_squares(residual, theta0, jac=jac, bounds=bounds, loss="huber",
                         f_scale=HUBER_DELTA, x_scale="jac", max_nfev=2000)


def _bounds(terms: tuple[str, ...], log_l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [-20.0], [float(log_l.min())]
    for _ in terms:
        lo += [-30.0, EXPONENT_BOUNDS[0]]
        hi += [250.0, EXPONENT_BOUNDS[1]]
    return np.array(lo), np.array(hi)


def _starts(terms: tuple[str, ...], x: dict[str, np.ndarray], log_l: np.ndarray
            ) -> list[np.ndarray]:
    floor = float(log_l.min())
    out = []
    for e_frac in (0.5, 0.9):
        for exps in _exponent_grid(len(terms)):
            theta = [floor + math.log(e_frac)]
            for t, k in zip(terms, exps, strict=True):
                # the term starts at about a third of the smallest loss at the points' centre
                theta += [floor + math.log(0.35) + k * float(x[t].mean()), k]
            out.append(np.array(theta))
    return out


def _exponent_grid(n: int) -> list[tuple[float, ...]]:
    values = (0.2, 0.6)
    if n == 0:
        return [()]
    if n == 1:
        return [(v,) for v in values]
    return [(a, b) for a in values for b in values]


def _best_fit(terms: tuple[str, ...], x: dict[str, np.ndarray], log_l: np.ndarray,
              starts: list[np.ndarray]) -> np.ndarray | None:
    bounds = _bounds(terms, log_l)
    best = None
    for start in starts:
        res = _fit_once(start, terms, x, log_l, bounds)
        if np.all(np.isfinite(res.x)) and (best is None or res.cost < best.cost):
            best = res
    return None if best is None else best.x


def _distinct(values: np.ndarray) -> int:
    return len(np.unique(np.round(np.log(values), 2)))


def identify(n: np.ndarray, d: np.ndarray) -> tuple[tuple[str, ...], list[str], dict[str, float]]:
    """Which terms the data can fit, the warnings for the rest, and the spreads."""
    spread = {"N": float(n.max() / n.min()), "D": float(d.max() / d.min())}
    ok, warnings = [], []
    for name, values in (("N", n), ("D", d)):
        what = "parameters N" if name == "N" else "tokens D"
        if spread[name] < MIN_SPREAD or _distinct(values) < MIN_DISTINCT:
            warnings.append(f"{what} span only {spread[name]:.2f}x over {_distinct(values)} "
                            f"distinct value(s) (need {MIN_SPREAD:g}x over {MIN_DISTINCT}): "
                            f"{TERM_NAMES[name][1]} cannot be fitted")
        else:
            ok.append(name)
    corr = float(np.corrcoef(np.log(n), np.log(d))[0, 1]) if len(n) > 2 and len(ok) == 2 \
        else 0.0
    spread["corr_logN_logD"] = corr
    if len(ok) == 2 and abs(corr) > MAX_CORR:
        warnings.append(f"N and D move together (corr of logs {corr:.2f}): tokens follow the "
                        "parameter count, so alpha and beta cannot be told apart")
        ok = []
    need = MIN_POINTS.get(len(ok), 0)
    if ok and len(n) < need:
        warnings.append(f"{len(n)} points are too few to fit {len(ok)} term(s) (need {need})")
        ok = []
    return tuple(ok), warnings, spread


def fit_loss(n: np.ndarray, d: np.ndarray, loss: np.ndarray, bootstrap: int = 200,
             seed: int = 0) -> LossFit:
    """Fit the loss law to points (N, D, L); bootstrap ``bootstrap`` resamples."""
    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    if len(n) == 0:
        return LossFit((), 0, {}, ["no measured candidates to fit"], identifiable=False)
    terms, warnings, spread = identify(n, d)
    fit = LossFit(terms, len(n), spread, warnings)
    for t in ("N", "D"):
        if t not in terms:
            scale, exponent = TERM_NAMES[t]
            fit.fixed[exponent] = fit.fixed[scale] = (
                "not identifiable; folded into the constant at the points' "
                + ("parameters" if t == "N" else "tokens"))
    if len(terms) < 2:
        fit.fixed["E"] = "not separable from the folded term(s)"
    if not terms:
        return fit
    x = {"N": np.log(n), "D": np.log(d)}
    log_l = np.log(loss)
    fit.theta = _best_fit(terms, x, log_l, _starts(terms, x, log_l))
    if fit.theta is None:
        fit.warnings.append("the fit did not converge from any start")
        return fit
    fit.rms_log = float(np.sqrt(np.mean((_log_pred(fit.theta, terms, x) - log_l) ** 2)))
    fit.boots, fit.bootstrap_failed = _bootstrap(fit.theta, terms, x, log_l, bootstrap, seed)
    fit.identifiable = len(terms) == 2 and _exponents_pinned(fit)
    return fit


def _bootstrap(theta: np.ndarray, terms: tuple[str, ...], x: dict[str, np.ndarray],
               log_l: np.ndarray, samples: int, seed: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    size = len(log_l)
    out, failed = [], 0
    bounds = _bounds(terms, log_l)
    for _ in range(samples):
        idx = rng.integers(0, size, size)
        sub = {k: v[idx] for k, v in x.items()}
        if any(t in terms and _distinct(np.exp(sub[t])) < MIN_DISTINCT for t in ("N", "D")):
            failed += 1
            continue
        res = _fit_once(theta, terms, sub, log_l[idx], bounds)
        if res.success and np.all(np.isfinite(res.x)):
            out.append(res.x)
        else:
            failed += 1
    return (np.array(out) if out else np.empty((0, len(theta)))), failed


def _exponents_pinned(fit: LossFit) -> bool:
    params = fit.params()
    pinned = True
    for name in ("alpha", "beta"):
        row = params.get(name)
        if row is None:
            continue
        lo, hi, best = row["lo"], row["hi"], row["best"]
        at_bound = min(abs(best - b) for b in EXPONENT_BOUNDS) < 1e-3  # type: ignore[operator]
        if lo is None or hi is None:
            fit.warnings.append(f"{name}: no bootstrap interval, so no claim of precision")
            pinned = False
        elif hi - lo > MAX_EXPONENT_WIDTH or at_bound:
            fit.warnings.append(f"{name} is not pinned down by the data (90% interval "
                                f"{lo:.3g}..{hi:.3g})")
            pinned = False
    return pinned


@dataclass
class ThroughputFit:
    n_points: int
    identifiable: bool
    warnings: list[str]
    exponent: float | None = None
    exponent_se: float | None = None
    log_coef: float | None = None
    rms_log: float | None = None

    def predict(self, width: float) -> float | None:
        if self.exponent is None or self.log_coef is None:
            return None
        return math.exp(self.log_coef + self.exponent * math.log(width))

    def as_json(self) -> dict[str, Any]:
        return {"form": THROUGHPUT_FORM, "identifiable": self.identifiable,
                "n_points": self.n_points, "b": self.exponent, "b_stderr": self.exponent_se,
                "c": None if self.log_coef is None else math.exp(self.log_coef),
                "rms_log_error": self.rms_log, "warnings": self.warnings}


def fit_throughput(width: np.ndarray, tps: np.ndarray) -> ThroughputFit:
    """Power law of measured tokens/s against model width (least squares on logs)."""
    w, t = np.asarray(width, float), np.asarray(tps, float)
    keep = (w > 0) & (t > 0) & np.isfinite(t)
    w, t = w[keep], t[keep]
    distinct = len(np.unique(w))
    if len(w) < 3 or distinct < 2 or w.max() / w.min() < 1.5:
        spread = w.max() / w.min() if len(w) else 0.0
        return ThroughputFit(len(w), False, [
            f"throughput against width needs 3 points over 2 widths spanning 1.5x; have "
            f"{len(w)} point(s), {distinct} width(s), {spread:.2f}x"])
    x, y = np.log(w), np.log(t)
    design = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = max(1, len(x) - 2)
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.inv(design.T @ design)
    return ThroughputFit(len(w), True, [], float(coef[1]), float(math.sqrt(cov[1, 1])),
                         float(coef[0]), float(np.sqrt(np.mean(resid ** 2))))
