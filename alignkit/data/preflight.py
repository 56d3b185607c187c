"""A tokenization preflight: how one preference pair is encoded, where the reward is read, and the checks
that catch the usual reward-model bugs (reward read one token early or late, pad == eos, a doubled BOS,
training and generation rendering the prompt differently)."""
from __future__ import annotations

from dataclasses import dataclass

from alignkit.data.templates import PreferencePair
from alignkit.data.tokenize import ChatEncoder


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    ok: bool
    """False when the finding would make a score wrong for some user of the model."""


@dataclass(frozen=True)
class Preflight:
    tokens: list[dict]
    """The better response's sequence, one dict per token: position, id, token, text, part, special, reward."""
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def text_by_part(self) -> dict[str, str]:
        """{'prompt': ..., 'response': ...}: the decoded tokens, special tokens in [brackets], newlines as
        '⏎' (so a trailing newline token is visible)."""
        out: dict[str, str] = {}
        for t in self.tokens:
            piece = f"[{t['text']}]" if t["special"] else t["text"].replace("\n", "⏎")
            out[t["part"]] = out.get(t["part"], "") + piece
        return out


def _hf_reward_position(ids: list[int], pad_id: int | None, width: int) -> int:
    """Where a Hugging Face `*ForSequenceClassification` reads a right-padded row: the rightmost non-pad."""
    row = list(ids) + [pad_id] * (width - len(ids))
    return max((i for i, t in enumerate(row) if t != pad_id), default=-1) if pad_id is not None else len(row) - 1


def preflight(encoder: ChatEncoder, pair: PreferencePair, export_pad_id: int | None) -> Preflight:
    """Encode `pair` as training does and check it against the conventions of other tools.

    `export_pad_id` is the pad token id the exported model's config carries (see
    `alignkit.models.export_tokenizer`)."""
    tok = encoder.tokenizer
    better = encoder.encode(pair.prompt, pair.better)
    worse = encoder.encode(pair.prompt, pair.worse)
    special = set(tok.all_special_ids)
    reward_at = len(better.input_ids) - 1
    tokens = [{"position": i, "id": t, "token": tok.convert_ids_to_tokens(t), "text": tok.decode([t]),
               "part": "prompt" if i < better.prompt_length else "response", "special": t in special,
               "reward": i == reward_at} for i, t in enumerate(better.input_ids)]

    conversation = list(pair.prompt) + [{"role": "assistant", "content": pair.better}]
    standard = tok.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    plain_call = tok(tok.apply_chat_template(conversation, tokenize=False))["input_ids"]
    generation_prompt = encoder.prompt_ids(pair.prompt)[-encoder.max_prompt_length:]
    width = max(len(better.input_ids), len(worse.input_ids))
    hf_at = _hf_reward_position(list(better.input_ids), export_pad_id, width)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    doubled = [name for name, t in (("BOS", bos), ("EOS", eos)) if t is not None and
               any(a == b == t for a, b in zip(plain_call, plain_call[1:]))]
    cut = better.response_cut or better.prompt_cut
    checks = [
        Check("reward read at", f"position {reward_at}: {tok.convert_ids_to_tokens(better.input_ids[-1])!r} "
              f"(the last token of apply_chat_template)", True),
        Check("alignkit ids = apply_chat_template(tokenize=True) ids",
              "yes" if list(better.input_ids) == list(standard) else
              ("no: the pair is truncated" if cut else "NO"), cut or list(better.input_ids) == list(standard)),
        Check("tokenizer(text) adds special tokens", f"{len(plain_call) - len(standard)} extra"
              + (f" (doubled {', '.join(doubled)})" if doubled else ""), not doubled),
        Check("pad == eos in training", str(tok.pad_token_id == eos) + " (alignkit pools by attention mask)", True),
        Check("exported pad token", f"{tok.convert_ids_to_tokens(export_pad_id) if export_pad_id is not None else None}"
              f" (id {export_pad_id})", export_pad_id is None or export_pad_id != better.input_ids[-1]),
        Check("HF reads a right-padded batch at", f"position {hf_at}", hf_at == reward_at),
        Check("training and generation render the prompt identically",
              str(list(better.input_ids[:better.prompt_length]) == generation_prompt),
              list(better.input_ids[:better.prompt_length]) == generation_prompt),
    ]
    return Preflight(tokens, checks)
