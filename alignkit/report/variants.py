"""Chapter 6's DPO-variants section: outputs/<profile>/experiments/dpo_variants/summary.json (alignkit.experiments
.run's `dpo_variants` step) -> the run-size table, the per-method table, the strength table and the reading,
in both languages. Every number comes from that summary; each method's category from `variant_outcome` here
and readings.ci_vs, its words from text/readings.yaml."""
from __future__ import annotations

import pandas as pd

from alignkit.report.readings import both, ci_vs, words
from alignkit.report.tables import interval, number

LABELS = {"sigmoid": "DPO", "cdpo": "cDPO", "robust": "robust DPO", "ipo": "IPO", "rdpo": "R-DPO", "simpo": "SimPO",
          "orpo": "ORPO", "kto": "KTO"}
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


def variants_run_size(rec: dict) -> pd.DataFrame:
    """How large the run is: the methods, the optimiser steps and pairs they share, the strength grid and
    the validation fold, the held-out pairs and prompts, the answers' budget and the wall time."""
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
            "reading": both("exp_variant_outcome", _outcome(m))}
    base = rec["base"]["length"]
    rows["base model"] = {"answer length, tokens [95% CI]": interval(base["mean"], base["ci95"]),
                          "at the token cap": number(base["hit_limit"], percent=True), "n prompts": base["n"],
                          "reading": both("exp_variant_base")}
    frame = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
    return frame.astype({"n pairs": "Int64", "n prompts": "Int64"})


def strength_table(rec: dict) -> pd.DataFrame:
    """Each method's strength grid: the value of each point, its policy's implicit-reward accuracy and mean
    margin change on the validation fold (with n), and which point was kept (with a grid of one: fixed)."""
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
    s, methods = rec["sizes"], rec["methods"]
    groups = {"better": _names(rec, lambda m: _outcome(m) == "better"),
              "worse": _names(rec, lambda m: _outcome(m) == "worse"),
              "neither": _names(rec, lambda m: _outcome(m) not in ("better", "worse")),
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
