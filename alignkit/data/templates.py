"""Preference templates: map one raw dataset row to a `PreferencePair`.

A template is a function `row -> PreferencePair` registered under a name (the `template` option of a
dataset). It raises `RowError` naming the field when the row cannot be used, or `SkipRow` for a row that
is well-formed but carries no preference (two identical responses); the loader counts those.
"""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from alignkit.errors import AlignkitError

Message = dict[str, str]


@dataclass(frozen=True)
class PreferencePair:
    """One human preference: the conversation so far, the better and the worse assistant reply."""

    prompt: tuple[Message, ...]
    better: str
    worse: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """The prompt as plain text; pairs sharing it share a question (used to split without leaks)."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)

    @property
    def prompt_id(self) -> str:
        return hashlib.sha256(self.prompt_text.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {"prompt": list(self.prompt), "better": self.better, "worse": self.worse, "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, obj: Mapping) -> "PreferencePair":
        return cls(tuple(obj["prompt"]), obj["better"], obj["worse"], obj.get("meta", {}))


class RowError(Exception):
    """A row that cannot be mapped; `field` names the culprit. The loader adds file and row number."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class SkipRow(Exception):
    """A well-formed row with no preference in it (e.g. identical responses): skipped and counted."""


TEMPLATES: dict[str, Callable[[Mapping], PreferencePair]] = {}


def register(name: str):
    def add(fn):
        TEMPLATES[name] = fn
        return fn
    return add


def get_template(name: str) -> Callable[[Mapping], PreferencePair]:
    if not name or name not in TEMPLATES:
        known = ", ".join(sorted(TEMPLATES))
        raise AlignkitError(f"unknown template {name!r}; choose one of: {known}")
    return TEMPLATES[name]


def matching_templates(row: Mapping, exclude: str = "") -> list[str]:
    """Names of the registered templates (but `exclude`) that map `row` without an error."""
    fits = []
    for name, mapper in sorted(TEMPLATES.items()):
        try:
            mapper(row)
        except RowError:
            continue
        except SkipRow:
            pass
        if name != exclude:
            fits.append(name)
    return fits


# ----------------------------------------------------------------------------- field helpers

def _text(row: Mapping, key: str) -> str:
    if key not in row:
        raise RowError(key, f"missing key (row has: {', '.join(map(str, row))})")
    value = row[key]
    if not isinstance(value, str):
        raise RowError(key, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(key, "empty text")
    return value


def _choice(row: Mapping, key: str, allowed: tuple[int, ...]) -> int:
    """An int label that datasets spell as 1, '1' or 1.0."""
    if key not in row:
        raise RowError(key, "missing key")
    value = row[key]
    try:
        label = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        label = None
    if label not in allowed or (isinstance(value, float) and value != label):
        raise RowError(key, f"expected one of {allowed} (int or string), got {value!r}")
    return label


def _ordered(prompt: tuple[Message, ...], responses: list[str], better: int, meta: dict) -> PreferencePair:
    worse = 1 - better
    if responses[0].strip() == responses[1].strip():
        raise SkipRow("identical responses")
    return PreferencePair(prompt, responses[better], responses[worse], meta)


def _user(text: str) -> tuple[Message, ...]:
    return ({"role": "user", "content": text},)


# ----------------------------------------------------------------------------- templates

@register("HOMEWORK")
def homework(row: Mapping) -> PreferencePair:
    """align-anything text-to-text: question, response_1, response_2, overall_response (1 or 2)."""
    responses = [_text(row, "response_1"), _text(row, "response_2")]
    better = _choice(row, "overall_response", (1, 2)) - 1
    return _ordered(_user(_text(row, "question")), responses, better, {})


def _pku(row: Mapping, label_key: str) -> PreferencePair:
    responses = [_text(row, "response_0"), _text(row, "response_1")]
    better = _choice(row, label_key, (0, 1))
    meta = {}
    for side, index in (("better", better), ("worse", 1 - better)):
        if f"is_response_{index}_safe" in row:
            meta[f"{side}_is_safe"] = str(row[f"is_response_{index}_safe"]).lower() == "true"
        if f"response_{index}_severity_level" in row:
            meta[f"{side}_severity"] = int(str(row[f"response_{index}_severity_level"]))
        categories = row.get(f"response_{index}_harm_category")
        if isinstance(categories, str):  # the 500-row sample stores the dict as its Python repr
            categories = ast.literal_eval(categories)
        if isinstance(categories, Mapping):
            meta[f"{side}_harm_categories"] = sorted(k for k, v in categories.items() if str(v) == "True")
    return _ordered(_user(_text(row, "prompt")), responses, better, meta)


@register("PKUSafeRLHF")
def pku_saferlhf(row: Mapping) -> PreferencePair:
    """PKU-SafeRLHF by helpfulness: prompt, response_0, response_1, better_response_id (0 or 1)."""
    return _pku(row, "better_response_id")


@register("PKUSafeRLHF-safer")
def pku_saferlhf_safer(row: Mapping) -> PreferencePair:
    """PKU-SafeRLHF by safety: as PKUSafeRLHF but ranked by safer_response_id."""
    return _pku(row, "safer_response_id")


def _split_transcript(text: str, key: str) -> list[Message]:
    """'\\n\\nHuman: .. \\n\\nAssistant: ..' -> chat messages."""
    messages: list[Message] = []
    rest = text
    markers = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}
    if not any(rest.startswith(m) for m in markers):
        raise RowError(key, "transcript does not start with '\\n\\nHuman:'")
    while rest:
        marker = next(m for m in markers if rest.startswith(m))
        rest = rest[len(marker):]
        cut = min((i for i in (rest.find(m) for m in markers) if i >= 0), default=len(rest))
        messages.append({"role": markers[marker], "content": rest[:cut].strip()})
        rest = rest[cut:]
    return messages


@register("HHRLHF")
def hh_rlhf(row: Mapping) -> PreferencePair:
    """Anthropic HH-RLHF: `chosen` and `rejected` full transcripts sharing all but the last reply."""
    chosen = _split_transcript(_text(row, "chosen"), "chosen")
    rejected = _split_transcript(_text(row, "rejected"), "rejected")
    for key, messages in (("chosen", chosen), ("rejected", rejected)):
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise RowError(key, "transcript must end with an Assistant reply")
        if not messages[-1]["content"]:  # a few real HH rows have one; nothing to learn from it
            raise SkipRow("empty final reply")
    if chosen[:-1] != rejected[:-1]:
        raise SkipRow("transcripts differ before the last reply")  # happens in real HH-RLHF rows
    prompt = tuple(chosen[:-1])
    return _ordered(prompt, [chosen[-1]["content"], rejected[-1]["content"]], 0, {})


@register("PROMPT_RESPONSE_PAIR")
def prompt_response_pair(row: Mapping) -> PreferencePair:
    """LLaMA-Factory style: prompt, response = [chosen, rejected] (e.g. pku_saferlhf_safer_pairs.json)."""
    responses = row.get("response")
    if not isinstance(responses, (list, tuple)) or len(responses) != 2:
        raise RowError("response", "expected a list [chosen, rejected]")
    for r in responses:
        if not isinstance(r, str) or not r.strip():
            raise RowError("response", "each response must be non-empty text")
    return _ordered(_user(_text(row, "prompt")), list(responses), 0, {})


@register("CHOSEN_REJECTED")
def chosen_rejected(row: Mapping) -> PreferencePair:
    """Generic: prompt, chosen, rejected as plain text."""
    return _ordered(_user(_text(row, "prompt")), [_text(row, "chosen"), _text(row, "rejected")], 0, {})


@register("ALIGNKIT")
def alignkit_pair(row: Mapping) -> PreferencePair:
    """alignkit's own format (outputs/<profile>/data/*.jsonl): prompt messages, better, worse, meta."""
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt):
        raise RowError("prompt", "expected a non-empty list of {role, content} messages")
    return PreferencePair(tuple(dict(m) for m in prompt), _text(row, "better"), _text(row, "worse"),
                          dict(row.get("meta") or {}))
