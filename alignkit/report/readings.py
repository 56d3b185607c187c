"""Readings: numbers -> a category ("above", "holds", "held", ...), one function per kind of reading, and
the category's words in English and Chinese looked up in text/readings.yaml. A reading is decided here and
nowhere else; the chapters, the Q&A evidence and the landing page only choose which words to show.

Every reading of an interval also carries one of the study's three verdicts (alignkit.verdicts: shown, shown
absent, undecided with the n that would decide), against the margin of its kind of quantity: `judge` decides
it, `verdict_cell` and `verdict_phrase` say it, `margins_table` renders the margins."""
from __future__ import annotations

from functools import lru_cache

import pandas as pd
import yaml

from alignkit import verdicts
from alignkit.report.tables import TEXT, number

SPLIT = " / "
"""Table cells carry both languages as 'English / 中文' (alignkit.report.tables shows the reader's one)."""


# ----------------------------------------------------------------------------- categories

def ci_vs(ci, null) -> str | None:
    """Where a 95% interval lies relative to `null`: 'above' (low > null), 'below' (high < null) or 'holds'
    (the interval holds it); None when the interval or the null is missing."""
    if not ci or null is None or any(v is None for v in ci):
        return None
    return "above" if ci[0] > null else "below" if ci[1] < null else "holds"




def reproduced(reported, measured, tolerance: float = 1e-9) -> str | None:
    """'same' when a re-measured number equals the reported one (within `tolerance`), else 'different'."""
    if measured is None:
        return None
    return "same" if reported is not None and abs(reported - measured) < tolerance else "different"


def reference_pass(reference) -> str | None:
    """DPO's `dpo.reference` setting: 'cached' (computed once) or 'every_step'."""
    if reference is None:
        return None
    return "cached" if reference == "cache" else "every_step"


def training_set(path) -> str:
    """What a run does with `data.train.path` as loaded: 'eval_only' (None) or 'train'."""
    return "eval_only" if path is None else "train"


def token_cap(share_at_limit, majority: float = 0.5) -> str | None:
    """'capped' when more than half of the answers stop at the token limit (lengths then vary little and a
    length test has little power), else 'free'."""
    if share_at_limit is None:
        return None
    return "capped" if share_at_limit > majority else "free"


def length_explains(per_token_ci, length_part, effect) -> str | None:
    """How much of DPO's score difference length accounts for: 'most' (the RM rewards length and the length
    part is larger than the effect at equal length), 'some' (it rewards length, the effect is larger) or
    'none' (no length effect shown)."""
    if not per_token_ci or per_token_ci[0] is None or length_part is None or effect is None:
        return None
    if per_token_ci[0] > 0:
        return "most" if abs(length_part) > abs(effect) else "some"
    return "none"


# The seed study's three claims about DPO (chapter 5), each 'held' / 'failed' / 'undecided' from intervals.

def claim_dpo_scores_lower(win_ci) -> str | None:
    """'DPO's answers score lower than the base model's': held when the win rate's interval lies below 0.5."""
    side = ci_vs(win_ci, 0.5)
    return None if side is None else {"below": "held", "above": "failed"}.get(side, "undecided")


def claim_rewards_length(rm_ci, rule_accuracy, matched_ci) -> str | None:
    """'The reward model mostly rewards length': failed when the RM's interval lies above the length rule or
    length-matched pairs show signal (interval above 0.5); held when the RM lies below the rule."""
    side = ci_vs(rm_ci, rule_accuracy)
    if side is None:
        return None
    if side == "above" or ci_vs(matched_ci, 0.5) == "above":
        return "failed"
    return "held" if side == "below" else "undecided"


def claim_out_of_range(share_ci, expected: float = 0.02, clearly_more: float = 0.10) -> str | None:
    """'DPO's answers fall outside the RM's score range': held when the interval of the share outside the
    1-99% range lies above the 2% a 1-99% range leaves out by construction; failed when it lies below 10%."""
    if not share_ci or any(v is None for v in share_ci):
        return None
    return "held" if share_ci[0] > expected else "failed" if share_ci[1] < clearly_more else "undecided"


TRADEOFF = ("trade", "free", "no_gain")
"""Every category `safety_tradeoff` can return."""


def safety_tradeoff(safety_change_ci, helpfulness_change_ci) -> str | None:
    """What adding the cost does at one lambda, from the paired changes against lambda = 0 (their 95% CIs):
    'trade' (agreement with the safety label rises beyond noise and with the helpfulness label falls),
    'free' (the safety agreement rises, no helpfulness loss shown) or 'no_gain' (no safety gain shown)."""
    safety, helpfulness = ci_vs(safety_change_ci, 0.0), ci_vs(helpfulness_change_ci, 0.0)
    if safety is None or helpfulness is None:
        return None
    if safety != "above":
        return "no_gain"
    return "trade" if helpfulness == "below" else "free"


def temperature_effect(temperatures) -> str | None:
    """What temperature scaling does to sigmoid(margin), from the fitted temperatures (None = infinite T):
    'softens' (every T > 1: the margins were over-confident), 'sharpens' (every T < 1: under-confident),
    'flattens' (every T infinite: the margins rank no better than their mirror image) or 'mixed'."""
    ts = list(temperatures or [])
    if not ts:
        return None
    if all(t is None for t in ts):
        return "flattens"
    if all(t is not None and t > 1 for t in ts):
        return "softens"
    if all(t is not None and t < 1 for t in ts):
        return "sharpens"
    return "mixed"


def goodhart(proxy_gain_cis, judge_gain_cis) -> str | None:
    """Best-of-n against a proxy, read from the 95% CIs of the proxy's and the judge's gain over n = 1 at each
    n (both lists in increasing n): 'judge_falls' (at some n the proxy gain lies above 0 and the judge gain
    below: by the judge, the proxy's pick is worse than a random sample), 'parts' (at the largest n the proxy
    gain lies above 0 while the judge's interval holds 0: the proxy's gain is not shown to carry over),
    'tracks' (at the largest n both lie above 0) or 'no_proxy_gain' (the proxy gain's interval holds 0 at
    every n: nothing was optimised)."""
    pairs = [(ci_vs(p, 0.0), ci_vs(j, 0.0)) for p, j in zip(proxy_gain_cis or [], judge_gain_cis or [])]
    if not pairs or any(p is None or j is None for p, j in pairs):
        return None
    if all(p != "above" for p, _ in pairs):
        return "no_proxy_gain"
    if any(p == "above" and j == "below" for p, j in pairs):
        return "judge_falls"
    last_proxy, last_judge = pairs[-1]
    if last_proxy != "above":
        return "no_proxy_gain"
    return "tracks" if last_judge == "above" else "parts"


def parting_n(n_values, proxy_gain_cis, judge_gain_cis) -> int | None:
    """The smallest n at which the proxy gain's 95% CI lies above 0 while the judge gain's does not (it holds
    0 or lies below): where the two curves part; None when they never do."""
    for n, p, j in zip(n_values, proxy_gain_cis, judge_gain_cis):
        if ci_vs(p, 0.0) == "above" and ci_vs(j, 0.0) in ("holds", "below"):
            return n
    return None


def meets_aim(ratio, aim) -> str | None:
    """A benchmark's median speed ratio against its aim: 'met' or 'missed' (None without an aim)."""
    if aim is None or ratio is None:
        return None
    return "met" if ratio >= aim else "missed"


def adopted(holds) -> str:
    """bfloat16 scoring by the adoption rule (alignkit.stats.precision_agreement's `holds`)."""
    return "holds" if holds else "fails"


# ----------------------------------------------------------------------------- the three verdicts

def judge(ci, null, kind: str, *, n=None, estimate=None) -> verdicts.Verdict | None:
    """The verdict of a 95% interval against `null` for a quantity of `kind` (alignkit.verdicts.MARGINS), `n`
    the sample behind it; None when the interval or the null is missing (the step has not run)."""
    if not ci or null is None or any(v is None for v in ci):
        return None
    return verdicts.verdict(ci, null, kind, n=n, estimate=estimate)


def verdict_category(v: verdicts.Verdict | None) -> str | None:
    """The words' category of a verdict: its name, or 'undecided_no_n' when no n was given to scale."""
    if v is None:
        return None
    return "undecided_no_n" if v.verdict == "undecided" and v.n_needed is None else v.verdict


def _verdict_values(v: verdicts.Verdict, lang: str) -> dict:
    return {"null": number(v.null), "margin": f"{v.margin:g}", "mde": number(v.mde), "n": number(v.n),
            "n_needed": f"{v.n_needed:,}" if v.n_needed else "", "at": words("verdict_at", v.at, lang) if v.at else ""}


def verdict_phrase(v: verdicts.Verdict | None, lang: str = "en") -> str:
    """A verdict in words ('shown', 'shown absent: inside 0.5 ± 0.03', 'undecided: MDE 0.108 at n = 169; n ≈
    2,181 would decide it (at the margin)'); 'not run yet' without one."""
    if v is None:
        return words("missing", lang=lang)
    return words("verdict", verdict_category(v), lang, **_verdict_values(v, lang))


def verdict_cell(v: verdicts.Verdict | None) -> str:
    """'English / 中文' verdict for a table's verdict column."""
    return verdict_phrase(v, "en") + SPLIT + verdict_phrase(v, "zh")


def verdict_of(ci, null, kind: str, *, n=None, estimate=None) -> str:
    """`verdict_cell` of `judge`: a table's verdict column for one interval."""
    return verdict_cell(judge(ci, null, kind, n=n, estimate=estimate))


def with_verdict(text: str, v: verdicts.Verdict | None, lang: str = "en") -> str:
    """A sentence's reading followed by its verdict in brackets (nothing added without a verdict)."""
    return text if v is None else f"{text} [{verdict_phrase(v, lang)}]"


def said(key: str, ci, null, kind: str, lang: str = "en", *, size=None, estimate=None, **values) -> str:
    """The words of reading `key` for where `ci` lies against `null` ({placeholders} from `values`), followed by
    the interval's verdict against the margin of `kind` (`with_verdict`), `size` the sample behind it."""
    return with_verdict(words(key, ci_vs(ci, null), lang, **values),
                        judge(ci, null, kind, n=size, estimate=estimate), lang)


def margins_table() -> pd.DataFrame:
    """The margins of no practical effect (alignkit.verdicts.MARGINS), one row per kind of quantity, with
    what each covers in both languages (text/readings.yaml `margin_kind`)."""
    kinds = texts()["margin_kind"]
    return pd.DataFrame([{"margin": f"± {value:g}", "covers": kinds[kind]["en"] + SPLIT + kinds[kind]["zh"]}
                         for kind, value in verdicts.MARGINS.items()],
                        index=pd.Index(list(verdicts.MARGINS), name="kind of quantity"))


# ----------------------------------------------------------------------------- words

@lru_cache(maxsize=1)
def texts() -> dict:
    """text/readings.yaml: {reading: {category: {en, zh}}} (plain {en, zh} for fixed sentences)."""
    return yaml.safe_load((TEXT / "readings.yaml").read_text(encoding="utf-8"))


def words(key: str, category: str | None = None, lang: str = "en", **values) -> str:
    """The words of `category` of reading `key` in `lang`, {placeholders} filled from `values`; a missing
    category (None: the step has not run) reads 'not run yet'."""
    entry = texts()[key]
    if category is None and "en" not in entry:
        entry = texts()["missing"]
    elif category is not None:
        entry = entry[category]
    return entry[lang].format(**values)


def both(key: str, category: str | None = None, **values) -> str:
    """'English / 中文' words for a table cell."""
    return words(key, category, "en", **values) + SPLIT + words(key, category, "zh", **values)


NOT_RUN = both("missing")


KINDS = {ci_vs: ("above", "below", "holds"), reproduced: ("same", "different"),
         verdict_category: ("shown", "shown_absent", "undecided", "undecided_no_n"), reference_pass: ("cached", "every_step"),
         training_set: ("eval_only", "train"), token_cap: ("capped", "free"),
         length_explains: ("most", "some", "none"), claim_dpo_scores_lower: ("held", "failed", "undecided"),
         claim_rewards_length: ("held", "failed", "undecided"), claim_out_of_range: ("held", "failed", "undecided"),
         meets_aim: ("met", "missed"), adopted: ("holds", "fails"),
         temperature_effect: ("softens", "sharpens", "flattens", "mixed"),
         goodhart: ("judge_falls", "parts", "tracks", "no_proxy_gain"), safety_tradeoff: TRADEOFF}
"""Every category each reading function can return."""

WORDS = {"rm_vs_chance": ci_vs, "rm_vs_length": ci_vs, "length_matched": ci_vs, "win": ci_vs,
         "length_controlled": ci_vs, "length_change": ci_vs, "token_cap": token_cap, "length_explains": length_explains,
         "claim": claim_dpo_scores_lower, "chance": ci_vs, "overfitting": ci_vs, "reload": reproduced,
         "training_set": training_set, "ev_chance": ci_vs, "ev_preference": ci_vs, "ev_overfitting": ci_vs,
         "ev_ood_gap": ci_vs, "length_trend": ci_vs, "ev_length_rule": ci_vs, "ev_length_matched": ci_vs,
         "ev_training_gain": ci_vs, "ev_length_change": ci_vs, "ev_length_controlled": ci_vs,
         "label_conflict": ci_vs, "reference_pass": reference_pass, "ev_dpo_ranking": ci_vs,
         "ev_dpo_gap": ci_vs, "ev_judge": ci_vs, "aim": meets_aim, "parity": ci_vs,
         "verdict": verdict_category, "gold_vs_random": ci_vs, "gold_vs_longest": ci_vs, "safety_pairs_rm": ci_vs,
         "safety_pairs_vs_rule": ci_vs, "exp_bon_proxy": ci_vs,
         "bfloat16": adopted, "verdict_preference": ci_vs, "verdict_at_equal": ci_vs, "verdict_cap": token_cap,
         "exp_slope": ci_vs, "exp_length_link": ci_vs, "exp_debias_change": ci_vs, "exp_ece_change": ci_vs,
         "exp_temperature": temperature_effect, "ev_debias_change": ci_vs, "ev_calibration": ci_vs,
         "sweep_vs_rule": ci_vs, "exp_goodhart": goodhart, "exp_safety_tradeoff": safety_tradeoff, "bon_judge": ci_vs,
         "exp_bon_cost": ci_vs, "exp_bon_length": ci_vs,
         "ev_goodhart": goodhart}
"""Which reading function decides the category of each entry of text/readings.yaml that has categories."""
