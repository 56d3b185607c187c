"""Chapter 6's DPO-variants section: outputs/<profile>/experiments/dpo_variants/summary.json (alignkit.experiments
.run's `dpo_variants` step) -> the run-size table, the per-method table, the strength table, the reading, the
online round's table and reading, in both languages, and the numbers chapter 7 cites (`variants_numbers`).
Every number comes from that summary; each method's category from `variant_outcome` here and readings.ci_vs,
its words from text/readings.yaml."""
from __future__ import annotations

import pandas as pd

from alignkit.report.readings import SPLIT, both, ci_vs, judge, said, verdict_of, words
from alignkit.report.tables import interval, number

LABELS = {"sigmoid": "DPO", "cdpo": "cDPO", "robust": "robust DPO", "ipo": "IPO", "rdpo": "R-DPO", "simpo": "SimPO",
          "orpo": "ORPO", "kto": "KTO", "online": "online DPO"}
"""How each method of alignkit.config.VARIANT_METHODS is named in the book."""

SYMBOLS = {"beta": "β", "tau": "τ", "lambda": "λ"}

OUTCOMES = ("better", "worse", "ranks_only", "misranks", "nothing")
"""Every category `variant_outcome` can return."""


def variant_outcome(win_ci, accuracy_ci) -> str | None:
    """What a trained method shows, from the 95% CIs of the reward model's win rate of its answers against the
    base model's and of its implicit-reward accuracy on held-out pairs, both against 0.5: 'better' or 'worse'
    (the win rate's interval lies above or below 0.5); else, the win rate not shown different from the base,
    'ranks_only' (it ranks held-out pairs above chance), 'misranks' (below chance) or 'nothing' (both
    intervals hold 0.5: a null result at this size)."""
    win, accuracy = ci_vs(win_ci, 0.5), ci_vs(accuracy_ci, 0.5)
    if win is None or accuracy is None:
        return None
    if win != "holds":
        return "better" if win == "above" else "worse"
    return {"above": "ranks_only", "below": "misranks"}.get(accuracy, "nothing")


def _outcome(m: dict) -> str | None:
    return variant_outcome(m["win"]["win_rate_ci95"], m["accuracy"]["ci95"])


def _strength(s: dict) -> str:
    return f"{SYMBOLS[s['name']]} = {number(s['value'])}"


def _change(c: dict) -> str:
    return interval(c["mean"], c["ci95"], signed=True)


def _not_run(rec: dict) -> pd.DataFrame | None:
    """For a profile that does not run the head-to-head (its record's `not_run`), the one-row table every
    variants table shows instead; None when it ran."""
    if not rec.get("not_run"):
        return None
    return pd.DataFrame({"value": [both("exp_variants_not_run", profile=rec["not_run"])]},
                        index=pd.Index(["DPO variants and online DPO"], name="quantity"))


def variants_run_size(rec: dict) -> pd.DataFrame:
    """How large the run is: the methods, the optimiser steps and pairs they share, the strength grid and
    the validation fold, the held-out pairs and prompts, the answers' budget and the wall time."""
    if (absent := _not_run(rec)) is not None:
        return absent
    s = rec["sizes"]
    grid = ", ".join(f"{x:g}×" for x in s["beta_scales"])
    rows = {"methods trained (one fresh copy of the base policy each)": ", ".join(LABELS[m] for m in rec["methods"]),
            "optimiser steps per method": s["steps"],
            "training pairs (fit fold; the same for every method, in the same order)": s["train_pairs"],
            "pairs per optimiser step": s["pairs_per_step"],
            "trainable parameters": s["trainable"],
            "strength grid (multiples of the dpo section's)": grid + ("" if s["validation_run"] else
                                                                      " (one value: fixed / 固定)"),
            "validation pairs per grid point (carved from the training split by prompt)": s["validation_pairs"],
            "held-out test pairs (accuracy, log-prob changes)": s["test_pairs"],
            "held-out test prompts answered by every model (win rate, length, KL)": s["prompts"],
            "new tokens at most per answer": rec["decoding"]["max_new_tokens"],
            "bootstrap resamples per interval": rec["config"].get("n_resamples"),
            "wall time, all methods (minutes)": number(rec["seconds"]["total"] / 60)}
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="quantity"))


def variants_table(rec: dict) -> pd.DataFrame:
    """One row per method: its strength; on held-out pairs the implicit-reward accuracy (Wilson CI) and the
    mean change of the chosen and of the rejected log-prob from the reference (bootstrap CIs), with n; on
    held-out prompts the answers' mean length and share at the cap, the reward model's win rate against the
    base model's answers and KL(policy ‖ base) along the answers (bootstrap CIs), with n; and the reading."""
    if (absent := _not_run(rec)) is not None:
        return absent
    rows = {}
    for method, m in rec["methods"].items():
        length = m["length"]
        rows[LABELS[method]] = {
            "strength": _strength(m["strength"]),
            "implicit-reward accuracy [95% CI]": interval(m["accuracy"]["accuracy"], m["accuracy"]["ci95"]),
            "n pairs": m["accuracy"]["n"],
            "Δ log p chosen, nats [95% CI]": _change(m["chosen_change"]),
            "Δ log p rejected, nats [95% CI]": _change(m["rejected_change"]),
            "chosen likelihood": both("exp_chosen_change", ci_vs(m["chosen_change"]["ci95"], 0.0)),
            "answer length, tokens [95% CI]": interval(length["mean"], length["ci95"]),
            "at the token cap": number(length["hit_limit"], percent=True),
            "RM win rate vs base [95% CI]": interval(m["win"]["win_rate"], m["win"]["win_rate_ci95"]),
            "KL(policy ‖ base), nats [95% CI]": interval(m["kl"]["mean"], m["kl"]["ci95"]),
            "n prompts": m["win"]["n"],
            "reading": both("exp_variant_outcome", _outcome(m)),
            "verdict (win rate)": verdict_of(m["win"]["win_rate_ci95"], 0.5, "proportion", n=m["win"]["n"],
                                             estimate=m["win"]["win_rate"]),
            "verdict (Δ log p chosen)": verdict_of(m["chosen_change"]["ci95"], 0.0, "nats", n=m["chosen_change"].get("n"),
                                                   estimate=m["chosen_change"].get("mean"))}
    base = rec["base"]["length"]
    rows["base model"] = {"answer length, tokens [95% CI]": interval(base["mean"], base["ci95"]),
                          "at the token cap": number(base["hit_limit"], percent=True), "n prompts": base["n"],
                          "reading": both("exp_variant_base")}
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
    return frame.astype({"n pairs": "Int64", "n prompts": "Int64"})


def strength_table(rec: dict) -> pd.DataFrame:
    """Each method's strength grid: the value of each point, its policy's implicit-reward accuracy and mean
    margin change on the validation fold (with n), and which point was kept (with a grid of one: fixed)."""
    if (absent := _not_run(rec)) is not None:
        return absent
    rows = []
    for method, m in rec["methods"].items():
        for g in m["grid"]:
            v = g["validation"]
            rows.append({"method": LABELS[method], "strength": _strength(g),
                         "validation accuracy [95% CI]": None if v is None else
                         interval(v["accuracy"]["accuracy"], v["accuracy"]["ci95"]),
                         "validation margin change, nats [95% CI]": None if v is None else _change(v["margin_change"]),
                         "n validation pairs": None if v is None else v["accuracy"]["n"],
                         "kept": both("exp_variant_kept", "fixed" if v is None else
                                      "kept" if g["scale"] == m["strength"]["scale"] else "not_kept")})
    return pd.DataFrame(rows).set_index("method").astype({"n validation pairs": "Int64"})


def _names(rec: dict, keep) -> list[str]:
    return [LABELS[k] for k, m in rec["methods"].items() if keep(m)]


def variants_reading(rec: dict) -> tuple[str, str]:
    """The reading under the variants table, in English and Chinese: which methods' answers the reward model
    shows better or worse than the base model's, which rank held-out pairs above chance, whose chosen
    likelihood falls, and the range of KL."""
    if rec.get("not_run"):
        return (words("exp_variants_not_run", lang="en", profile=rec["not_run"]),
                words("exp_variants_not_run", lang="zh", profile=rec["not_run"]))
    s, methods = rec["sizes"], rec["methods"]
    groups = {"better": _names(rec, lambda m: _outcome(m) == "better"),
              "worse": _names(rec, lambda m: _outcome(m) == "worse"),
              "neither": _names(rec, lambda m: _outcome(m) not in ("better", "worse")),
              "level": _names(rec, lambda m: getattr(judge(m["win"]["win_rate_ci95"], 0.5, "proportion"), "verdict",
                                                     None) == "shown_absent"),
              "ranks": _names(rec, lambda m: ci_vs(m["accuracy"]["ci95"], 0.5) == "above"),
              "falls": _names(rec, lambda m: ci_vs(m["chosen_change"]["ci95"], 0.0) == "below"),
              "rejected_falls": _names(rec, lambda m: ci_vs(m["rejected_change"]["ci95"], 0.0) == "below")}
    kl = [m["kl"]["mean"] for m in methods.values()]
    out = []
    for lang in ("en", "zh"):
        none = words("exp_variant_none", lang=lang)
        lists = {k: ", ".join(v) or none for k, v in groups.items()}
        out.append(words(
            "variants_reading", lang=lang, n_methods=number(len(methods)), steps=number(s["steps"]),
            n_train=number(s["train_pairs"]), per_step=number(s["pairs_per_step"]),
            strength_words=words("exp_variant_strength", "validation" if s["validation_run"] else "fixed", lang,
                                 n_val=number(s["validation_pairs"])),
            n_prompts=number(s["prompts"]), n_pairs=number(s["test_pairs"]),
            kl_low=number(min(kl)), kl_high=number(max(kl)), **lists))
    return out[0], out[1]


# ----------------------------------------------------------------------------- the online round

def online_outcome(vs_offline: dict | None) -> str | None:
    """Online minus offline DPO's win rate against the base model, paired by prompt: 'above' (online wins more
    often), 'below' (offline does) or 'holds' (the CI holds 0: a null result); None when either did not run."""
    return ci_vs((vs_offline or {}).get("ci95"), 0.0)


def online_table(rec: dict) -> pd.DataFrame:
    """The online round: the prompts sampled, the ties dropped, the on-policy pairs kept and trained on, the
    reward model's margin and the length difference between their two answers, how often the longer sample was
    labelled better, both DPOs' win rates against the base model and their paired difference (95% CIs, n)."""
    if (absent := _not_run(rec)) is not None:
        return absent
    o = rec.get("online")
    if not o:
        return pd.DataFrame({"value": [both("exp_online_absent")]}, index=pd.Index(["online round"], name="quantity"))
    vs, methods = o.get("vs_offline") or {}, rec["methods"]
    win = {m: interval(methods[m]["win"]["win_rate"], methods[m]["win"]["win_rate_ci95"]) if m in methods else None
           for m in ("online", "sigmoid")}
    rows = {"training prompts answered twice by the base policy (the offline pairs' prompts)": o["prompts"],
            "ties dropped (equal RM scores)": f"{o['ties']} ({number(o['tie_share'], percent=True)})",
            "on-policy pairs kept / trained on (after truncation)": f"{o['pairs']} / {o['trained_pairs']}",
            "RM score margin, chosen − rejected [95% CI]": interval(o["margin"]["mean"], o["margin"]["ci95"]),
            "length, chosen − rejected, tokens [95% CI]": interval(o["length_difference"]["mean"],
                                                                    o["length_difference"]["ci95"], signed=True),
            "pairs whose chosen sample is the longer [95% CI]": interval(o["longer_preferred"]["accuracy"],
                                                                         o["longer_preferred"]["ci95"]),
            "RM win rate vs base: online DPO [95% CI]": win["online"],
            "RM win rate vs base: offline DPO [95% CI]": win["sigmoid"],
            "online − offline win rate, paired by prompt [95% CI]": interval(vs.get("difference"), vs.get("ci95"),
                                                                             signed=True),
            "n held-out prompts (paired)": vs.get("n"),
            "reading": both("exp_online_vs_offline", online_outcome(vs)) if vs else both("exp_online_no_offline"),
            "verdict": verdict_of(vs.get("ci95"), 0.0, "proportion", n=vs.get("n"), estimate=vs.get("difference"))
            if vs else ""}
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="quantity"))


def online_reading(rec: dict) -> tuple[str, str]:
    """The reading under the online table, in English and Chinese: what the round sampled and kept, whether the
    labels prefer length, online vs offline DPO on the win rate (paired by prompt), and the Goodhart caveat."""
    if rec.get("not_run"):
        return variants_reading(rec)
    o = rec.get("online")
    if not o:
        return words("exp_online_absent", lang="en"), words("exp_online_absent", lang="zh")
    vs, win = o.get("vs_offline") or {}, {m: rec["methods"].get(m, {}).get("win", {}) for m in ("online", "sigmoid")}
    out = []
    for lang in ("en", "zh"):
        outcome = (said("exp_online_vs_offline", vs["ci95"], 0.0, "proportion", lang, size=vs.get("n"),
                        estimate=vs.get("difference")) if vs else words("exp_online_no_offline", lang=lang))
        out.append(words(
            "online_reading", lang=lang, prompts=number(o["prompts"]), ties=number(o["ties"]),
            tie_share=number(o["tie_share"], percent=True), pairs=number(o["pairs"]),
            trained=number(o["trained_pairs"]),
            margin=interval(o["margin"]["mean"], o["margin"]["ci95"]),
            length=interval(o["length_difference"]["mean"], o["length_difference"]["ci95"], signed=True),
            longer=interval(o["longer_preferred"]["accuracy"], o["longer_preferred"]["ci95"]),
            longer_words=words("exp_online_longer", ci_vs(o["longer_preferred"]["ci95"], 0.5), lang),
            online_win=interval(win["online"].get("win_rate"), win["online"].get("win_rate_ci95")),
            offline_win=interval(win["sigmoid"].get("win_rate"), win["sigmoid"].get("win_rate_ci95")),
            n_prompts=number(vs.get("n", rec["sizes"]["prompts"])),
            difference=interval(vs.get("difference"), vs.get("ci95"), signed=True), outcome=outcome))
    return out[0], out[1]


# ----------------------------------------------------------------------------- chapter 7's numbers

def variants_numbers(rec: dict | None) -> dict:
    """What chapter 7 cites from the dpo_variants summary (None values when it has not run): the methods and
    held-out prompts; per method `exp.variant.<method>.{win, win_ci, chosen_ci}` (win rate against the base model,
    its CI, the CI of the chosen log-prob change); the online round's paired difference to offline DPO
    (`exp.online_diff`, `_ci`, `_n`) and its labels' length preference (`exp.online_longer`, `_ci`, pairs);
    `exp.variants_not_run`: the profile, when it does not run the head-to-head."""
    rec = rec or {}
    methods, online = rec.get("methods") or {}, rec.get("online") or {}
    vs, longer = online.get("vs_offline") or {}, online.get("longer_preferred") or {}
    out = {"exp.variants_methods": list(methods) or None, "exp.variants_not_run": rec.get("not_run"),
           "exp.variants_prompts": (rec.get("sizes") or {}).get("prompts"),
           "exp.online_diff": vs.get("difference"), "exp.online_diff_ci": vs.get("ci95"), "exp.online_n": vs.get("n"),
           "exp.online_longer": longer.get("accuracy"), "exp.online_longer_ci": longer.get("ci95"),
           "exp.online_pairs": online.get("pairs")}
    for name, m in methods.items():
        out.update({f"exp.variant.{name}.win": m["win"]["win_rate"],
                    f"exp.variant.{name}.win_ci": m["win"]["win_rate_ci95"],
                    f"exp.variant.{name}.chosen_ci": m["chosen_change"]["ci95"]})
    return out


def variant_evidence_reading(win_ci, chosen_ci) -> str:
    """A chapter 7 cell: the RM's verdict on a method's answers (win rate CI against 0.5) and whether its
    chosen likelihood falls (the chosen log-prob change's CI against 0), 'English / 中文'."""
    parts = (("ev_judge", ci_vs(win_ci, 0.5)), ("ev_variant_chosen", ci_vs(chosen_ci, 0.0)))
    return "; ".join(words(k, c, "en") for k, c in parts) + SPLIT + "；".join(words(k, c, "zh") for k, c in parts)
