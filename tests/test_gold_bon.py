"""Gold best-of-n (alignkit/experiments/gold_bon.py) and the safety pairs out of domain
(alignkit/experiments/safety_pairs.py): the estimator by hand on three answers and against brute-force
enumeration of subsets, the curves and the paired differences, the clustered interval, the data checks, then
both steps on the tiny random model."""
import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest

from alignkit.errors import AlignkitError, DataError
from alignkit.experiments import run as runner
from alignkit.experiments.bon import expected_pick
from alignkit.experiments.gold_bon import gold_curves, load_gold, pick_prompts, rule_spread, sizing
from alignkit.experiments.safety_pairs import safety_pairs_summary
from alignkit.io import reuse
from alignkit.stats import bootstrap_ci, cluster_mean_ci
from conftest import tiny_config

CJK = re.compile(r"[\u4e00-\u9fff]")


def brute_force(proxy, judge, n):
    """Per prompt: the mean over every n-subset of the judge of the proxy's pick, a tie among the subset's
    highest proxy scores broken uniformly (its members' mean judge)."""
    out = []
    for p, j in zip(np.asarray(proxy, float), np.asarray(judge, float)):
        values = []
        for subset in itertools.combinations(range(len(p)), n):
            top = max(p[i] for i in subset)
            values.append(np.mean([j[i] for i in subset if p[i] == top]))
        out.append(np.mean(values))
    return np.array(out)


def test_expected_pick_by_hand_on_three_answers():
    """RM 0.1, 0.5, 0.3; gold 0.2, 0.0, 1.0. Sorted by RM: gold 0.2, 1.0, 0.0, weights at n = 2 are
    C(j, 1) / C(3, 2) = 0, 1/3, 2/3 -> 1/3 (subsets {0,1} -> 0, {0,2} -> 1, {1,2} -> 0). By length 30, 10, 20:
    gold 0.0, 1.0, 0.2 -> 1/3 + 2/3 * 0.2 = 0.4667. By gold itself (the oracle): 1/3 * 0.2 + 2/3 = 0.7333."""
    rm, gold, length = [[0.1, 0.5, 0.3]], [[0.2, 0.0, 1.0]], [[30, 10, 20]]
    assert expected_pick(rm, gold, 1)[0] == pytest.approx(0.4)  # n = 1: a random answer, the mean
    assert expected_pick(rm, gold, 2)[0] == pytest.approx(1 / 3)
    assert expected_pick(rm, gold, 3)[0] == pytest.approx(0.0)  # n = k: the RM's favourite
    assert expected_pick(length, gold, 2)[0] == pytest.approx(1.4 / 3)
    assert expected_pick(gold, gold, 2)[0] == pytest.approx(2.2 / 3) and expected_pick(gold, gold, 3)[0] == 1.0


def test_expected_pick_ties_are_deterministic_and_exact():
    """RM 1, 1, 0 with gold 1, 0, 0.5: subsets {0,1} -> a tie, 0.5; {0,2} -> 1; {1,2} -> 0: mean 0.5. The
    answer's order within a tie does not matter."""
    assert expected_pick([[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.5]], 2)[0] == pytest.approx(0.5)
    assert expected_pick([[1.0, 1.0, 0.0]], [[0.0, 1.0, 0.5]], 2)[0] == pytest.approx(0.5)
    assert expected_pick([[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.5]], 3)[0] == pytest.approx(0.5)


def test_expected_pick_equals_brute_force_enumeration():
    rng = np.random.default_rng(3)
    proxy = rng.integers(0, 4, size=(6, 7)).astype(float)  # small integers: many ties
    judge = rng.random((6, 7))
    for n in range(1, 8):
        np.testing.assert_allclose(expected_pick(proxy, judge, n), brute_force(proxy, judge, n), atol=1e-12)
    with pytest.raises(ValueError, match="1 <= n <= k"):
        expected_pick(proxy, judge, 8)


def test_gold_curves_rules_and_paired_differences():
    """Prompt a as above; prompt b: RM 0, 1, 2, gold 1, 1, 0, length 1, 2, 3 (the RM and length pick alike).
    At n = 3: RM picks gold 0 and 0 (mean 0), random 0.4 and 2/3, longest 0.2 and 0, oracle 1 and 1."""
    rm, gold, length = [[0.1, 0.5, 0.3], [0, 1, 2]], [[0.2, 0.0, 1.0], [1, 1, 0]], [[30, 10, 20], [1, 2, 3]]
    one, _, three = gold_curves(rm, length, gold, [1, 2, 3], n_resamples=200)
    assert one["rm"] == one["random"] == one["longest"] == one["oracle"] == pytest.approx((0.4 + 2 / 3) / 2)
    # at n = 1 every rule is a random answer: the differences are exactly 0, not a rounding error a CI could read
    assert one["rm_minus_random"] == one["rm_minus_longest"] == one["proxy_gain"] == 0.0
    assert one["rm_minus_random_ci95"] == [0.0, 0.0] and one["proxy_gain_ci95"] == [0.0, 0.0]
    assert three["rm"] == 0 and three["longest"] == pytest.approx(0.1) and three["oracle"] == 1.0
    assert three["rm_minus_random"] == pytest.approx(-(0.4 + 2 / 3) / 2)
    assert three["rm_minus_longest"] == pytest.approx(-0.1)
    # the proxy: the RM's own score of its pick, 0.5 and 2, against its mean 0.3 and 1
    assert three["proxy"] == pytest.approx(1.25) and three["proxy_gain"] == pytest.approx(0.6)
    assert three["sd_rm_minus_random"] == pytest.approx(np.std([-0.4, -2 / 3], ddof=1))
    for row in (one, three):
        for key in ("rm", "random", "rm_minus_random", "rm_minus_longest"):
            low, high = row[f"{key}_ci95"]
            assert low <= row[key] + 1e-12 and row[key] - 1e-12 <= high
    # on data where summation order shows (floats), n = 1 is still exactly 0: one arithmetic for every baseline
    rng = np.random.default_rng(0)
    first = gold_curves(rng.normal(size=(5, 11)), rng.integers(1, 999, (5, 11)), rng.random((5, 11)), [1],
                        n_resamples=50)[0]
    assert first["rm_minus_random_ci95"] == first["rm_minus_longest_ci95"] == first["proxy_gain_ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="one shape"):
        gold_curves(rm, length, [[0.2, 0.0]], [1])
    spread = rule_spread(length, gold, 3)
    assert spread["sd_oracle_minus_random"] == pytest.approx(np.std([0.6, 1 / 3], ddof=1))
    # sizing from the rows alone: lengths by characters ("aaa" is the longest of prompt a), the larger sd
    rows = [{"outputs": ["a" * 30, "a" * 10, "a" * 20], "gold": [0.2, 0.0, 1.0]},
            {"outputs": ["a", "aa", "aaa"], "gold": [1, 1, 0]}]
    sized = sizing(rows, half_width=0.05)
    longest_sd = np.std([0.2 - 0.4, 0 - 2 / 3], ddof=1)
    assert sized["sd_longest_minus_random"] == pytest.approx(longest_sd)
    sd = max(longest_sd, np.std([0.6, 1 / 3], ddof=1))
    assert sized["prompts_needed"] == int(np.ceil((1.959964 * sd / 0.05) ** 2))


def test_cluster_interval_resamples_whole_prompts():
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.5])
    # one row per cluster: the ordinary bootstrap of the mean, resample for resample
    assert cluster_mean_ci(values, list("abcdef"), n_resamples=300, seed=4) == pytest.approx(
        bootstrap_ci(values, np.mean, n_resamples=300, seed=4))
    # a cluster always moves whole: two clusters, each all 1 or all 0, give only means 0, 1/2 (or 2/3, 1/3), 1
    grouped = cluster_mean_ci([1, 1, 0], ["x", "x", "y"], n_resamples=200, seed=0)
    assert grouped[0] == 0.0 and grouped[1] == 1.0
    # the mean is over rows, not over clusters: drawing x (three 1s) and y (one 0) gives 3/4, not 1/2; it is the
    # draw in the middle (probability 1/2), so the median (level 0) is 0.75
    assert cluster_mean_ci([1, 1, 1, 0], list("xxxy"), n_resamples=401, seed=0, level=0.0) == (0.75, 0.75)


def test_safety_pairs_summary_by_hand():
    """Three pairs: the RM is right on 1 and 3 (a tie on 2: a half); the longer answer is the safer on 2 only.
    RM 2.5/3, rule 1/3, difference (1 - 0) + (0.5 - 1) + (1 - 0) = 1.5 over 3 = 0.5; the two disagree on all 3."""
    s = safety_pairs_summary([2.0, 1.0, 0.3], [1.0, 1.0, -0.2], [10, 50, 5], [20, 40, 9], ["p", "q", "p"],
                             n_resamples=100)
    assert s["n"] == 3 and s["prompts"] == 2 and s["disagree"] == 3
    assert s["rm"]["value"] == pytest.approx(2.5 / 3) and s["length_rule"]["value"] == pytest.approx(1 / 3)
    assert s["rm_minus_length_rule"]["value"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one score, length and prompt"):
        safety_pairs_summary([1.0], [0.0], [1], [2], ["p", "q"])


def test_load_gold_checks_rows(tmp_path):
    good = {"id": 0, "instruction": "Say hi.", "outputs": ["hi", "hello"], "gold": [0.2, 1]}
    path = tmp_path / "gold.json"
    path.write_text(json.dumps([good, {**good, "id": 2}]))
    assert len(load_gold(path)) == 2
    for bad, match in (({**good, "gold": [0.2]}, r"row 2, field 'gold'.*one number per answer"),
                       ({**good, "gold": [0.2, 1.5]}, r"row 2, field 'gold'.*in \[0, 1\]"),
                       ({**good, "outputs": ["a", "b", "c"], "gold": [0, 0, 0]}, r"row 2.*same number of answers"),
                       ({k: v for k, v in good.items() if k != "instruction"}, r"row 2, field 'instruction'")):
        path.write_text(json.dumps([good, bad]))
        with pytest.raises(DataError, match=match):
            load_gold(path)
    rows = [{**good, "id": i} for i in range(10)]
    picked = pick_prompts(rows, 4, seed=1)
    assert len(picked) == 4 and [r["id"] for r in picked] == sorted(r["id"] for r in picked)
    assert pick_prompts(rows, 4, seed=1) == picked and pick_prompts(rows, None, seed=1) == rows


def test_gold_bon_and_safety_pairs_steps_on_the_tiny_model(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    from alignkit.train.rm import reward_model_metrics
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    for name in ("gold_bon", "safety_pairs"):
        monkeypatch.setitem(runner.SETTINGS, name, {"n_resamples": 30})
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "gold_bon.prompts": 3,
                                                              "safety_pairs.pairs": 6})
    with pytest.raises(AlignkitError, match=r"reward model.*chapter 1"):
        runner.run_experiment(cfg, "gold_bon")
    reward_model_metrics(cfg)
    gold = runner.run_experiment(cfg, "gold_bon")
    table = pd.read_parquet(cfg.out / "experiments" / "gold_bon" / "scores.parquet")
    assert gold["prompts"] == 3 and gold["k"] == 11 and len(table) == 33 == gold["answers"]
    assert gold["n_values"] == list(range(1, 12)) and len(gold["curves"]) == 11
    assert gold["cut"]["share"] == pytest.approx(table.response_cut.mean())
    # the curves are the table's: n = 11 is the RM's favourite of each prompt, n = 1 the mean gold
    best = table.loc[table.groupby("id").score.idxmax()]
    assert gold["curves"][-1]["rm"] == pytest.approx(best.gold.mean())
    assert gold["curves"][0]["random"] == pytest.approx(table.gold.mean())
    pairs = runner.run_experiment(cfg, "safety_pairs")
    assert pairs["n"] == 6 and 0 <= pairs["rm"]["value"] <= 1 and pairs["rows"] == 3107
    # reused while the identity holds; a new size is a new run
    monkeypatch.setattr(runner, "gold_bon_experiment", lambda *a, **kw: pytest.fail("recomputed a reused step"))
    assert runner.run_experiment(cfg, "gold_bon") == gold
    folder, rm_dir = cfg.out / "experiments" / "gold_bon", cfg.out / "rm"
    data = data_dir / "alpacaeval_bon11.json"
    assert reuse(folder / "summary.json", runner.rm_only_identity(cfg, "gold_bon", rm_dir, data)) is not None
    changed = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "gold_bon.prompts": 4})
    assert reuse(folder / "summary.json", runner.rm_only_identity(changed, "gold_bon", rm_dir, data)) is None
    # `rm.score_dtype`: the scorer reads in bfloat16, a new identity whose scores are close to float32's, not equal
    bf16 = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "gold_bon.prompts": 3,
                                                               "safety_pairs.pairs": 6, "rm.score_dtype": "bfloat16"})
    assert reuse(folder / "summary.json", runner.rm_only_identity(bf16, "gold_bon", rm_dir, data)) is None
    assert runner.rm_only_identity(bf16, "gold_bon", rm_dir, data)["score_dtype"] == "bfloat16"
    monkeypatch.undo()
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    monkeypatch.setitem(runner.SETTINGS, "gold_bon", {"n_resamples": 30})
    runner.run_experiment(bf16, "gold_bon")
    low = pd.read_parquet(folder / "scores.parquet").score
    assert not np.array_equal(low, table.score) and np.allclose(low, table.score, atol=0.05 * table.score.abs().max())
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(AlignkitError, match=r"alpacaeval_bon11.json not found.*ALIGNKIT_DATA_DIR"):
        runner.run_experiment(cfg, "gold_bon", force=True)


# ----------------------------------------------------------------------------- the report layer

def _gold_summary(rm_follows_gold: bool) -> dict:
    """A gold best-of-n summary of 60 prompts x 11 answers: gold uniform, lengths unrelated; the RM's score is
    the gold (a perfect RM) or its negative (the worst one)."""
    rng = np.random.default_rng(1)
    gold = rng.random((60, 11))
    rm = gold if rm_follows_gold else -gold
    curves = gold_curves(rm, rng.integers(100, 2000, (60, 11)), gold, range(1, 12), n_resamples=200)
    return {"prompts": 60, "k": 11, "answers": 660, "curves": curves, "mean_response_tokens": 300.0,
            "cut": {"answers": 6, "share": 0.01, "max_length": 2048}, "seconds": {"score": 66.0},
            "seconds_per_answer": 0.1, "config": {"n_resamples": 200},
            "sizing": {"sd_longest_minus_random": 0.25, "sd_oracle_minus_random": 0.27, "half_width": 0.05,
                       "prompts_needed": 113}}


def test_gold_tables_readings_and_figure_take_their_categories_from_the_numbers():
    from alignkit.report import external, readings
    good, bad = _gold_summary(True), _gold_summary(False)
    table = external.gold_table(good)
    assert list(table.index) == [1, 2, 4, 8, 11] and (table["n (prompts)"] == 60).all()
    assert table.loc[1, "verdict, RM − random"] == "" and table.loc[11, "verdict, RM − random"].startswith("shown /")
    assert table.loc[11, "RM's pick [95% CI]"] == table.loc[11, "oracle (best by the judge) [95% CI]"]  # RM = gold
    en, zh = external.gold_reading(good)
    assert readings.words("gold_vs_random", "above") in en and "RewardBench" in en and "31.1" in en
    assert "the judge confirms the proxy's gain" in en and CJK.search(zh)
    en, _ = external.gold_reading(bad)  # the RM ranks by the negative gold: its pick is the worst answer
    assert readings.words("gold_vs_random", "below") in en and "over-optimisation measured" in en
    assert external.gold_goodhart(bad)[0] == "judge_falls"
    size = external.gold_run_size(good)
    assert size.loc["answers cut at the evaluation length", "value"] == "6 (1.0% at 2048 tokens)"
    external.gold_figure(good)


def test_safety_pairs_table_and_reading():
    from alignkit.report import external, readings
    pairs = {"n": 400, "prompts": 250, "disagree": 120, "cut": {"pairs": 0, "share": 0.0, "max_length": 2048},
             "rm": {"value": 0.44, "ci95": [0.39, 0.49]}, "length_rule": {"value": 0.46, "ci95": [0.41, 0.51]},
             "rm_minus_length_rule": {"value": -0.02, "ci95": [-0.025, 0.02]}}
    table = external.safety_pairs_table(pairs)
    assert table.iloc[0]["reading"].startswith(readings.words("safety_pairs_rm", "below"))
    assert table.iloc[0]["verdict"].startswith("shown /")
    assert table.iloc[2]["verdict"].startswith("shown absent")  # [-0.025, 0.02] inside 0 ± 0.03
    en, zh = external.safety_pairs_reading(pairs)
    assert "not shown different from the length rule" in en and "[shown absent" in en and "not distinguishable from chance" in en
    assert CJK.search(zh)
