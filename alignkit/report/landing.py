"""The landing page's findings summary, computed from this run's artifacts like every other number in the
book: what the reward model learned and how far beyond the length rule, what DPO changed, which of the
seed study's claims held, and the run's profile, model, data, scale and wall time. The prose lives in
text/findings.{en,zh}.md, text/pages.yaml and text/readings.yaml; numbers are
formatted by alignkit.report.tables, so the summary prints exactly the strings chapters 1 and 5 print."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from alignkit.report import evidence, qa_numbers, readings
from alignkit.report.readings import words
from alignkit.report.tables import MISSING, TEXT, display_path, interval, number, tab_set
from alignkit.stats import wilson_interval

PAGES = yaml.safe_load((TEXT / "pages.yaml").read_text(encoding="utf-8"))
"""Short bilingual labels of the book's pages: chapter links, placeholder titles, the provenance link."""
PLACEHOLDER = tab_set(PAGES["findings"]["heading"], PAGES["findings"]["placeholder"]["en"],
                      PAGES["findings"]["placeholder"]["zh"])
"""The findings section before any run has been staged into the book."""


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def numbers(cfg) -> dict:
    """The summary's numbers: qa_numbers.key_numbers plus the length rule's interval, the generations'
    out-of-range share, the data source and the report's wall time."""
    out = Path(cfg.out)
    n = qa_numbers.key_numbers(cfg)
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
    n["dpo.eval.ci"] = evidence.dpo_accuracy_ci(n, "eval")
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
    RM was trained on. Each: {'en', 'zh', 'evidence', 'evidence_zh', 'status'}, the status held / failed /
    undecided from a 95% interval (alignkit.report.readings), the words from text/pages.yaml."""
    rule, lm_ci = n["rm.longer_wins_acc"], n["rm.length_matched_ci"]
    share, size = n["gen.dpo_outside"], n["gen.n"]
    share_ci = list(wilson_interval(share * size, size)) if share is not None and size else None
    found = {
        "dpo_scores_lower": (readings.claim_dpo_scores_lower(n["gen.win_rate_ci95"]),
                             {"win": win_rate(n), "n": number(n["gen.n"])},
                             readings.judge(n["gen.win_rate_ci95"], 0.5, "proportion", n=n["gen.n"],
                                            estimate=n["gen.win_rate"])),
        "rewards_length": (readings.claim_rewards_length(n["rm.test_ci"], rule, lm_ci),
                           {"rm": rm_accuracy(n), "rule": number(rule),
                            "matched": interval(n["rm.length_matched_acc"], lm_ci)},
                           readings.judge(n["rm.test_ci"], rule, "proportion", n=n["rm.test_n"],
                                          estimate=n["rm.test_acc"])),
        "out_of_range": (readings.claim_out_of_range(share_ci),
                         {"share": interval(share, share_ci, percent=True) if share_ci else MISSING}, None),
    }
    out = []
    for key, (status, values, verdict) in found.items():
        text = PAGES["claims"][key]
        # an undecided claim says the n that would decide it (the verdict of its main interval)
        said = {lang: text["evidence"][lang].format(**values) for lang in ("en", "zh")}
        if status == "undecided" and verdict is not None:
            said = {lang: readings.with_verdict(t, verdict, lang) for lang, t in said.items()}
        out.append({"en": text["en"], "zh": text["zh"], "evidence": said["en"], "evidence_zh": said["zh"],
                    "status": status})
    return out


def _wall(seconds, lang: str) -> str:
    if seconds is None:
        return MISSING
    seconds = float(seconds)
    unit = PAGES["units"]
    return f"{seconds / 60:.1f} {unit['min'][lang]}" if seconds >= 120 else f"{seconds:.0f} {unit['s'][lang]}"


def _values(cfg, n: dict, lang: str) -> dict:
    """The {placeholders} of text/findings.<lang>.md."""
    rows = [f"| {c[lang]} | {c['evidence' if lang == 'en' else 'evidence_zh']} | **{words('claim', c['status'], lang)}** |"
            for c in claims(n)]
    cap = n["gen.hit_limit"]

    def said(key, ci, null, kind, size, estimate, **values):
        return readings.said(key, ci, null, kind, lang, size=size, estimate=estimate, **values)
    return {
        "rm_n": number(n["rm.test_n"]), "rm_acc": rm_accuracy(n),
        "rm_chance": said("rm_vs_chance", n["rm.test_ci"], 0.5, "proportion", n["rm.test_n"], n["rm.test_acc"]),
        "untrained_acc": interval(n["rm.untrained_acc"], n["rm.untrained_ci"]),
        "length_rule": interval(n["rm.longer_wins_acc"], n["rm.longer_wins_ci"]),
        "rm_length": said("rm_vs_length", n["rm.test_ci"], n["rm.longer_wins_acc"], "proportion", n["rm.test_n"],
                          n["rm.test_acc"]),
        "length_matched": said("length_matched", n["rm.length_matched_ci"], 0.5, "proportion",
                               n["rm.length_matched_n"], n["rm.length_matched_acc"],
                               acc=interval(n["rm.length_matched_acc"], n["rm.length_matched_ci"]),
                               n=number(n["rm.length_matched_n"])),
        "dpo_n": number(n["dpo.eval.n"]), "dpo_acc": interval(n["dpo.eval.reward_accuracy"], n["dpo.eval.ci"]),
        "win_n": number(n["gen.n"]), "seeds": number(n["gen.seeds"]), "win": win_rate(n),
        "win_reading": said("win", n["gen.win_rate_ci95"], 0.5, "proportion", n["gen.n"], n["gen.win_rate"]),
        "lc": length_controlled(n),
        "lc_reading": said("length_controlled", n["gen.lc_effect_ci"], 0.0, "reward", n["gen.n"], n["gen.lc_effect"]),
        "len_base": number(n["gen.mean_length_base"]), "len_dpo": number(n["gen.mean_length_dpo"]),
        "len_reading": said("length_change", n["gen.mean_length_difference_ci95"], 0.0, "tokens", n["gen.n"], None),
        "verdicts": evidence.verdicts_sentence(n, lang),
        "token_cap": "" if cap is None else words("token_cap", readings.token_cap(cap), lang,
                                                  share=number(cap, percent=True)),
        "claims": "\n".join(rows),
        "profile": cfg.profile if hasattr(cfg, "profile") else MISSING,
        "model": display_path(cfg.model.name), "data": display_path(n["data.source"] or MISSING),
        "rows": number(n["data.rows"]), "n_train": number(n["data.n_train"]), "n_test": number(n["data.n_test"]),
        "rm_steps": number(n["rm.steps"]), "dpo_steps": number(n["dpo.steps"]), "wall": _wall(n["report.wall_s"], lang),
        "provenance": PAGES["provenance_link"][lang],
        # {doc} paths are relative to book/intro.md, the page that includes this section
        "chapters": " · ".join(f"{{doc}}`{c[lang]} <chapters/{c['name']}>`" for c in PAGES["chapters"]),
    }


def markdown(cfg) -> str:
    """The bilingual findings section (MyST: a tab-set synced with every other language switch)."""
    n = numbers(cfg)
    if n["rm.test_acc"] is None:  # chapter 1 has not run: nothing to summarise yet
        return PLACEHOLDER
    en, zh = ((TEXT / f"findings.{lang}.md").read_text(encoding="utf-8").format(**_values(cfg, n, lang)).strip()
              for lang in ("en", "zh"))
    return tab_set(PAGES["findings"]["heading"], en, zh)
