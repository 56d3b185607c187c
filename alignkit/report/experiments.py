"""Chapter 6's tables and readings: the experiments' summaries (alignkit.experiments.run ->
outputs/<profile>/experiments/{length,calibration}/summary.json) -> DataFrames for alignkit.report.tables and
sentences in both languages. Every number comes from those summaries; every reading's category from
alignkit.report.readings, its words from text/readings.yaml."""
from __future__ import annotations

import pandas as pd

from alignkit.report import readings
from alignkit.report.readings import both, ci_vs, words
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
                          "reading": both("exp_slope", ci_vs(fit["slope_per_token_ci95"], 0.0))}],
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
                       "length-matched accuracy [95% CI]": (matched["accuracy"], matched["ci95"]),
                       "length-matched n": matched["n"],
                       "Spearman (score, length) [95% CI]": interval(s["spearman_length"], s["spearman_length_ci95"],
                                                                     signed=True),
                       "length link": both("exp_length_link", ci_vs(s["spearman_length_ci95"], 0.0))}
    rule = length["longer_wins"]
    rows["longer-response rule"] = {"accuracy [95% CI]": (rule["accuracy"], rule["ci95"]), "n": rule["n"],
                                    "vs chance": both("chance", ci_vs(rule["ci95"], 0.5)),
                                    "length-matched accuracy [95% CI]": None, "length-matched n": None,
                                    "Spearman (score, length) [95% CI]": None, "length link": ""}
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
                       "reading": both("exp_debias_change", ci_vs(d["ci95"], 0.0)) if d["n"] else readings.NOT_RUN}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "pairs"
    return frame.astype({"pairs whose verdict changed": "Int64"})


def calibration_table(cal: dict) -> pd.DataFrame:
    """ECE of sigmoid(margin) on the held-out pairs with its bootstrap CI: before scaling, after the
    cross-fitted temperature, after the temperature fitted in-sample on the train sample; for the scaled
    rows the paired change after − before with its CI, read against 0."""
    rows = {"before (T = 1)": {"temperature": "1", "ECE [95% CI]": (cal["before"]["ece"], cal["before"]["ece_ci95"]),
                               "n": cal["n"], "ECE change [95% CI]": None, "reading": ""}}
    for label, key, temperature in (("cross-fitted T (held-out halves)", "cross_fitted", cal["cross_fitted"]["temperatures"]),
                                    ("T fitted on the train sample (in-sample)", "train_fit", [cal["train_fit"]["temperature"]])):
        part = cal[key]
        rows[label] = {"temperature": _temperatures(temperature), "ECE [95% CI]": (part["ece"], part["ece_ci95"]), "n": cal["n"],
                       "ECE change [95% CI]": interval(part["difference"], part["difference_ci95"], signed=True),
                       "reading": both("exp_ece_change", ci_vs(part["difference_ci95"], 0.0))}
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
            diff_words=words("exp_debias_change", ci_vs(diff["ci95"], 0.0), lang), n_matched=number(matched["n"]),
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
            diff_words=words("exp_ece_change", ci_vs(cross["difference_ci95"], 0.0), lang),
            n_train=number(train["n_train"]), t_train=_temperatures([train["temperature"]]),
            after_train=interval(train["ece"], train["ece_ci95"]),
            train_words=words("exp_ece_change", ci_vs(train["difference_ci95"], 0.0), lang)))
    return out[0], out[1]
