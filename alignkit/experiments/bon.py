"""Best-of-n against a proxy reward model, judged by a second scorer (issue 14, experiment 4): the math only.

Given k samples per prompt, each scored by the proxy (the reward model that picks) and by an independent
judge, `best_of_n` gives, for each n <= k, the expected proxy and judge score of the sample that the proxy
ranks highest among n drawn without replacement. It uses the exact estimator over all C(k, n) subsets, so no
resampling noise enters. `kl_bon` is the analytic KL divergence of the best-of-n policy from the base policy
(Stiennon et al., 2020; Gao et al., 2023), the usual x-axis of over-optimisation curves. No generation
happens here; a later step feeds samples in.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import comb

from alignkit.stats import bootstrap_ci


def kl_bon(n: int) -> float:
    """KL(best-of-n policy || base policy) = log n - (n - 1) / n, in nats (0 at n = 1)."""
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    return math.log(n) - (n - 1) / n


def selection_weights(k: int, n: int) -> np.ndarray:
    """(k,) probabilities that the i-th smallest of k values (i = 1..k) is the largest of a uniformly random
    n-subset: C(i - 1, n - 1) / C(k, n). They sum to 1."""
    if not 1 <= n <= k:
        raise ValueError(f"best-of-{n} needs 1 <= n <= k = {k} samples per prompt")
    i = np.arange(1, k + 1)
    return comb(i - 1, n - 1, exact=False) / comb(k, n, exact=False)


def _sorted_by_proxy(proxy: np.ndarray, judge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, proxy and judge sorted by proxy ascending. Within a proxy tie, each judge score is
    replaced by the tie's mean judge score. The pick among tied samples is uniform, so this keeps the
    estimator exact."""
    order = np.argsort(proxy, axis=1, kind="stable")
    p, j = np.take_along_axis(proxy, order, 1), np.take_along_axis(judge, order, 1).copy()
    for row in range(len(p)):
        _, start, counts = np.unique(p[row], return_index=True, return_counts=True)
        for s, c in zip(start, counts):
            if c > 1:
                j[row, s:s + c] = j[row, s:s + c].mean()
    return p, j


def best_of_n(scores_proxy, scores_judge, n_values, seed: int = 0, *, n_resamples: int = 1000) -> list[dict]:
    """Best-of-n curves from k samples per prompt.

    `scores_proxy` and `scores_judge` are (P, k) arrays: for each of P prompts, k >= max(n_values) samples
    scored by the proxy and by the judge. For each n, the expected proxy and judge score of the
    proxy-chosen sample among n random samples is the exact average over all n-subsets (`selection_weights`),
    taken per prompt and then averaged over prompts. Ties in the proxy are broken uniformly at random. The
    CIs are bootstrap CIs over prompts, seeded by `seed`. `*_gain` is the difference to n = 1 (the base
    policy's mean), with its CI from the same resamples of prompts.
    Returns one dict per n: {'n', 'kl_bon', 'proxy', 'proxy_ci95', 'judge', 'judge_ci95', 'proxy_gain',
    'proxy_gain_ci95', 'judge_gain', 'judge_gain_ci95', 'prompts', 'k'}."""
    proxy, judge = np.asarray(scores_proxy, float), np.asarray(scores_judge, float)
    if proxy.ndim != 2 or proxy.shape != judge.shape:
        raise ValueError(f"proxy and judge scores must be (prompts, samples) arrays of one shape, got "
                         f"{proxy.shape} and {judge.shape}")
    prompts, k = proxy.shape
    if not n_values or max(n_values) > k:
        raise ValueError(f"best-of-n for n in {list(n_values)} needs at least max(n) samples per prompt; got k = {k}")
    p, j = _sorted_by_proxy(proxy, judge)
    out = []
    for n in n_values:
        w = selection_weights(k, n)
        per_prompt = np.column_stack([p @ w, j @ w, p.mean(1), j.mean(1)])  # best-of-n and best-of-1 per prompt

        def column(c, minus=None):
            return lambda r: float(np.mean(r[:, c] - (0 if minus is None else r[:, minus])))
        row = {"n": n, "kl_bon": kl_bon(n), "prompts": prompts, "k": k}
        for name, c in (("proxy", 0), ("judge", 1)):
            row[name] = column(c)(per_prompt)
            row[f"{name}_ci95"] = list(bootstrap_ci(per_prompt, column(c), n_resamples=n_resamples, seed=seed))
            row[f"{name}_gain"] = column(c, c + 2)(per_prompt)
            row[f"{name}_gain_ci95"] = list(bootstrap_ci(per_prompt, column(c, c + 2), n_resamples=n_resamples,
                                                         seed=seed))
        out.append(row)
    return out
