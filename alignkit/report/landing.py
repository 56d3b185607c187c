"""The landing page's findings summary, computed from this run's artifacts like every other number in the
book: what the reward model learned and how far beyond the length rule, what DPO changed, which of the
seed study's claims held, and the run's profile, model, data, scale and wall time. The prose lives in
alignkit/text/findings.{en,zh}.md and readings.yaml; numbers are formatted by alignkit.report.tables, so the
summary prints exactly the strings chapters 1 and 5 print."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import yaml

from alignkit.report import evidence
from alignkit.stats import wilson_interval
from alignkit.report.tables import MISSING, TEXT, display_path, interval, number

CHAPTER_LINKS = [("01_reward_model", "1. Reward model", "1. 奖励模型"),
                 ("02_evaluation_pitfalls", "2. Evaluation", "2. 评估"),
                 ("03_preference_visualization", "3. What the RM learned", "3. 奖励模型学到了什么"),
                 ("04_dpo", "4. DPO", "4. DPO"), ("05_dpo_inference", "5. DPO inference", "5. DPO 推理"),
                 ("06_analysis_qa", "6. Analysis Q&A", "6. 分析问答"), ("07_performance", "7. Performance", "7. 性能"),
                 ("provenance", "Provenance", "溯源")]


@lru_cache(maxsize=1)
def readings() -> dict:
    return yaml.safe_load((TEXT / "readings.yaml").read_text(encoding="utf-8"))


def side(ci, null: float) -> str | None:
    """'above' / 'below' / 'inside': where a 95% interval lies relative to `null` (None when missing)."""
    if not ci or any(v is None for v in ci) or null is None:
        return None
    return "above" if ci[0] > null else "below" if ci[1] < null else "inside"


def _say(key: str, where: str | None, lang: str, **values) -> str:
    if where is None:
        return readings()["claim"]["missing"][lang]
    return readings()[key][where][lang].format(**values)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def numbers(cfg) -> dict:
    """The summary's numbers: evidence.key_numbers plus the length rule's interval, the generations'
    out-of-range share, the data source and the report's wall time."""
    out = Path(cfg.out)
    n = evidence.key_numbers(cfg)
    rm, gen = _load(out / "rm" / "metrics.json"), _load(out / "generations" / "summary.json")
    rule = (rm.get("eval") or {}).get("length", {}).get("longer_wins") or {}
    n["rm.longer_wins_ci"] = rule.get("ci95")
    n["rm.longer_wins_n"] = rule.get("n")
    test = gen.get("test") or {}
    oor = (test.get("out_of_range") or {}).get("dpo")
    n["gen.dpo_outside"] = None if oor is None else oor["below"] + oor["above"]
    n["gen.hit_limit"] = None if not test else max(test.get("hit_limit_base", 0), test.get("hit_limit_dpo", 0))
    n["gen.mean_length_difference_ci95"] = test.get("mean_length_difference_ci95")
    data = rm.get("data") or {}
    n["data.source"] = (data.get("train_source") or {}).get("path")
    n["data.rows"] = (data.get("train_source") or {}).get("rows")
    n["data.n_train"], n["data.n_test"] = data.get("n_train"), data.get("n_eval")
    times = _load(out / "report_times.json")
    n["report.wall_s"] = times.get("total_s") or (sum(times.get("notebooks", {}).values()) or None)
    n["dpo.eval.ci"] = evidence._accuracy_ci(n, "eval")
    return n


def rm_accuracy(n: dict) -> str:
    """The RM's held-out accuracy as chapter 1 prints it."""
    return interval(n["rm.test_acc"], n["rm.test_ci"])


def win_rate(n: dict) -> str:
    """DPO's win rate over base on test prompts as chapter 5 prints it."""
    return interval(n["gen.win_rate"], n["gen.win_rate_ci95"])


def length_controlled(n: dict) -> str:
    return interval(n["gen.lc_effect"], n["gen.lc_effect_ci"], signed=True)


def claims(n: dict) -> list[dict]:
    """The seed study's three claims about DPO (chapter 5): its answers score lower than the base model's;
    because the reward model mostly rewards length; and because DPO's answers fall outside the scores the
    RM was trained on. Each: held / failed / undecided from a 95% interval, with the evidence."""
    out = []
    lo_hi = n["gen.win_rate_ci95"]
    where = side(lo_hi, 0.5)
    out.append({"en": "DPO's answers score lower than the base model's (RM-judged)",
                "zh": "DPO 的回答得分低于基座模型（奖励模型评判）",
                "evidence": f"win rate {win_rate(n)}, n = {number(n['gen.n'])}",
                "evidence_zh": f"胜率 {win_rate(n)}，n = {number(n['gen.n'])}",
                "status": None if where is None else {"below": "held", "above": "failed"}.get(where, "undecided")})
    rule, ci, lm_ci = n["rm.longer_wins_acc"], n["rm.test_ci"], n["rm.length_matched_ci"]
    status = None
    if rule is not None and ci:
        status = ("failed" if ci[0] > rule or (lm_ci and lm_ci[0] > 0.5) else
                  "held" if ci[1] < rule else "undecided")
    lm = interval(n["rm.length_matched_acc"], lm_ci)
    out.append({"en": "the reward model mostly rewards length",
                "zh": "奖励模型主要奖励长度",
                "evidence": f"RM {rm_accuracy(n)} vs length rule {number(rule)}; length-matched {lm}",
                "evidence_zh": f"奖励模型 {rm_accuracy(n)}，长度规则 {number(rule)}；长度匹配 {lm}",
                "status": status})
    share, size = n["gen.dpo_outside"], n["gen.n"]
    status = None
    if share is not None and size:
        low, high = wilson_interval(share * size, size)
        share_text = interval(share, [low, high], percent=True)
        # a 1-99% range leaves 2% of the RM's own dataset scores outside it
        status = "held" if low > 0.02 else "failed" if high < 0.10 else "undecided"
    else:
        share_text = MISSING
    out.append({"en": "DPO's answers fall outside the RM's score range (out of distribution)",
                "zh": "DPO 的回答落在奖励模型的分数范围之外（分布外）",
                "evidence": f"{share_text} of DPO answers outside the 1–99% range of dataset scores (2% expected)",
                "evidence_zh": f"{share_text} 的 DPO 回答超出数据集分数的 1–99% 区间（预期 2%）",
                "status": status})
    return out


def _wall(seconds) -> str:
    if seconds is None:
        return MISSING
    seconds = float(seconds)
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def markdown(cfg) -> str:
    """The bilingual findings section (MyST: a tab-set synced with every other language switch)."""
    n = numbers(cfg)
    if n["rm.test_acc"] is None:  # chapter 1 has not run: nothing to summarise yet
        return PLACEHOLDER
    texts = {}
    for lang in ("en", "zh"):
        rows = []
        for c in claims(n):
            verdict = readings()["claim"][c["status"] or "missing"][lang]
            rows.append(f"| {c[lang]} | {c['evidence' if lang == 'en' else 'evidence_zh']} | **{verdict}** |")
        cap = n["gen.hit_limit"]
        chapters = " · ".join(f"{{doc}}`{title} <chapters/{name}>`" for name, *titles in CHAPTER_LINKS
                              for title in [titles[0 if lang == "en" else 1]])
        wall = _wall(n["report.wall_s"])
        values = {
            "rm_n": number(n["rm.test_n"]), "rm_acc": rm_accuracy(n),
            "rm_chance": _say("rm_vs_chance", side(n["rm.test_ci"], 0.5), lang),
            "untrained_acc": interval(n["rm.untrained_acc"], n["rm.untrained_ci"]),
            "length_rule": interval(n["rm.longer_wins_acc"], n["rm.longer_wins_ci"]),
            "rm_length": _say("rm_vs_length", side(n["rm.test_ci"], n["rm.longer_wins_acc"]), lang),
            "length_matched": _say("length_matched", side(n["rm.length_matched_ci"], 0.5), lang,
                                   acc=interval(n["rm.length_matched_acc"], n["rm.length_matched_ci"]),
                                   n=number(n["rm.length_matched_n"])),
            "dpo_n": number(n["dpo.eval.n"]), "dpo_acc": interval(n["dpo.eval.reward_accuracy"], n["dpo.eval.ci"]),
            "win_n": number(n["gen.n"]), "win": win_rate(n),
            "win_reading": _say("win", side(n["gen.win_rate_ci95"], 0.5), lang),
            "lc": length_controlled(n), "lc_reading": _say("length_controlled", side(n["gen.lc_effect_ci"], 0.0), lang),
            "len_base": number(n["gen.mean_length_base"]), "len_dpo": number(n["gen.mean_length_dpo"]),
            "len_reading": _say("length_change", side(n["gen.mean_length_difference_ci95"], 0.0), lang),
            "token_cap": readings()["token_cap"][lang].format(share=number(cap, percent=True))
            if cap is not None and cap > 0.5 else "",
            "claims_en": "\n".join(rows), "claims_zh": "\n".join(rows),
            "profile": cfg.profile if hasattr(cfg, "profile") else MISSING,
            "model": display_path(cfg.model.name), "data": display_path(n["data.source"] or MISSING),
            "rows": number(n["data.rows"]), "n_train": number(n["data.n_train"]), "n_test": number(n["data.n_test"]),
            "rm_steps": number(n["rm.steps"]), "dpo_steps": number(n["dpo.steps"]),
            "wall": wall if lang == "en" else wall.replace(" min", " 分钟").replace(" s", " 秒"),
            "provenance": "{doc}`the provenance page <chapters/provenance>`" if lang == "en"
            else "{doc}`溯源页 <chapters/provenance>`",
            "chapters": chapters,
        }
        texts[lang] = (TEXT / f"findings.{lang}.md").read_text(encoding="utf-8").format(**values).strip()
    # {doc} paths are relative to book/intro.md, the page that includes this section
    return ("## Findings / 主要发现\n\n::::{tab-set}\n:sync-group: lang\n\n:::{tab-item} English\n:sync: en\n"
            f"{texts['en']}\n:::\n\n:::{{tab-item}} 中文\n:sync: zh\n{texts['zh']}\n:::\n::::\n")


PLACEHOLDER = """## Findings / 主要发现

::::{tab-set}
:sync-group: lang

:::{tab-item} English
:sync: en
No run has been staged into this book yet: `make report` computes the findings from the run's artifacts.
:::

:::{tab-item} 中文
:sync: zh
本书尚未载入任何运行结果：`make report` 会根据运行产物计算主要发现。
:::
::::
"""


def generation_reading(n: dict) -> tuple[str, str]:
    """Chapter 5's verdict on test prompts, in both languages, from the same numbers as the landing page."""
    out = []
    for lang in ("en", "zh"):
        win = _say("win", side(n["gen.win_rate_ci95"], 0.5), lang)
        lc = _say("length_controlled", side(n["gen.lc_effect_ci"], 0.0), lang)
        length = _say("length_change", side(n["gen.mean_length_difference_ci95"], 0.0), lang)
        cap = n["gen.hit_limit"]
        caveat = readings()["token_cap"][lang].format(share=number(cap, percent=True)) if cap and cap > 0.5 else ""
        if lang == "en":
            text = (f"On {number(n['gen.n'])} held-out test prompts DPO wins {win_rate(n)} of the comparisons: {win}. "
                    f"The length-controlled effect is {length_controlled(n)}: {lc}; {length} "
                    f"({number(n['gen.mean_length_base'])} → {number(n['gen.mean_length_dpo'])} tokens). {caveat}")
        else:
            text = (f"在 {number(n['gen.n'])} 个留出测试提示上，DPO 的胜率为 {win_rate(n)}：{win}。"
                    f"控制长度后的效应为 {length_controlled(n)}：{lc}；{length}"
                    f"（{number(n['gen.mean_length_base'])} → {number(n['gen.mean_length_dpo'])} 个 token）。{caveat}")
        out.append(text.strip())
    return out[0], out[1]
