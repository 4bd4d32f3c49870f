"""``evotui fit-scaling``: the Chinchilla fit recovers known laws, says when it cannot, and the
command reads a real run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from evotui.analysis.recipe import Reference, optimal_tokens, recipe
from evotui.analysis.scaling import fit_loss, fit_throughput
from evotui.engine.store import FINISHED, RunStore

# the law the data are drawn from (Hoffmann et al.'s fitted values)
TRUE = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}


def law(n, d):
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def synthetic(points=40, noise=0.005, seed=0):
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e9), points))
    d = np.exp(rng.uniform(np.log(1e7), np.log(1e10), points))
    return n, d, law(n, d) * np.exp(rng.normal(0, noise, points))


def test_the_fit_recovers_known_exponents_and_its_interval_covers_them():
    fit = fit_loss(*synthetic(), bootstrap=40, seed=1)
    assert fit.identifiable and fit.terms == ("N", "D") and not fit.warnings
    params = fit.params()
    for name, tol in (("alpha", 0.03), ("beta", 0.03), ("E", 0.1)):
        row = params[name]
        assert abs(row["best"] - TRUE[name]) < tol, (name, row)
        assert row["lo"] <= TRUE[name] <= row["hi"], (name, row)
    assert fit.rms_log < 0.01  # about the noise put in
    best, lo, hi = fit.interval(3e9, 6e10)
    assert lo <= law(3e9, 6e10) <= hi and abs(best - law(3e9, 6e10)) < 0.02


def test_too_little_spread_is_reported_not_fitted():
    n, d, loss = synthetic(points=12)
    same_size = np.full_like(n, 2e7) * np.linspace(1.0, 1.15, len(n))
    fit = fit_loss(same_size, d, law(same_size, d), bootstrap=20)
    assert not fit.identifiable
    assert fit.terms == ("D",)  # only the tokens term is fitted; N is folded into a constant
    assert "alpha" in fit.fixed and "alpha" not in fit.params()
    assert any("parameters N span only" in w for w in fit.warnings)
    assert abs(fit.params()["beta"]["best"] - TRUE["beta"]) < 0.05

    tied = n * 20  # tokens follow parameters: the two terms cannot be told apart
    fit = fit_loss(n, tied, law(n, tied), bootstrap=20)
    assert not fit.identifiable and fit.terms == () and fit.params() == {}
    assert any("move together" in w for w in fit.warnings)

    fit = fit_loss(n[:4], d[:4], loss[:4], bootstrap=20)
    assert not fit.identifiable and any("too few" in w for w in fit.warnings)


def _reference():
    return Reference("run", lr=1e-3, width=512, layers=8, seq_len=2048, vocab=50304,
                     tied=True, per_layer=12.0, tokens_per_param=20.0)


def test_the_recipe_takes_the_compute_optimal_split_only_from_an_identifiable_fit():
    fit = fit_loss(*synthetic(), bootstrap=20)
    plan = recipe(fit, fit_throughput(np.array([]), np.array([])), _reference())
    assert plan["tokens_rule"] == "compute-optimal from the loss fit"
    assert [r["target"] for r in plan["rows"]] == ["1.5B", "3B", "8B"]
    for row in plan["rows"]:
        n, d = row["params"], row["tokens"]
        # optimal for its compute: moving tokens either way at the same 6ND costs loss
        for k in (0.7, 1.4):
            assert law(n / k, d * k) > law(n, d) - 1e-3
        assert row["steps"] * row["batch_tokens"] >= d
        assert row["batch_tokens"] == row["batch_sequences"] * 2048
        assert row["lr"] == pytest.approx(1e-3 * 512 / row["width"])
        assert row["predicted_loss_lo"] <= row["predicted_loss"] <= row["predicted_loss_hi"]
        assert 0.5 < row["params_shape"] / n < 2
        # the true law's optimal tokens lie in the bootstrap interval of the fitted ones
        assert row["tokens_lo"] <= optimal_tokens(TRUE, n) <= row["tokens_hi"]

    n, d, _ = synthetic(points=12)
    weak = fit_loss(n, 20 * n, law(n, 20 * n), bootstrap=20)
    plan = recipe(weak, fit_throughput(np.array([]), np.array([])), _reference())
    assert "tokens_per_param" in plan["tokens_rule"]
    for row in plan["rows"]:
        assert row["tokens"] == pytest.approx(20 * row["params"])
        assert row["predicted_loss"] is None  # no confident number from a degenerate fit


def test_throughput_power_law():
    rng = np.random.default_rng(3)
    width = np.repeat([256, 512, 1024, 2048], 3).astype(float)
    tps = 3e8 * width ** -1.7 * np.exp(rng.normal(0, 0.02, len(width)))
    fit = fit_throughput(width, tps)
    assert fit.identifiable and abs(fit.exponent + 1.7) < 3 * fit.exponent_se + 0.02
    assert not fit_throughput(np.full(5, 128.0), tps[:5]).identifiable


def _is_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return float(np.var(imread(path))) > 0


def test_the_command_on_a_tiny_run(tiny_run, run_cli, tmp_path):
    out = tmp_path / "fit"
    code, text, err = run_cli("fit-scaling", tiny_run / "frontier.json", tiny_run, "--out", out,
                              "--json", "--bootstrap", 10)
    assert code == 0, err
    doc = json.loads(text)
    with RunStore.open(tiny_run, readonly=True) as store:
        finished = store.candidates(FINISHED)
        tokens = {c["id"]: store.latest_metrics(c["id"])["tokens"] for c in finished}
    # the run counted once, every finished candidate a point, with the tokens the store holds
    assert doc["sources"] == [str(tiny_run)]
    assert {p["id"]: p["tokens"] for p in doc["points"]} == tokens
    assert doc["params_measure"] == "params_active"
    # a 2-generation tiny run has one model size: no exponents, and it says so
    assert doc["identifiable"] is False and doc["loss_fit"]["identifiable"] is False
    assert "warning:" in err and "cannot be fitted" in err
    rows = doc["recipe"]["rows"]
    assert [r["target"] for r in rows] == ["1.5B", "3B", "8B"]
    assert all(r["predicted_loss"] is None for r in rows)
    assert all(r["tokens"] == pytest.approx(20.0 * r["params"]) for r in rows)  # the priors
    saved = json.loads((out / "scaling.json").read_text())
    assert saved["identifiable"] is False and len(saved["points"]) == len(finished)
    for name in ("loss_vs_params.png", "loss_vs_tokens.png", "throughput_vs_width.png"):
        assert _is_png(out / name), name

    code, text, _ = run_cli("fit-scaling", tiny_run, "--bootstrap", 10)
    assert code == 0 and "NOT IDENTIFIABLE" in text and "8B" in text

    # --fresh-only: the candidates the engine started from a parent's weights are left out
    with RunStore.open(tiny_run, readonly=True) as store:
        inherited = {c["id"] for c in store.candidates() if c["generation"] > 0}
        assert all(c["metrics"]["inherited_tensors"] > 0 for c in store.candidates()
                   if c["id"] in inherited and c["status"] == "done")
    assert inherited  # generation 1 starts from its parents' weights
    code, text, err = run_cli("fit-scaling", tiny_run, "--json", "--fresh-only",
                              "--bootstrap", 10)
    assert code == 0, err
    assert {p["id"] for p in json.loads(text)["points"]} == set(tokens) - inherited


def test_a_frontier_without_its_run_store_is_refused(tiny_run, run_cli, tmp_path):
    lone = tmp_path / "frontier.json"
    shutil.copy(tiny_run / "frontier.json", lone)
    code, _, err = run_cli("fit-scaling", lone)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "run.db" in err
