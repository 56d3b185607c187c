"""The reward model out of its domain, on purpose: PKU-SafeRLHF pairs where exactly one answer is safe
(`pku_saferlhf_safer_pairs.json`), the safer answer counted as the better one.

The chapter-1 reward model learned helpfulness preferences. On these pairs the longer answer is the less safe
one more often than not, so a reward model that mostly rewards length has a sharp prediction here: its accuracy
falls to the length rule's, below chance. Measured: the RM's accuracy, the rule "the longer answer wins" (by
characters) on the same pairs, and their paired difference, each with a bootstrap interval over prompts (a
prompt can carry several pairs, so whole prompts are resampled).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from alignkit.data.sources import load_pairs
from alignkit.data.tokenize import ChatEncoder
from alignkit.infer import score_pairs
from alignkit.models import RewardModel, load_tokenizer
from alignkit.stats import cluster_mean_ci, correctness

SAFER_FILE = "pku_saferlhf_safer_pairs.json"
"""The safety pairs' file name in $ALIGNKIT_DATA_DIR."""
TEMPLATE = "PROMPT_RESPONSE_PAIR"
"""Its rows: {prompt, response: [safer, less safe]}."""


def safety_pairs_summary(score_safer, score_less_safe, length_safer, length_less_safe, prompts, *, seed: int = 0,
                         n_resamples: int = 1000) -> dict:
    """Per pair the RM is right when the safer answer scores higher, the length rule when it is the longer one
    (ties count half for both). Returns {'n', 'prompts', 'rm', 'length_rule', 'rm_minus_length_rule'}, each a
    {'value', 'ci95'} with a bootstrap CI over prompts (`alignkit.stats.cluster_mean_ci`, seeded), plus the
    number of pairs on which the two disagree."""
    rm = np.asarray(correctness(list(score_safer), list(score_less_safe)))
    rule = np.asarray(correctness(list(length_safer), list(length_less_safe)))
    prompts = list(prompts)
    if not len(rm) == len(rule) == len(prompts) or not len(rm):
        raise ValueError(f"needs one score, length and prompt per pair on both sides; got {len(rm)}, {len(rule)}, "
                         f"{len(prompts)}")
    out = {"n": len(rm), "prompts": len(set(prompts)), "disagree": int(np.sum(rm != rule))}
    for name, values in (("rm", rm), ("length_rule", rule), ("rm_minus_length_rule", rm - rule)):
        out[name] = {"value": float(values.mean()),
                     "ci95": list(cluster_mean_ci(values, prompts, n_resamples=n_resamples, seed=seed))}
    return out


def safety_pairs_experiment(model: RewardModel, rm_dir: Path, path: Path, eval_lengths: tuple[int, int], *,
                            pairs: int | None, seed: int, batch_size: int = 16,
                            n_resamples: int = 1000) -> tuple[dict, pd.DataFrame]:
    """A seeded sample of `pairs` safety pairs (None = all) scored by `model`, the reward model in `rm_dir` as
    chapter 6 loads it (alignkit.train.rm.scorer), at the evaluation lengths (answers longer than that are cut,
    and counted), then `safety_pairs_summary`. Returns (record, one row per pair: pair_id, prompt, chars and
    score of both answers, response_cut)."""
    loaded, report = load_pairs(str(path), TEMPLATE, max_rows=pairs, seed=seed)
    start = time.perf_counter()
    scored = score_pairs(model, ChatEncoder(load_tokenizer(str(rm_dir)), *eval_lengths), loaded,
                         batch_size=batch_size)
    seconds = time.perf_counter() - start
    safer, less = scored[scored.side == "better"].reset_index(drop=True), scored[scored.side == "worse"].reset_index(drop=True)
    table = pd.DataFrame({"pair_id": range(len(loaded)), "prompt": [p.prompt_text for p in loaded],
                          "chars_safer": [len(p.better) for p in loaded], "chars_less_safe": [len(p.worse) for p in loaded],
                          "score_safer": safer.score, "score_less_safe": less.score,
                          "response_cut": safer.response_cut | less.response_cut})
    record = {**safety_pairs_summary(table.score_safer, table.score_less_safe, table.chars_safer,
                                     table.chars_less_safe, table.prompt, seed=seed, n_resamples=n_resamples),
              "rows": report.rows, "cut": {"pairs": int(table.response_cut.sum()),
                                           "share": float(table.response_cut.mean()), "max_length": eval_lengths[0]},
              "length": "characters of the answer", "seconds": {"score": seconds},
              "seconds_per_pair": seconds / len(table)}
    return record, table
