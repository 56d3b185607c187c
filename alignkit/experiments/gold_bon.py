"""Best-of-n judged by a gold judge: does the reward model's pick among n answers get better by a judge much
stronger than itself?

The data (`alpacaeval_bon11.json`, RewardBench's best-of-n set): AlpacaEval prompts, each with k = 11 answers of
Tulu-2-DPO-13B and, for every answer, AlpacaEval 2's GPT-4-turbo preference for it over one fixed
GPT-3.5-turbo answer (the gold: 1 = the answer wins, 0 = the reference wins, a fraction = the judge's
probability). The mean gold of a set of picks is their win rate against the reference. Nothing is generated
and no API is called: the reward model only scores the 11 answers of each prompt.

For each n = 1..k the gold of a pick rule's best-of-n is the exact average over all n-subsets of the k answers
(`alignkit.experiments.bon.expected_pick`): the reward model (highest score), the longest answer (most
characters), the oracle (highest gold) and a random answer (the mean gold, the same at every n). The paired
differences RM − random and RM − longest are taken prompt by prompt, with bootstrap intervals over prompts.
The proxy curve, the RM's own score of its pick, against the gold curve asks Goodhart's question.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from alignkit.data.splits import seeded_sample
from alignkit.data.tokenize import ChatEncoder
from alignkit.errors import DataError
from alignkit.experiments.bon import expected_pick
from alignkit.infer import score_texts
from alignkit.models import RewardModel, load_tokenizer
from alignkit.stats import bootstrap_ci
from alignkit.verdicts import n_for_half_width

GOLD_FILE = "alpacaeval_bon11.json"
"""The gold best-of-n set's file name in $ALIGNKIT_DATA_DIR."""

RULES = ("rm", "longest", "oracle", "random")
"""The pick rules read at every n: the reward model, the longest answer, the gold itself, a random answer."""


def load_gold(path: Path) -> list[dict]:
    """The rows of the gold set, checked: each an object with `id`, `instruction` (text), `outputs` (k answers)
    and `gold` (k numbers in [0, 1]), the same k in every row; an error names the row and field otherwise."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not JSON ({e.msg} at line {e.lineno})", source=str(path)) from None
    if not isinstance(rows, list) or not rows:
        raise DataError("expected a non-empty JSON array of prompts", source=str(path))
    k = None
    for i, row in enumerate(rows, 1):
        def bad(field, what):
            return DataError(f"{what}; expected fields id, instruction, outputs (k answers), gold (k numbers in "
                             f"[0, 1])", source=str(path), row=i, field=field)
        if not isinstance(row, dict):
            raise bad(None, f"expected an object, got {type(row).__name__}")
        for field in ("id", "instruction", "outputs", "gold"):
            if field not in row:
                raise bad(field, f"missing field {field!r}")
        if not isinstance(row["instruction"], str) or not row["instruction"].strip():
            raise bad("instruction", "the instruction must be non-empty text")
        outputs, gold = row["outputs"], row["gold"]
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise bad("outputs", "outputs must be a list of answer texts")
        if not isinstance(gold, list) or len(gold) != len(outputs):
            raise bad("gold", f"gold must be a list of one number per answer ({len(outputs)})")
        if not all(isinstance(g, (int, float)) and not isinstance(g, bool) and 0 <= g <= 1 for g in gold):
            raise bad("gold", "every gold value must be a number in [0, 1]")
        k = len(outputs) if k is None else k
        if len(outputs) != k or k < 1:
            raise bad("outputs", f"every prompt needs the same number of answers; row 1 has {k}, this one "
                                 f"{len(outputs)}")
    return rows


def pick_prompts(rows: list[dict], prompts: int | None, seed: int) -> list[dict]:
    """A seeded sample (alignkit.data.splits.seeded_sample) of `prompts` rows, ordered by id (None = all)."""
    ordered = sorted(rows, key=lambda r: str(r["id"]))
    return sorted(seeded_sample(ordered, prompts, seed), key=lambda r: str(r["id"]))


def _mean_ci(values: np.ndarray, *, seed: int, n_resamples: int) -> tuple[float, list[float]]:
    return float(values.mean()), list(bootstrap_ci(values, lambda v: float(np.mean(v)), n_resamples=n_resamples,
                                                   seed=seed))


def gold_curves(rm, lengths, gold, n_values, *, seed: int = 0, n_resamples: int = 1000) -> list[dict]:
    """Best-of-n by the gold judge. `rm`, `lengths`, `gold`: (P, k) arrays (the reward model's scores, the
    answers' lengths, the gold values). For each n of `n_values`, the mean over prompts of each pick rule's
    expected gold (RULES; bootstrap 95% CIs over prompts, seeded), the paired differences `rm_minus_random`
    and `rm_minus_longest` (per prompt, then averaged; CIs from the same resamples of prompts), the RM's own
    score of its pick (`proxy`) and its gain over a random answer (`proxy_gain`), and the standard deviation
    over prompts of the per-prompt RM − random difference (`sd_rm_minus_random`, for sizing).
    Returns one dict per n."""
    rm, lengths, gold = (np.asarray(a, float) for a in (rm, lengths, gold))
    if not rm.shape == lengths.shape == gold.shape or rm.ndim != 2:
        raise ValueError(f"rm, lengths and gold must be (prompts, answers) arrays of one shape, got {rm.shape}, "
                         f"{lengths.shape}, {gold.shape}")
    k = rm.shape[1]
    if not n_values or min(n_values) < 1 or max(n_values) > k:
        raise ValueError(f"best-of-n for n in {list(n_values)} needs 1 <= n <= k = {k}")
    # a random answer is best-of-1 by any rule; one array for all of them keeps every difference at n = 1 exactly 0
    random_pick, proxy_random = expected_pick(rm, gold, 1), expected_pick(rm, rm, 1)
    out = []
    for n in n_values:
        per = {"rm": expected_pick(rm, gold, n), "longest": expected_pick(lengths, gold, n),
               "oracle": expected_pick(gold, gold, n), "random": random_pick}
        if n == 1:
            per.update(rm=random_pick, longest=random_pick, oracle=random_pick)
        row = {"n": n, "k": k, "prompts": len(gold)}
        for name, values in per.items():
            row[name], row[f"{name}_ci95"] = _mean_ci(values, seed=seed, n_resamples=n_resamples)
        for other in ("random", "longest"):
            diff = per["rm"] - per[other]
            row[f"rm_minus_{other}"], row[f"rm_minus_{other}_ci95"] = _mean_ci(diff, seed=seed, n_resamples=n_resamples)
            row[f"sd_rm_minus_{other}"] = float(diff.std(ddof=1)) if len(diff) > 1 else None
        proxy = expected_pick(rm, rm, n)
        row["proxy"], row["proxy_ci95"] = _mean_ci(proxy, seed=seed, n_resamples=n_resamples)
        row["proxy_gain"], row["proxy_gain_ci95"] = _mean_ci(proxy - proxy_random, seed=seed, n_resamples=n_resamples)
        out.append(row)
    return out


def rule_spread(lengths, gold, n: int) -> dict:
    """How much a pick rule can move the gold per prompt, without a reward model: the standard deviation over
    prompts of longest − random and oracle − random at best-of-n. It bounds the per-prompt spread of RM − random
    for sizing (a reward model that picks by length spreads like the first, a perfect one like the second)."""
    lengths, gold = np.asarray(lengths, float), np.asarray(gold, float)
    random_pick = gold.mean(1)
    return {"n": n, "prompts": len(gold),
            "sd_longest_minus_random": float((expected_pick(lengths, gold, n) - random_pick).std(ddof=1)),
            "sd_oracle_minus_random": float((expected_pick(gold, gold, n) - random_pick).std(ddof=1))}


def sizing(rows: list[dict], half_width: float = 0.05) -> dict:
    """The prompts a best-of-k run needs for a 95% interval of RM − random at n = k no wider than ±`half_width`,
    from the data alone: `rule_spread` over all `rows` (longest and oracle bound what a reward model's pick can
    spread), and `alignkit.verdicts.n_for_half_width` at the larger of the two standard deviations."""
    lengths = np.array([[len(o) for o in r["outputs"]] for r in rows], float)
    gold = np.array([r["gold"] for r in rows], float)
    spread = rule_spread(lengths, gold, lengths.shape[1])
    sd = max(spread["sd_longest_minus_random"], spread["sd_oracle_minus_random"])
    return {**spread, "half_width": half_width, "prompts_needed": n_for_half_width(sd, half_width)}


def gold_bon_experiment(model: RewardModel, rm_dir: Path, rows: list[dict], eval_lengths: tuple[int, int], *,
                        batch_size: int = 16, seed: int = 0, n_resamples: int = 1000) -> tuple[dict, pd.DataFrame]:
    """Score every answer of `rows` with `model`, the reward model in `rm_dir` as chapter 6 loads it
    (alignkit.train.rm.scorer), through alignkit.infer.score_texts at the evaluation lengths `eval_lengths`
    (answers longer than that are cut, and counted), then `gold_curves` for n = 1..k. Returns (record, one row
    per prompt x answer: id, dataset, answer, chars, response_tokens, response_cut, score, gold)."""
    k = len(rows[0]["outputs"])
    flat = [(r, i) for r in rows for i in range(k)]
    prompts = [({"role": "user", "content": r["instruction"]},) for r, _ in flat]
    answers = [r["outputs"][i] for r, i in flat]
    start = time.perf_counter()
    scored = score_texts(model, ChatEncoder(load_tokenizer(str(rm_dir)), *eval_lengths), prompts, answers,
                         batch_size=batch_size)
    seconds = time.perf_counter() - start
    table = pd.DataFrame({"id": [r["id"] for r, _ in flat], "dataset": [r.get("dataset") for r, _ in flat],
                          "answer_index": [i for _, i in flat], "answer": answers,
                          "chars": [len(a) for a in answers], "response_tokens": scored.response_tokens,
                          "response_cut": scored.response_cut, "score": scored.score,
                          "gold": [float(r["gold"][i]) for r, i in flat]})

    def wide(column):
        return table[column].to_numpy(float).reshape(len(rows), k)
    record = {"prompts": len(rows), "k": k, "answers": len(table), "n_values": list(range(1, k + 1)),
              "curves": gold_curves(wide("score"), wide("chars"), wide("gold"), range(1, k + 1), seed=seed,
                                    n_resamples=n_resamples),
              "cut": {"answers": int(table.response_cut.sum()), "share": float(table.response_cut.mean()),
                      "max_length": eval_lengths[0]},
              "mean_response_tokens": float(table.response_tokens.mean()),
              "length": "characters of the answer", "seconds": {"score": seconds},
              "seconds_per_answer": seconds / len(table)}
    return record, table

