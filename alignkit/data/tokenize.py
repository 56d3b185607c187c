"""Preference pairs -> token ids through the tokenizer's chat template -> padded batches.

Truncation policy (`max_length` tokens per sequence, `max_prompt_length` for the prompt part):
1. A prompt longer than `max_prompt_length` keeps its last `max_prompt_length` tokens (the question's
   end and the assistant header survive; a long system/history start is cut).
2. A response that does not fit in the room left is cut at its end, and its end-of-turn token is put back
   as the last token, so the reward is always read at an end-of-turn position.
Every cut is counted: `TruncationReport` says how many pairs lost response (or prompt) tokens. With
`truncation="drop"` such pairs are removed instead (also counted).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from alignkit.data.templates import PreferencePair
from alignkit.errors import AlignkitError


@dataclass(frozen=True)
class EncodedSequence:
    input_ids: tuple[int, ...]
    prompt_length: int
    """Tokens before the response starts (the response is input_ids[prompt_length:])."""
    response_cut: bool = False
    prompt_cut: bool = False


@dataclass(frozen=True)
class EncodedPair:
    better: EncodedSequence
    worse: EncodedSequence
    index: int
    """Position of the pair in the list given to `encode_pairs`."""

    @property
    def length(self) -> int:
        return max(len(self.better.input_ids), len(self.worse.input_ids))


@dataclass
class TruncationReport:
    pairs: int = 0
    response_cut: int = 0
    prompt_cut: int = 0
    dropped: int = 0
    examples: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"pairs": self.pairs, "pairs_with_response_cut": self.response_cut,
                "pairs_with_prompt_cut": self.prompt_cut, "pairs_dropped": self.dropped}


class ChatEncoder:
    """Encodes (prompt messages, response) with one tokenizer's chat template."""

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int):
        if max_prompt_length >= max_length:
            raise AlignkitError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self._special = set(tokenizer.all_special_ids)

    def prompt_ids(self, prompt) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, prompt, response: str) -> EncodedSequence:
        tok = self.tokenizer
        prompt_text = tok.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        full_text = tok.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}],
                                            tokenize=False).rstrip()
        if not full_text.startswith(prompt_text):
            raise AlignkitError("the chat template renders the prompt differently with a response appended; "
                                "alignkit cannot tell prompt from response tokens for this tokenizer")
        prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
        response_ids = tok(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
        prompt_cut = len(prompt_ids) > self.max_prompt_length
        if prompt_cut:
            prompt_ids = prompt_ids[-self.max_prompt_length:]
        room = self.max_length - len(prompt_ids)
        response_cut = len(response_ids) > room
        if response_cut:
            end = response_ids[-1] if response_ids[-1] in self._special else None
            response_ids = response_ids[:room - 1] + [end] if end is not None else response_ids[:room]
        return EncodedSequence(tuple(prompt_ids + response_ids), len(prompt_ids), response_cut, prompt_cut)


def encode_pairs(encoder: ChatEncoder, pairs: list[PreferencePair], truncation: str = "cut"
                 ) -> tuple[list[EncodedPair], TruncationReport]:
    if truncation not in ("cut", "drop"):
        raise AlignkitError(f"truncation must be 'cut' or 'drop', got {truncation!r}")
    report = TruncationReport(pairs=len(pairs))
    encoded = []
    for index, pair in enumerate(pairs):
        better = encoder.encode(pair.prompt, pair.better)
        worse = encoder.encode(pair.prompt, pair.worse)
        cut = better.response_cut or worse.response_cut
        report.response_cut += cut
        report.prompt_cut += better.prompt_cut
        if cut and truncation == "drop":
            report.dropped += 1
            continue
        encoded.append(EncodedPair(better, worse, index))
    return encoded, report


def pad_sequences(sequences: list[EncodedSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest. Returns input_ids, attention_mask and response_mask, each (N, L)."""
    length = max(len(s.input_ids) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    response_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, seq in enumerate(sequences):
        n = len(seq.input_ids)
        input_ids[row, :n] = torch.tensor(seq.input_ids)
        attention_mask[row, :n] = 1
        response_mask[row, seq.prompt_length:n] = True
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def collate_pairs(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> one batch of 2B rows: rows [0, B) are the better responses, rows [B, 2B) the worse,
    so both go through the model in one forward pass."""
    batch = pad_sequences([p.better for p in pairs] + [p.worse for p in pairs], pad_id)
    batch["pair_index"] = torch.tensor([p.index for p in pairs])
    return batch


def length_grouped_order(lengths: list[int], batch_size: int, seed: int, group_batches: int = 32
                         ) -> list[list[int]]:
    """Seeded batches of indices with similar lengths (less padding), in random batch order.

    Shuffle, cut into groups of `group_batches` batches, sort each group by length, cut into batches,
    shuffle the batches. Same seed, same order."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group = batch_size * group_batches
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
