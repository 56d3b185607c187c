"""Statistics the study reports, as pure functions: one accuracy (ties half), Wilson / Newcombe / bootstrap
intervals, length diagnostics, paired comparisons and win rates, precision agreement."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion successes/n (ties counted as 0.5 are allowed)."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_ci(k1: float, n1: int, k2: float, n2: int) -> tuple[float, float]:
    """95% CI of p1 - p2 for two independent proportions k1/n1 and k2/n2 (Newcombe's hybrid score method
    from Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def accuracy_summary(correct: list[float]) -> dict:
    """Per-pair correctness (1, 0, or 0.5 for a tie) -> {'accuracy', 'n', 'ci95'}."""
    n = len(correct)
    k = float(sum(correct))
    return {"accuracy": k / n, "n": n, "ci95": list(wilson_interval(k, n))}


def correctness(better: list[float], worse: list[float]) -> list[float]:
    """Per pair: 1 if better > worse, 0.5 on a tie, else 0."""
    return [1.0 if b > w else 0.5 if b == w else 0.0 for b, w in zip(better, worse)]


def length_matched(len_better: list[int], len_worse: list[int], tolerance: float = 0.1) -> list[bool]:
    """Pairs whose response lengths differ by at most `tolerance` of the longer one."""
    return [abs(a - b) <= tolerance * max(a, b) for a, b in zip(len_better, len_worse)]


def length_diagnostics(better: list[float], worse: list[float], len_better: list[int], len_worse: list[int],
                       tolerance: float = 0.1) -> dict:
    """Is the scorer more than a length detector? The "longer response wins" rule's accuracy on the same
    pairs, and the scorer's accuracy on length-matched pairs only (where that rule is useless)."""
    matched = length_matched(len_better, len_worse, tolerance)
    correct = correctness(better, worse)
    out = {"longer_wins": accuracy_summary(correctness(len_better, len_worse)), "tolerance": tolerance}
    kept = [c for c, m in zip(correct, matched) if m]
    out["length_matched"] = accuracy_summary(kept) if kept else {"accuracy": None, "n": 0, "ci95": None}
    return out


def auc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random chosen > score of a random rejected), ties counted half (Mann-Whitney U / n1 n2)."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if not len(pos) or not len(neg):
        raise ValueError("AUC needs at least one score on each side")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def bootstrap_ci(values, statistic, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic(resampled values)`; `values` is resampled by rows (pairs)."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    stats = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n_resamples)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def cluster_mean_ci(values, groups, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
                    ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` when rows come in clusters (`groups`, one label per row,
    e.g. the prompt of each pair): whole clusters are resampled with replacement, in the order each label first
    appears, and the mean is taken over all rows of the drawn clusters. With one row per cluster this is
    `bootstrap_ci` of the mean, resample for resample."""
    values = np.asarray(values, float)
    labels, index = np.unique(np.asarray(groups), return_index=True)
    order = np.argsort(index)  # clusters in order of first appearance
    codes = np.searchsorted(labels, np.asarray(groups))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = rank[codes]
    sums = np.bincount(codes, weights=values, minlength=len(labels))
    counts = np.bincount(codes, minlength=len(labels)).astype(float)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(labels), len(labels))
        stats.append(float(sums[drawn].sum() / counts[drawn].sum()))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def mean_ci(values, *, seed: int = 0, n_resamples: int = 1000) -> dict:
    """{'mean', 'ci95' (percentile bootstrap over the values), 'n'} of a sequence of numbers."""
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "n": len(v),
            "ci95": list(bootstrap_ci(v, lambda x: float(np.mean(x)), n_resamples=n_resamples, seed=seed))}


def preference_summary(score_better, score_worse, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Pairwise accuracy (ties half) with its Wilson 95% CI, as everywhere else an accuracy is reported; AUC
    (chosen vs rejected pooled) and mean margin, each with a bootstrap 95% CI over pairs."""
    pairs = np.column_stack([score_better, score_worse]).astype(float)
    summary = accuracy_summary(correctness(pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    out = {"n": len(pairs), "accuracy": summary["accuracy"], "accuracy_ci95": summary["ci95"]}
    for name, fn in (("auc", lambda p: auc(p[:, 0], p[:, 1])), ("mean_margin", lambda p: float(np.mean(p[:, 0] - p[:, 1])))):
        out[name] = fn(pairs)
        out[f"{name}_ci95"] = list(bootstrap_ci(pairs, fn, n_resamples=n_resamples, seed=seed))
    return out


def correlations(x, y) -> dict:
    """Pearson and Spearman correlation of two equal-length sequences."""
    return {"pearson": float(scipy_stats.pearsonr(x, y)[0]), "spearman": float(scipy_stats.spearmanr(x, y)[0]), "n": len(x)}


def paired_comparison(score_a, score_b, length_a, length_b, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Model B vs model A on the same prompts (one row each): B's win rate (ties half) and mean score
    difference with bootstrap CIs over prompts, and a length-controlled effect.

    Length control: regress the per-prompt score difference on the length difference,
    `d_score = effect + per_token * d_length` (OLS). `effect` is B's advantage at equal length;
    `per_token * mean(d_length)` is the part of the raw difference that length accounts for."""
    rows = np.column_stack([score_a, score_b, length_a, length_b]).astype(float)

    def win(r):
        return float(np.mean(np.where(r[:, 1] == r[:, 0], 0.5, r[:, 1] > r[:, 0])))

    def fit(r):
        d_len, d_score = r[:, 3] - r[:, 2], r[:, 1] - r[:, 0]
        if np.ptp(d_len) == 0:  # no length variation: the effect is the mean difference
            return float(d_score.mean()), 0.0
        slope, intercept = np.polyfit(d_len, d_score, 1)
        return float(intercept), float(slope)

    effect, per_token = fit(rows)
    mean_dlen = float(np.mean(rows[:, 3] - rows[:, 2]))
    return {
        "n": len(rows),
        "win_rate": win(rows), "win_rate_ci95": list(bootstrap_ci(rows, win, n_resamples=n_resamples, seed=seed)),
        "mean_score_a": float(rows[:, 0].mean()), "mean_score_b": float(rows[:, 1].mean()),
        "mean_difference": float(np.mean(rows[:, 1] - rows[:, 0])),
        "mean_difference_ci95": list(bootstrap_ci(rows, lambda r: float(np.mean(r[:, 1] - r[:, 0])),
                                                  n_resamples=n_resamples, seed=seed)),
        "mean_length_a": float(rows[:, 2].mean()), "mean_length_b": float(rows[:, 3].mean()),
        "mean_length_difference_ci95": list(bootstrap_ci(rows, lambda r: float(np.mean(r[:, 3] - r[:, 2])),
                                                         n_resamples=n_resamples, seed=seed)),
        "length_controlled": {
            "effect": effect,
            "effect_ci95": list(bootstrap_ci(rows, lambda r: fit(r)[0], n_resamples=n_resamples, seed=seed)),
            "per_token": per_token,
            "per_token_ci95": list(bootstrap_ci(rows, lambda r: fit(r)[1], n_resamples=n_resamples, seed=seed)),
            "length_part": per_token * mean_dlen,
        },
    }


def paired_difference(correct_new, correct_base, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Paired accuracy difference new - base over the same pairs (each a per-pair correctness, ties 0.5),
    with a bootstrap CI over pairs and the number of pairs whose verdict changed."""
    diff = np.asarray(correct_new, float) - np.asarray(correct_base, float)
    if not len(diff):
        return {"n": 0, "difference": None, "ci95": None, "changed_pairs": 0}
    return {"n": len(diff), "difference": float(diff.mean()),
            "ci95": list(bootstrap_ci(diff, lambda d: float(np.mean(d)), n_resamples=n_resamples, seed=seed)),
            "changed_pairs": int(np.sum(diff != 0))}


def outside_range(values, reference, low: float = 1.0, high: float = 99.0) -> dict:
    """Share of `values` outside the [low, high] percentile range of `reference` (how far out of the
    reference distribution they fall)."""
    lo, hi = np.percentile(np.asarray(reference, float), [low, high])
    v = np.asarray(values, float)
    return {"range": [float(lo), float(hi)], "below": float(np.mean(v < lo)), "above": float(np.mean(v > hi))}


def precision_agreement(reference: tuple, other: tuple, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """How far scores computed at a lower precision (`other`) agree with full-precision ones (`reference`),
    each a (better scores, worse scores) pair of equal-length sequences over the same pairs.

    Returns Spearman of all scores, the largest absolute score difference, `flips` (pairs whose order,
    better > worse / tie / worse > better, differs), both accuracies (ties half) and the paired accuracy
    difference other - reference with a bootstrap 95% CI over pairs. `holds` is the adoption rule: the
    difference's CI contains 0 and Spearman is at least 0.99."""
    ref_b, ref_w, oth_b, oth_w = (np.asarray(x, dtype=float) for x in (*reference, *other))
    ref_c = np.asarray(correctness(ref_b.tolist(), ref_w.tolist()))
    oth_c = np.asarray(correctness(oth_b.tolist(), oth_w.tolist()))
    diff = oth_c - ref_c
    low, high = bootstrap_ci(diff, lambda d: float(np.mean(d)), n_resamples=n_resamples, seed=seed)
    spearman = float(scipy_stats.spearmanr(np.concatenate([ref_b, ref_w]), np.concatenate([oth_b, oth_w]))[0])
    return {"n": len(diff), "spearman": spearman,
            "max_abs_difference": float(np.max(np.abs(np.concatenate([oth_b - ref_b, oth_w - ref_w])))),
            "flips": int(np.sum(np.sign(ref_b - ref_w) != np.sign(oth_b - oth_w))),
            "accuracy_reference": float(ref_c.mean()), "accuracy_other": float(oth_c.mean()),
            "accuracy_difference": float(diff.mean()), "accuracy_difference_ci95": [low, high],
            "holds": bool(low <= 0 <= high and spearman >= 0.99)}
