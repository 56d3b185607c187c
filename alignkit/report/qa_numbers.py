"""What chapter 7 cites, read from the artifacts chapters 1-6 wrote: `key_numbers(cfg)` flattens them into one
dict (None where a step has not run, never an error), and `sources(cfg)` says which artifacts exist."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from alignkit.data.sources import data_file
from alignkit.report.chapters import generation_verdict
from alignkit.report.experiments import bon_goodhart
from alignkit.report.readings import both
from alignkit.report.variants import variants_numbers
from alignkit.study.evals import label_disagreement

ARTIFACTS = {"reward model (ch. 1)": "rm/metrics.json", "eval-only runs (ch. 2)": "evals/trained-ood",
             "scores (ch. 3)": "scores/summary.json", "DPO (ch. 4)": "dpo/metrics.json",
             "generations (ch. 5)": "generations/summary.json",
             "best-of-n (ch. 6)": "experiments/bon/summary.json",
             "DPO variants and the online round (ch. 6)": "experiments/dpo_variants/summary.json",
             "gold best-of-n (ch. 6)": "experiments/gold_bon/summary.json",
             "safety pairs out of domain (ch. 6)": "experiments/safety_pairs/summary.json",
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
        "scores.spearman_trained_ci": _get(scores, "trained-test", "score_vs_length", "spearman_ci95"),
        "scores.spearman_untrained": _get(scores, "untrained-test", "score_vs_length", "spearman"),
        "data.chosen_tokens_test": chosen_tokens,
        "dpo.steps": _get(dpo, "steps"), "dpo.wall_time_s": _get(dpo, "wall_time_s"),
        "dpo.reference": getattr(getattr(cfg, "dpo", None), "reference", None),
    }
    for split in ("train", "eval"):
        for key in ("loss", "reward_accuracy", "rewards_chosen", "rewards_rejected", "reward_margin", "n",
                    "logratio_chosen", "logratio_chosen_ci95"):
            n[f"dpo.{split}.{key}"] = _get(dpo, split, key)
    for key in ("n", "seeds", "win_rate", "win_rate_ci95", "mean_score_base", "mean_score_dpo", "mean_length_base",
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
    length-matched accuracy), the ECE before and after cross-fitted temperature scaling, each with its CI,
    best-of-n's gains (`_bon_numbers`), the gold best-of-n's paired differences at its largest n and the safety
    pairs' RM accuracy and its difference to the length rule."""
    length = _load(out / "experiments" / "length" / "summary.json")
    cal = _load(out / "experiments" / "calibration" / "summary.json")
    gold, pairs = (_load(out / "experiments" / name / "summary.json") for name in ("gold_bon", "safety_pairs"))
    top = (_get(gold, "curves") or [None])[-1]
    return {**_bon_numbers(_load(out / "experiments" / "bon" / "summary.json")),
            "exp.gold_prompts": _get(gold, "prompts"), "exp.gold_n": _get(top, "n"),
            "exp.gold_rm_random": _get(top, "rm_minus_random"), "exp.gold_rm_random_ci": _get(top, "rm_minus_random_ci95"),
            "exp.gold_rm_longest": _get(top, "rm_minus_longest"),
            "exp.gold_rm_longest_ci": _get(top, "rm_minus_longest_ci95"),
            "exp.safety_pairs_n": _get(pairs, "n"), "exp.safety_pairs_rm": _get(pairs, "rm", "value"),
            "exp.safety_pairs_rm_ci": _get(pairs, "rm", "ci95"),
            "exp.safety_pairs_diff": _get(pairs, "rm_minus_length_rule", "value"),
            "exp.safety_pairs_diff_ci": _get(pairs, "rm_minus_length_rule", "ci95"),
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
