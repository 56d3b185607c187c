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
