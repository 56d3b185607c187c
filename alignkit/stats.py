"""Statistics for reporting: proportions with confidence intervals."""
from __future__ import annotations

import math


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion successes/n (ties counted as 0.5 are allowed)."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
    import numpy as np
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if not len(pos) or not len(neg):
        raise ValueError("AUC needs at least one score on each side")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def bootstrap_ci(values, statistic, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic(resampled values)`; `values` is resampled by rows (pairs)."""
    import numpy as np
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    stats = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n_resamples)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def preference_summary(score_better, score_worse, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Pairwise accuracy, AUC (chosen vs rejected pooled) and mean margin, each with a bootstrap 95% CI
    over pairs."""
    import numpy as np
    pairs = np.column_stack([score_better, score_worse]).astype(float)
    metrics = {
        "accuracy": lambda p: float(np.mean(np.where(p[:, 0] == p[:, 1], 0.5, p[:, 0] > p[:, 1]))),
        "auc": lambda p: auc(p[:, 0], p[:, 1]),
        "mean_margin": lambda p: float(np.mean(p[:, 0] - p[:, 1])),
    }
    out = {"n": len(pairs)}
    for name, fn in metrics.items():
        out[name] = fn(pairs)
        out[f"{name}_ci95"] = list(bootstrap_ci(pairs, fn, n_resamples=n_resamples, seed=seed))
    return out


def correlations(x, y) -> dict:
    """Pearson and Spearman correlation of two equal-length sequences."""
    from scipy import stats
    return {"pearson": float(stats.pearsonr(x, y)[0]), "spearman": float(stats.spearmanr(x, y)[0]), "n": len(x)}
