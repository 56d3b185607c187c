"""One online round of DPO, the `online` method of the DPO variants (chapter 6): is DPO on- or
off-policy, measured.

The base policy, which is also DPO's reference (so this is round one of online DPO), answers every prompt of
the offline training pairs twice (seeded; the variants' decoding settings); chapter 1's reward model scores
both answers; the higher-scored one is the better answer of an on-policy pair, and a tie (equal scores, e.g. two
identical answers) is dropped and counted. alignkit.experiments.variants then trains DPO's sigmoid loss on these
pairs exactly as it trains `sigmoid` on the dataset's pairs of the same prompts (the same trainable parameters,
optimiser, batch size and number of optimiser steps) and reads the policy like every other method.

Caveat: the win rate of every method is judged by the reward model that labelled these pairs, so an online
gain can be a gain at agreeing with that labeller (a Goodhart risk; chapter 6's best-of-n compares the proxy
with an independent judge).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from alignkit.data.templates import Message, PreferencePair
from alignkit.data.tokenize import ChatEncoder
from alignkit.infer import generate, score_texts
from alignkit.stats import correctness, paired_difference

SAMPLES = 2
"""Answers the base policy samples per training prompt (one on-policy pair each)."""


def label_samples(prompts: Sequence[Sequence[Message]], first: Sequence[dict], second: Sequence[dict],
                  first_scores: Sequence[float], second_scores: Sequence[float]
                  ) -> tuple[list[PreferencePair], pd.DataFrame]:
    """Two answers per prompt ({'response', 'response_tokens'} each, as alignkit.infer.generate returns them)
    and their reward-model scores -> (the on-policy pairs of the untied prompts, in input order: the
    higher-scored answer is `better`; a table with one row per prompt: `tie`, `margin` (better minus worse
    score, 0 for a tie), `better_tokens`, `worse_tokens`)."""
    if not len(prompts) == len(first) == len(second) == len(first_scores) == len(second_scores):
        raise ValueError("prompts, both answers and both scores must have one entry per prompt")
    pairs, rows = [], []
    for i, (prompt, a, b, sa, sb) in enumerate(zip(prompts, first, second, first_scores, second_scores)):
        tie = float(sa) == float(sb)
        better, worse = (a, b) if sa > sb else (b, a)
        rows.append({"prompt": i, "tie": tie, "margin": abs(float(sa) - float(sb)),
                     "better_tokens": better["response_tokens"], "worse_tokens": worse["response_tokens"]})
        if not tie:
            pairs.append(PreferencePair(tuple(prompt), better["response"], worse["response"],
                                        {"source": "online", "prompt": i}))
    return pairs, pd.DataFrame(rows, columns=["prompt", "tie", "margin", "better_tokens", "worse_tokens"])


def sample_onpolicy(lm, encoder: ChatEncoder, rm, rm_encoder: ChatEncoder, prompts: Sequence[Sequence[Message]],
                    gen, *, seed: int, batch_size: int) -> tuple[list[PreferencePair], pd.DataFrame]:
    """`lm` (the base policy) answers each prompt SAMPLES times in one seeded generation call; `rm` scores every
    answer on `rm_encoder`; `label_samples` makes the pairs. Returns its (pairs, per-prompt table)."""
    flat = [p for p in prompts for _ in range(SAMPLES)]
    made = generate(lm, encoder, flat, gen, seed=seed, desc="on-policy samples")
    scores = score_texts(rm, rm_encoder, flat, [m["response"] for m in made], batch_size=batch_size,
                         progress=False).score.tolist()
    return label_samples(prompts, made[0::2], made[1::2], scores[0::2], scores[1::2])


def win_indicators(answers: pd.DataFrame, model: str) -> np.ndarray:
    """Per prompt (the base model's order): 1 where `model`'s answer scores above the base model's, 0.5 on a
    tie, 0 below. `answers` has one row per (model, prompt): model, prompt_id, score."""
    base, mine = answers[answers.model == "base"], answers[answers.model == model]
    if list(base.prompt_id) != list(mine.prompt_id):
        raise ValueError(f"{model}'s answers must be for the base model's prompts, in the same order")
    return np.asarray(correctness(mine.score.tolist(), base.score.tolist()))


def online_vs_offline(answers: pd.DataFrame, *, online: str = "online", offline: str = "sigmoid", seed: int = 0,
                      n_resamples: int = 1000) -> dict:
    """The online policy's win rate against the base model minus the offline one's, paired by prompt (both
    answered the same held-out prompts): alignkit.stats.paired_difference ('n', 'difference', 'ci95' by a
    bootstrap over prompts, 'changed_pairs': prompts whose verdict differs) with both win rates."""
    on, off = win_indicators(answers, online), win_indicators(answers, offline)
    return {**paired_difference(on, off, n_resamples=n_resamples, seed=seed),
            "online_win_rate": float(on.mean()), "offline_win_rate": float(off.mean())}
