"""Chapter 6's experiments: each formula against values computed by hand, and the steps on small score tables."""
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from alignkit.config import load_config
from alignkit.errors import AlignkitError
from alignkit.experiments.bon import best_of_n, kl_bon, selection_weights
from alignkit.experiments.calibration import (MAX_INVERSE_TEMPERATURE, calibration_summary, cross_fit_temperature,
                                              expected_calibration_error, fit_temperature, nll, reliability)
from alignkit.experiments.length import debias, fit_length_slope, length_debiasing, poe_length_loss
from alignkit.experiments.run import run_experiment, run_experiments
from alignkit.io import fingerprint


def table(pairs):
    """Score table (one row per response) from [(score_better, tokens_better, score_worse, tokens_worse)]."""
    rows = []
    for i, (sb, tb, sw, tw) in enumerate(pairs):
        rows += [{"pair_id": i, "side": "better", "score": sb, "response_tokens": tb},
                 {"pair_id": i, "side": "worse", "score": sw, "response_tokens": tw}]
    return pd.DataFrame(rows)


# Training responses score exactly 1 + 0.5 * tokens, so the fitted slope is 0.5.
TRAIN = [(1 + 0.5 * 10, 10, 1 + 0.5 * 2, 2), (1 + 0.5 * 4, 4, 1 + 0.5 * 6, 6), (1 + 0.5 * 8, 8, 1 + 0.5 * 1, 1)]
# Held-out pairs; corrected score = score - 0.5 * tokens.
TEST = [(6.0, 10, 5.0, 4),    # plain right; corrected 1 vs 3: wrong
        (3.0, 2, 4.0, 8),     # plain wrong; corrected 2 vs 0: right
        (5.0, 10, 4.9, 10),   # length-matched; right both ways
        (1.0, 20, 2.0, 21),   # length-matched; corrected -9 vs -8.5: wrong both ways
        (7.0, 3, 7.5, 12)]    # plain wrong; corrected 5.5 vs 1.5: right


# ----------------------------------------------------------------------------- length
def test_ols_slope_by_hand():
    # x = 0, 1, 2; y = 1, 2, 4: slope = (4/3 + 5/3) / 2 = 1.5, intercept = 7/3 - 1.5
    intercept, slope = fit_length_slope([1, 2, 4], [0, 1, 2])
    assert slope == pytest.approx(1.5) and intercept == pytest.approx(7 / 3 - 1.5)
    assert fit_length_slope([1.0, 3.0], [5, 5]) == (2.0, 0.0)
    np.testing.assert_allclose(debias([6.0, 5.0], [10, 4], 0.5), [1.0, 3.0])
    with pytest.raises(ValueError):
        fit_length_slope([1.0], [1, 2])


def test_length_debiasing_on_hand_pairs():
    s = length_debiasing(table(TRAIN), table(TEST), n_resamples=200)
    assert s["fit"]["slope_per_token"] == pytest.approx(0.5) and s["fit"]["intercept"] == pytest.approx(1.0)
    assert s["fit"]["slope_per_token_ci95"] == pytest.approx([0.5, 0.5])  # every resample lies on the line
    assert s["n"] == 5 and s["fit"]["n_train_responses"] == 6
    assert s["plain"]["accuracy"]["accuracy"] == pytest.approx(2 / 5)
    assert s["corrected"]["accuracy"]["accuracy"] == pytest.approx(3 / 5)
    assert s["plain"]["length_matched"]["n"] == s["corrected"]["length_matched"]["n"] == 2
    assert s["plain"]["length_matched"]["accuracy"] == s["corrected"]["length_matched"]["accuracy"] == 0.5
    assert s["longer_wins"]["accuracy"] == pytest.approx((1 + 0 + 0.5 + 0 + 0) / 5)
    diff = s["difference"]["all"]
    assert diff["difference"] == pytest.approx(0.2) and diff["changed_pairs"] == 3 and diff["n"] == 5
    assert diff["ci95"][0] <= 0.2 <= diff["ci95"][1]
    assert s["difference"]["length_matched"]["difference"] == 0.0
    scores = np.array([x for sb, _, sw, _ in TEST for x in (sb, sw)])
    tokens = np.array([x for _, tb, _, tw in TEST for x in (tb, tw)])
    assert s["plain"]["spearman_length"] == pytest.approx(scipy_stats.spearmanr(scores, tokens)[0])
    assert s["corrected"]["spearman_length"] == pytest.approx(scipy_stats.spearmanr(scores - 0.5 * tokens, tokens)[0])
    low, high = s["plain"]["spearman_length_ci95"]
    assert -1 <= low <= high <= 1


def test_poe_length_loss_by_hand():
    r_b, r_w = torch.tensor([1.0], requires_grad=True), torch.tensor([0.0])
    coef = torch.tensor(0.1, requires_grad=True)
    loss = poe_length_loss(r_b, r_w, torch.tensor([10]), torch.tensor([5]), coef)
    z = 1.0 + 0.1 * (10 - 5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-z)))
    loss.backward()
    sig = 1 / (1 + math.exp(z))  # d loss / d z = -sigmoid(-z)
    assert coef.grad.item() == pytest.approx(-sig * 5) and r_b.grad.item() == pytest.approx(-sig)


def test_poe_length_expert_learns_what_length_explains():
    """Rewards fixed at 0 and the longer response preferred in 3 of 4 pairs (length gap 1): the likelihood
    3 log s(c) + log s(-c) peaks at s(c) = 3/4, c = log 3. The length expert absorbs that, not r."""
    coef = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    zero = torch.zeros(4, dtype=torch.float64)
    len_b, len_w = torch.tensor([2, 2, 2, 1]), torch.tensor([1, 1, 1, 2])
    opt = torch.optim.LBFGS([coef], lr=0.5, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = poe_length_loss(zero, zero, len_b, len_w, coef)
        loss.backward()
        return loss
    opt.step(closure)
    assert coef.item() == pytest.approx(math.log(3), abs=1e-6)


# ----------------------------------------------------------------------------- calibration
def test_ece_on_a_hand_example():
    """Margins ln 3, ln 3, -ln 3, 0. Both orientations give 8 points: three at 0.75 (outcomes 1, 1, 0), three
    at 0.25 (0, 0, 1), two at 0.5 (1, 0). ECE = 3/8 |2/3 - 3/4| * 2 = 1/16."""
    m = [math.log(3), math.log(3), -math.log(3), 0.0]
    rel = reliability(m, 10)
    assert rel["ece"] == pytest.approx(1 / 16) and expected_calibration_error(m) == pytest.approx(1 / 16)
    by_low = {round(b["low"], 1): b for b in rel["bins"]}
    assert set(by_low) == {0.2, 0.5, 0.7} and rel["n_pairs"] == 4
    assert by_low[0.7]["count"] == 3 and by_low[0.7]["frequency"] == pytest.approx(2 / 3)
    assert by_low[0.7]["confidence"] == pytest.approx(0.75) and by_low[0.5]["frequency"] == 0.5
    assert expected_calibration_error([0.0, 0.0]) == 0.0  # all at 0.5, half the outcomes 1
    # one pair of margin 10: (0.99995, 1) and (0.00005, 0), almost perfectly calibrated; a margin of -10 is not
    assert expected_calibration_error([10.0]) < 1e-4 and expected_calibration_error([-10.0]) > 0.99


def test_temperature_fit_finds_the_known_optimum():
    """Margins 2, 2, 2, -2: the likelihood 3 log s(2/T) + log s(-2/T) peaks at s(2/T) = 3/4, T = 2 / ln 3."""
    fit = fit_temperature([2.0, 2.0, 2.0, -2.0])
    assert fit["temperature"] == pytest.approx(2 / math.log(3), rel=1e-8) and not fit["at_bound"]
    assert fit["nll_after"] == pytest.approx(-(3 * math.log(0.75) + math.log(0.25)) / 4)
    assert fit["nll_after"] < fit["nll_before"] == pytest.approx(nll([2.0, 2.0, 2.0, -2.0]))
    right = fit_temperature([1.0, 2.0])  # every pair right: sharpen to the bound
    assert right["at_bound"] and right["inverse_temperature"] == MAX_INVERSE_TEMPERATURE
    wrong = fit_temperature([-1.0, 0.5])  # worse than its mirror image: T infinite, all probabilities 0.5
    assert wrong["temperature"] is None and wrong["nll_after"] == pytest.approx(math.log(2))


def test_cross_fitting_scales_each_half_by_the_other_halfs_temperature():
    rng = np.random.default_rng(3)
    m = np.concatenate([rng.normal(1.0, 2.0, 20), rng.normal(0.3, 0.5, 21)])
    out = cross_fit_temperature(m, seed=7)
    order = np.random.default_rng(7).permutation(len(m))
    a, b = order[:20], order[20:]
    assert out["halves"] == [20, 21]
    np.testing.assert_allclose(out["scaled"][b], m[b] / fit_temperature(m[a])["temperature"])
    np.testing.assert_allclose(out["scaled"][a], m[a] / fit_temperature(m[b])["temperature"])
    assert not np.allclose(out["scaled"], m * out["fits"][0]["inverse_temperature"])


def test_calibration_summary_shape_and_in_sample_fit():
    rng = np.random.default_rng(0)
    test_m = rng.normal(0.5, 3.0, 60)     # over-confident margins
    train_m = rng.normal(2.0, 4.0, 60)
    s = calibration_summary(test_m, train_m, n_resamples=100, seed=1)
    assert s["n"] == 60 and s["before"]["ece"] == pytest.approx(expected_calibration_error(test_m))
    assert sum(b["count"] for b in s["before"]["reliability"]) == 120
    t = fit_temperature(train_m)["temperature"]
    assert s["train_fit"]["temperature"] == pytest.approx(t)
    assert s["train_fit"]["ece"] == pytest.approx(expected_calibration_error(test_m / t))
    assert s["cross_fitted"]["difference"] == pytest.approx(s["cross_fitted"]["ece"] - s["before"]["ece"])
    for part in (s["before"], s["cross_fitted"], s["train_fit"]):
        assert 0 <= part["ece_ci95"][0] <= part["ece_ci95"][1] <= 1


# ----------------------------------------------------------------------------- best-of-n
def test_kl_bon_values():
    assert kl_bon(1) == 0.0
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bon(4) == pytest.approx(1.386294361 - 0.75)
    assert kl_bon(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        kl_bon(0)


def test_best_of_n_on_a_hand_example():
    """k = 3 samples with proxy 1, 3, 2 and judge 10, 0, 5. n = 2: subsets {1,3}, {1,2}, {3,2} pick proxy
    3, 2, 3 (judge 0, 5, 0): proxy 8/3, judge 5/3. n = 3 picks proxy 3 (judge 0)."""
    np.testing.assert_allclose(selection_weights(3, 2), [0, 1 / 3, 2 / 3])
    rows = {r["n"]: r for r in best_of_n([[1.0, 3.0, 2.0]], [[10.0, 0.0, 5.0]], [1, 2, 3], seed=0, n_resamples=50)}
    assert rows[1]["proxy"] == pytest.approx(2) and rows[1]["judge"] == pytest.approx(5)
    assert rows[2]["proxy"] == pytest.approx(8 / 3) and rows[2]["judge"] == pytest.approx(5 / 3)
    assert rows[3]["proxy"] == pytest.approx(3) and rows[3]["judge"] == pytest.approx(0)
    assert rows[2]["judge_gain"] == pytest.approx(5 / 3 - 5) and rows[2]["kl_bon"] == pytest.approx(kl_bon(2))
    with pytest.raises(ValueError, match="max"):
        best_of_n([[1.0, 2.0]], [[1.0, 2.0]], [1, 4])


def test_best_of_n_equals_brute_force_over_subsets_with_ties():
    rng = np.random.default_rng(1)
    proxy = rng.integers(0, 3, (4, 5)).astype(float)  # few values: many ties, broken uniformly
    judge = rng.normal(size=(4, 5))
    rows = best_of_n(proxy, judge, [1, 2, 3, 5], seed=0, n_resamples=20)
    for row in rows:
        picks = []
        for p, j in zip(proxy, judge):
            for subset in itertools.combinations(range(5), row["n"]):
                best = max(p[list(subset)])
                tied = [i for i in subset if p[i] == best]
                picks.append((best, np.mean(j[tied]), 1 / math.comb(5, row["n"])))
        expected_proxy = sum(b * w for b, _, w in picks) / len(proxy)
        expected_judge = sum(jj * w for _, jj, w in picks) / len(proxy)
        assert row["proxy"] == pytest.approx(expected_proxy) and row["judge"] == pytest.approx(expected_judge)
        assert row["proxy_ci95"][0] <= row["proxy"] <= row["proxy_ci95"][1]


# ----------------------------------------------------------------------------- the steps
def write_scores(out, identity="scores-v1", train=TRAIN, test=TEST):
    scores = out / "scores"
    scores.mkdir(parents=True, exist_ok=True)
    table(train).to_parquet(scores / "trained-train.parquet", index=False)
    table(test).to_parquet(scores / "trained-test.parquet", index=False)
    (scores / "summary.json").write_text(json.dumps({"trained-test": {}, "config": {}, "identity": identity}))


def test_steps_write_summaries_and_are_reused_while_the_scores_are_the_same(tmp_path):
    cfg = load_config("tiny", {"output_dir": str(tmp_path)})
    write_scores(tmp_path)
    records = run_experiments(cfg)
    length = json.loads((tmp_path / "experiments" / "length" / "summary.json").read_text())
    assert length["corrected"]["accuracy"]["accuracy"] == pytest.approx(3 / 5) == \
        records["length"]["corrected"]["accuracy"]["accuracy"]
    assert length["config"]["scores"] == "scores-v1" and length["identity"] == fingerprint(length["config"])
    calibration = json.loads((tmp_path / "experiments" / "calibration" / "summary.json").read_text())
    assert calibration["n"] == 5 and calibration["config"]["n_bins"] == 10
    # new tables under the same scores identity: the saved result is reused, not recomputed
    write_scores(tmp_path, test=[(s_w, t_w, s_b, t_b) for s_b, t_b, s_w, t_w in TEST])
    assert run_experiment(cfg, "length")["corrected"]["accuracy"]["accuracy"] == pytest.approx(3 / 5)
    assert run_experiment(cfg, "length", force=True)["corrected"]["accuracy"]["accuracy"] == pytest.approx(2 / 5)
    # new scores (a new identity) are recomputed; so is a new seed
    write_scores(tmp_path, identity="scores-v2")
    assert run_experiment(cfg, "length")["config"]["scores"] == "scores-v2"
    reseeded = run_experiment(load_config("tiny", {"output_dir": str(tmp_path), "seed": 1}), "length")
    assert reseeded["config"]["seed"] == 1 and reseeded["corrected"]["accuracy"]["accuracy"] == pytest.approx(3 / 5)


def test_steps_say_which_chapter_to_run_when_the_scores_are_missing(tmp_path):
    cfg = load_config("tiny", {"output_dir": str(tmp_path)})
    with pytest.raises(AlignkitError, match="chapter 3.*alignkit score --profile tiny"):
        run_experiment(cfg, "length")
    write_scores(tmp_path)
    (tmp_path / "scores" / "trained-test.parquet").unlink()
    with pytest.raises(AlignkitError, match="trained-test.parquet"):
        run_experiment(cfg, "calibration")
    with pytest.raises(AlignkitError, match="known: length, calibration, safety, bon"):
        run_experiment(cfg, "best-of-n")


def test_reuse_needs_the_files_written_beside_the_record(tmp_path):
    """io.reuse returns the record only for its identity and only while every file named in `beside` exists."""
    from alignkit.io import atomic_write_json, reuse, stamped
    atomic_write_json(tmp_path / "summary.json", stamped({"n": 3}, {"step": "a"}))
    assert reuse(tmp_path / "summary.json", {"step": "a"})["n"] == 3
    assert reuse(tmp_path / "summary.json", {"step": "b"}) is None
    assert reuse(tmp_path / "summary.json", {"step": "a"}, beside=("samples.parquet",)) is None
    (tmp_path / "samples.parquet").write_bytes(b"")
    assert reuse(tmp_path / "summary.json", {"step": "a"}, beside=("samples.parquet",))["n"] == 3
