"""Chapter 7's evidence: the numbers the analysis Q&A cites, read from the artifacts chapters 1-6 wrote.

`key_numbers(cfg)` flattens them into one dict (None where a step has not run); `evidence(cfg, question)`
returns the small table printed above each answer: measure, value, where it comes from, and a reading
decided from the value (a claim that does not hold on this run is not printed as if it did).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from alignkit import losses
from alignkit.data.sources import data_file
from alignkit.errors import AlignkitError
from alignkit.report import readings
from alignkit.report.chapters import generation_verdict
from alignkit.report.experiments import bon_goodhart
from alignkit.report.readings import NOT_RUN, both, ci_vs
from alignkit.report.variants import LABELS, variant_evidence_reading, variants_numbers
from alignkit.report.tables import interval, number
from alignkit.stats import difference_ci, wilson_interval
from alignkit.study.evals import label_disagreement

QUESTIONS = ("applications", "robustness", "length_bias", "pluralistic", "dpo_policy", "dpo_vs_rlhf",
             "dpo_limits", "variants")


ARTIFACTS = {"reward model (ch. 1)": "rm/metrics.json", "eval-only runs (ch. 2)": "evals/trained-ood",
             "scores (ch. 3)": "scores/summary.json", "DPO (ch. 4)": "dpo/metrics.json",
             "generations (ch. 5)": "generations/summary.json",
             "best-of-n (ch. 6)": "experiments/bon/summary.json",
             "DPO variants and the online round (ch. 6)": "experiments/dpo_variants/summary.json",
             "length debiasing (ch. 6)": "experiments/length/summary.json",
             "calibration (ch. 6)": "experiments/calibration/summary.json"}


def sources(cfg) -> pd.DataFrame:
    """Which earlier chapters' artifacts exist for this config (a missing one reads "not run yet")."""
    return pd.DataFrame([{"step": step, "artifact": str(Path(cfg.out) / rel),
                          "status": both("artifact", "found" if (Path(cfg.out) / rel).exists() else "missing")}
                         for step, rel in ARTIFACTS.items()])


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _get(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def key_numbers(cfg) -> dict:
    """Every number the Q&A uses, by source: rm (chapter 1), evals (2), scores (3), dpo (4),
    generations (5), exp (the experiments, 6), data. A missing artifact gives None values, never an error."""
    out = Path(cfg.out)
    rm, scores = _load(out / "rm" / "metrics.json"), _load(out / "scores" / "summary.json")
    dpo, gen = _load(out / "dpo" / "metrics.json"), _load(out / "generations" / "summary.json")
    ood_files = sorted((out / "evals" / "trained-ood").glob("rm_eval/*/metrics.json"))
    ood = _load(ood_files[0]) if ood_files else None
    pku = data_file("pku_saferlhf_500.jsonl")
    chosen_tokens = None
    if (out / "scores" / "trained-test.parquet").exists():
        table = pd.read_parquet(out / "scores" / "trained-test.parquet")
        chosen_tokens = float(table[table.side == "better"].response_tokens.mean())
    n = {
        "rm.test_acc": _get(rm, "eval", "accuracy"), "rm.test_ci": _get(rm, "eval", "ci95"),
        "rm.test_n": _get(rm, "eval", "n"), "rm.train_acc": _get(rm, "train", "accuracy"),
        "rm.train_n": _get(rm, "train", "n"), "rm.untrained_acc": _get(rm, "eval_untrained", "accuracy"),
        "rm.untrained_ci": _get(rm, "eval_untrained", "ci95"),
        "rm.longer_wins_acc": _get(rm, "eval", "longer_wins_accuracy"),
        "rm.length_matched_acc": _get(rm, "eval", "length_matched_accuracy"),
        "rm.length_matched_n": _get(rm, "eval", "length", "length_matched", "n"),
        "rm.length_matched_ci": _get(rm, "eval", "length", "length_matched", "ci95"),
        "rm.untrained_length_matched_acc": _get(rm, "eval_untrained", "length_matched_accuracy"),
        "rm.wall_time_s": _get(rm, "wall_time_s"), "rm.steps": _get(rm, "steps"),
        "ood.acc": _get(ood, "eval", "accuracy"), "ood.ci": _get(ood, "eval", "ci95"), "ood.n": _get(ood, "eval", "n"),
        "scores.test_auc": _get(scores, "trained-test", "auc"),
        "scores.spearman_trained": _get(scores, "trained-test", "score_vs_length", "spearman"),
        "scores.spearman_untrained": _get(scores, "untrained-test", "score_vs_length", "spearman"),
        "data.chosen_tokens_test": chosen_tokens,
        "dpo.steps": _get(dpo, "steps"), "dpo.wall_time_s": _get(dpo, "wall_time_s"),
        "dpo.reference": getattr(getattr(cfg, "dpo", None), "reference", None),
    }
    for split in ("train", "eval"):
        for key in ("loss", "reward_accuracy", "rewards_chosen", "rewards_rejected", "reward_margin", "n",
                    "logratio_chosen", "logratio_chosen_ci95"):
            n[f"dpo.{split}.{key}"] = _get(dpo, split, key)
    for key in ("n", "win_rate", "win_rate_ci95", "mean_score_base", "mean_score_dpo", "mean_length_base",
                "mean_length_dpo", "mean_length_difference_ci95", "score_length_spearman"):
        n[f"gen.{key}"] = _get(gen, "test", key)
    n["gen.lc_effect"] = _get(gen, "test", "length_controlled", "dpo_effect")
    n["gen.lc_effect_ci"] = _get(gen, "test", "length_controlled", "dpo_effect_ci95")
    n.update({f"gen.kl_{k}": _get(gen, "test", "kl_dpo_base", key) for k, key in
              (("mean", "mean"), ("ci", "ci95"), ("n", "n"))})
    n["gen.verdict"] = (generation_verdict(gen, "en") + " / " + generation_verdict(gen, "zh")) if _get(gen, "test") else None
    n.update(_experiment_numbers(out))
    disagreement = label_disagreement(pku) if pku else {}
    n["data.helpful_vs_safer_disagree"] = disagreement.get("disagree")
    n["data.helpful_vs_safer_ci"] = disagreement.get("ci95")
    n["data.helpful_vs_safer_n"] = disagreement.get("n")
    return n


def _bon_numbers(bon: dict | None) -> dict:
    """Best-of-n at its largest n: the proxy's, the judge's and the cost head's gain over a random sample with
    CIs, the size of the run, and the Goodhart reading's category."""
    rows = {k: (_get(bon, "curves", k) or [None])[-1] for k in ("judge", "cost")}
    judges = _get(bon, "curves", "judge") or []
    size = None if not judges else f"{bon['prompts']} × {bon['samples']}, n = {judges[-1]['n']} " \
                                   f"(KL_BoN {judges[-1]['kl_bon']:.2f} nats)"
    out = {"exp.bon_size": size, "exp.bon_prompts": _get(bon, "prompts"),
           "exp.bon_goodhart": bon_goodhart(bon)[0] if judges else None}
    for name, row, key in (("proxy", rows["judge"], "proxy"), ("judge", rows["judge"], "judge"),
                           ("cost", rows["cost"], "judge")):
        out[f"exp.bon_{name}_gain"], out[f"exp.bon_{name}_ci"] = _get(row, f"{key}_gain"), _get(row, f"{key}_gain_ci95")
    return out


def _experiment_numbers(out: Path) -> dict:
    """Chapter 6's numbers: the length-corrected RM (accuracy, paired difference to the plain RM,
    length-matched accuracy), the ECE before and after cross-fitted temperature scaling, each with its CI, and
    best-of-n's gains (`_bon_numbers`)."""
    length = _load(out / "experiments" / "length" / "summary.json")
    cal = _load(out / "experiments" / "calibration" / "summary.json")
    return {**_bon_numbers(_load(out / "experiments" / "bon" / "summary.json")),
            **variants_numbers(_load(out / "experiments" / "dpo_variants" / "summary.json")),
            "exp.length_n": _get(length, "n"),
            "exp.corrected_acc": _get(length, "corrected", "accuracy", "accuracy"),
            "exp.corrected_ci": _get(length, "corrected", "accuracy", "ci95"),
            "exp.debias_diff": _get(length, "difference", "all", "difference"),
            "exp.debias_diff_ci": _get(length, "difference", "all", "ci95"),
            "exp.corrected_matched_acc": _get(length, "corrected", "length_matched", "accuracy"),
            "exp.corrected_matched_ci": _get(length, "corrected", "length_matched", "ci95"),
            "exp.length_matched_n": _get(length, "corrected", "length_matched", "n"),
            "exp.calibration_n": _get(cal, "n"),
            "exp.ece_before": _get(cal, "before", "ece"), "exp.ece_before_ci": _get(cal, "before", "ece_ci95"),
            "exp.ece_after": _get(cal, "cross_fitted", "ece"), "exp.ece_after_ci": _get(cal, "cross_fitted", "ece_ci95"),
            "exp.ece_diff": _get(cal, "cross_fitted", "difference"),
            "exp.ece_diff_ci": _get(cal, "cross_fitted", "difference_ci95")}


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


N_OF = {"RM accuracy, held-out test [95% CI]": "rm.test_n", "untrained RM accuracy, same pairs [95% CI]": "rm.test_n",
        "DPO-vs-base win rate judged by the RM [95% CI]": "gen.n", "train − test accuracy [95% CI]": "rm.test_n",
        "accuracy on another dataset (PKU-SafeRLHF, OOD) [95% CI]": "ood.n",
        "OOD − in-distribution accuracy [95% CI]": "ood.n",
        "'longer response wins' rule accuracy, test": "rm.test_n", "RM accuracy, test [95% CI]": "rm.test_n",
        "RM accuracy on length-matched pairs (±10%) [95% CI]": "rm.length_matched_n",
        "untrained model on the same length-matched pairs": "rm.length_matched_n",
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


def _rows(n: dict, question: str) -> list[tuple[str, object, str, str]]:
    """(measure, value, source, reading) rows for one question; each reading's category from
    alignkit.report.readings, its words from text/readings.yaml."""
    if question == "applications":
        return [
            ("RM accuracy, held-out test [95% CI]", (n["rm.test_acc"], n["rm.test_ci"]), "ch. 1 · rm/metrics.json",
             both("ev_chance", ci_vs(n["rm.test_ci"], 0.5))),
            ("untrained RM accuracy, same pairs [95% CI]", (n["rm.untrained_acc"], n["rm.untrained_ci"]),
             "ch. 1", both("ev_chance", ci_vs(n["rm.untrained_ci"], 0.5))),
            ("DPO-vs-base win rate judged by the RM [95% CI]", (n["gen.win_rate"], n["gen.win_rate_ci95"]),
             "ch. 5 · generations/summary.json", both("ev_preference", ci_vs(n["gen.win_rate_ci95"], 0.5))),
        ]
    if question == "robustness":
        gap, gap_ci = _accuracy_gap(n["rm.train_acc"], n["rm.train_n"], n["rm.test_acc"], n["rm.test_n"])
        ood_gap, ood_ci = _accuracy_gap(n["ood.acc"], n["ood.n"], n["rm.test_acc"], n["rm.test_n"])
        return [
            ("train − test accuracy [95% CI]", (gap, gap_ci), "ch. 2", both("ev_overfitting", ci_vs(gap_ci, 0.0))),
            ("accuracy on another dataset (PKU-SafeRLHF, OOD) [95% CI]", (n["ood.acc"], n["ood.ci"]), "ch. 2",
             both("ev_chance", ci_vs(n["ood.ci"], 0.5))),
            ("OOD − in-distribution accuracy [95% CI]", (ood_gap, ood_ci), "ch. 2", both("ev_ood_gap", ci_vs(ood_ci, 0.0))),
            ("Spearman(score, response length), trained RM", n["scores.spearman_trained"], "ch. 3",
             both("length_trend", readings.length_trend(n["scores.spearman_trained"]))),
            ("best-of-n: prompts × samples, largest n", n["exp.bon_size"], "ch. 6 · experiments/bon", ""),
            ("best-of-n, largest n: reward-model (proxy) gain over a random sample [95% CI]",
             (n["exp.bon_proxy_gain"], n["exp.bon_proxy_ci"]), "ch. 6", ""),
            ("best-of-n, largest n: independent judge (helpfulness head) gain [95% CI]",
             (n["exp.bon_judge_gain"], n["exp.bon_judge_ci"]), "ch. 6", both("ev_goodhart", n["exp.bon_goodhart"])),
            ("best-of-n, largest n: cost head (harm) gain [95% CI]", (n["exp.bon_cost_gain"], n["exp.bon_cost_ci"]),
             "ch. 6", both("exp_bon_cost", ci_vs(n["exp.bon_cost_ci"], 0.0))),
            ("ECE of σ(r_w − r_l), held-out [95% CI]", (n["exp.ece_before"], n["exp.ece_before_ci"]),
             "ch. 6 · experiments/calibration", ""),
            ("ECE after cross-fitted temperature scaling [95% CI]", (n["exp.ece_after"], n["exp.ece_after_ci"]),
             "ch. 6", ""),
            ("ECE change, after − before [95% CI]", (n["exp.ece_diff"], n["exp.ece_diff_ci"]), "ch. 6",
             both("ev_calibration", ci_vs(n["exp.ece_diff_ci"], 0.0))),
        ]
    if question == "length_bias":
        return [
            ("'longer response wins' rule accuracy, test", n["rm.longer_wins_acc"], "ch. 1", both("ev_baseline")),
            ("RM accuracy, test [95% CI]", (n["rm.test_acc"], n["rm.test_ci"]), "ch. 1",
             both("ev_length_rule", ci_vs(n["rm.test_ci"], n["rm.longer_wins_acc"]))),
            ("RM accuracy on length-matched pairs (±10%) [95% CI]",
             (n["rm.length_matched_acc"], n["rm.length_matched_ci"]), "ch. 1",
             both("ev_length_matched", ci_vs(n["rm.length_matched_ci"], 0.5))),
            ("untrained model on the same length-matched pairs", n["rm.untrained_length_matched_acc"], "ch. 1",
             both("ev_training_gain", readings.gain(n["rm.length_matched_acc"], n["rm.untrained_length_matched_acc"]))),
            ("Spearman(score, length): untrained → trained",
             (n["scores.spearman_untrained"], n["scores.spearman_trained"]), "ch. 3",
             both("length_trend", readings.length_trend(n["scores.spearman_trained"]))),
            ("mean response tokens: base → DPO", (n["gen.mean_length_base"], n["gen.mean_length_dpo"]), "ch. 5",
             both("ev_length_change", ci_vs(n["gen.mean_length_difference_ci95"], 0.0))),
            ("length-controlled DPO effect on RM score [95% CI]", (n["gen.lc_effect"], n["gen.lc_effect_ci"]), "ch. 5",
             both("ev_length_controlled", ci_vs(n["gen.lc_effect_ci"], 0.0))),
            ("length-corrected RM accuracy, test [95% CI]", (n["exp.corrected_acc"], n["exp.corrected_ci"]),
             "ch. 6 · experiments/length", both("ev_chance", ci_vs(n["exp.corrected_ci"], 0.5))),
            ("length-corrected − plain RM accuracy, same pairs [95% CI]", (n["exp.debias_diff"], n["exp.debias_diff_ci"]),
             "ch. 6", both("ev_debias_change", ci_vs(n["exp.debias_diff_ci"], 0.0))),
            ("length-corrected RM accuracy on length-matched pairs (±10%) [95% CI]",
             (n["exp.corrected_matched_acc"], n["exp.corrected_matched_ci"]), "ch. 6",
             both("ev_length_matched", ci_vs(n["exp.corrected_matched_ci"], 0.5))),
        ]
    if question == "pluralistic":
        return [
            ("PKU-SafeRLHF pairs where 'more helpful' ≠ 'safer' [95% CI]",
             (n["data.helpful_vs_safer_disagree"], n["data.helpful_vs_safer_ci"]), "data",
             both("label_conflict", readings.label_conflict(n["data.helpful_vs_safer_disagree"]))),
            ("RM accuracy on helpfulness labels of another dataset", n["ood.acc"], "ch. 2", both("ev_see_robustness")),
        ]
    if question == "dpo_policy":
        ratio = None if None in (n["data.chosen_tokens_test"], n["gen.mean_length_base"]) else \
            n["gen.mean_length_base"] / n["data.chosen_tokens_test"]
        return [
            ("DPO optimiser steps on the fixed preference pairs", n["dpo.steps"], "ch. 4", both("ev_offline")),
            ("mean tokens: dataset chosen responses (test split)", n["data.chosen_tokens_test"], "ch. 3", ""),
            ("mean tokens: the base policy's own samples", n["gen.mean_length_base"], "ch. 5",
             NOT_RUN if ratio is None else both("ev_off_policy", ratio=f"{ratio:.2f}")),
            ("online − offline DPO win rate vs base, same held-out prompts [95% CI]",
             (n["exp.online_diff"], n["exp.online_diff_ci"]), "ch. 6 · experiments/dpo_variants",
             both("ev_online", ci_vs(n["exp.online_diff_ci"], 0.0))),
            ("on-policy pairs whose RM-preferred sample is the longer [95% CI]",
             (n["exp.online_longer"], n["exp.online_longer_ci"]), "ch. 6", both("ev_online_longer",
                                                                                 ci_vs(n["exp.online_longer_ci"], 0.5))),
            ("KL(DPO ‖ base) along DPO's own answers, nats [95% CI]", (n["gen.kl_mean"], n["gen.kl_ci"]),
             "ch. 5 · generations/summary.json", both("ev_kl_drift", ci_vs(n["gen.kl_ci"], 0.0))),
        ]
    if question == "dpo_vs_rlhf":
        held_out_ci = dpo_accuracy_ci(n, "eval")
        return [
            ("reference log-probs", n["dpo.reference"], "config", both("reference_pass", readings.reference_pass(n["dpo.reference"]))),
            ("DPO training wall time (s)", n["dpo.wall_time_s"], "ch. 4", ""),
            ("reward-model training wall time (s), a PPO pipeline's first stage", n["rm.wall_time_s"], "ch. 1", ""),
            ("implicit-reward accuracy on held-out pairs [95% CI]", (n["dpo.eval.reward_accuracy"], held_out_ci),
             "ch. 4", both("ev_dpo_ranking", ci_vs(held_out_ci, 0.5))),
        ]
    if question == "dpo_limits":
        gap, gap_ci = _accuracy_gap(n["dpo.train.reward_accuracy"], n["dpo.train.n"],
                                    n["dpo.eval.reward_accuracy"], n["dpo.eval.n"])
        return [
            ("implicit-reward accuracy: train → held-out", (n["dpo.train.reward_accuracy"], n["dpo.eval.reward_accuracy"]),
             "ch. 4", both("ev_dpo_gap", ci_vs(gap_ci, 0.0), gap=interval(gap, gap_ci, signed=True))),
            ("held-out implicit reward of chosen / rejected",
             (n["dpo.eval.rewards_chosen"], n["dpo.eval.rewards_rejected"]), "ch. 4",
             both("chosen_likelihood", readings.chosen_likelihood(n["dpo.eval.rewards_chosen"]))),
            ("win rate vs base judged by the RM [95% CI]", (n["gen.win_rate"], n["gen.win_rate_ci95"]), "ch. 5",
             both("ev_judge", ci_vs(n["gen.win_rate_ci95"], 0.5))),
            ("chapter 5's verdict", n["gen.verdict"], "ch. 5", ""),
            ("held-out log π/π_ref of the chosen answers, nats [95% CI]",
             (n["dpo.eval.logratio_chosen"], n["dpo.eval.logratio_chosen_ci95"]), "ch. 4 · dpo/metrics.json",
             both("exp_chosen_change", ci_vs(n["dpo.eval.logratio_chosen_ci95"], 0.0))),
        ]
    if question == "variants":
        return [*_variant_rows(n), (both("ev_variants"), "", "alignkit.losses", "")]
    raise KeyError(f"unknown question {question!r}; one of {', '.join(QUESTIONS)}")


def _variant_rows(n: dict) -> list[tuple[str, object, str, str]]:
    """Chapter 6's head-to-head: per method its RM win rate against the base model with its CI, read with
    whether its chosen likelihood falls; one 'not run yet' row when the step has not run."""
    source = "ch. 6 · experiments/dpo_variants"
    if not n.get("exp.variants_methods"):
        return [(f"{LABELS['sigmoid']}: RM win rate vs base [95% CI]", None, source, "")]
    return [(f"{LABELS[m]}: RM win rate vs base [95% CI]", (n[f"exp.variant.{m}.win"], n[f"exp.variant.{m}.win_ci"]),
             source, variant_evidence_reading(n[f"exp.variant.{m}.win_ci"], n[f"exp.variant.{m}.chosen_ci"]))
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
    """The table printed above one Q&A answer."""
    n = numbers if numbers is not None else key_numbers(cfg)
    rows = [(m, _fmt(v), s, r) for m, v, s, r in _rows(n, question)]
    return pd.DataFrame([{"measure": m, "value": v, "n": n.get(N_OF.get(m, ""), None) if v != NOT_RUN else None,
                          "source": s, "reading": NOT_RUN if v == NOT_RUN else r}
                         for m, v, s, r in rows]).astype({"n": "Int64"})


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
