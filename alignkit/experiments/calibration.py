"""Is sigmoid(r_better - r_worse) a probability? Reliability, expected calibration error and temperature
scaling of a reward model's pairwise margins (chapter 6).

A margin m = r_better - r_worse says "P(better is preferred) = sigmoid(m)". Every pair is counted in both
orientations: as the prediction (sigmoid(m), outcome 1) and as (sigmoid(-m), outcome 0). Which response is
listed first is arbitrary, and one orientation alone would put every outcome at 1. Both orientations make
the reliability diagram symmetric about 0.5. They leave the log-likelihood unchanged, because
-log(1 - sigmoid(-m)) = -log sigmoid(m).

Temperature scaling divides every margin by one T > 0, chosen by maximum likelihood. The issue asks for T to
be fitted on a validation fold. No such fold exists without retraining: the reward model's run holds out
only the test split. `calibration_summary` therefore fits T in two ways:
  - cross-fitted on the held-out pairs: a seeded split into two halves; T fitted on one half scales the
    other, and the halves then swap. Every held-out pair is scaled by a T that never saw it.
  - in-sample on the train sample: pairs the reward model was trained on, so their margins are
    over-confident. This T shows what a naive fit on training data would do to the held-out pairs.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from alignkit.stats import bootstrap_ci

MAX_INVERSE_TEMPERATURE = 100.0
"""Largest 1/T searched (T >= 0.01). When every pair is ranked right the likelihood keeps rising as T falls,
so the fit stops here and says `at_bound`."""


def both_orientations(margins) -> tuple[np.ndarray, np.ndarray]:
    """Margins (P,) -> (predicted probabilities (2P,), outcomes (2P,)): (sigmoid(m), 1) then (sigmoid(-m), 0)."""
    m = np.asarray(margins, float)
    return expit(np.concatenate([m, -m])), np.concatenate([np.ones(len(m)), np.zeros(len(m))])


def reliability(margins, n_bins: int = 10) -> dict:
    """Reliability diagram and expected calibration error of sigmoid(margin), both orientations per pair.

    The bins are equal-width on [0, 1]. Bin k holds the probabilities in [k/n_bins, (k+1)/n_bins), and the
    last bin also holds 1. Each non-empty bin reports its count, its mean predicted probability
    (`confidence`) and its observed outcome frequency. ECE = sum over bins of count/N * |frequency -
    confidence|, where N = 2P."""
    prob, outcome = both_orientations(margins)
    if not len(prob):
        raise ValueError("calibration needs at least one pair")
    index = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for k in range(n_bins):
        inside = index == k
        if not inside.any():
            continue
        confidence, frequency = float(prob[inside].mean()), float(outcome[inside].mean())
        bins.append({"low": k / n_bins, "high": (k + 1) / n_bins, "count": int(inside.sum()),
                     "confidence": confidence, "frequency": frequency})
        ece += inside.sum() / len(prob) * abs(frequency - confidence)
    return {"ece": float(ece), "n_pairs": len(prob) // 2, "n_bins": n_bins, "bins": bins}


def expected_calibration_error(margins, n_bins: int = 10) -> float:
    """ECE of sigmoid(margin), both orientations per pair (see `reliability`)."""
    return reliability(margins, n_bins)["ece"]


def nll(margins, inverse_temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats per pair) of 'better is preferred' under sigmoid(m / T)."""
    return float(np.mean(np.logaddexp(0.0, -inverse_temperature * np.asarray(margins, float))))


def fit_temperature(margins) -> dict:
    """Maximum-likelihood temperature of margins (P,): argmin over T > 0 of mean -log sigmoid(m / T).

    The loss is convex in beta = 1/T. Its derivative, -mean(m * sigmoid(-beta m)), is solved for zero on
    [0, MAX_INVERSE_TEMPERATURE]. If mean(m) <= 0, the scorer is no better than its mirror image and the
    optimum is beta = 0: T is infinite (reported as None), and every probability becomes 0.5. If the
    likelihood still rises at the upper end (every pair ranked right), beta stops there and `at_bound` is
    True. Returns {'temperature', 'inverse_temperature', 'at_bound', 'nll_before', 'nll_after', 'n'}."""
    m = np.asarray(margins, float)
    if not len(m):
        raise ValueError("fitting a temperature needs at least one pair")

    def slope(beta):
        return float(-np.mean(m * expit(-beta * m)))
    if slope(0.0) >= 0:
        beta, at_bound = 0.0, True
    elif slope(MAX_INVERSE_TEMPERATURE) <= 0:
        beta, at_bound = MAX_INVERSE_TEMPERATURE, True
    else:
        beta, at_bound = float(brentq(slope, 0.0, MAX_INVERSE_TEMPERATURE, xtol=1e-12)), False
    return {"temperature": None if beta == 0 else 1.0 / beta, "inverse_temperature": beta, "at_bound": at_bound,
            "nll_before": nll(m), "nll_after": nll(m, beta), "n": len(m)}


def cross_fit_temperature(margins, seed: int = 0) -> dict:
    """Two-fold cross-fitted temperature scaling of margins (P,), P >= 2. A seeded permutation splits the
    pairs into halves A (the first P // 2) and B. T fitted on A scales B, and T fitted on B scales A.
    Returns {'fits': [fit on A, fit on B], 'halves': [|A|, |B|], 'scaled': margins * (1/T of the other
    half) (P,), in the input order}."""
    m = np.asarray(margins, float)
    if len(m) < 2:
        raise ValueError("cross-fitting needs at least two pairs")
    order = np.random.default_rng(seed).permutation(len(m))
    half_a, half_b = order[: len(m) // 2], order[len(m) // 2:]
    fit_a, fit_b = fit_temperature(m[half_a]), fit_temperature(m[half_b])
    scaled = m.copy()
    scaled[half_b] = m[half_b] * fit_a["inverse_temperature"]
    scaled[half_a] = m[half_a] * fit_b["inverse_temperature"]
    return {"fits": [fit_a, fit_b], "halves": [len(half_a), len(half_b)], "scaled": scaled}


def _before_after(before: np.ndarray, after: np.ndarray, n_bins: int, n_resamples: int, seed: int) -> dict:
    """ECE of the scaled margins with a bootstrap CI over pairs, and the paired difference after - before.
    The temperature stays fixed inside the bootstrap, so the CI leaves out the uncertainty of its fit."""
    rows = np.column_stack([before, after])

    def ece(col):
        return lambda r: expected_calibration_error(r[:, col], n_bins)
    after_rel = reliability(after, n_bins)
    return {"ece": after_rel["ece"], "ece_ci95": list(bootstrap_ci(rows, ece(1), n_resamples=n_resamples, seed=seed)),
            "nll": nll(after), "reliability": after_rel["bins"],
            "difference": after_rel["ece"] - expected_calibration_error(before, n_bins),
            "difference_ci95": list(bootstrap_ci(rows, lambda r: ece(1)(r) - ece(0)(r), n_resamples=n_resamples,
                                                 seed=seed))}


def calibration_summary(test_margins, train_margins, *, n_bins: int = 10, n_resamples: int = 1000,
                        seed: int = 0) -> dict:
    """Calibration of a reward model on held-out pairs, before and after temperature scaling.

    `test_margins` (P,) and `train_margins` (Q,) are r_better - r_worse per pair on the held-out split and on
    the train sample. Returns:
      - before: ECE on the held-out pairs with a bootstrap CI over pairs, mean NLL, and the reliability bins.
      - cross_fitted: the two halves' temperatures, and the held-out ECE after scaling each pair by the
        other half's T. Also its CI, the paired difference after - before with a CI, NLL, and the bins.
      - train_fit: T fitted in-sample on the train sample (its ECE there before and after), and the held-out
        ECE after scaling by that T, with CIs as above.
    Every ECE counts each pair in both orientations. The bootstrap CIs resample pairs with T held fixed."""
    test, train = np.asarray(test_margins, float), np.asarray(train_margins, float)
    before = reliability(test, n_bins)
    cross = cross_fit_temperature(test, seed)
    train_fit = fit_temperature(train)
    return {
        "n": len(test), "n_bins": n_bins,
        "orientations": "both: each pair counts as (sigmoid(m), 1) and (sigmoid(-m), 0)",
        "before": {"ece": before["ece"],
                   "ece_ci95": list(bootstrap_ci(test, lambda m: expected_calibration_error(m, n_bins),
                                                 n_resamples=n_resamples, seed=seed)),
                   "nll": nll(test), "reliability": before["bins"]},
        "cross_fitted": {"seed": seed, "halves": cross["halves"],
                         "temperatures": [f["temperature"] for f in cross["fits"]],
                         "at_bound": [f["at_bound"] for f in cross["fits"]],
                         **_before_after(test, cross["scaled"], n_bins, n_resamples, seed)},
        "train_fit": {"n_train": len(train), "temperature": train_fit["temperature"],
                      "at_bound": train_fit["at_bound"],
                      "train_ece_before": expected_calibration_error(train, n_bins),
                      "train_ece_after": expected_calibration_error(train * train_fit["inverse_temperature"], n_bins),
                      **_before_after(test, test * train_fit["inverse_temperature"], n_bins, n_resamples, seed)},
    }
