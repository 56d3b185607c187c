"""Preference pairs -> token ids through the tokenizer's chat template -> padded batches.

Truncation policy (`max_length` tokens per sequence, `max_prompt_length` for the prompt part):
1. A prompt longer than `max_prompt_length` keeps its last `max_prompt_length` tokens (the question's
   end and the assistant header survive; a long system/history start is cut).
2. A response that does not fit in the room left is cut at its end, and the template's turn ending (for
   ChatML `<|im_end|>` and a newline) is put back, so the reward is always read where the template ends
   a reply.
Every cut is counted: `TruncationReport` says how many pairs lost response (or prompt) tokens. With
`truncation="drop"` such pairs are removed instead (also counted).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from alignkit.data.templates import PreferencePair
from alignkit.errors import AlignkitError


ENCODING = "template-v2"
"""Names how sequences are encoded (the whole template rendering, the reward read at its last token). Part
of every trained step's identity, so runs encoded the old way (v1: the rendering's trailing whitespace
stripped) are retrained rather than reused."""


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

    def as_dict(self) -> dict:
        return {"pairs": self.pairs, "pairs_with_response_cut": self.response_cut,
                "pairs_with_prompt_cut": self.prompt_cut, "pairs_dropped": self.dropped}


class ChatEncoder:
    """Encodes (prompt messages, response) exactly as the tokenizer's own chat template renders them.

    The sequence is `apply_chat_template(prompt + [response])`, tokenized as Hugging Face does it, with the
    template's whole turn ending kept (for ChatML: `<|im_end|>` and the newline after it). The reward is read
    at its last token, so a plain `AutoModelForSequenceClassification` call on the standard rendering reads
    the same position. Message text is data: a literal `<|im_end|>` inside it becomes ordinary text pieces,
    never the control token; chat markup comes only from the template."""

    def __init__(self, tokenizer, max_length: int, max_prompt_length: int):
        if max_prompt_length >= max_length:
            raise AlignkitError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length})")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self._special_texts = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
                                     | set(tokenizer.all_special_tokens))
        self.ending = self._turn_ending()

    def render(self, messages, *, generation_prompt: bool = False) -> str:
        """The chat template's text for `messages` (a prompt: with the assistant header appended)."""
        return self.tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _turn_ending(self) -> tuple[int, ...]:
        """Token ids the template writes after an assistant reply's text (ChatML: `<|im_end|>`, newline)."""
        marker = "alignkitREPLYmarker"
        text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}])
        if marker not in text:
            raise AlignkitError("the chat template drops the assistant reply's text; alignkit cannot encode "
                                "responses with this tokenizer")
        tail = text[text.rindex(marker) + len(marker):]
        return tuple(self.tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else ()

    def token_ids(self, messages, *, generation_prompt: bool = False) -> list[int]:
        """Token ids of the rendered `messages`: identical to `apply_chat_template(..., tokenize=True)` for
        ordinary text; a message holding a special token's literal text is tokenized as text."""
        text = self.render(messages, generation_prompt=generation_prompt)
        if not any(s in m["content"] for m in messages for s in self._special_texts):
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._ids_with_text_contents(messages, text, generation_prompt)

    def _ids_with_text_contents(self, messages, text: str, generation_prompt: bool) -> list[int]:
        """Markup from the template is tokenized with its special tokens; each message's text with
        `split_special_tokens=True`, so '<|im_end|>' written by a user stays text."""
        markers = [f"alignkitMSG{i}marker" for i in range(len(messages))]
        skeleton = self.render([{**m, "content": k} for m, k in zip(messages, markers)],
                               generation_prompt=generation_prompt)
        pieces = re.split("(" + "|".join(markers) + ")", skeleton)
        contents = dict(zip(markers, (m["content"] for m in messages)))
        if "".join(contents.get(p, p) for p in pieces) != text:
            raise AlignkitError("the chat template changes message text (e.g. trims it); alignkit cannot "
                                "keep special-token strings in the data as text with this tokenizer")
        ids: list[int] = []
        for piece in pieces:
            if piece in contents:
                ids += self.tokenizer(contents[piece], add_special_tokens=False,
                                      split_special_tokens=True)["input_ids"]
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return ids

    def prompt_ids(self, prompt) -> list[int]:
        """The prompt with the assistant header, as generation sees it (before the prompt cut)."""
        return self.token_ids(prompt, generation_prompt=True)

    def encode(self, prompt, response: str) -> EncodedSequence:
        prompt = list(prompt)
        full_text = self.render(prompt + [{"role": "assistant", "content": response}])
        if not full_text.startswith(self.render(prompt, generation_prompt=True)):
            raise AlignkitError("the chat template renders the prompt differently with a response appended; "
                                "alignkit cannot tell prompt from response tokens for this tokenizer")
        conversation = prompt + [{"role": "assistant", "content": response}]
        prompt_ids = self.prompt_ids(prompt)
        full_ids = self.token_ids(conversation)
        if full_ids[:len(prompt_ids)] != prompt_ids:
            # the reply's first characters merged with the header's last token (a reply starting with a
            # newline): tokenize markup and message texts apart, so both replies of a pair share the prompt
            # tokens (packing needs that); only such rows differ from apply_chat_template's ids
            prompt_ids = self._ids_with_text_contents(prompt, self.render(prompt, generation_prompt=True), True)
            full_ids = self._ids_with_text_contents(conversation, full_text, False)
            if full_ids[:len(prompt_ids)] != prompt_ids:
                raise AlignkitError("the prompt's tokens change when a response follows it; alignkit cannot "
                                    "tell prompt from response tokens for this tokenizer")
        prompt_ids, response_ids = full_ids[:len(prompt_ids)], full_ids[len(prompt_ids):]
        prompt_cut = len(prompt_ids) > self.max_prompt_length
        if prompt_cut:
            prompt_ids = prompt_ids[-self.max_prompt_length:]
        room = self.max_length - len(prompt_ids)
        response_cut = len(response_ids) > room
        if response_cut:
            end = list(self.ending)
            keeps_end = end and len(end) < room and response_ids[-len(end):] == end
            response_ids = response_ids[:room - len(end)] + end if keeps_end else response_ids[:room]
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


def causal_padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 0/1 mask of right-padded rows -> (B, 1, L, L) boolean: query t sees key s when s <= t and key s is
    real. Given to the model as is (transformers passes 4-D masks through), it spares the device-to-host read
    that checking a 2-D mask for padding costs. Pad queries still see the real keys before them, so no row is
    empty."""
    length = attention_mask.shape[-1]
    causal = torch.ones((length, length), dtype=torch.bool).tril_()
    return (causal & attention_mask.bool()[:, None, None, :]).contiguous()


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
