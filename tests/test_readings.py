"""Readings as categories (alignkit/report/readings.py), on hand-made numbers on both sides of each boundary,
and their words: every category a reading can return has English and Chinese words in text/readings.yaml."""
import json
import re

import pytest

from alignkit.report import readings as r

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_ci_vs_a_null_on_both_sides_of_each_bound():
    assert r.ci_vs([0.51, 0.70], 0.5) == "above"
    assert r.ci_vs([0.50, 0.70], 0.5) == "holds"  # touching the null is not beyond it
    assert r.ci_vs([0.30, 0.49], 0.5) == "below"
    assert r.ci_vs([0.30, 0.50], 0.5) == "holds"
    assert r.ci_vs([-0.1, 0.2], 0.0) == "holds"
    assert r.ci_vs([0.60, 0.70], 0.577) == "above" and r.ci_vs([0.546, 0.691], 0.577) == "holds"
    assert r.ci_vs(None, 0.5) is None and r.ci_vs([0.4, None], 0.5) is None and r.ci_vs([0.4, 0.6], None) is None


def test_verdicts_in_words_carry_the_margin_and_the_n_that_would_decide():
    """[0.45, 0.55] at n = 100: MDE 0.0715 (2.801585 * 0.1 / 3.919928), decided at the margin by
    100 * (0.0715 / 0.03)^2 = 568 (tests/test_verdicts.py); [0.48, 0.52] lies inside 0.5 ± 0.03."""
    undecided = r.judge([0.45, 0.55], 0.5, "proportion", n=100, estimate=0.5)
    assert r.verdict_phrase(undecided) == ("undecided: the smallest effect detectable at n = 100 is 0.071; "
                                           "n ≈ 568 would decide it (at the margin)")
    assert "568" in r.verdict_phrase(undecided, "zh") and CJK.search(r.verdict_phrase(undecided, "zh"))
    absent = r.judge([0.48, 0.52], 0.5, "proportion", n=100)
    assert r.verdict_cell(absent).startswith("shown absent: the interval lies inside 0.500 ± 0.03 / 显示不存在")
    assert r.verdict_phrase(r.judge([0.52, 0.6], 0.5, "proportion", n=100)) == "shown"
    assert r.verdict_phrase(r.judge([0.45, 0.55], 0.5, "proportion")).startswith("undecided: the smallest effect "
                                                                                 "detectable at this size is 0.071")
    assert r.judge(None, 0.5, "proportion") is None and r.judge([0.4, 0.6], None, "proportion") is None
    assert r.verdict_phrase(None) == "not run yet"
    # a sentence's reading carries its verdict in brackets; nothing is added without one
    assert r.said("chance", [0.52, 0.6], 0.5, "proportion", size=100) == "above chance [shown]"
    assert r.with_verdict("text", None) == "text"
    margins = r.margins_table()
    assert margins.loc["proportion", "margin"] == "± 0.03" and margins.loc["nats", "margin"] == "± 0.1"
    assert len(margins) == len(r.verdicts.MARGINS) and all(" / " in c for c in margins.covers)


def test_simple_readings():
    assert r.reproduced(0.6035, 0.6035) == "same" and r.reproduced(0.6035, 0.6036) == "different"
    assert r.reproduced(None, 0.6) == "different" and r.reproduced(0.6, None) is None
    assert r.reference_pass("cache") == "cached" and r.reference_pass("live") == "every_step"
    assert r.training_set(None) == "eval_only" and r.training_set("x.json") == "train"
    assert r.token_cap(0.51) == "capped" and r.token_cap(0.5) == "free" and r.token_cap(None) is None
    assert r.meets_aim(1.5, 1.5) == "met" and r.meets_aim(1.49, 1.5) == "missed" and r.meets_aim(2.0, None) is None
    assert r.adopted(True) == "holds" and r.adopted(False) == "fails"


def test_temperature_effect_on_both_sides_of_one():
    assert r.temperature_effect([1.01, 2.0]) == "softens"
    assert r.temperature_effect([1.0, 2.0]) == "mixed"  # T = 1 exactly is not beyond 1
    assert r.temperature_effect([0.99]) == "sharpens" and r.temperature_effect([1.0]) == "mixed"
    assert r.temperature_effect([0.5, 1.5]) == "mixed" and r.temperature_effect([None, 1.5]) == "mixed"
    assert r.temperature_effect([None, None]) == "flattens"  # infinite T: no better than the mirror image
    assert r.temperature_effect([]) is None and r.temperature_effect(None) is None


def test_chapter_6_readings_are_read_from_the_intervals():
    """The experiments' readings: a paired difference or an ECE change against 0 (touching 0 holds it)."""
    assert r.both("exp_debias_change", r.ci_vs([0.001, 0.05], 0.0)).startswith("the correction ranks more pairs right")
    assert r.both("exp_debias_change", r.ci_vs([0.0, 0.05], 0.0)).startswith("no change beyond noise")
    assert r.both("exp_debias_change", r.ci_vs([-0.05, -0.001], 0.0)).startswith("the correction ranks fewer")
    assert r.words("exp_ece_change", r.ci_vs([-0.2, -0.01], 0.0)) == "scaling lowers the calibration error"
    assert r.words("exp_ece_change", r.ci_vs([-0.2, 0.0], 0.0)).startswith("ECE change within noise")
    assert r.words("exp_ece_change", r.ci_vs([0.01, 0.2], 0.0), "zh") == "缩放后校准误差升高"
    assert r.words("exp_temperature", "softens").startswith("T > 1")


def test_goodhart_reads_where_proxy_and_judge_gains_part():
    """Gains' CIs per n (n = 1 first: its gain is exactly 0). The judge may be noisy at small n: the category
    is decided at the largest n, except that a judge gain below 0 anywhere beside a proxy gain is decisive."""
    zero, up, flat, down = [0.0, 0.0], [0.1, 0.5], [-0.1, 0.2], [-0.5, -0.01]
    ns = [1, 2, 4, 8]
    assert r.goodhart([zero, up, up, up], [zero, flat, up, up]) == "tracks"  # noisy at n = 2, shown from n = 4
    assert r.parting_n(ns, [zero, up, up, up], [zero, flat, up, up]) == 2
    assert r.goodhart([zero, up, up, up], [zero, up, up, flat]) == "parts"
    assert r.parting_n(ns, [zero, up, up, up], [zero, up, up, flat]) == 8
    assert r.goodhart([zero, up, up, up], [zero, up, flat, down]) == "judge_falls"
    assert r.parting_n(ns, [zero, up, up, up], [zero, up, flat, down]) == 4
    assert r.goodhart([zero, up, [0.0, 0.3]], [zero, down, flat]) == "judge_falls"  # decisive at any n
    assert r.goodhart([zero, [0.0, 0.3], [0.0, 0.4]], [zero, up, up]) == "no_proxy_gain"  # touching 0 holds it
    assert r.parting_n(ns, [zero, [0.0, 0.3]], [zero, down]) is None
    assert r.parting_n(ns, [zero, up, up], [zero, up, up]) is None
    assert r.goodhart([], []) is None and r.goodhart([zero, None], [zero, up]) is None
    assert r.words("exp_goodhart", "parts", n_part="8").startswith("the curves part: from n = 8")
    assert r.both("ev_goodhart", "judge_falls").startswith("over-optimisation")


def test_length_explains():
    assert r.length_explains([0.01, 0.05], 0.4, 0.3) == "most"
    assert r.length_explains([0.01, 0.05], 0.2, -0.3) == "some"
    assert r.length_explains([0.0, 0.05], 0.4, 0.3) == "none"  # the interval must lie above 0
    assert r.length_explains(None, 0.4, 0.3) is None


def test_the_seed_claims():
    assert r.claim_dpo_scores_lower([0.2, 0.49]) == "held"
    assert r.claim_dpo_scores_lower([0.2, 0.5]) == "undecided"
    assert r.claim_dpo_scores_lower([0.51, 0.7]) == "failed"
    assert r.claim_rewards_length([0.50, 0.59], 0.6, [0.4, 0.6]) == "held"
    assert r.claim_rewards_length([0.55, 0.65], 0.6, [0.4, 0.6]) == "undecided"
    assert r.claim_rewards_length([0.61, 0.70], 0.6, [0.4, 0.6]) == "failed"
    assert r.claim_rewards_length([0.55, 0.65], 0.6, [0.51, 0.7]) == "failed"  # signal on length-matched pairs
    assert r.claim_rewards_length(None, 0.6, None) is None
    assert r.claim_out_of_range([0.021, 0.2]) == "held" and r.claim_out_of_range([0.02, 0.2]) == "undecided"
    assert r.claim_out_of_range([0.0, 0.099]) == "failed" and r.claim_out_of_range([0.0, 0.10]) == "undecided"
    assert r.claim_out_of_range(None) is None


def test_every_category_has_words_in_both_languages():
    texts = r.texts()
    for key, function in r.WORDS.items():
        assert key in texts, f"text/readings.yaml has no entry {key!r}"
        for category in r.KINDS[function]:
            entry = texts[key].get(category)
            assert entry and {"en", "zh"} <= set(entry), (key, category)
            if entry["en"]:  # an empty pair says nothing in either language (e.g. no token-cap caveat)
                assert not CJK.search(entry["en"]) and CJK.search(entry["zh"]), (key, category)
    for key, entry in texts.items():  # every other entry is a sentence or a set of labels, in both languages
        if key not in r.WORDS:
            assert {"en", "zh"} <= set(entry) or all({"en", "zh"} <= set(v) for v in entry.values()), key


@pytest.mark.parametrize("function", list(r.KINDS))
def test_kinds_list_exactly_what_a_reading_returns(function):
    """The categories in KINDS are the ones the tests above reach (so the words test covers them all)."""
    reached = {
        r.ci_vs: {r.ci_vs([0.6, 0.7], 0.5), r.ci_vs([0.3, 0.4], 0.5), r.ci_vs([0.4, 0.6], 0.5)},
        r.verdict_category: {r.verdict_category(r.judge(ci, 0.5, "proportion", n=n))
                             for ci, n in (([0.6, 0.7], 9), ([0.49, 0.51], 9), ([0.4, 0.6], 9), ([0.4, 0.6], None))},
        r.reproduced: {r.reproduced(1, 1), r.reproduced(1, 0)},
        r.reference_pass: {r.reference_pass("cache"), r.reference_pass("live")},
        r.training_set: {r.training_set(None), r.training_set("x")}, r.token_cap: {r.token_cap(0.9), r.token_cap(0.1)},
        r.length_explains: {r.length_explains([1, 2], 3, 1), r.length_explains([1, 2], 1, 3), r.length_explains([-1, 2], 1, 3)},
        r.claim_dpo_scores_lower: {r.claim_dpo_scores_lower(ci) for ci in ([0.1, 0.2], [0.6, 0.7], [0.4, 0.6])},
        r.claim_rewards_length: {r.claim_rewards_length(ci, 0.5, None) for ci in ([0.1, 0.2], [0.6, 0.7], [0.4, 0.6])},
        r.claim_out_of_range: {r.claim_out_of_range(ci) for ci in ([0.1, 0.2], [0.0, 0.05], [0.0, 0.5])},
        r.meets_aim: {r.meets_aim(2, 1), r.meets_aim(1, 2)}, r.adopted: {r.adopted(True), r.adopted(False)},
        r.temperature_effect: {r.temperature_effect(t) for t in ([2.0], [0.5], [None], [0.5, 2.0])},
        r.safety_tradeoff: {r.safety_tradeoff(s, h) for s, h in (([1, 2], [-2, -1]), ([1, 2], [-1, 1]), ([-1, 1], [0, 0]))},
        r.goodhart: {r.goodhart([[0, 0], p], [[0, 0], j]) for p, j in (([1, 2], [-2, -1]), ([1, 2], [-1, 1]),
                                                                       ([1, 2], [1, 2]), ([-1, 1], [1, 2]))},
    }[function]
    assert reached == set(r.KINDS[function])


def test_words_fill_numbers_and_a_missing_step_reads_not_run():
    assert r.words("ev_dpo_gap", "above", "en", gap="+0.255 [+0.150, +0.350]") == \
        "gap +0.255 [+0.150, +0.350]: fits train pairs better"
    assert r.both("chance", "holds") == "not distinguishable from chance (CI holds 0.5) / 与随机无显著差异"
    assert r.both("ev_chance", None) == r.NOT_RUN == "not run yet / 尚未运行"
    assert r.words("claim", None, "zh") == "尚未运行"


def _split(win_ci, effect_ci, per_token_ci, length_part, capped):
    return {"n": 48, "win_rate": sum(win_ci) / 2, "win_rate_ci95": win_ci, "mean_length_base": 92.1,
            "mean_length_dpo": 93.6, "score_length_spearman": 0.12, "mean_difference": -0.05,
            "mean_length_difference_ci95": [-0.4, 3.3], "hit_limit_base": capped, "hit_limit_dpo": 0.0,
            "length_controlled": {"effect": sum(effect_ci) / 2, "effect_ci95": effect_ci, "dpo_effect": sum(effect_ci) / 2,
                                  "dpo_effect_ci95": effect_ci, "per_token": 0.01, "per_token_ci95": per_token_ci,
                                  "length_part": length_part}}


def test_chapter_5_verdict_is_built_from_the_categories():
    from alignkit.report.chapters import generation_reading, generation_verdict
    held = {"test": _split([0.1, 0.3], [-0.6, -0.2], [0.001, 0.02], 0.5, 0.9)}
    text = generation_verdict(held)
    assert text.startswith("test: the RM scores DPO below base (DPO win rate 0.20 [0.10, 0.30], n=48)")
    assert "(negative)" in text and "Length bias explains most" in text and "Caveat: 90% of responses" in text
    other = {"test": _split([0.45, 0.6], [-0.1, 0.3], [-0.001, 0.02], 0.5, 0.5),
             "train": _split([0.51, 0.7], [0.1, 0.3], [0.001, 0.02], 0.1, 0.0)}
    text = generation_verdict(other)
    assert "the CI spans 0.5" in text and "(indistinguishable from zero)" in text and "do not show a length effect" in text
    assert "Caveat" not in text and "train: the RM scores DPO above base" in text and "(positive)" in text
    assert "does not explain most" in text
    zh = generation_verdict(other, "zh")
    assert CJK.search(zh) and "0.53 [0.45, 0.60]" in zh
    en, zh = generation_reading(held)
    assert "the reward model prefers the base model's answers" in en and "at equal length DPO loses" in en
    assert "Most answers (90.0%)" in en and "奖励模型更偏好基座模型的回答" in zh


def _length_summary(diff_ci, matched_ci, spearman_ci):
    acc = {"accuracy": 0.6, "n": 50, "ci95": [0.46, 0.72]}
    scorer = {"accuracy": acc, "length_matched": {"accuracy": 0.55, "n": 20, "ci95": matched_ci},
              "spearman_length": 0.3, "spearman_length_ci95": spearman_ci}
    return {"n": 50, "tolerance": 0.1, "config": {"n_resamples": 1000},
            "fit": {"n_train_pairs": 40, "n_train_responses": 80, "intercept": 0.1, "slope_per_token": 0.01,
                    "slope_per_token_ci95": [0.002, 0.02]},
            "plain": scorer, "corrected": {**scorer, "spearman_length": 0.01, "spearman_length_ci95": [-0.2, 0.2]},
            "longer_wins": {"accuracy": 0.58, "n": 50, "ci95": [0.44, 0.71]},
            "difference": {"all": {"n": 50, "difference": 0.04, "ci95": diff_ci, "changed_pairs": 6},
                           "length_matched": {"n": 0, "difference": None, "ci95": None}}}


def _calibration_summary(temperatures, diff_ci):
    part = {"ece": 0.05, "ece_ci95": [0.02, 0.1], "difference": -0.05, "difference_ci95": diff_ci, "reliability": []}
    return {"n": 50, "n_bins": 10, "before": {"ece": 0.1, "ece_ci95": [0.05, 0.2], "reliability": []},
            "cross_fitted": {**part, "halves": [25, 25], "temperatures": temperatures, "at_bound": [False, False]},
            "train_fit": {**part, "n_train": 40, "temperature": 3.0, "at_bound": False}}


def test_chapter_6_tables_and_sentences_take_their_categories_from_the_numbers():
    from alignkit.report import experiments as ex
    length = _length_summary([0.01, 0.08], [0.51, 0.7], [0.1, 0.5])
    en, zh = ex.length_reading(length)
    assert "+0.010 [+0.002, +0.020] per token: longer responses score higher" in en
    assert "the correction ranks more pairs right" in en and "(score rises with length)" in en
    assert "(no link to length shown (the CI holds 0))" in en and CJK.search(zh) and "校正后排对的样本对更多" in zh
    table = ex.difference_table(length)
    assert table.loc["all held-out pairs", "reading"].startswith("the correction ranks more")
    assert table.loc["length-matched pairs (±10%)", "reading"] == r.NOT_RUN  # no length-matched pairs at all
    assert ex.length_table(_length_summary([-0.02, 0.08], [0.4, 0.7], [-0.1, 0.5])).loc[
        "plain RM", "length link"].startswith("no link to length shown")
    assert "no change beyond noise" in ex.length_reading(_length_summary([-0.02, 0.08], [0.4, 0.7], [0.1, 0.5]))[0]
    cal = _calibration_summary([2.0, 1.5], [-0.09, -0.01])
    en, zh = ex.calibration_reading(cal)
    assert "T = 2.00, 1.50; T > 1: the margins were over-confident" in en and "scaling lowers the calibration" in en
    assert ex.calibration_table(cal).loc["cross-fitted T (held-out halves)", "temperature"] == "2.00, 1.50"
    en, _ = ex.calibration_reading(_calibration_summary([None, 1.5], [-0.09, 0.0]))
    assert "T = ∞, 1.50; the fits disagree in direction" in en and "ECE change within noise" in en
    temps = ex.temperature_table(_calibration_summary([None, 0.5], [-0.09, 0.0]))
    assert temps.loc["held-out half A", "T"] == float("inf") and temps.loc["held-out half B", "reading"].startswith("T < 1")


def test_phase_seconds_line():
    from alignkit.report.chapters import phase_seconds
    assert phase_seconds({}) == "not recorded"
    line = phase_seconds({"seconds": {"untrained_eval": 61.4, "train_steps": 812.0, "evals": 130.2}})
    assert line == "untrained evaluation 61 s, training steps 812 s, evaluations during training (incl. the final one) 130 s"


def test_sweep_frame_reads_the_paired_difference(tmp_path):
    from alignkit.report.chapters import sweep_frame, sweep_rows

    def row(name, diff, ci):
        acc = {"accuracy": 0.7, "n": 100, "ci95": [0.6, 0.78]}
        return {"name": name, "overrides": {"rm.train.lr": 1e-4} if name != "base" else {}, "n_train": 500,
                "n_val": 100, "accuracy": acc, "length_matched": {"accuracy": 0.5, "n": 12, "ci95": [0.25, 0.75]},
                "length_rule": {"accuracy": 0.6, "n": 100, "ci95": [0.5, 0.69]},
                "vs_length_rule": {"n": 100, "difference": diff, "ci95": ci}, "steps": 10, "sweep_s": 12.3,
                "date": "2026-11-25"}

    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [row("base", 0.1, [0.02, 0.18]), row("lr", 0.01, [-0.05, 0.07])]))
    frame = sweep_frame(sweep_rows(path))
    assert frame.reading.tolist() == ["shown better than the length rule", "not shown better than the length rule"]
    assert frame.overrides.tolist() == ["the profile", "rm.train.lr=0.0001"]
    assert frame["length-matched (n)"][0].endswith("(12)")
    assert sweep_rows(tmp_path / "absent.jsonl") == []


# ----------------------------------------------------------------------------- the DPO variants and the online round

def _method(win_ci, chosen_ci):
    return {"win": {"n": 12, "win_rate": sum(win_ci) / 2, "win_rate_ci95": win_ci},
            "chosen_change": {"mean": sum(chosen_ci) / 2, "ci95": chosen_ci, "n": 48}}


def _variants(diff_ci, longer_ci, online=True):
    """A hand-made dpo_variants summary: DPO's answers win (CI above 0.5) and its chosen log-prob rises; KTO is not
    distinguishable from the base and its chosen log-prob falls; online DPO's paired difference to DPO has `diff_ci`."""
    methods = {"sigmoid": _method([0.55, 0.8], [0.1, 0.4]), "kto": _method([0.3, 0.6], [-2.0, -1.0]),
               "online": _method([0.6, 0.9], [-0.1, 0.3])}
    block = {"prompts": 32, "samples_per_prompt": 2, "ties": 2, "tie_share": 2 / 32, "pairs": 30, "trained_pairs": 30,
             "margin": {"mean": 0.8, "ci95": [0.6, 1.0], "n": 30},
             "length_difference": {"mean": 6.0, "ci95": [1.0, 11.0], "n": 30},
             "longer_preferred": {"accuracy": sum(longer_ci) / 2, "ci95": longer_ci, "n": 30},
             "vs_offline": {"n": 12, "difference": sum(diff_ci) / 2, "ci95": diff_ci, "changed_pairs": 5,
                            "online_win_rate": 0.75, "offline_win_rate": 0.675}}
    return {"methods": methods if online else {k: v for k, v in methods.items() if k != "online"},
            "online": block if online else None, "sizes": {"prompts": 12}}


def test_online_table_and_reading_take_their_categories_from_the_numbers():
    from alignkit.report import variants as rv
    rec = _variants([-0.1, 0.25], [0.6, 0.9])
    table = rv.online_table(rec)["value"]
    assert rv.online_outcome(rec["online"]["vs_offline"]) == "holds" and rv.online_outcome(None) is None
    assert table["reading"] == r.both("exp_online_vs_offline", "holds")
    assert table["ties dropped (equal RM scores)"] == "2 (6.2%)" and table["n held-out prompts (paired)"] == 12
    en, zh = rv.online_reading(rec)
    assert r.words("exp_online_vs_offline", "holds") in en and r.words("exp_online_longer", "above") in en
    assert r.words("exp_online_vs_offline", "holds", "zh") in zh and "Goodhart" in en
    en, _ = rv.online_reading(_variants([0.05, 0.25], [0.3, 0.45]))
    assert r.words("exp_online_vs_offline", "above") in en and r.words("exp_online_longer", "below") in en
    assert rv.online_outcome({"ci95": [-0.3, -0.1]}) == "below"
    absent = _variants([0, 0], [0, 0], online=False)
    assert rv.online_table(absent)["value"].tolist() == [r.both("exp_online_absent")]
    assert rv.online_reading(absent) == (r.words("exp_online_absent"), r.words("exp_online_absent", lang="zh"))
    unpaired = _variants([0, 0], [0.6, 0.9])
    unpaired["online"]["vs_offline"] = None
    assert rv.online_table(unpaired)["value"]["reading"] == r.both("exp_online_no_offline")
    for key in ("exp_online_vs_offline", "exp_online_longer", "ev_online", "ev_online_longer", "ev_kl_drift",
                "ev_variant_chosen"):
        for category in ("above", "below", "holds"):
            entry = r.texts()[key][category]
            assert not CJK.search(entry["en"]) and CJK.search(entry["zh"]), (key, category)


def test_qa_cites_the_variants_the_online_round_kl_and_the_chosen_log_ratio(tmp_path):
    """Chapter 7 on hand-made artifacts: Q8 one row per method (win rate vs base, read with whether its chosen
    likelihood falls), Q5 online − offline DPO and KL(DPO ‖ base), Q7 the chosen answers' held-out log-ratio."""
    from alignkit.config import load_config
    from alignkit.report import evidence
    from alignkit.report import qa_numbers
    from alignkit.report.readings import NOT_RUN
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "run")})
    out = cfg.out
    for rel, record in (("experiments/dpo_variants/summary.json", _variants([0.02, 0.3], [0.4, 0.7])),
                        ("dpo/metrics.json", {"eval": {"logratio_chosen": -0.8, "logratio_chosen_ci95": [-1.2, -0.4],
                                                       "n": 40}}),
                        ("generations/summary.json", {"test": {**_split([0.4, 0.6], [-0.1, 0.3], [-0.01, 0.02], 0.1, 0.2),
                                                               "kl_dpo_base": {"n": 48, "mean": 0.3, "ci95": [0.2, 0.4],
                                                                               "per_token": 0.01}}})):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(record))
    numbers = qa_numbers.key_numbers(cfg)
    rows = evidence.evidence(cfg, "variants", numbers).set_index("measure")
    assert rows.loc["DPO: RM win rate vs base [95% CI]", "reading"] == \
        f"{r.words('ev_judge', 'above')}; {r.words('ev_variant_chosen', 'above')}" + r.SPLIT + \
        f"{r.words('ev_judge', 'above', 'zh')}；{r.words('ev_variant_chosen', 'above', 'zh')}"
    assert rows.loc["KTO: RM win rate vs base [95% CI]", "reading"].startswith(
        f"{r.words('ev_judge', 'holds')}; {r.words('ev_variant_chosen', 'below')}")
    assert rows.loc["online DPO: RM win rate vs base [95% CI]", "n"] == 12
    policy = evidence.evidence(cfg, "dpo_policy", numbers).set_index("measure")
    online = policy.loc["online − offline DPO win rate vs base, same held-out prompts [95% CI]"]
    assert online["reading"] == r.both("ev_online", "above") and online["n"] == 12
    longer = policy.loc["on-policy pairs whose RM-preferred sample is the longer [95% CI]"]
    assert longer["reading"] == r.both("ev_online_longer", "holds") and longer["n"] == 30
    kl = policy.loc["KL(DPO ‖ base) along DPO's own answers, nats [95% CI]"]
    assert kl["reading"] == r.both("ev_kl_drift", "above") and kl["n"] == 48 and kl["value"] == "0.300 [0.200, 0.400]"
    limits = evidence.evidence(cfg, "dpo_limits", numbers).set_index("measure")
    chosen = limits.loc["held-out log π/π_ref of the chosen answers, nats [95% CI]"]
    assert chosen["reading"] == r.both("exp_chosen_change", "below") and chosen["n"] == 40
    numbers.update({"exp.online_diff_ci": [-0.2, 0.1], "gen.kl_ci": [-0.01, 0.2], "dpo.eval.logratio_chosen_ci95": [-0.1, 0.2]})
    policy = evidence.evidence(cfg, "dpo_policy", numbers).set_index("measure")["reading"]
    assert policy["online − offline DPO win rate vs base, same held-out prompts [95% CI]"] == r.both("ev_online", "holds")
    assert policy["KL(DPO ‖ base) along DPO's own answers, nats [95% CI]"] == r.both("ev_kl_drift", "holds")
    assert evidence.evidence(cfg, "dpo_limits", numbers).set_index("measure").loc[
        "held-out log π/π_ref of the chosen answers, nats [95% CI]", "reading"] == r.both("exp_chosen_change", "holds")
    # a run without the online round, and one without the variants step: those rows read "not run yet"
    (out / "experiments/dpo_variants/summary.json").write_text(json.dumps(_variants([0, 0], [0, 0], online=False)))
    policy = evidence.evidence(cfg, "dpo_policy", qa_numbers.key_numbers(cfg)).set_index("measure")
    assert policy.loc["online − offline DPO win rate vs base, same held-out prompts [95% CI]", "value"] == NOT_RUN
    (out / "experiments/dpo_variants/summary.json").unlink()
    rows = evidence.evidence(cfg, "variants", qa_numbers.key_numbers(cfg))
    assert rows.value.iloc[0] == NOT_RUN and rows.reading.iloc[0] == NOT_RUN and len(rows) == 2
    # a profile that does not run them: the rows say which profile decides them, with no verdict
    (out / "experiments/dpo_variants/summary.json").write_text(json.dumps({"not_run": "cpu", "methods": {}}))
    gpu_decides = r.both("exp_variants_not_run", profile="cpu")
    rows = evidence.evidence(cfg, "variants", qa_numbers.key_numbers(cfg))
    assert rows.value.iloc[0] == gpu_decides and rows.verdict.iloc[0] == "" and len(rows) == 2
    policy = evidence.evidence(cfg, "dpo_policy", qa_numbers.key_numbers(cfg)).set_index("measure")
    assert policy.loc["online − offline DPO", "value"] == gpu_decides
    assert not any(m.startswith("online − offline DPO win rate") for m in policy.index)
