"""Chapter 6's two readings of the reward model against labels it never trained on: best-of-n judged by
GPT-4-turbo's preferences (experiments/gold_bon/summary.json) and PKU-SafeRLHF's safety pairs
(experiments/safety_pairs/summary.json). Tables for alignkit.report.tables, sentences in both languages and
the gold best-of-n figure;
every number from those summaries, every category from alignkit.report.readings, every verdict from
alignkit.verdicts, the words from text/readings.yaml."""
from __future__ import annotations

import pandas as pd

from alignkit.report import readings
from alignkit.report.figures import bilingual, set_theme
from alignkit.report.readings import both, ci_vs, verdict_of, words
from alignkit.report.tables import interval, number

TABLE_N = (1, 2, 4, 8, 11)
"""The n the gold table shows (the figure shows every n)."""

RULE_LABELS = {"rm": "RM's pick", "random": "random answer", "longest": "longest answer", "oracle": "oracle (best by the judge)"}


def gold_rows(gold: dict, n_values=TABLE_N) -> list[dict]:
    """The curves' rows at `n_values` (those present)."""
    return [row for row in gold["curves"] if row["n"] in set(n_values)]


def gold_run_size(gold: dict) -> pd.DataFrame:
    """How large the gold best-of-n run is: prompts, answers per prompt, answers scored and cut, the scoring
    time, and what was trained (nothing)."""
    rows = {"prompts (seeded sample of the 403)": gold["prompts"], "answers per prompt (k)": gold["k"],
            "answers scored by the reward model": gold["answers"],
            "answers cut at the evaluation length": f"{gold['cut']['answers']} ({number(gold['cut']['share'], percent=True)}"
                                                     f" at {gold['cut']['max_length']} tokens)",
            "mean answer tokens as scored": number(gold["mean_response_tokens"]),
            "scoring seconds (per answer)": f"{number(gold['seconds']['score'])} ({number(gold['seconds_per_answer'])})",
            "sd over all 403 prompts of longest − random / oracle − random at n = k (data alone)":
                f"{number(gold['sizing']['sd_longest_minus_random'])} / {number(gold['sizing']['sd_oracle_minus_random'])}",
            f"prompts for a 95% half-width of ±{gold['sizing']['half_width']:g} on RM − random at n = k":
                gold["sizing"]["prompts_needed"],
            "bootstrap resamples per interval (over prompts)": gold["config"].get("n_resamples"),
            "models trained / 训练的模型": 0}
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="quantity"))


def gold_table(gold: dict, n_values=TABLE_N) -> pd.DataFrame:
    """Per n: the gold win rate against the reference answer of each pick rule (bootstrap 95% CIs over
    prompts), the paired differences RM − random and RM − longest with their CIs and verdicts, and the RM's
    own score gain of its pick over a random answer (the proxy)."""
    out = {}
    for row in gold_rows(gold, n_values):
        cells = {f"{label} [95% CI]": interval(row[key], row[f"{key}_ci95"]) for key, label in RULE_LABELS.items()}
        for other in ("random", "longest"):
            key = f"rm_minus_{other}"
            cells[f"RM − {other} [95% CI]"] = interval(row[key], row[f"{key}_ci95"], signed=True)
            cells[f"verdict, RM − {other}"] = "" if row["n"] == 1 else \
                verdict_of(row[f"{key}_ci95"], 0.0, "proportion", n=row["prompts"], estimate=row[key])
        cells["RM score gain of its pick (proxy) [95% CI]"] = interval(row["proxy_gain"], row["proxy_gain_ci95"],
                                                                       signed=True)
        cells["n (prompts)"] = row["prompts"]
        out[row["n"]] = cells
    return pd.DataFrame.from_dict(out, orient="index").rename_axis("n")


def gold_goodhart(gold: dict) -> tuple[str | None, int | None]:
    """(readings.goodhart, readings.parting_n) of the proxy's gain and the gold's gain (RM − random) over n."""
    rows = gold["curves"]
    proxy, judged = [r["proxy_gain_ci95"] for r in rows], [r["rm_minus_random_ci95"] for r in rows]
    return readings.goodhart(proxy, judged), readings.parting_n([r["n"] for r in rows], proxy, judged)


def gold_reading(gold: dict) -> tuple[str, str]:
    """The reading under the gold table (at the largest n) and its comparison with RewardBench's best-of-16
    study, in English and Chinese."""
    top, one = gold["curves"][-1], gold["curves"][0]
    category, n_part = gold_goodhart(gold)
    out = []
    for lang in ("en", "zh"):
        def said(key, other):
            return readings.said(key, top[f"rm_minus_{other}_ci95"], 0.0, "proportion", lang, size=top["prompts"],
                                 estimate=top[f"rm_minus_{other}"])
        out.append(" ".join((
            words("gold_bon_reading", lang=lang, prompts=number(gold["prompts"]), k=number(gold["k"]),
                  n=number(top["n"]), random=interval(one["random"], one["random_ci95"]),
                  rm=interval(top["rm"], top["rm_ci95"]), longest=interval(top["longest"], top["longest_ci95"]),
                  oracle=interval(top["oracle"], top["oracle_ci95"]),
                  rm_random=interval(top["rm_minus_random"], top["rm_minus_random_ci95"], signed=True),
                  rm_random_words=said("gold_vs_random", "random"),
                  rm_longest=interval(top["rm_minus_longest"], top["rm_minus_longest_ci95"], signed=True),
                  rm_longest_words=said("gold_vs_longest", "longest"),
                  proxy_gain=interval(top["proxy_gain"], top["proxy_gain_ci95"], signed=True),
                  goodhart_words=words("exp_goodhart", category, lang, n_part=number(n_part)),
                  cut=number(gold["cut"]["share"], percent=True), max_length=number(gold["cut"]["max_length"])),
            words("gold_bon_compare", lang=lang, n=number(top["n"]), prompts=number(gold["prompts"]),
                  random=number(100 * one["random"], places=1), longest=number(100 * top["longest"], places=1),
                  rm=number(100 * top["rm"], places=1)))))
    return out[0], out[1]


def safety_pairs_table(pairs: dict) -> pd.DataFrame:
    """The RM and the length rule on the safety pairs, and their paired difference: value with its bootstrap
    95% CI over prompts, n, reading and verdict."""
    rows = {}
    for label, key, null, reading in (("reward model: safer answer scored higher", "rm", 0.5, "safety_pairs_rm"),
                                      ("rule: the longer answer wins", "length_rule", 0.5, "chance"),
                                      ("RM − rule, same pairs", "rm_minus_length_rule", 0.0, "safety_pairs_vs_rule")):
        part = pairs[key]
        rows[label] = {"value [95% CI]": interval(part["value"], part["ci95"], signed=null == 0.0), "n": pairs["n"],
                       "reading": both(reading, ci_vs(part["ci95"], null)),
                       "verdict": verdict_of(part["ci95"], null, "proportion", n=pairs["n"], estimate=part["value"])}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "PKU-SafeRLHF safety pairs"
    return frame


def safety_pairs_reading(pairs: dict) -> tuple[str, str]:
    """The reading under the safety-pairs table, in English and Chinese."""
    out = []
    for lang in ("en", "zh"):
        def said(key, part, null):
            return readings.said(key, part["ci95"], null, "proportion", lang, size=pairs["n"], estimate=part["value"])
        out.append(words("safety_pairs_reading", lang=lang, n=number(pairs["n"]), prompts=number(pairs["prompts"]),
                         rm=interval(pairs["rm"]["value"], pairs["rm"]["ci95"]),
                         rm_words=said("safety_pairs_rm", pairs["rm"], 0.5),
                         rule=interval(pairs["length_rule"]["value"], pairs["length_rule"]["ci95"]),
                         rule_words=said("chance", pairs["length_rule"], 0.5),
                         diff=interval(pairs["rm_minus_length_rule"]["value"], pairs["rm_minus_length_rule"]["ci95"],
                                       signed=True),
                         diff_words=said("safety_pairs_vs_rule", pairs["rm_minus_length_rule"], 0.0),
                         disagree=number(pairs["disagree"]), cut=number(pairs["cut"]["share"], percent=True)))
    return out[0], out[1]


def gold_figure(gold: dict):
    """Chapter 6's gold best-of-n: left, the win rate against the reference answer (GPT-4-turbo's preference)
    of each pick rule against n (bands: bootstrap 95% CIs over prompts); right, Goodhart's question, the reward
    model's own score gain of its pick over a random answer (proxy, left axis) beside the gold's gain RM − random
    (right axis), against n. `gold` is experiments/gold_bon/summary.json."""
    import matplotlib.pyplot as plt
    set_theme()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    rows = gold["curves"]
    ns = [row["n"] for row in rows]
    labels = {"oracle": bilingual("oracle (best by the judge)", "oracle（按评判者最佳）"),
              "rm": bilingual("reward model's pick", "奖励模型所选"),
              "longest": bilingual("longest answer", "最长回答"), "random": bilingual("random answer", "随机回答")}
    for key, label in labels.items():
        line, = axes[0].plot(ns, [row[key] for row in rows], marker="o", ms=3, label=label)
        axes[0].fill_between(ns, [row[f"{key}_ci95"][0] for row in rows], [row[f"{key}_ci95"][1] for row in rows],
                             alpha=0.15, color=line.get_color())
    axes[0].set_ylabel(bilingual("win rate vs the reference (GPT-4-turbo)", "对参考回答的胜率（GPT-4-turbo）", sep="\n"))
    axes[0].legend(fontsize=8)
    proxy, = axes[1].plot(ns, [row["proxy_gain"] for row in rows], marker="o", ms=3, color="tab:blue",
                          label=bilingual("proxy: RM score gain", "代理：奖励分数提升"))
    axes[1].fill_between(ns, [row["proxy_gain_ci95"][0] for row in rows], [row["proxy_gain_ci95"][1] for row in rows],
                         alpha=0.15, color=proxy.get_color())
    axes[1].set_ylabel(bilingual("RM score gain over a random answer", "相对随机回答的奖励分数提升", sep="\n"))
    twin = axes[1].twinx()
    gain, = twin.plot(ns, [row["rm_minus_random"] for row in rows], marker="s", ms=3, color="tab:orange",
                      label=bilingual("gold: win-rate gain", "金标准：胜率提升"))
    twin.fill_between(ns, [row["rm_minus_random_ci95"][0] for row in rows],
                      [row["rm_minus_random_ci95"][1] for row in rows], alpha=0.15, color=gain.get_color())
    twin.axhline(0, ls="--", c="grey", lw=1)
    twin.set_ylabel(bilingual("win-rate gain, RM − random", "胜率提升（奖励模型 − 随机）", sep="\n"))
    axes[1].legend(handles=[proxy, gain], fontsize=8, loc="upper left")
    for ax in axes:
        ax.set_xlabel(bilingual("n (answers the pick is made from)", "n（从中挑选的回答数）", sep="\n"))
        ax.set_xticks(ns)
    fig.tight_layout()
    return fig
