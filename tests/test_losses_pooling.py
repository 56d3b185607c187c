import math

import pytest
import torch

from alignkit.losses import bradley_terry_loss, pairwise_accuracy
from alignkit.pooling import gather_last_attended, last_attended_index
from alignkit.stats import wilson_interval


def test_bradley_terry_matches_hand_computed_values():
    better, worse = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    # -log(sigmoid(d)) = log(1 + e^-d) for d = 1, 0, -2
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(2))) / 3
    assert bradley_terry_loss(better, worse).item() == pytest.approx(expected, rel=1e-6)
    with_margin = (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(1.5)) + math.log(1 + math.exp(3.5))) / 3
    assert bradley_terry_loss(better, worse, margin=1.5).item() == pytest.approx(with_margin, rel=1e-6)
    centred = expected + 0.1 * (9 + 0 + 0) / 3
    assert bradley_terry_loss(better, worse, center_coef=0.1).item() == pytest.approx(centred, rel=1e-6)


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 3.0, 1.0])).item() == 0.625


def test_pooling_reads_the_last_attended_token_left_or_right_padded():
    values = torch.arange(12.0).reshape(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]])
    assert last_attended_index(mask).tolist() == [1, 3, 3]
    assert gather_last_attended(values, mask).tolist() == [1.0, 7.0, 11.0]
    with pytest.raises(ValueError, match="no attended"):
        last_attended_index(torch.tensor([[0, 0]]))


def test_wilson_interval_known_case():
    # 8 of 10: Wilson 95% interval is (0.4902, 0.9433) (e.g. statsmodels proportion_confint method='wilson')
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_length_diagnostics_by_hand():
    from alignkit.stats import length_diagnostics
    # pairs: (score_b, score_w, len_b, len_w)
    # 1: right, longer better     2: right, matched (100 vs 95)   3: wrong, matched (50 vs 50)
    # 4: wrong, shorter better
    d = length_diagnostics([2, 1, 0, 0], [1, 0, 1, 3], [300, 100, 50, 10], [100, 95, 50, 40])
    assert d["longer_wins"]["accuracy"] == (1 + 1 + 0.5 + 0) / 4
    assert d["length_matched"]["n"] == 2 and d["length_matched"]["accuracy"] == 0.5


def test_precision_agreement_by_hand():
    from alignkit.stats import precision_agreement
    reference = ([3.0, 1.0, 2.0, 0.5], [1.0, 2.0, 2.0, 0.0])   # correct, wrong, tie, correct -> 2.5 / 4
    other = ([3.1, 2.5, 2.0, 0.5], [1.0, 2.0, 1.0, 0.0])       # correct, correct, correct, correct -> 4 / 4
    out = precision_agreement(reference, other)
    assert out["flips"] == 2 and out["n"] == 4
    assert out["accuracy_reference"] == 0.625 and out["accuracy_other"] == 1.0
    assert out["accuracy_difference"] == 0.375
    assert out["max_abs_difference"] == 1.5
    same = precision_agreement(reference, reference)
    assert same["flips"] == 0 and same["accuracy_difference_ci95"] == [0.0, 0.0] and same["spearman"] == 1.0
    assert same["holds"]
    reversed_ = precision_agreement(reference, (reference[1], reference[0]))
    assert not reversed_["holds"]


def test_paired_difference_by_hand():
    from alignkit.stats import paired_difference
    out = paired_difference([1, 1, 0.5, 0], [0, 1, 1, 0], n_resamples=200, seed=0)
    # differences +1, 0, -0.5, 0 -> mean 0.125, two pairs changed
    assert out["n"] == 4 and out["difference"] == 0.125 and out["changed_pairs"] == 2
    assert out["ci95"][0] <= 0.125 <= out["ci95"][1]
    assert paired_difference([], [])["difference"] is None
