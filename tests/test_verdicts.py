"""alignkit/verdicts.py against values computed by hand (z_0.975 = 1.959964, z_0.8 = 0.841621, their sum
2.801585)."""
import math

import pytest

from alignkit import verdicts as v


def test_margins_are_one_per_kind():
    assert v.MARGINS["proportion"] == 0.03 and v.MARGINS["nats"] == 0.1
    # the reward margin is the proportion margin seen through a Bradley-Terry sigmoid
    assert 1 / (1 + math.exp(-v.MARGINS["reward"])) == pytest.approx(0.5 + v.MARGINS["proportion"], abs=1e-3)
    with pytest.raises(KeyError, match="kinds: proportion"):
        v.margin("furlongs")


def test_decide_three_ways():
    assert v.decide([0.51, 0.60], 0.5, 0.03) == "shown"
    assert v.decide([0.30, 0.49], 0.5, 0.03) == "shown"
    assert v.decide([0.48, 0.52], 0.5, 0.03) == "shown_absent"
    assert v.decide([0.47, 0.53], 0.5, 0.03) == "shown_absent"  # the margin's edges count as inside
    assert v.decide([0.46, 0.52], 0.5, 0.03) == "undecided"
    assert v.decide([0.49, 0.60], 0.5, 0.03) == "undecided"
    assert v.decide(None, 0.5, 0.03) is None and v.decide([None, 0.4], 0.5, 0.03) is None


def test_proportion_formulas_by_hand():
    # MDE at n = 100 against 0.5: 2.801585 * sqrt(0.25 / 100) = 2.801585 * 0.05
    assert v.proportion_mde(100) == pytest.approx(0.14007925, abs=1e-7)
    # n for an effect of 0.03: (2.801585 * 0.5 / 0.03)^2 = 46.69308^2 = 2180.24 -> 2181
    assert v.proportion_n(0.03) == 2181
    # n for 0.05: (28.01585)^2 = 784.89 -> 785; against p0 = 0.2: (2.801585 * 0.4 / 0.05)^2 = 502.3 -> 503
    assert v.proportion_n(0.05) == 785 and v.proportion_n(0.05, p0=0.2) == 503
    # the two formulas are inverses: the n for the MDE at n = 100 is 100
    assert v.proportion_n(v.proportion_mde(100)) == 100


def test_paired_formulas_by_hand():
    # sd 0.25 over 100 units: 2.801585 * 0.025 = 0.0700396
    assert v.paired_mde(0.25, 100) == pytest.approx(0.07003963, abs=1e-7)
    # (2.801585 * 0.25 / 0.05)^2 = 14.007925^2 = 196.22 -> 197
    assert v.paired_n(0.25, 0.05) == 197
    # a 95% half-width of 0.05 with sd 0.25: (1.959964 * 5)^2 = 96.04 -> 97
    assert v.n_for_half_width(0.25, 0.05) == 97
    assert v.n_for_half_width(0.2, 0.05) == 62  # (1.959964 * 4)^2 = 61.46


def test_mde_and_needed_n_from_an_interval():
    # [0.45, 0.55]: se = 0.1 / 3.919928 = 0.0255107, MDE = 2.801585 * se = 0.0714708
    assert v.se_from_ci([0.45, 0.55]) == pytest.approx(0.0255107, abs=1e-7)
    found = v.verdict([0.45, 0.55], 0.5, "proportion", n=100, estimate=0.5)
    assert found.verdict == "undecided" and found.side is None and found.margin == 0.03
    assert found.mde == pytest.approx(0.0714708, abs=1e-6)
    # observed 0 lies inside the margin: decided at the margin, 100 * (0.0714708 / 0.03)^2 = 567.57 -> 568
    assert found.at == "margin" and found.n_needed == 568
    # observed 0.04 lies outside: 100 * (0.0714708 / 0.04)^2 = 319.26 -> 320
    wide = v.verdict([0.45, 0.55], 0.5, "proportion", n=100, estimate=0.54)
    assert wide.at == "observed" and wide.n_needed == 320
    # a proportion's interval agrees with the closed form: Wilson-width se at p = 0.5 gives the same MDE
    assert v.mde(0.05) == pytest.approx(v.proportion_mde(100))
    assert v.verdict([0.45, 0.55], 0.5, "proportion").n_needed is None  # no n given: nothing to scale


def test_verdict_sides_and_counts():
    above = v.verdict([0.52, 0.60], 0.5, "proportion", n=50)
    below = v.verdict([-0.5, -0.2], 0.0, "nats")
    absent = v.verdict([-0.05, 0.08], 0.0, "nats")
    assert (above.verdict, above.side, above.mde) == ("shown", "above", None)
    assert (below.verdict, below.side) == ("shown", "below")
    assert (absent.verdict, absent.side) == ("shown_absent", None)
    assert v.verdict(None, 0.5, "proportion") is None
    assert v.count([above, below, absent, None, "undecided"]) == {"shown": 2, "shown_absent": 1, "undecided": 1}
