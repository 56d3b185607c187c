"""The tables chapters 1-5 print, and chapter 5's verdict: artifacts (metrics, summaries) -> DataFrames for
alignkit.report.tables. A `reading` column or sentence says what the numbers show; its category comes from
alignkit.report.readings, so a claim that does not hold on a profile is not printed as if it did."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pandas as pd

from alignkit.config import load_config
from alignkit.report import readings
from alignkit.report.readings import both, ci_vs, judge, said, verdict_of, verdict_phrase, words
from alignkit.report.tables import interval, number
from alignkit.stats import difference_ci, wilson_interval


# ----------------------------------------------------------------------------- the "" vs None trap

def blank_spellings(profile: str, overrides: Mapping | None = None) -> pd.DataFrame:
    """How each way of writing "no training set" is read: the value `data.train.path` ends up with, and
    what a run then does. The seed passed "" and crashed with `Template 'None' not found`."""
    rows = []
    for spelling in ("", "None", "null", " ", None, "PKU-Alignment/align-anything"):
        path = load_config(profile, {**dict(overrides or {}), "data.train.path": spelling}).data.train.path
        rows.append({"given data.train.path": repr(spelling), "read as": repr(path),
                     "run does / 运行方式": both("training_set", readings.training_set(path))})
    return pd.DataFrame(rows)


def reload_check(training_metrics: dict, evals: Mapping[str, dict]) -> pd.DataFrame:
    """Eval-only accuracy of each model next to the number the training run reported for the same model
    and test split: the saved checkpoint must reproduce it (a mismatch means the save, the reload or the
    pooling differs from what was trained and measured)."""
    reported = {"untrained": training_metrics.get("eval_untrained", {}), "trained": training_metrics.get("eval", {})}
    rows = {}
    for label, metrics in evals.items():
        kind = "untrained" if label.startswith("untrained") else "trained"
        then, now = reported[kind].get("accuracy"), metrics["eval"]["accuracy"]
        rows[label] = {"n": metrics["eval"]["n"], "accuracy (eval-only run)": now,
                       "accuracy (training run)": then, "loss (eval-only run)": metrics["eval"]["loss"],
                       "reading": both("reload", readings.reproduced(then, now))}
    return pd.DataFrame.from_dict(rows, orient="index").round(4)


# ----------------------------------------------------------------------------- generalisation

def vs_chance(m: dict) -> str:
    """Reading of an accuracy's 95% CI against 0.5."""
    return both("chance", ci_vs(m["ci95"], 0.5))


def chance_verdict(m: dict) -> str:
    """The verdict of an accuracy's 95% CI against 0.5 (alignkit.verdicts), for a table's verdict column."""
    return verdict_of(m["ci95"], 0.5, "proportion", n=m["n"], estimate=m["accuracy"])


def accuracy_table(named: Mapping[str, dict]) -> pd.DataFrame:
    """{label: {'accuracy', 'n', 'ci95'}} -> one row each with its CI, its reading against chance and its verdict."""
    return pd.DataFrame.from_dict({label: {"accuracy": m["accuracy"], "ci95 low": m["ci95"][0],
                                           "ci95 high": m["ci95"][1], "n": m["n"], "reading": vs_chance(m),
                                           "verdict": chance_verdict(m)}
                                   for label, m in named.items()}, orient="index").round(3)


def generalization(metrics: dict) -> pd.DataFrame:
    """Accuracy with 95% CI: untrained and trained on test, trained on train, the longer-response rule on
    test, and the train - test gap with its CI; each row read against chance and against each other."""
    rows = {}

    def add(label, m):
        rows[label] = {"accuracy": m["accuracy"], "ci95 low": m["ci95"][0], "ci95 high": m["ci95"][1],
                       "n": m["n"], "reading": vs_chance(m), "verdict": chance_verdict(m)}
    if "eval_untrained" in metrics:
        add("untrained · test", metrics["eval_untrained"])
    add("trained · test", metrics["eval"])
    lw = metrics["eval"].get("length", {}).get("longer_wins")
    if lw:
        add("longer-response rule · test", lw)
    if "train" in metrics:
        add("trained · train", metrics["train"])
        tr, te = metrics["train"], metrics["eval"]
        low, high = difference_ci(tr["accuracy"] * tr["n"], tr["n"], te["accuracy"] * te["n"], te["n"])
        gap = tr["accuracy"] - te["accuracy"]
        rows["gap (train − test)"] = {"accuracy": gap, "ci95 low": low, "ci95 high": high, "n": None,
                                      "reading": both("overfitting", ci_vs([low, high], 0.0)),
                                      "verdict": verdict_of([low, high], 0.0, "proportion", n=min(tr["n"], te["n"]),
                                                            estimate=gap)}
    table = pd.DataFrame.from_dict(rows, orient="index").round(3)
    return table.astype({"n": "Int64"})


def ci_halfwidth(n: int, p: float = 0.6) -> float:
    """Half-width of a 95% Wilson interval at accuracy `p` on `n` pairs."""
    low, high = wilson_interval(p * n, n)
    return (high - low) / 2


def sample_size_table(n_test: int, p: float = 0.6) -> pd.DataFrame:
    """How precise an accuracy of `p` is on this test set and on larger ones: a difference smaller than the
    half-width cannot be told from noise."""
    sizes = sorted({n_test, 100, 500, 1000, 2500, 10000})
    return pd.DataFrame({"pairs": sizes, "95% CI half-width": [round(ci_halfwidth(n, p), 3) for n in sizes],
                         "this test set": ["←" if n == n_test else "" for n in sizes]}).set_index("pairs")


# ----------------------------------------------------------------------------- tables for reading
# DataFrames whose cells alignkit.report.tables formats: (estimate, [low, high]) cells print as intervals.

def interval_view(table: pd.DataFrame) -> pd.DataFrame:
    """A table with columns accuracy, ci95 low, ci95 high, n, reading (e.g. `generalization`) -> one
    'accuracy [95% CI]' column of intervals, n, reading."""
    cells = [(a, [lo, hi]) if pd.notna(lo) else a for a, lo, hi in
             zip(table["accuracy"], table["ci95 low"], table["ci95 high"])]
    view = pd.DataFrame({"accuracy [95% CI]": cells, "n": table["n"], "reading": table["reading"]}, index=table.index)
    if "gap (train − test)" in view.index:
        row = table.loc["gap (train − test)"]
        view.at["gap (train − test)", "accuracy [95% CI]"] = interval(row["accuracy"], [row["ci95 low"], row["ci95 high"]],
                                                                      signed=True)
    return view


def rm_accuracy(metrics: dict) -> pd.DataFrame:
    """Chapter 1's result: pairwise accuracy with 95% CI and n of the untrained and trained reward model
    on test, the trained one on its train sample, the longer-response rule and the trained model on
    length-matched test pairs, each read against chance."""
    rows = {}
    lengths = metrics.get("eval", {}).get("length", {})
    for label, m, loss in [("untrained · test", metrics.get("eval_untrained"), True),
                           ("trained · test", metrics.get("eval"), True),
                           ("trained · train", metrics.get("train"), True),
                           ("longer-response rule · test", lengths.get("longer_wins"), False),
                           ("trained · length-matched test pairs (±10%)", lengths.get("length_matched"), False)]:
        if m:
            rows[label] = {"accuracy [95% CI]": (m["accuracy"], m["ci95"]), "n": m["n"],
                           "loss": m.get("loss") if loss else None, "reading": vs_chance(m)}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model · split"
    return frame


def score_summary(summaries: dict) -> pd.DataFrame:
    """Chapter 3's scores (alignkit.study.scores summaries per model-split) for reading: accuracy, AUC and mean
    margin with 95% CIs, the longer-response rule, length-matched accuracy and score–length Spearman; one
    row per measure, one column per model · split."""
    rows = {}
    for name, s in summaries.items():
        length = s.get("length", {})
        matched = length.get("length_matched") or {}
        rows[name.replace("-", " · ")] = {
            "n": s["n"], "accuracy [95% CI]": (s["accuracy"], s["accuracy_ci95"]),
            "AUC [95% CI]": (s["auc"], s["auc_ci95"]), "mean margin [95% CI]": (s["mean_margin"], s["mean_margin_ci95"]),
            "longer-response rule": (length.get("longer_wins") or {}).get("accuracy"),
            "length-matched accuracy [95% CI]": (matched.get("accuracy"), matched.get("ci95")),
            "length-matched pairs": matched.get("n"),
            "Spearman (score, length)": s.get("score_vs_length", {}).get("spearman")}
    return pd.DataFrame(rows)  # one column per model · split: narrow enough for the page


DPO_ROWS = {"loss": "loss", "reward_accuracy": "reward accuracy", "rewards_chosen": "implicit reward, chosen",
            "rewards_rejected": "implicit reward, rejected", "reward_margin": "reward margin",
            "logps_chosen": "log-prob, chosen", "logps_rejected": "log-prob, rejected",
            "logratio_chosen": "log-ratio log π/π_ref, chosen", "logratio_rejected": "log-ratio log π/π_ref, rejected",
            "logratio": "log-ratio, mean of both (KL estimator off-policy)", "n": "pairs"}


def dpo_table(metrics: dict) -> pd.DataFrame:
    """Chapter 4's final metrics on the train sample and the held-out pairs, each with the 95% CI the
    evaluation computed when it has one (reward accuracy: Wilson; mean log-ratios: bootstrap)."""
    columns = {}
    for label, key in (("train (sample)", "train"), ("test", "eval")):
        m = metrics.get(key) or {}
        columns[label] = {name: (m[k], m[f"{k}_ci95"]) if m.get(f"{k}_ci95") else m.get(k)
                          for k, name in DPO_ROWS.items()}
    return pd.DataFrame(columns)


def generation_table(summary: dict) -> pd.DataFrame:
    """Chapter 5's comparison per split (test prompts, train prompts): win rate with CI, mean scores and
    lengths, the share at the token limit, and the length-controlled DPO effect with CI."""
    columns = {}
    for split in ("test", "train"):
        s = summary.get(split)
        if not s:
            continue
        lc = s["length_controlled"]
        spread = s.get("seed_spread") or {}
        columns[split] = {
            "n": s["n"], "sampling seeds": s.get("seeds", 1),
            "win rate over prompts and seeds [95% CI]": (s["win_rate"], s["win_rate_ci95"]),
            "win rate per seed": ", ".join(number(v) for v in (s.get("win_rate_per_seed") or {}).values()),
            "between-seed spread: min – max (sd)": f"{number(spread.get('min'))} – {number(spread.get('max'))} "
                                                   f"({number(spread.get('sd'))})" if spread else None,
            "mean RM score, base": s["mean_score_base"], "mean RM score, DPO": s["mean_score_dpo"],
            "mean tokens, base": s["mean_length_base"], "mean tokens, DPO": s["mean_length_dpo"],
            "share at the token limit, base": number(s["hit_limit_base"], percent=True),
            "share at the token limit, DPO": number(s["hit_limit_dpo"], percent=True),
            "Spearman (score, length)": s["score_length_spearman"],
            "length-controlled DPO effect [95% CI]": interval(lc["dpo_effect"], lc["dpo_effect_ci95"], signed=True),
            "score per token": interval(lc["per_token"], lc.get("per_token_ci95"), signed=True)}
        if s.get("kl_dpo_base"):
            kl = s["kl_dpo_base"]
            columns[split][f"KL(DPO ‖ base) per response, nats (n={kl['n']})"] = (kl["mean"], kl["ci95"])
            columns[split]["KL(DPO ‖ base) per token, nats"] = kl["per_token"]
        for model, label in (("base", "outside the RM's range, base"), ("dpo", "outside the RM's range, DPO")):
            oor = (s.get("out_of_range") or {}).get(model)
            if oor:
                columns[split][label] = number(oor["below"] + oor["above"], percent=True)
    return pd.DataFrame(columns)


def out_of_range_table(summary: dict) -> pd.DataFrame:
    """Share of each model's answers scored outside the 1–99% range of the RM's scores on dataset answers,
    per split (percent strings)."""
    return pd.DataFrame({split: {model: number(v["below"] + v["above"], percent=True)
                                 for model, v in (summary.get(split) or {}).get("out_of_range", {}).items()}
                         for split in ("test", "train") if summary.get(split)})


def generation_verdict(summary: dict, lang: str = "en") -> str:
    """Chapter 5's verdict per split (test, train), in `lang`, as chapter 7 cites it: what the RM prefers (the
    win rate's CI against 0.5), lengths, Spearman, how much of the mean score difference length accounts for,
    the effect at equal length (its CI against 0), whether length explains most of it, the token-budget caveat
    and the share of answers outside the RM's range. Categories from alignkit.report.readings."""
    parts = []
    for split in ("test", "train"):
        s = summary.get(split)
        if not s:
            continue
        lc = s["length_controlled"]
        (lo, hi), (elo, ehi) = s["win_rate_ci95"], lc["effect_ci95"]
        text = [words("generation_verdict", lang=lang, split=words("verdict_split", split, lang),
                      raw=words("verdict_preference", ci_vs([lo, hi], 0.5), lang),
                      win=f"{s['win_rate']:.2f}", lo=f"{lo:.2f}", hi=f"{hi:.2f}", n=s["n"],
                      len_dpo=f"{s['mean_length_dpo']:.0f}", len_base=f"{s['mean_length_base']:.0f}",
                      rho=f"{s['score_length_spearman']:.2f}", diff=f"{s['mean_difference']:+.2f}",
                      part=f"{lc['length_part']:+.2f}", effect=f"{lc['effect']:+.2f}", elo=f"{elo:+.2f}",
                      ehi=f"{ehi:+.2f}", at_equal=words("verdict_at_equal", ci_vs([elo, ehi], 0.0), lang)),
                words("length_explains", readings.length_explains(lc["per_token_ci95"], lc["length_part"],
                                                                  lc["effect"]), lang)]
        capped = max(s["hit_limit_base"], s["hit_limit_dpo"])
        text.append(words("verdict_cap", readings.token_cap(capped), lang, share=f"{capped:.0%}"))
        oor = s.get("out_of_range")
        if oor:
            share = {m: f"{oor[m]['below'] + oor[m]['above']:.0%}" for m in ("base", "dpo")}
            text.append(words("verdict_out_of_range", lang=lang, base=share["base"], dpo=share["dpo"]))
        parts.append((" " if lang == "en" else "").join(t for t in text if t))
    return (" " if lang == "en" else "").join(parts)


def generation_reading(summary: dict) -> tuple[str, str]:
    """The reading under chapter 5's table, on test prompts, in English and Chinese: the win rate and the
    length-controlled effect read against their nulls, the length change and the token cap."""
    s = summary["test"]
    lc = s["length_controlled"]
    cap = max(s["hit_limit_base"], s["hit_limit_dpo"])
    out = []
    for lang in ("en", "zh"):
        spread = s.get("seed_spread") or {}
        out.append(words("generation_reading", lang=lang, n=number(s["n"]), seeds=number(s.get("seeds", 1)),
                         seed_min=number(spread.get("min")), seed_max=number(spread.get("max")),
                         seed_sd=number(spread.get("sd")), win=interval(s["win_rate"], s["win_rate_ci95"]),
                         win_words=said("win", s["win_rate_ci95"], 0.5, "proportion", lang, size=s["n"],
                                        estimate=s["win_rate"]),
                         lc=interval(lc["dpo_effect"], lc["dpo_effect_ci95"], signed=True),
                         lc_words=said("length_controlled", lc["dpo_effect_ci95"], 0.0, "reward", lang, size=s["n"],
                                       estimate=lc["dpo_effect"]),
                         length_words=said("length_change", s["mean_length_difference_ci95"], 0.0, "tokens", lang,
                                           size=s["n"]),
                         len_base=number(s["mean_length_base"]), len_dpo=number(s["mean_length_dpo"]),
                         cap=words("token_cap", readings.token_cap(cap), lang, share=number(cap, percent=True))).strip())
    return out[0], out[1]


PHASES = {"untrained_eval": "untrained evaluation", "reference": "reference log-probs", "train_steps": "training steps",
          "evals": "evaluations during training (incl. the final one)", "train_check": "train-sample evaluation"}


def phase_seconds(metrics: dict) -> str:
    """A run's `seconds` per phase (alignkit.train.rm / dpo) as one line, e.g. 'training steps 812 s, ...';
    'not recorded' for a run saved before phases were timed."""
    seconds = metrics.get("seconds")
    if not seconds:
        return "not recorded"
    return ", ".join(f"{PHASES.get(k, k)} {v:.0f} s" for k, v in seconds.items())


# ----------------------------------------------------------------------------- what it took (sweeps/rm_sweep.py)

def sweep_rows(path) -> list[dict]:
    """The rows of a sweeps/rm_sweep.py results file (JSONL), in the order they finished; [] when absent."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sweep_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per RM candidate, judged on the validation fold of the training split: accuracy, length-matched
    accuracy and the length rule (Wilson CIs), the paired difference RM − rule (bootstrap CI) and its reading."""
    out = []
    for r in rows:
        diff = r["vs_length_rule"]
        category = ci_vs(diff["ci95"], 0.0)
        out.append({
            "candidate": r["name"], "overrides": ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "the profile",
            "n train / val": f"{r['n_train']} / {r['n_val']}",
            "accuracy": interval(r["accuracy"]["accuracy"], r["accuracy"]["ci95"]),
            "length-matched (n)": f"{interval(r['length_matched']['accuracy'], r['length_matched']['ci95'])} "
                                  f"({r['length_matched']['n']})",
            "length rule": interval(r["length_rule"]["accuracy"], r["length_rule"]["ci95"]),
            "RM − rule": interval(diff["difference"], diff["ci95"], signed=True),
            "reading": words("sweep_vs_rule", category) if category else "",
            "verdict": verdict_phrase(judge(diff["ci95"], 0.0, "proportion", n=diff["n"], estimate=diff["difference"])),
            "steps": r["steps"], "time (s)": round(r["sweep_s"]), "date": r["date"]})
    return pd.DataFrame(out)

