"""Chapter 7's evidence: the numbers the analysis Q&A cites (alignkit.report.qa_numbers.key_numbers) as the
small table printed above each answer, `evidence(cfg, question)`: measure, value, where it comes from, a reading
decided from the value (a claim that does not hold on this run is not printed as if it did) and its verdict
(alignkit.verdicts); the verdicts counted per question; the closing sentences read from intervals.
"""
from __future__ import annotations

import pandas as pd
import torch

from alignkit import losses, verdicts
from alignkit.errors import AlignkitError
from alignkit.report import readings
from alignkit.report.qa_numbers import key_numbers
from alignkit.report.readings import NOT_RUN, both, ci_vs, judge, said, verdict_cell, words
from alignkit.report.variants import LABELS, variant_evidence_reading
from alignkit.report.tables import interval, number
from alignkit.stats import difference_ci, wilson_interval

QUESTIONS = ("applications", "robustness", "length_bias", "pluralistic", "dpo_policy", "dpo_vs_rlhf",
             "dpo_limits", "variants")


def _fmt(value) -> str:
    """Through the report's one formatter: 0.6035 -> '0.604'; (0.60, [0.53, 0.67]) -> '0.604 [0.528, 0.674]';
    (a, b) -> 'a → b'; None -> not run."""
    if isinstance(value, tuple):
        if all(v is None for v in value):
            return NOT_RUN
        if len(value) == 2 and isinstance(value[1], list):
            return NOT_RUN if value[0] is None else interval(value[0], value[1])
        return " → ".join(_fmt(v) for v in value)
    if value is None:
        return NOT_RUN
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value)
    return str(value)


STUDY = (
    ("rm_learns", "applications", "RM accuracy, held-out test [95% CI]"),
    ("rm_vs_length", "length_bias", "RM accuracy, test [95% CI]"),
    ("beyond_length", "length_bias", "RM accuracy on length-matched pairs (±10%) [95% CI]"),
    ("length_correction", "length_bias", "length-corrected − plain RM accuracy, same pairs [95% CI]"),
    ("calibration", "robustness", "ECE change, after − before [95% CI]"),
    ("overfitting", "robustness", "train − test accuracy [95% CI]"),
    ("ood", "robustness", "accuracy on another dataset (PKU-SafeRLHF, OOD) [95% CI]"),
    ("safety_pairs", "robustness", "safety pairs (PKU-SafeRLHF, the safer answer preferred): RM accuracy [95% CI]"),
    ("gold_bon", "robustness", "gold best-of-n (GPT-4-turbo), largest n: RM pick − random answer, win rate [95% CI]"),
    ("pluralistic", "pluralistic", "PKU-SafeRLHF pairs where 'more helpful' ≠ 'safer' [95% CI]"),
    ("dpo_moves", "dpo_limits", "held-out log π/π_ref of the chosen answers, nats [95% CI]"),
    ("dpo_ranking", "dpo_vs_rlhf", "implicit-reward accuracy on held-out pairs [95% CI]"),
    ("dpo_overfits", "dpo_limits", "implicit-reward accuracy: train → held-out"),
    ("dpo_vs_base", "applications", "DPO-vs-base win rate judged by the RM [95% CI]"),
    ("dpo_length", "length_bias", "mean response tokens: base → DPO"),
    ("dpo_beyond_length", "length_bias", "length-controlled DPO effect on RM score [95% CI]"),
    ("online", "dpo_policy", ("online − offline DPO win rate vs base, same held-out prompts [95% CI]",
                              "online − offline DPO")),
    ("variants", "variants", None),
)
"""The study's questions, one headline reading each: (key, the chapter-7 question whose evidence holds the
reading, its measure there: a name, or names tried in turn, the second the row a profile that leaves the
step to another shows; None = that question's first row). The question's words are text/readings.yaml
`study_question`; `study_questions` tabulates them and `study_count` counts their verdicts. A question whose
step this profile does not run (the DPO variants and online DPO on the cpu profile) shows the row that says
which profile decides it, and has no verdict."""

N_OF = {"RM accuracy, held-out test [95% CI]": "rm.test_n", "untrained RM accuracy, same pairs [95% CI]": "rm.test_n",
        "DPO-vs-base win rate judged by the RM [95% CI]": "gen.n", "train − test accuracy [95% CI]": "rm.test_n",
        "accuracy on another dataset (PKU-SafeRLHF, OOD) [95% CI]": "ood.n",
        "OOD − in-distribution accuracy [95% CI]": "ood.n",
        "'longer response wins' rule accuracy, test": "rm.test_n", "RM accuracy, test [95% CI]": "rm.test_n",
        "RM accuracy on length-matched pairs (±10%) [95% CI]": "rm.length_matched_n",
        "trained − untrained accuracy on the same length-matched pairs [95% CI]": "rm.length_matched_n",
        "Spearman(score, response length), trained RM [95% CI]": "rm.test_n",
        "safety pairs (PKU-SafeRLHF, the safer answer preferred): RM accuracy [95% CI]": "exp.safety_pairs_n",
        "safety pairs: RM − 'longer answer wins' rule, same pairs [95% CI]": "exp.safety_pairs_n",
        "gold best-of-n (GPT-4-turbo), largest n: RM pick − random answer, win rate [95% CI]": "exp.gold_prompts",
        "gold best-of-n, largest n: RM pick − longest answer, win rate [95% CI]": "exp.gold_prompts",
        "mean response tokens: base → DPO": "gen.n", "length-controlled DPO effect on RM score [95% CI]": "gen.n",
        "PKU-SafeRLHF pairs where 'more helpful' ≠ 'safer' [95% CI]": "data.helpful_vs_safer_n",
        "RM accuracy on helpfulness labels of another dataset": "ood.n",
        "implicit-reward accuracy on held-out pairs [95% CI]": "dpo.eval.n",
        "implicit-reward accuracy: train → held-out": "dpo.eval.n",
        "win rate vs base judged by the RM [95% CI]": "gen.n",
        "length-corrected RM accuracy, test [95% CI]": "exp.length_n",
        "length-corrected − plain RM accuracy, same pairs [95% CI]": "exp.length_n",
        "length-corrected RM accuracy on length-matched pairs (±10%) [95% CI]": "exp.length_matched_n",
        "ECE of σ(r_w − r_l), held-out [95% CI]": "exp.calibration_n",
        "ECE after cross-fitted temperature scaling [95% CI]": "exp.calibration_n",
        "ECE change, after − before [95% CI]": "exp.calibration_n",
        "best-of-n, largest n: reward-model (proxy) gain over a random sample [95% CI]": "exp.bon_prompts",
        "best-of-n, largest n: independent judge (helpfulness head) gain [95% CI]": "exp.bon_prompts",
        "best-of-n, largest n: cost head (harm) gain [95% CI]": "exp.bon_prompts",
        "online − offline DPO win rate vs base, same held-out prompts [95% CI]": "exp.online_n",
        "on-policy pairs whose RM-preferred sample is the longer [95% CI]": "exp.online_pairs",
        "KL(DPO ‖ base) along DPO's own answers, nats [95% CI]": "gen.kl_n",
        "held-out log π/π_ref of the chosen answers, nats [95% CI]": "dpo.eval.n",
        **{f"{label}: RM win rate vs base [95% CI]": "exp.variants_prompts" for label in LABELS.values()}}
"""The sample size behind each measure (for a comparison of two samples, the smaller / held-out one)."""


Row = tuple  # (measure, value, source, reading, verdict: alignkit.verdicts.Verdict | None)


def _read(measure, value, source, key, ci, null, kind, size, **values) -> Row:
    """A row read from an interval: the words of `key` for where `ci` lies against `null`, and the verdict
    against the margin of `kind` (alignkit.verdicts), `size` the sample behind the interval."""
    estimate = value[0] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], list) else None
    return (measure, value, source, both(key, ci_vs(ci, null), **values),
            judge(ci, null, kind, n=size, estimate=estimate))


def _rows(n: dict, question: str) -> list[Row]:
    """(measure, value, source, reading, verdict) rows for one question; each reading's category from
    alignkit.report.readings, its words from text/readings.yaml, its verdict from alignkit.verdicts."""
    if question == "applications":
        return [
            _read("RM accuracy, held-out test [95% CI]", (n["rm.test_acc"], n["rm.test_ci"]), "ch. 1 · rm/metrics.json",
                  "ev_chance", n["rm.test_ci"], 0.5, "proportion", n["rm.test_n"]),
            _read("untrained RM accuracy, same pairs [95% CI]", (n["rm.untrained_acc"], n["rm.untrained_ci"]), "ch. 1",
                  "ev_chance", n["rm.untrained_ci"], 0.5, "proportion", n["rm.test_n"]),
            _read("DPO-vs-base win rate judged by the RM [95% CI]", (n["gen.win_rate"], n["gen.win_rate_ci95"]),
                  "ch. 5 · generations/summary.json", "ev_preference", n["gen.win_rate_ci95"], 0.5, "proportion",
                  n["gen.n"]),
        ]
    if question == "robustness":
        gap, gap_ci = _accuracy_gap(n["rm.train_acc"], n["rm.train_n"], n["rm.test_acc"], n["rm.test_n"])
        ood_gap, ood_ci = _accuracy_gap(n["ood.acc"], n["ood.n"], n["rm.test_acc"], n["rm.test_n"])
        return [
            _read("train − test accuracy [95% CI]", (gap, gap_ci), "ch. 2", "ev_overfitting", gap_ci, 0.0,
                  "proportion", n["rm.test_n"]),
            _read("accuracy on another dataset (PKU-SafeRLHF, OOD) [95% CI]", (n["ood.acc"], n["ood.ci"]), "ch. 2",
                  "ev_chance", n["ood.ci"], 0.5, "proportion", n["ood.n"]),
            _read("OOD − in-distribution accuracy [95% CI]", (ood_gap, ood_ci), "ch. 2", "ev_ood_gap", ood_ci, 0.0,
                  "proportion", n["ood.n"]),
            _read("Spearman(score, response length), trained RM [95% CI]",
                  (n["scores.spearman_trained"], n["scores.spearman_trained_ci"]), "ch. 3", "length_trend",
                  n["scores.spearman_trained_ci"], 0.0, "correlation", n["rm.test_n"]),
            _read("safety pairs (PKU-SafeRLHF, the safer answer preferred): RM accuracy [95% CI]",
                  (n["exp.safety_pairs_rm"], n["exp.safety_pairs_rm_ci"]), "ch. 6 · experiments/safety_pairs",
                  "safety_pairs_rm", n["exp.safety_pairs_rm_ci"], 0.5, "proportion", n["exp.safety_pairs_n"]),
            _read("safety pairs: RM − 'longer answer wins' rule, same pairs [95% CI]",
                  (n["exp.safety_pairs_diff"], n["exp.safety_pairs_diff_ci"]), "ch. 6", "safety_pairs_vs_rule",
                  n["exp.safety_pairs_diff_ci"], 0.0, "proportion", n["exp.safety_pairs_n"]),
            _read("gold best-of-n (GPT-4-turbo), largest n: RM pick − random answer, win rate [95% CI]",
                  (n["exp.gold_rm_random"], n["exp.gold_rm_random_ci"]), "ch. 6 · experiments/gold_bon",
                  "gold_vs_random", n["exp.gold_rm_random_ci"], 0.0, "proportion", n["exp.gold_prompts"]),
            _read("gold best-of-n, largest n: RM pick − longest answer, win rate [95% CI]",
                  (n["exp.gold_rm_longest"], n["exp.gold_rm_longest_ci"]), "ch. 6", "gold_vs_longest",
                  n["exp.gold_rm_longest_ci"], 0.0, "proportion", n["exp.gold_prompts"]),
            ("best-of-n: prompts × samples, largest n", n["exp.bon_size"], "ch. 6 · experiments/bon", "", None),
            _read("best-of-n, largest n: reward-model (proxy) gain over a random sample [95% CI]",
                  (n["exp.bon_proxy_gain"], n["exp.bon_proxy_ci"]), "ch. 6", "exp_bon_proxy", n["exp.bon_proxy_ci"],
                  0.0, "reward", n["exp.bon_prompts"]),
            ("best-of-n, largest n: independent judge (helpfulness head) gain [95% CI]",
             (n["exp.bon_judge_gain"], n["exp.bon_judge_ci"]), "ch. 6", both("ev_goodhart", n["exp.bon_goodhart"]),
             judge(n["exp.bon_judge_ci"], 0.0, "reward", n=n["exp.bon_prompts"], estimate=n["exp.bon_judge_gain"])),
            _read("best-of-n, largest n: cost head (harm) gain [95% CI]", (n["exp.bon_cost_gain"], n["exp.bon_cost_ci"]),
                  "ch. 6", "exp_bon_cost", n["exp.bon_cost_ci"], 0.0, "reward", n["exp.bon_prompts"]),
            ("ECE of σ(r_w − r_l), held-out [95% CI]", (n["exp.ece_before"], n["exp.ece_before_ci"]),
             "ch. 6 · experiments/calibration", "", None),
            ("ECE after cross-fitted temperature scaling [95% CI]", (n["exp.ece_after"], n["exp.ece_after_ci"]),
             "ch. 6", "", None),
            _read("ECE change, after − before [95% CI]", (n["exp.ece_diff"], n["exp.ece_diff_ci"]), "ch. 6",
                  "ev_calibration", n["exp.ece_diff_ci"], 0.0, "proportion", n["exp.calibration_n"]),
        ]
    if question == "length_bias":
        gain, gain_ci = _accuracy_gap(n["rm.length_matched_acc"], n["rm.length_matched_n"],
                                      n["rm.untrained_length_matched_acc"], n["rm.length_matched_n"])
        return [
            ("'longer response wins' rule accuracy, test", n["rm.longer_wins_acc"], "ch. 1", both("ev_baseline"), None),
            _read("RM accuracy, test [95% CI]", (n["rm.test_acc"], n["rm.test_ci"]), "ch. 1", "ev_length_rule",
                  n["rm.test_ci"], n["rm.longer_wins_acc"], "proportion", n["rm.test_n"]),
            _read("RM accuracy on length-matched pairs (±10%) [95% CI]",
                  (n["rm.length_matched_acc"], n["rm.length_matched_ci"]), "ch. 1", "ev_length_matched",
                  n["rm.length_matched_ci"], 0.5, "proportion", n["rm.length_matched_n"]),
            _read("trained − untrained accuracy on the same length-matched pairs [95% CI]", (gain, gain_ci), "ch. 1",
                  "ev_training_gain", gain_ci, 0.0, "proportion", n["rm.length_matched_n"]),
            ("Spearman(score, length): untrained → trained",
             (n["scores.spearman_untrained"], n["scores.spearman_trained"]), "ch. 3", "", None),
            _read("mean response tokens: base → DPO", (n["gen.mean_length_base"], n["gen.mean_length_dpo"]), "ch. 5",
                  "ev_length_change", n["gen.mean_length_difference_ci95"], 0.0, "tokens", n["gen.n"]),
            _read("length-controlled DPO effect on RM score [95% CI]", (n["gen.lc_effect"], n["gen.lc_effect_ci"]),
                  "ch. 5", "ev_length_controlled", n["gen.lc_effect_ci"], 0.0, "reward", n["gen.n"]),
            _read("length-corrected RM accuracy, test [95% CI]", (n["exp.corrected_acc"], n["exp.corrected_ci"]),
                  "ch. 6 · experiments/length", "ev_chance", n["exp.corrected_ci"], 0.5, "proportion", n["exp.length_n"]),
            _read("length-corrected − plain RM accuracy, same pairs [95% CI]", (n["exp.debias_diff"], n["exp.debias_diff_ci"]),
                  "ch. 6", "ev_debias_change", n["exp.debias_diff_ci"], 0.0, "proportion", n["exp.length_n"]),
            _read("length-corrected RM accuracy on length-matched pairs (±10%) [95% CI]",
                  (n["exp.corrected_matched_acc"], n["exp.corrected_matched_ci"]), "ch. 6", "ev_length_matched",
                  n["exp.corrected_matched_ci"], 0.5, "proportion", n["exp.length_matched_n"]),
        ]
    if question == "pluralistic":
        return [
            _read("PKU-SafeRLHF pairs where 'more helpful' ≠ 'safer' [95% CI]",
                  (n["data.helpful_vs_safer_disagree"], n["data.helpful_vs_safer_ci"]), "data", "label_conflict",
                  n["data.helpful_vs_safer_ci"], 0.1, "proportion", n["data.helpful_vs_safer_n"]),
            ("RM accuracy on helpfulness labels of another dataset", n["ood.acc"], "ch. 2", both("ev_see_robustness"),
             None),
        ]
    if question == "dpo_policy":
        ratio = None if None in (n["data.chosen_tokens_test"], n["gen.mean_length_base"]) else \
            n["gen.mean_length_base"] / n["data.chosen_tokens_test"]
        return [
            ("DPO optimiser steps on the fixed preference pairs", n["dpo.steps"], "ch. 4", both("ev_offline"), None),
            ("mean tokens: dataset chosen responses (test split)", n["data.chosen_tokens_test"], "ch. 3", "", None),
            ("mean tokens: the base policy's own samples", n["gen.mean_length_base"], "ch. 5",
             NOT_RUN if ratio is None else both("ev_off_policy", ratio=f"{ratio:.2f}"), None),
            *([("online − offline DPO", both("exp_variants_not_run", profile=n["exp.variants_not_run"]),
                "ch. 6 · experiments/dpo_variants", "", None)] if n.get("exp.variants_not_run") else [
              _read("online − offline DPO win rate vs base, same held-out prompts [95% CI]",
                    (n["exp.online_diff"], n["exp.online_diff_ci"]), "ch. 6 · experiments/dpo_variants", "ev_online",
                    n["exp.online_diff_ci"], 0.0, "proportion", n["exp.online_n"]),
              _read("on-policy pairs whose RM-preferred sample is the longer [95% CI]",
                    (n["exp.online_longer"], n["exp.online_longer_ci"]), "ch. 6", "ev_online_longer",
                    n["exp.online_longer_ci"], 0.5, "proportion", n["exp.online_pairs"])]),
            _read("KL(DPO ‖ base) along DPO's own answers, nats [95% CI]", (n["gen.kl_mean"], n["gen.kl_ci"]),
                  "ch. 5 · generations/summary.json", "ev_kl_drift", n["gen.kl_ci"], 0.0, "nats", n["gen.kl_n"]),
        ]
    if question == "dpo_vs_rlhf":
        held_out_ci = dpo_accuracy_ci(n, "eval")
        return [
            ("reference log-probs", n["dpo.reference"], "config",
             both("reference_pass", readings.reference_pass(n["dpo.reference"])), None),
            ("DPO training wall time (s)", n["dpo.wall_time_s"], "ch. 4", "", None),
            ("reward-model training wall time (s), a PPO pipeline's first stage", n["rm.wall_time_s"], "ch. 1", "", None),
            _read("implicit-reward accuracy on held-out pairs [95% CI]", (n["dpo.eval.reward_accuracy"], held_out_ci),
                  "ch. 4", "ev_dpo_ranking", held_out_ci, 0.5, "proportion", n["dpo.eval.n"]),
        ]
    if question == "dpo_limits":
        gap, gap_ci = _accuracy_gap(n["dpo.train.reward_accuracy"], n["dpo.train.n"],
                                    n["dpo.eval.reward_accuracy"], n["dpo.eval.n"])
        return [
            _read("implicit-reward accuracy: train → held-out", (n["dpo.train.reward_accuracy"], n["dpo.eval.reward_accuracy"]),
                  "ch. 4", "ev_dpo_gap", gap_ci, 0.0, "proportion", n["dpo.eval.n"],
                  gap=interval(gap, gap_ci, signed=True)),
            ("held-out implicit reward of chosen / rejected",
             (n["dpo.eval.rewards_chosen"], n["dpo.eval.rewards_rejected"]), "ch. 4", "", None),
            _read("win rate vs base judged by the RM [95% CI]", (n["gen.win_rate"], n["gen.win_rate_ci95"]), "ch. 5",
                  "ev_judge", n["gen.win_rate_ci95"], 0.5, "proportion", n["gen.n"]),
            ("chapter 5's verdict", n["gen.verdict"], "ch. 5", "", None),
            _read("held-out log π/π_ref of the chosen answers, nats [95% CI]",
                  (n["dpo.eval.logratio_chosen"], n["dpo.eval.logratio_chosen_ci95"]), "ch. 4 · dpo/metrics.json",
                  "exp_chosen_change", n["dpo.eval.logratio_chosen_ci95"], 0.0, "nats", n["dpo.eval.n"]),
        ]
    if question == "variants":
        return [*_variant_rows(n), (both("ev_variants"), "", "alignkit.losses", "", None)]
    raise KeyError(f"unknown question {question!r}; one of {', '.join(QUESTIONS)}")


def _variant_rows(n: dict) -> list[Row]:
    """Chapter 6's head-to-head: per method its RM win rate against the base model with its CI, read with
    whether its chosen likelihood falls; one 'not run yet' row when the step has not run, one row saying which
    profile decides them when this profile does not run them. The verdict is the win rate's."""
    source = "ch. 6 · experiments/dpo_variants"
    if n.get("exp.variants_not_run"):
        return [(f"{LABELS['sigmoid']}, its variants and online DPO", both("exp_variants_not_run",
                                                                           profile=n["exp.variants_not_run"]),
                 source, "", None)]
    if not n.get("exp.variants_methods"):
        return [(f"{LABELS['sigmoid']}: RM win rate vs base [95% CI]", None, source, "", None)]
    return [(f"{LABELS[m]}: RM win rate vs base [95% CI]", (n[f"exp.variant.{m}.win"], n[f"exp.variant.{m}.win_ci"]),
             source, variant_evidence_reading(n[f"exp.variant.{m}.win_ci"], n[f"exp.variant.{m}.chosen_ci"]),
             judge(n[f"exp.variant.{m}.win_ci"], 0.5, "proportion", n=n["exp.variants_prompts"],
                   estimate=n[f"exp.variant.{m}.win"]))
            for m in n["exp.variants_methods"]]


def _accuracy_gap(acc_a, n_a, acc_b, n_b) -> tuple[float | None, list[float] | None]:
    """Accuracy a − b of two independent samples with its 95% CI; (None, None) when either is missing."""
    if None in (acc_a, n_a, acc_b, n_b):
        return None, None
    return acc_a - acc_b, list(difference_ci(acc_a * n_a, n_a, acc_b * n_b, n_b))


def dpo_accuracy_ci(n: dict, split: str) -> list[float] | None:
    """95% Wilson interval of DPO's implicit-reward accuracy on a split ('train' sample or 'eval')."""
    acc, size = n[f"dpo.{split}.reward_accuracy"], n[f"dpo.{split}.n"]
    return None if None in (acc, size) or not size else list(wilson_interval(acc * size, size))


def evidence(cfg, question: str, numbers: dict | None = None) -> pd.DataFrame:
    """The table printed above one Q&A answer: measure, value, n, source, reading and verdict (the study's
    three verdicts, alignkit.verdicts; empty for a row that is not read from an interval)."""
    n = numbers if numbers is not None else key_numbers(cfg)
    rows = [(m, _fmt(v), s, r, d) for m, v, s, r, d in _rows(n, question)]
    return pd.DataFrame([{"measure": m, "value": v, "n": n.get(N_OF.get(m, ""), None) if v != NOT_RUN else None,
                          "source": s, "reading": NOT_RUN if v == NOT_RUN else r,
                          "verdict": verdict_cell(d) if d is not None and v != NOT_RUN else ""}
                         for m, v, s, r, d in rows]).astype({"n": "Int64"})


def robustness_sentence(numbers: dict) -> tuple[str, str]:
    """Chapter 7's closing reading of over-fitting and distribution shift at this scale: the train − test
    accuracy gap and the out-of-distribution − in-distribution gap, each read from its interval with its
    verdict, in English and Chinese."""
    n = numbers
    gap, gap_ci = _accuracy_gap(n["rm.train_acc"], n["rm.train_n"], n["rm.test_acc"], n["rm.test_n"])
    ood, ood_ci = _accuracy_gap(n["ood.acc"], n["ood.n"], n["rm.test_acc"], n["rm.test_n"])
    return tuple(words("qa_lessons", lang=lang, gap=interval(gap, gap_ci, signed=True),
                       gap_words=said("ev_overfitting", gap_ci, 0.0, "proportion", lang, size=n["rm.test_n"], estimate=gap),
                       ood=interval(ood, ood_ci, signed=True),
                       ood_words=said("ev_ood_gap", ood_ci, 0.0, "proportion", lang, size=n["ood.n"], estimate=ood))
                 for lang in ("en", "zh"))


def verdicts_by_question(numbers: dict) -> pd.DataFrame:
    """How many of each question's rows read from an interval are shown, shown absent and undecided (rows of
    a step that has not run are left out), with a total row. A number cited by two questions counts for each."""
    rows = {}
    for question in QUESTIONS:
        rows[question] = verdicts.count(d for *_, d in _rows(numbers, question))
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.loc["total"] = frame.sum()
    frame.index.name = "question"
    return frame.rename(columns={"shown_absent": "shown absent"})


def _headline(rows: list[Row], question: str, measure) -> Row:
    """The row of `measure` (a name, or names tried in turn) among one question's rows; None = the first row."""
    found = [row for name in ((measure,) if isinstance(measure, str) else measure or ()) for row in rows
             if row[0] == name]
    if found or measure is None:
        return (found or rows)[0]
    raise KeyError(f"the study's headline {measure!r} is no row of question {question!r}; rows: "
                   + "; ".join(str(row[0]) for row in rows))


def study_rows(numbers: dict) -> list[tuple[str, Row]]:
    """(key, row) for each of the study's questions (STUDY), the row its headline reading."""
    by_question = {question: _rows(numbers, question) for question in {q for _, q, _ in STUDY}}
    return [(key, _headline(by_question[question], question, measure)) for key, question, measure in STUDY]


def study_questions(numbers: dict) -> pd.DataFrame:
    """One row per study question: the question, its headline measure and value [95% CI], n, the null and
    margin it is read against, its reading (for a change 'a → b', the change's interval) and its verdict (empty
    where the step has not run or this profile leaves it to another)."""
    out = []
    for key, (measure, value, _source, reading, verdict) in study_rows(numbers):
        text = value if isinstance(value, str) else _fmt(value)
        read = text != NOT_RUN and verdict is not None
        out.append({"question": both("study_question", key), "measure": measure, "value": text,
                    "n": numbers.get(N_OF.get(measure, ""), None) if read else None,
                    "null ± margin": f"{number(verdict.null)} ± {verdict.margin:g}" if read else "",
                    "reading": reading if read else "", "verdict": verdict_cell(verdict) if read else ""})
    return pd.DataFrame(out).astype({"n": "Int64"})


def study_count(numbers: dict) -> dict:
    """{verdict: how many} over the study's questions that have a verdict (alignkit.verdicts.count)."""
    return verdicts.count(row[4] for _, row in study_rows(numbers))


def verdicts_sentence(numbers: dict, lang: str = "en") -> str:
    """The count of verdicts in one sentence: over the study's questions (one headline reading each, STUDY) and
    over every row chapter 7 reads from an interval, with the margins they are read against."""
    total = verdicts_by_question(numbers).loc["total"]
    margins = ", ".join(f"{kind} ± {value:g}" for kind, value in verdicts.MARGINS.items())
    study = study_rows(numbers)
    headline = study_count(numbers)
    without = [words("study_question", key, lang) for key, row in study if isinstance(row[1], str) and row[1]]
    elsewhere = words("verdicts_elsewhere", lang=lang, count=len(without), which=" ".join(without)) if without else ""
    return words("verdicts_summary", lang=lang, questions=sum(headline.values()), q_shown=headline["shown"],
                 q_absent=headline["shown_absent"], q_undecided=headline["undecided"], elsewhere=elsewhere,
                 total=int(total.sum()), shown=int(total["shown"]), absent=int(total["shown absent"]),
                 undecided=int(total["undecided"]), margins=margins)


def loss_shapes(margins=(-2.0, 0.0, 2.0, 5.0, 10.0, 22.0), *, beta: float = 0.1, tau: float = 0.1,
                smoothing: float = 0.1, simpo_beta: float = 2.0, simpo_gamma: float = 1.0) -> pd.DataFrame:
    """Loss and its slope d loss / d margin for DPO, conservative DPO, IPO and SimPO over a grid of margins,
    from alignkit.losses. For DPO/cDPO/IPO the margin is the policy-vs-reference log-ratio difference
    h = (log pi/pi_ref)(y_w) - (log pi/pi_ref)(y_l); for SimPO it is the difference of per-token average
    log-probs (no reference). A slope of 0 is where the loss stops pushing."""
    zero = torch.zeros(())
    curves = {  # name -> (the alignkit.losses function, how the curve calls it at margin h)
        f"DPO (β={beta})": ("dpo_loss", lambda f, h: f(h, zero, zero, zero, beta=beta)),
        f"cDPO (β={beta}, ε={smoothing})": ("dpo_loss", lambda f, h: f(h, zero, zero, zero, beta=beta,
                                                                        label_smoothing=smoothing)),
        f"IPO (τ={tau})": ("ipo_loss", lambda f, h: f(h, zero, zero, zero, tau=tau)),
        f"SimPO (β={simpo_beta}, γ={simpo_gamma})": ("simpo_loss",
                                                     lambda f, h: f(h, zero, beta=simpo_beta, gamma=simpo_gamma)),
    }
    missing = sorted({fn for fn, _ in curves.values() if not hasattr(losses, fn)})
    if missing:
        raise AlignkitError(f"loss_shapes draws {', '.join(missing)} from alignkit.losses, which has no such "
                            f"function; update the curves in alignkit/report/evidence.py to the loss's name")
    rows = []
    margins = [float(m) for m in margins]
    for m in margins:
        for name, (fn, call) in curves.items():
            h = torch.tensor(m, requires_grad=True)
            value = call(getattr(losses, fn), h)
            value.backward()
            rows.append({"loss": name, "margin": m, "value": value.item(), "slope": h.grad.item()})
    return pd.DataFrame(rows, columns=["loss", "margin", "value", "slope"])
