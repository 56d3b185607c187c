"""Which pairs go where: the prompt-disjoint train/test split and seeded samples (one sampler for every
subset the study draws)."""
from __future__ import annotations

import random

from alignkit.data.templates import PreferencePair
from alignkit.errors import AlignkitError


def seeded_sample(items: list, n: int | None, seed: int) -> list:
    """A seeded random sample of `n` items (in the sampled order); all of them, as given, when `n` is None
    or not smaller than their number."""
    if n is None or n >= len(items):
        return items
    return random.Random(seed).sample(items, n)


def split_by_prompt(pairs: list[PreferencePair], test_fraction: float, seed: int
                    ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split so that no prompt is in both parts; the test part holds ≈`test_fraction` of the prompts."""
    if not 0 < test_fraction < 1:
        raise AlignkitError(f"test_fraction must be in (0, 1), got {test_fraction}")
    prompt_ids = sorted({p.prompt_id for p in pairs})
    random.Random(seed).shuffle(prompt_ids)
    n_test = max(1, round(len(prompt_ids) * test_fraction))
    test_ids = set(prompt_ids[:n_test])
    train = [p for p in pairs if p.prompt_id not in test_ids]
    test = [p for p in pairs if p.prompt_id in test_ids]
    if not train:
        raise AlignkitError("the split left no training pairs; lower test_fraction or add data")
    return train, test


def train_check_pairs(train_pairs: list, eval_pairs: list, seed: int) -> list:
    """The training pairs a model is measured on after training: a seeded sample as large as the test split,
    so train and test accuracy carry confidence intervals of the same width (and cost the same to score)."""
    return seeded_sample(train_pairs, max(len(eval_pairs), 1), seed)
