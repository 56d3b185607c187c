"""Shared-prompt packing for preference pairs: one row per pair, [prompt | better response | worse response].

The two sequences of a pair share their prompt token for token, and a causal model's hidden states over the
prompt do not depend on what follows it. So the prompt is computed once: the worse response's tokens attend to
the prompt and to themselves but not to the better response (a 4D attention mask), and their position ids
continue from the prompt's end, exactly as in a row of their own. Every score equals the one from the plain
concatenated batch (better rows then worse rows, right-padded) up to float rounding, with fewer tokens through
the model: the prompt once instead of twice, and no padding between a pair's two sides.

Group batches by `packed_length` to keep the padding between packed rows small (benchmarks/bench_rm.py
measures the token positions saved). Plain torch with SDPA or eager attention; flash-attention kernels ignore
custom 4D masks, so do not pack with them.
"""
from __future__ import annotations

from typing import Sequence

import torch

from alignkit.data.tokenize import EncodedPair
from alignkit.errors import AlignkitError


def packed_length(pair: EncodedPair) -> int:
    """Tokens in the pair's packed row: the prompt once, then both responses. Group batches by this (not by
    the longer side) to keep the padding between packed rows small."""
    return len(pair.better.input_ids) + len(pair.worse.input_ids) - pair.better.prompt_length


def pack_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> input_ids (B, L), position_ids (B, L), attention_mask (B, 1, L, L) bool (True = may attend),
    ends (B, 2): the positions of the better and of the worse response's last token, pair_index (B,).

    L is the longest packed row; padding positions attend only to themselves (no all-masked rows, so no NaN)."""
    rows = []
    for pair in pairs:
        p = pair.better.prompt_length
        if pair.worse.prompt_length != p or pair.better.input_ids[:p] != pair.worse.input_ids[:p]:
            raise AlignkitError(f"pair {pair.index}: its two sequences do not share their prompt tokens, so it "
                                "cannot be packed; encode both sides with the same ChatEncoder")
        rows.append((pair.better.input_ids[:p], pair.better.input_ids[p:], pair.worse.input_ids[p:]))
    length = max(len(a) + len(b) + len(c) for a, b, c in rows)
    n_rows = len(rows)
    input_ids = torch.full((n_rows, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, length), dtype=torch.long)
    mask = torch.eye(length, dtype=torch.bool).repeat(n_rows, 1, 1, 1)
    ends = torch.empty((n_rows, 2), dtype=torch.long)
    for r, (prompt, better, worse) in enumerate(rows):
        p, b, w = len(prompt), len(better), len(worse)
        n = p + b + w
        input_ids[r, :n] = torch.tensor(prompt + better + worse)
        position_ids[r, :p + b] = torch.arange(p + b)
        position_ids[r, p + b:n] = torch.arange(p, p + w)
        causal = torch.ones((n, n), dtype=torch.bool).tril_()
        causal[p + b:, p:p + b] = False  # the worse response never sees the better one
        mask[r, 0, :n, :n] = causal
        ends[r, 0], ends[r, 1] = p + b - 1, n - 1
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask, "ends": ends,
            "pair_index": torch.tensor([pair.index for pair in pairs])}
