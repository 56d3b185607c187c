"""The study's three verdicts and the margins they are read against, as pure functions (no torch).

Every question the study asks of an interval ends in one of three verdicts:
  shown         the 95% interval excludes the null value;
  shown_absent  the whole interval lies inside the null ± the margin of no practical effect of its kind;
  undecided     neither: the verdict then carries the minimum detectable effect (MDE) at this n and the n that
                would decide the question.

MARGINS holds one margin per kind of quantity, stated here and nowhere else (the book renders this table;
alignkit/report/text/readings.yaml says what each kind covers).
The MDE is the true effect that a two-sided 5% test detects with 80% power at this n: (z_0.975 + z_0.8) · se.
Standard errors shrink as 1/sqrt(n), so the n needed for an effect d is n · (MDE / d)²: at the observed effect
when it lies outside the margin, else at the margin (the n at which an effect as large as the margin would be
shown; with no effect, the interval then fits inside about 0.7 of the margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959964
"""Two-sided 95%: the interval's z."""
Z_POWER = 0.841621
"""One-sided z of 80% power."""

MARGINS = {
    "proportion": 0.03,
    "reward": 0.12,
    "nats": 0.1,
    "correlation": 0.1,
    "tokens": 5.0,
    "reward_per_token": 0.0012,
}
"""Margin of no practical effect per kind of quantity, in the quantity's own units."""

VERDICTS = ("shown", "shown_absent", "undecided")


def margin(kind: str) -> float:
    """The margin of `kind` (a key of MARGINS); a clear error naming the kinds otherwise."""
    if kind not in MARGINS:
        raise KeyError(f"no margin for quantities of kind {kind!r}; kinds: {', '.join(MARGINS)}")
    return MARGINS[kind]


def decide(ci, null: float, margin_: float) -> str | None:
    """'shown' (the interval excludes `null`), 'shown_absent' (it lies inside [null - margin, null + margin])
    or 'undecided'; None when the interval is missing."""
    if not ci or null is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return None
    low, high = ci
    if low > null or high < null:
        return "shown"
    if null - margin_ <= low and high <= null + margin_:
        return "shown_absent"
    return "undecided"


def se_from_ci(ci, z: float = Z95) -> float:
    """Standard error implied by a symmetric-normal 95% interval: (high - low) / (2 z)."""
    return (ci[1] - ci[0]) / (2 * z)


def mde(se: float) -> float:
    """Minimum detectable effect at 80% power, two-sided 5%: (z_0.975 + z_0.8) · se."""
    return (Z95 + Z_POWER) * se


def n_to_detect(n: int, mde_now: float, effect: float) -> int:
    """The n at which `effect` becomes the MDE, given the MDE `mde_now` at `n` (se ∝ 1/sqrt(n)):
    ceil(n · (mde_now / effect)²)."""
    if effect <= 0:
        raise ValueError(f"the effect to detect must be positive, got {effect}")
    return math.ceil(n * (mde_now / effect) ** 2 - 1e-9)


def proportion_mde(n: int, p0: float = 0.5) -> float:
    """MDE of a proportion against p0 from n independent trials: (z_0.975 + z_0.8) · sqrt(p0 (1 - p0) / n)."""
    return mde(math.sqrt(p0 * (1 - p0) / n))


def proportion_n(effect: float, p0: float = 0.5) -> int:
    """Trials needed to detect a proportion p0 ± `effect` (80% power, two-sided 5%, the null's variance):
    ceil(((z_0.975 + z_0.8) · sqrt(p0 (1 - p0)) / effect)²)."""
    return math.ceil(((Z95 + Z_POWER) * math.sqrt(p0 * (1 - p0)) / effect) ** 2 - 1e-9)


def paired_mde(sd: float, n: int) -> float:
    """MDE of a mean paired difference whose per-unit differences have standard deviation `sd`, over n units."""
    return mde(sd / math.sqrt(n))


def paired_n(sd: float, effect: float) -> int:
    """Units needed to detect a mean paired difference `effect`: ceil(((z_0.975 + z_0.8) · sd / effect)²)."""
    return math.ceil(((Z95 + Z_POWER) * sd / effect) ** 2 - 1e-9)


def n_for_half_width(sd: float, half_width: float) -> int:
    """Units for a 95% interval of a mean of half-width at most `half_width`: ceil((z_0.975 · sd / half)²)."""
    return math.ceil((Z95 * sd / half_width) ** 2 - 1e-9)


@dataclass(frozen=True)
class Verdict:
    """One question's verdict: which (VERDICTS), its side ('above' / 'below' the null, for shown), the margin,
    the null and the kind of quantity, and for undecided the MDE at this n and the n that would decide, with what that n is computed at
    ('observed' effect or 'margin')."""

    verdict: str
    side: str | None
    margin: float
    null: float = 0.0
    kind: str = "proportion"
    mde: float | None = None
    n: int | None = None
    n_needed: int | None = None
    at: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def verdict(ci, null: float, kind: str, *, n: int | None = None, estimate: float | None = None) -> Verdict | None:
    """The verdict of a 95% interval `ci` against `null` for a quantity of `kind` (MARGINS). `n` is the sample
    size behind the interval (for the n that would decide); `estimate` the point estimate (default: the
    interval's midpoint). None when the interval is missing."""
    m = margin(kind)
    found = decide(ci, null, m)
    if found is None:
        return None
    side = None
    if found == "shown":
        side = "above" if ci[0] > null else "below"
    if found != "undecided":
        return Verdict(found, side, m, null, kind, n=n)
    low, high = ci
    now = mde(se_from_ci(ci))
    observed = abs((estimate if estimate is not None else (low + high) / 2) - null)
    at, effect = ("observed", observed) if observed > m else ("margin", m)
    needed = n_to_detect(n, now, effect) if n else None
    return Verdict(found, None, m, null, kind, mde=now, n=n, n_needed=needed, at=at)


def count(verdicts) -> dict:
    """{verdict: how many} over the non-None verdicts (Verdict objects or their verdict strings), every kind
    of VERDICTS present (0 where none)."""
    out = {v: 0 for v in VERDICTS}
    for v in verdicts:
        if v is not None:
            out[v.verdict if isinstance(v, Verdict) else v] += 1
    return out
