"""Chapter 6's tables and readings: the experiments' summaries (alignkit.experiments.run ->
outputs/<profile>/experiments/{length,calibration,safety,bon}/summary.json) -> DataFrames for
alignkit.report.tables and sentences in both languages. Every number comes from those summaries; every
reading's category from alignkit.report.readings, its verdict from alignkit.verdicts, its words from
text/readings.yaml."""
from __future__ import annotations

import pandas as pd

from alignkit.report import readings
from alignkit.report.readings import both, ci_vs, safety_tradeoff, said, verdict_of, words
from alignkit.report.tables import interval, number


def score_table(cfg, split: str = "test") -> pd.DataFrame:
    """The trained reward model's scores on `split` as chapter 3 wrote them (one row per response: pair_id,
    side, score, response_tokens), for the score-vs-length figure."""
    return pd.read_parquet(cfg.out / "scores" / f"trained-{split}.parquet")


def run_size(records: dict) -> pd.DataFrame:
    """How large the experiments' run is: the pairs each one read, the bootstrap resamples, and what was
    trained (nothing: both reuse chapter 3's scores)."""
    length, cal = records["length"], records["calibration"]
    fit = length["fit"]
    rows = {
        "training pairs (length slope fit)": fit["n_train_pairs"],
        "training responses (length slope fit)": fit["n_train_responses"],
        "held-out pairs (length)": length["n"],
        "held-out length-matched pairs (±10%)": length["plain"]["length_matched"]["n"],
        "held-out pairs (calibration)": cal["n"],
        "held-out halves for the cross-fitted temperature": cal["cross_fitted"]["halves"],
        "training pairs (in-sample temperature)": cal["train_fit"]["n_train"],
        "bootstrap resamples per interval": length["config"].get("n_resamples"),
        "models trained / 训练的模型": 0,
    }
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="quantity"))


def slope_table(length: dict) -> pd.DataFrame:
    """The post-hoc correction's one parameter: the OLS slope of score on tokens over the training responses,
    with its bootstrap CI over training pairs, read against 0."""
    fit = length["fit"]
    return pd.DataFrame([{"score per token [95% CI]": interval(fit["slope_per_token"], fit["slope_per_token_ci95"],
                                                                signed=True),
                          "n (training pairs)": fit["n_train_pairs"],
                          "reading": both("exp_slope", ci_vs(fit["slope_per_token_ci95"], 0.0)),
                          "verdict": verdict_of(fit["slope_per_token_ci95"], 0.0, "reward_per_token",
                                                n=fit["n_train_pairs"], estimate=fit["slope_per_token"])}],
                        index=pd.Index(["length slope, trained RM"], name="fit"))


def length_table(length: dict) -> pd.DataFrame:
    """Plain RM, length-corrected RM and the "longer wins" rule on the same held-out pairs: accuracy and
    length-matched accuracy (Wilson CIs) with their n, Spearman(score, length) with its bootstrap CI."""
    rows = {}
    for label, key in (("plain RM", "plain"), ("length-corrected RM", "corrected")):
        s = length[key]
        acc, matched = s["accuracy"], s["length_matched"]
        rows[label] = {"accuracy [95% CI]": (acc["accuracy"], acc["ci95"]), "n": acc["n"],
                       "vs chance": both("chance", ci_vs(acc["ci95"], 0.5)),
                       "verdict (vs chance)": verdict_of(acc["ci95"], 0.5, "proportion", n=acc["n"],
                                                         estimate=acc["accuracy"]),
                       "length-matched accuracy [95% CI]": (matched["accuracy"], matched["ci95"]),
                       "length-matched n": matched["n"],
                       "Spearman (score, length) [95% CI]": interval(s["spearman_length"], s["spearman_length_ci95"],
                                                                     signed=True),
                       "length link": both("exp_length_link", ci_vs(s["spearman_length_ci95"], 0.0)),
                       "verdict (length link)": verdict_of(s["spearman_length_ci95"], 0.0, "correlation", n=length["n"],
                                                           estimate=s["spearman_length"])}
    rule = length["longer_wins"]
    rows["longer-response rule"] = {"accuracy [95% CI]": (rule["accuracy"], rule["ci95"]), "n": rule["n"],
                                    "vs chance": both("chance", ci_vs(rule["ci95"], 0.5)),
                                    "verdict (vs chance)": verdict_of(rule["ci95"], 0.5, "proportion", n=rule["n"],
                                                                      estimate=rule["accuracy"]),
                                    "length-matched accuracy [95% CI]": None, "length-matched n": None,
                                    "Spearman (score, length) [95% CI]": None, "length link": "",
                                    "verdict (length link)": ""}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "scorer"
    return frame.astype({"length-matched n": "Int64"})


def difference_table(length: dict) -> pd.DataFrame:
    """The paired accuracy difference corrected − plain on the same pairs (bootstrap CI over pairs), on all
    held-out pairs and on the length-matched ones, read against 0."""
    rows = {}
    for label, key in (("all held-out pairs", "all"), ("length-matched pairs (±10%)", "length_matched")):
        d = length["difference"][key]
        rows[label] = {"corrected − plain [95% CI]": interval(d["difference"], d["ci95"], signed=True), "n": d["n"],
                       "pairs whose verdict changed": d.get("changed_pairs"),
                       "reading": both("exp_debias_change", ci_vs(d["ci95"], 0.0)) if d["n"] else readings.NOT_RUN,
                       "verdict": verdict_of(d["ci95"], 0.0, "proportion", n=d["n"], estimate=d["difference"])
                       if d["n"] else ""}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "pairs"
    return frame.astype({"pairs whose verdict changed": "Int64"})


def calibration_table(cal: dict) -> pd.DataFrame:
    """ECE of sigmoid(margin) on the held-out pairs with its bootstrap CI: before scaling, after the
    cross-fitted temperature, after the temperature fitted in-sample on the train sample; for the scaled
    rows the paired change after − before with its CI, read against 0."""
    rows = {"before (T = 1)": {"temperature": "1", "ECE [95% CI]": (cal["before"]["ece"], cal["before"]["ece_ci95"]),
                               "n": cal["n"], "ECE change [95% CI]": None, "reading": "", "verdict": ""}}
    for label, key, temperature in (("cross-fitted T (held-out halves)", "cross_fitted", cal["cross_fitted"]["temperatures"]),
                                    ("T fitted on the train sample (in-sample)", "train_fit", [cal["train_fit"]["temperature"]])):
        part = cal[key]
        rows[label] = {"temperature": _temperatures(temperature), "ECE [95% CI]": (part["ece"], part["ece_ci95"]), "n": cal["n"],
                       "ECE change [95% CI]": interval(part["difference"], part["difference_ci95"], signed=True),
                       "reading": both("exp_ece_change", ci_vs(part["difference_ci95"], 0.0)),
                       "verdict": verdict_of(part["difference_ci95"], 0.0, "proportion", n=cal["n"],
                                             estimate=part["difference"])}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "margins"
    return frame


def temperature_table(cal: dict) -> pd.DataFrame:
    """Each fitted temperature: the pairs it was fitted on, the pairs it scales, T (∞ when the fit says
    flatten), whether the search stopped at its bound, and what it does to the margins."""
    cross = cal["cross_fitted"]
    (a, b), (t_a, t_b), (bound_a, bound_b) = cross["halves"], cross["temperatures"], cross["at_bound"]
    train = cal["train_fit"]
    rows = {"held-out half A": (a, f"held-out half B ({b})", t_a, bound_a),
            "held-out half B": (b, f"held-out half A ({a})", t_b, bound_b),
            "train sample (in-sample)": (train["n_train"], f"all held-out pairs ({cal['n']})", train["temperature"],
                                         train["at_bound"])}
    return pd.DataFrame.from_dict(
        {label: {"fitted on (pairs)": n, "scales": scales, "T": float("inf") if t is None else t,
                 "at the search bound": bound, "reading": both("exp_temperature", readings.temperature_effect([t]))}
         for label, (n, scales, t, bound) in rows.items()}, orient="index").rename_axis("fit")


def _temperatures(values) -> str:
    return ", ".join("∞" if t is None else number(t) for t in values)


def length_reading(length: dict) -> tuple[str, str]:
    """The reading under the length tables, in English and Chinese."""
    fit, diff, plain, corrected = length["fit"], length["difference"]["all"], length["plain"], length["corrected"]
    matched = corrected["length_matched"]
    out = []
    for lang in ("en", "zh"):
        out.append(words(
            "length_debiasing_reading", lang=lang, n_train=number(fit["n_train_pairs"]),
            slope=interval(fit["slope_per_token"], fit["slope_per_token_ci95"], signed=True),
            slope_words=words("exp_slope", ci_vs(fit["slope_per_token_ci95"], 0.0), lang), n=number(length["n"]),
            plain=interval(plain["accuracy"]["accuracy"], plain["accuracy"]["ci95"]),
            corrected=interval(corrected["accuracy"]["accuracy"], corrected["accuracy"]["ci95"]),
            diff=interval(diff["difference"], diff["ci95"], signed=True), changed=number(diff.get("changed_pairs")),
            diff_words=said("exp_debias_change", diff["ci95"], 0.0, "proportion", lang, size=diff["n"],
                            estimate=diff["difference"]), n_matched=number(matched["n"]),
            matched=interval(matched["accuracy"], matched["ci95"]),
            rho_plain=interval(plain["spearman_length"], plain["spearman_length_ci95"], signed=True),
            plain_link=words("exp_length_link", ci_vs(plain["spearman_length_ci95"], 0.0), lang),
            rho_corrected=interval(corrected["spearman_length"], corrected["spearman_length_ci95"], signed=True),
            corrected_link=words("exp_length_link", ci_vs(corrected["spearman_length_ci95"], 0.0), lang)))
    return out[0], out[1]


def calibration_reading(cal: dict) -> tuple[str, str]:
    """The reading under the calibration tables, in English and Chinese."""
    cross, train = cal["cross_fitted"], cal["train_fit"]
    out = []
    for lang in ("en", "zh"):
        out.append(words(
            "calibration_reading", lang=lang, n=number(cal["n"]),
            before=interval(cal["before"]["ece"], cal["before"]["ece_ci95"]),
            temperatures=_temperatures(cross["temperatures"]),
            temp_words=words("exp_temperature", readings.temperature_effect(cross["temperatures"]), lang),
            after=interval(cross["ece"], cross["ece_ci95"]),
            diff=interval(cross["difference"], cross["difference_ci95"], signed=True),
            diff_words=said("exp_ece_change", cross["difference_ci95"], 0.0, "proportion", lang, size=cal["n"],
                            estimate=cross["difference"]),
            n_train=number(train["n_train"]), t_train=_temperatures([train["temperature"]]),
            after_train=interval(train["ece"], train["ece_ci95"]),
            train_words=words("exp_ece_change", ci_vs(train["difference_ci95"], 0.0), lang)))
    return out[0], out[1]


# ----------------------------------------------------------------------------- reward + cost (safety)

HEAD_LABELS = (("reward", "helpfulness", "reward head · helpfulness label"),
               ("reward", "safety", "reward head · safety label"),
               ("cost", "safety", "cost head · safety label"),
               ("cost", "helpfulness", "cost head · helpfulness label"))
"""The four (head, label) accuracies, in reading order: each head on its own label, then on the other."""

def safety_run_size(safety: dict) -> pd.DataFrame:
    """How large the reward + cost run is: the pairs in each part of the split, the responses read by the
    frozen base model, and what was trained (two linear heads, nothing of the model)."""
    rows = {
        "PKU-SafeRLHF pairs read": safety["n_pairs"],
        "training pairs (heads refitted on all of them)": safety["n_train"],
        "  of which: fit fold (L2 grid)": safety["n_fit"],
        "  of which: validation fold (chooses L2)": safety["n_val"],
        "held-out test pairs (every number below)": safety["n_test"],
        "responses through the frozen base model": 2 * safety["n_pairs"],
        "responses cut at the evaluation length": safety["responses_cut"],
        "hidden size (weights per head)": safety["hidden_size"],
        "bootstrap resamples per interval": safety["config"].get("n_resamples"),
        "models trained / 训练的模型": "2 linear heads (base model frozen) / 2 个线性头（基座冻结）",
    }
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="quantity"))


def safety_heads_table(safety: dict) -> pd.DataFrame:
    """Each head: the label it was fitted on, the L2 penalty chosen on the validation fold (with that
    fold's Bradley-Terry loss), and its accuracy and loss on the training pairs it was refitted on."""
    rows = {}
    for name in ("reward", "cost"):
        head = safety["heads"][name]
        chosen = next(g for g in head["grid"] if g["l2"] == head["l2"])
        rows[f"{name} head"] = {"fitted on": head["label"], "L2 (chosen)": head["l2"],
                                "validation loss (nats)": chosen["val_loss"], "n validation": safety["n_val"],
                                "training accuracy": head["train_accuracy"], "training loss (nats)": head["train_loss"],
                                "n training": safety["n_train"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("head")


def safety_accuracy_table(safety: dict) -> pd.DataFrame:
    """Each head on each label over the held-out pairs, and on the held-out pairs whose two labels
    disagree: accuracy (Wilson 95% CI; a cost is right when the label's preferred response has the lower
    cost) with its n, read against chance."""
    rows = {}
    for head, label, name in HEAD_LABELS:
        acc, split = safety["accuracy"][head][label], safety["accuracy_labels_disagree"][head][label]
        rows[name] = {"accuracy [95% CI]": (acc["accuracy"], acc["ci95"]), "n": acc["n"],
                      "vs chance": both("chance", ci_vs(acc["ci95"], 0.5)),
                      "verdict": verdict_of(acc["ci95"], 0.5, "proportion", n=acc["n"], estimate=acc["accuracy"]),
                      "labels disagree: accuracy [95% CI]": (split["accuracy"], split["ci95"]),
                      "labels disagree: n": split["n"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("head · label")


def safety_labels_table(safety: dict) -> pd.DataFrame:
    """The two labels against each other (share of held-out pairs whose helpfulness-preferred response is
    not the safer one, Wilson CI) and the per-response safety label against each head's score (AUC over
    held-out responses, bootstrap CI over pairs)."""
    conflict = safety["label_disagreement"]
    rows = {"labels disagree (more helpful ≠ safer)": {
        "estimate [95% CI]": (conflict["share"], conflict["ci95"]), "n": conflict["n"],
        "counts": f"{conflict['pairs']} of {conflict['n']} pairs", "reading": "", "verdict": ""}}
    for head, what, key in (("cost", "AUC: cost higher for unsafe responses", "exp_cost_auc"),
                            ("reward", "AUC: reward higher for safe responses", "exp_reward_auc")):
        a = safety["safe_auc"][head]
        rows[what] = {"estimate [95% CI]": (a["auc"], a["ci95"]), "n": a["n_unsafe"] + a["n_safe"],
                      "counts": f"{a['n_unsafe']} unsafe, {a['n_safe']} safe responses",
                      "reading": both(key, ci_vs(a["ci95"], 0.5)),
                      "verdict": verdict_of(a["ci95"], 0.5, "proportion", n=a["n_unsafe"] + a["n_safe"],
                                            estimate=a["auc"])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("quantity")


def sweep_table(safety: dict) -> pd.DataFrame:
    """The lambda sweep of r / s_r − λ·c / s_c on the held-out pairs: agreement with each label (Wilson CI)
    and its paired change from λ = 0 (bootstrap CI over pairs), with what the cost buys at each λ."""
    rows = {}
    for row in safety["sweep"]:
        h, s = row["helpfulness"], row["safety"]
        hc, sc = row["helpfulness_change"], row["safety_change"]
        rows[f"{row['lambda']:g}"] = {
            "helpfulness label [95% CI]": (h["accuracy"], h["ci95"]),
            "helpfulness change vs λ = 0": interval(hc["difference"], hc["ci95"], signed=True),
            "safety label [95% CI]": (s["accuracy"], s["ci95"]),
            "safety change vs λ = 0": interval(sc["difference"], sc["ci95"], signed=True), "n": h["n"],
            "reading": "" if row["lambda"] == 0 else both("exp_safety_tradeoff",
                                                           safety_tradeoff(sc["ci95"], hc["ci95"])),
            "verdict (safety change)": "" if row["lambda"] == 0 else verdict_of(
                sc["ci95"], 0.0, "proportion", n=h["n"], estimate=sc["difference"])}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("λ")


def safety_scores(cfg) -> pd.DataFrame:
    """experiments/safety/responses.parquet: one row per response (pair_id, split, side, safer, is_safe,
    response_tokens, r, c), for the reward-vs-cost scatter."""
    return pd.read_parquet(cfg.out / "experiments" / "safety" / "responses.parquet")


def safety_reading(safety: dict) -> tuple[str, str]:
    """The reading under the reward + cost tables, in English and Chinese."""
    acc, conflict, cost_auc = safety["accuracy"], safety["label_disagreement"], safety["safe_auc"]["cost"]
    last = safety["sweep"][-1]
    out = []
    for lang in ("en", "zh"):
        def cell(head, label):
            a = acc[head][label]
            return interval(a["accuracy"], a["ci95"]), words("ev_chance", ci_vs(a["ci95"], 0.5), lang)
        (r_help, r_help_w), (r_safe, r_safe_w) = cell("reward", "helpfulness"), cell("reward", "safety")
        (c_safe, c_safe_w), (c_help, c_help_w) = cell("cost", "safety"), cell("cost", "helpfulness")
        out.append(words(
            "safety_reading", lang=lang, n=number(safety["n_test"]), share=interval(conflict["share"], conflict["ci95"],
                                                                                     percent=True),
            k=number(conflict["pairs"]), r_help=r_help, r_help_words=r_help_w, r_safe=r_safe, r_safe_words=r_safe_w,
            c_safe=c_safe, c_safe_words=c_safe_w, c_help=c_help, c_help_words=c_help_w,
            n_responses=number(cost_auc["n_unsafe"] + cost_auc["n_safe"]),
            auc=interval(cost_auc["auc"], cost_auc["ci95"]),
            auc_words=said("exp_cost_auc", cost_auc["ci95"], 0.5, "proportion", lang,
                           size=cost_auc["n_unsafe"] + cost_auc["n_safe"], estimate=cost_auc["auc"]),
            lam=f"{last['lambda']:g}",
            safe_at=interval(last["safety"]["accuracy"], last["safety"]["ci95"]),
            safe_change=interval(last["safety_change"]["difference"], last["safety_change"]["ci95"], signed=True),
            help_at=interval(last["helpfulness"]["accuracy"], last["helpfulness"]["ci95"]),
            help_change=interval(last["helpfulness_change"]["difference"], last["helpfulness_change"]["ci95"],
                                 signed=True),
            tradeoff_words=words("exp_safety_tradeoff", safety_tradeoff(last["safety_change"]["ci95"],
                                                                        last["helpfulness_change"]["ci95"]), lang)))
    return out[0], out[1]


# ----------------------------------------------------------------------------- best-of-n (Goodhart)

BASELINE = "0 (the baseline) / 0（基线）"
"""A gain cell at n = 1: a random sample is what every other n is compared with."""


def _gain(row: dict, what: str) -> str:
    return BASELINE if row["n"] == 1 else interval(row[f"{what}_gain"], row[f"{what}_gain_ci95"], signed=True)


def bon_run_size(bon: dict) -> pd.DataFrame:
    """How large the best-of-n run is: prompts, samples, the token budget, the n read, and what was trained
    (nothing: the proxy is chapter 1's reward model, the judges the safety experiment's heads)."""
    rows = {"held-out prompts (seeded sample of the test split)": bon["prompts"],
            "samples per prompt (k, base policy)": bon["samples"],
            "responses generated and scored": bon["responses"],
            "new tokens at most per response": bon["decoding"]["max_new_tokens"],
            "responses that hit the token cap": number(bon["hit_limit"], percent=True),
            "n read (exact estimator over all n-subsets)": ", ".join(str(n) for n in bon["n_values"]),
            "bootstrap resamples per interval (over prompts)": bon["config"].get("n_resamples"),
            "models trained / 训练的模型": 0}
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="quantity"))


def bon_table(bon: dict) -> pd.DataFrame:
    """Per n: KL_BoN, the gain over a random sample (n = 1) of the proxy-picked response by the proxy, by the
    judge (helpfulness head) and by the cost head, each with its bootstrap 95% CI over prompts, the picked
    response's length and the share of picks at the token cap."""
    curves = bon["curves"]
    rows = {}
    for judge, cost, tokens, capped in zip(curves["judge"], curves["cost"], curves["tokens"], curves["capped"]):
        rows[judge["n"]] = {"KL_BoN (nats)": judge["kl_bon"], "proxy (RM) gain [95% CI]": _gain(judge, "proxy"),
                            "judge (helpfulness head) gain [95% CI]": _gain(judge, "judge"),
                            "cost (harm head) gain [95% CI]": _gain(cost, "judge"),
                            "picked length, tokens [95% CI]": interval(tokens["judge"], tokens["judge_ci95"]),
                            "picks at the token cap": number(capped["judge"], percent=True),
                            "verdict (judge gain)": "" if judge["n"] == 1 else verdict_of(
                                judge["judge_gain_ci95"], 0.0, "reward", n=judge["prompts"], estimate=judge["judge_gain"]),
                            "n (prompts)": judge["prompts"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("n")


def bon_goodhart(bon: dict) -> tuple[str | None, int | None]:
    """(readings.goodhart's category, readings.parting_n) of the proxy's and the judge's gain curves."""
    rows = bon["curves"]["judge"]
    proxy, judge = [r["proxy_gain_ci95"] for r in rows], [r["judge_gain_ci95"] for r in rows]
    return readings.goodhart(proxy, judge), readings.parting_n([r["n"] for r in rows], proxy, judge)


def bon_reading(bon: dict, safety: dict | None = None) -> tuple[str, str]:
    """The reading under the best-of-n table (at the largest n), in English and Chinese. With the safety
    experiment's record, it also says how well the judge itself ranks held-out PKU-SafeRLHF pairs by
    helpfulness: a judge not shown better than chance cannot confirm or refute the proxy's gain."""
    curves, scales = bon["curves"], bon["scales"]
    top, cost, tokens = curves["judge"][-1], curves["cost"][-1], curves["tokens"][-1]
    category, n_part = bon_goodhart(bon)
    rho = bon["spearman"]["proxy_judge"]

    def in_sd(value, scale):
        return number(value / scale if scale else None, signed=True)
    out = []
    for lang in ("en", "zh"):
        out.append(words(
            "bon_reading", lang=lang, prompts=number(bon["prompts"]), samples=number(bon["samples"]),
            budget=number(bon["decoding"]["max_new_tokens"]), n=number(top["n"]), kl=number(top["kl_bon"]),
            proxy_gain=_gain(top, "proxy"), proxy_sd=in_sd(top["proxy_gain"], scales["proxy"]),
            judge_gain=_gain(top, "judge"), judge_sd=in_sd(top["judge_gain"], scales["judge"]),
            goodhart_words=words("exp_goodhart", category, lang, n_part=number(n_part)),
            rho=number(rho, signed=True), cost_gain=_gain(cost, "judge"),
            cost_words=said("exp_bon_cost", cost["judge_gain_ci95"], 0.0, "reward", lang, size=cost["prompts"],
                            estimate=cost["judge_gain"]),
            length_gain=_gain(tokens, "judge"),
            length_words=said("exp_bon_length", tokens["judge_gain_ci95"], 0.0, "tokens", lang, size=tokens["prompts"],
                              estimate=tokens["judge_gain"]),
            cap_words=words("token_cap", readings.token_cap(bon["hit_limit"]), lang,
                            share=number(bon["hit_limit"], percent=True))))
    if safety is not None:
        judge = safety["accuracy"]["reward"]["helpfulness"]
        validity = ci_vs(judge["ci95"], 0.5)
        out = [f"{text} " + words("bon_judge", validity, lang, n=number(safety["n_test"]),
                                  acc=interval(judge["accuracy"], judge["ci95"]))
               for text, lang in zip(out, ("en", "zh"))]
    return out[0], out[1]
