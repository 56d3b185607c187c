"""Best-of-n against a proxy reward model, judged by a second scorer (chapter 6).

Given k samples per prompt, each scored by the proxy (the reward model that picks) and by an independent
judge, `best_of_n` gives, for each n <= k, the expected proxy and judge score of the sample that the proxy
ranks highest among n drawn without replacement. It uses the exact estimator over all C(k, n) subsets, so no
resampling noise enters. `kl_bon` is the analytic KL divergence of the best-of-n policy from the base policy
(Stiennon et al., 2020; Gao et al., 2023), the usual x-axis of over-optimisation curves.

`bon_experiment` makes the samples: k responses per held-out prompt from the BASE policy
(alignkit.infer.generate, seeded), scored by the proxy (chapter 1's trained reward model,
alignkit.infer.score_texts) and by two judges fitted on disjoint data (PKU-SafeRLHF), the safety experiment's
saved reward head (helpfulness) and cost head (harm) on the base model's frozen features
(alignkit.experiments.safety.score_with_heads). Over-optimisation in Goodhart's sense shows as a proxy gain
that keeps rising with n while the judge's gain stalls or falls. The picked response's length and whether it
hit the token cap are read the same way (as "judges"), which shows how much of the proxy's choice is length.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pandas as pd
import torch
from scipy.special import comb
from transformers import AutoModelForCausalLM

from alignkit.config import GenerationConfig
from alignkit.data.sources import load_pairs
from alignkit.data.splits import seeded_sample
from alignkit.data.tokenize import ChatEncoder
from alignkit.experiments.safety import score_with_heads
from alignkit.infer import decoding_settings, generate, score_texts
from alignkit.models import compute_device, load_tokenizer, resolve_model, weights_dtype
from alignkit.stats import bootstrap_ci, correlations
from alignkit.train.rm import scorer


def kl_bon(n: int) -> float:
    """KL(best-of-n policy || base policy) = log n - (n - 1) / n, in nats (0 at n = 1)."""
    if n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    return math.log(n) - (n - 1) / n


def selection_weights(k: int, n: int) -> np.ndarray:
    """(k,) probabilities that the i-th smallest of k values (i = 1..k) is the largest of a uniformly random
    n-subset: C(i - 1, n - 1) / C(k, n). They sum to 1."""
    if not 1 <= n <= k:
        raise ValueError(f"best-of-{n} needs 1 <= n <= k = {k} samples per prompt")
    i = np.arange(1, k + 1)
    return comb(i - 1, n - 1, exact=False) / comb(k, n, exact=False)


def _sorted_by_proxy(proxy: np.ndarray, judge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, proxy and judge sorted by proxy ascending. Within a proxy tie, each judge score is
    replaced by the tie's mean judge score. The pick among tied samples is uniform, so this keeps the
    estimator exact."""
    order = np.argsort(proxy, axis=1, kind="stable")
    p, j = np.take_along_axis(proxy, order, 1), np.take_along_axis(judge, order, 1).copy()
    for row in range(len(p)):
        _, start, counts = np.unique(p[row], return_index=True, return_counts=True)
        for s, c in zip(start, counts):
            if c > 1:
                j[row, s:s + c] = j[row, s:s + c].mean()
    return p, j


def expected_pick(scores_proxy, scores_judge, n: int) -> np.ndarray:
    """(P,) per prompt, the judge score of the proxy's pick among n of the k samples, averaged exactly over
    all C(k, n) n-subsets: with the samples sorted by proxy (ascending), the j-th (0-based) is the subset's
    maximum with probability C(j, n - 1) / C(k, n) (`selection_weights`). Proxy ties are handled
    deterministically: tied samples share their mean judge score (`_sorted_by_proxy`), which is the expected
    judge score of a uniform pick among them. `scores_proxy`, `scores_judge`: (P, k)."""
    proxy, judge = np.asarray(scores_proxy, float), np.asarray(scores_judge, float)
    if proxy.ndim != 2 or proxy.shape != judge.shape:
        raise ValueError(f"proxy and judge scores must be (prompts, samples) arrays of one shape, got "
                         f"{proxy.shape} and {judge.shape}")
    _, j = _sorted_by_proxy(proxy, judge)
    return j @ selection_weights(proxy.shape[1], n)


def best_of_n(scores_proxy, scores_judge, n_values, seed: int = 0, *, n_resamples: int = 1000) -> list[dict]:
    """Best-of-n curves from k samples per prompt.

    `scores_proxy` and `scores_judge` are (P, k) arrays: for each of P prompts, k >= max(n_values) samples
    scored by the proxy and by the judge. For each n, the expected proxy and judge score of the
    proxy-chosen sample among n random samples is the exact average over all n-subsets (`selection_weights`),
    taken per prompt and then averaged over prompts. Ties in the proxy are broken uniformly at random. The
    CIs are bootstrap CIs over prompts, seeded by `seed`. `*_gain` is the difference to n = 1 (the base
    policy's mean), with its CI from the same resamples of prompts.
    Returns one dict per n: {'n', 'kl_bon', 'proxy', 'proxy_ci95', 'judge', 'judge_ci95', 'proxy_gain',
    'proxy_gain_ci95', 'judge_gain', 'judge_gain_ci95', 'prompts', 'k'}."""
    proxy, judge = np.asarray(scores_proxy, float), np.asarray(scores_judge, float)
    if proxy.ndim != 2 or proxy.shape != judge.shape:
        raise ValueError(f"proxy and judge scores must be (prompts, samples) arrays of one shape, got "
                         f"{proxy.shape} and {judge.shape}")
    prompts, k = proxy.shape
    if not n_values or max(n_values) > k:
        raise ValueError(f"best-of-n for n in {list(n_values)} needs at least max(n) samples per prompt; got k = {k}")
    p, j = _sorted_by_proxy(proxy, judge)
    one = selection_weights(k, 1)  # best-of-1 = the mean, by the same arithmetic, so the gain at n = 1 is exactly 0
    out = []
    for n in n_values:
        w = selection_weights(k, n)
        per_prompt = np.column_stack([p @ w, j @ w, p @ one, j @ one])  # best-of-n and best-of-1 per prompt

        def column(c, minus=None):
            return lambda r: float(np.mean(r[:, c] - (0 if minus is None else r[:, minus])))
        row = {"n": n, "kl_bon": kl_bon(n), "prompts": prompts, "k": k}
        for name, c in (("proxy", 0), ("judge", 1)):
            row[name] = column(c)(per_prompt)
            row[f"{name}_ci95"] = list(bootstrap_ci(per_prompt, column(c), n_resamples=n_resamples, seed=seed))
            row[f"{name}_gain"] = column(c, c + 2)(per_prompt)
            row[f"{name}_gain_ci95"] = list(bootstrap_ci(per_prompt, column(c, c + 2), n_resamples=n_resamples,
                                                         seed=seed))
        out.append(row)
    return out


def n_grid(k: int) -> list[int]:
    """The n at which best-of-n is read from k samples per prompt: 1, 2, 4, ... (powers of two below k), and k."""
    if k < 1:
        raise ValueError(f"best-of-n needs at least one sample per prompt, got k = {k}")
    return sorted({2 ** i for i in range(k.bit_length()) if 2 ** i < k} | {k})


def _spearman(x, y) -> float | None:
    """Spearman's rho of two equal-length sequences; None when either is constant (rho is undefined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return correlations(x, y)["spearman"]


def summarize_samples(table: pd.DataFrame, *, seed: int = 0, n_resamples: int = 1000) -> dict:
    """Best-of-n curves from a per-sample table (one row per prompt x sample, `prompt_id` then `sample`
    order, k samples per prompt; columns proxy, judge, cost, response_tokens, hit_limit): for each of judge,
    cost, tokens (the picked response's length) and capped (whether it hit the token cap), `best_of_n` with
    the proxy picking at every n of `n_grid(k)`. Also the scorers' population standard deviations over all
    samples (the unit in which gains are compared), the cap rate and Spearman correlations over all samples."""
    counts = table.groupby("prompt_id", sort=False).size()
    if counts.nunique() != 1:
        raise ValueError(f"every prompt needs the same number of samples; got {sorted(set(counts))}")
    prompts, k = len(counts), int(counts.iloc[0])
    if (table.prompt_id != table.prompt_id.shift()).sum() != prompts:
        raise ValueError("each prompt's samples must be consecutive rows (prompt_id, then sample order)")
    grid = n_grid(k)

    def wide(column):
        return table[column].to_numpy(float).reshape(prompts, k)
    proxy = wide("proxy")
    judges = {"judge": wide("judge"), "cost": wide("cost"), "tokens": wide("response_tokens"),
              "capped": wide("hit_limit")}
    return {
        "prompts": prompts, "samples": k, "responses": prompts * k, "n_values": grid,
        "curves": {name: best_of_n(proxy, scores, grid, seed, n_resamples=n_resamples)
                   for name, scores in judges.items()},
        "scales": {name: float(np.std(table[name].to_numpy(float))) for name in ("proxy", "judge", "cost")},
        "hit_limit": float(table.hit_limit.mean()), "mean_tokens": float(table.response_tokens.mean()),
        "spearman": {"proxy_judge": _spearman(table.proxy, table.judge),
                     "proxy_cost": _spearman(table.proxy, table.cost),
                     "proxy_tokens": _spearman(table.proxy, table.response_tokens),
                     "judge_tokens": _spearman(table.judge, table.response_tokens),
                     "over": "all samples, pooled across prompts"},
    }


# ----------------------------------------------------------------------------- the samples

def bon_generation(cfg) -> GenerationConfig:
    """The decoding settings of the best-of-n samples: `generation`'s, with `best_of_n.max_new_tokens` when set."""
    budget = cfg.best_of_n.max_new_tokens or cfg.generation.max_new_tokens
    return dataclasses.replace(cfg.generation, max_new_tokens=budget)


def bon_prompts(cfg, test_split) -> list[tuple[str, tuple]]:
    """[(prompt_id, prompt messages)]: a seeded sample (alignkit.data.splits.seeded_sample, cfg.seed) of
    `best_of_n.prompts` of the unique prompts of the test split file (chapter 1's data/test.jsonl)."""
    pairs = load_pairs(str(test_split), "ALIGNKIT")[0]
    unique = {p.prompt_id: p.prompt for p in pairs}
    return [(i, unique[i]) for i in seeded_sample(sorted(unique), cfg.best_of_n.prompts, cfg.seed)]


def bon_experiment(cfg, prompts: list[tuple[str, tuple]], heads: dict, *, n_resamples: int = 1000
                   ) -> tuple[dict, pd.DataFrame]:
    """k = `best_of_n.samples` responses per prompt from the base policy `cfg.model.name` (`bon_generation`
    decoding, seeded by cfg.seed), each scored by the proxy (the reward model in outputs/<profile>/rm, at the
    evaluation lengths) and by the safety `heads` (reward -> judge, cost -> cost) on the base model's frozen
    features. Returns (`summarize_samples` record with the decoding settings and seconds per phase, one row
    per sample: prompt_id, sample, prompt, response, response_tokens, hit_limit, proxy, judge, cost)."""
    gen, k = bon_generation(cfg), cfg.best_of_n.samples
    if gen.threads:
        torch.set_num_threads(gen.threads)
    flat = [(pid, i, prompt) for pid, prompt in prompts for i in range(k)]
    seconds, start = {}, time.perf_counter()
    lm = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model.name), dtype=weights_dtype(cfg.model.dtype))
    lm = lm.to(compute_device())
    encoder = ChatEncoder(load_tokenizer(cfg.model.name), cfg.data.max_length, cfg.data.max_prompt_length)
    made = generate(lm, encoder, [p for _, _, p in flat], gen, seed=cfg.seed, desc="best-of-n samples")
    del lm
    seconds["generate"] = time.perf_counter() - start
    texts = ([p for _, _, p in flat], [m["response"] for m in made])
    rm_dir = cfg.out / "rm"
    rm = scorer(cfg, rm_dir)
    proxy = score_texts(rm, ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths()), *texts,
                        batch_size=gen.score_batch_size)
    del rm
    seconds["proxy"] = time.perf_counter() - start - seconds["generate"]
    judged = score_with_heads(cfg, heads, *texts)
    seconds["judge"] = time.perf_counter() - start - seconds["generate"] - seconds["proxy"]
    table = pd.DataFrame({"prompt_id": [pid for pid, _, _ in flat], "sample": [i for _, i, _ in flat],
                          "prompt": proxy.prompt, "response": texts[1],
                          "response_tokens": [m["response_tokens"] for m in made],
                          "hit_limit": [m["hit_limit"] for m in made], "proxy": proxy.score,
                          "judge": judged["reward"], "cost": judged["cost"]})
    record = {**summarize_samples(table, seed=cfg.seed, n_resamples=n_resamples),
              "models": {"policy": cfg.model.name, "proxy": "the trained reward model (chapter 1)",
                         "judge": "the safety experiment's reward head (helpfulness, PKU-SafeRLHF)",
                         "cost": "the safety experiment's cost head (harm, PKU-SafeRLHF)"},
              "decoding": decoding_settings(gen, cfg.seed), "seconds": seconds}
    return record, table
