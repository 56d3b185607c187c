"""The one batched inference path: rewards of texts, response log-probs, and generation.

Every loop here runs through `in_length_order`: items sorted by length (little padding), cut into batches, the
results put back in input order. Models run in eval mode under `torch.inference_mode()`.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from alignkit.config import DataConfig, GenerationConfig
from alignkit.data.templates import Message, PreferencePair
from alignkit.data.tokenize import ChatEncoder, EncodedPair, EncodedSequence, collate_pairs, pad_sequences
from alignkit.models import decoder_and_head, response_positions


def in_length_order(items: Sequence[Any], length: Callable[[Any], int], batch_size: int,
                    run: Callable[[list[Any], int], Sequence[Any]], *, desc: str = "", progress: bool = False
                    ) -> list[Any]:
    """`run(batch, k)` over the k-th batch of `items` sorted by `length` (stable, so ties keep input order);
    `run` returns one result per item of its batch. Returns the results in the input order of `items`."""
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    out: list[Any] = [None] * len(items)
    starts = range(0, len(order), batch_size)
    for k, start in enumerate(tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True)):
        chunk = order[start:start + batch_size]
        results = run([items[i] for i in chunk], k)
        if len(results) != len(chunk):
            raise RuntimeError(f"batch {k}: {len(results)} results for {len(chunk)} items")
        for i, result in zip(chunk, results):
            out[i] = result
    return out


class _EvalMode:
    """Eval mode and inference mode for a block; the model's training flag is restored afterwards."""

    def __init__(self, model):
        self.model, self.mode = model, torch.inference_mode()

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.mode.__enter__()

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        self.model.train(self.was_training)


def end_scores(model, sequences: Sequence[EncodedSequence], pad_id: int, *, batch_size: int = 16,
               progress: bool = False) -> torch.Tensor:
    """(N,) reward of a RewardModel at each sequence's last real token, in input order."""
    device = next(model.parameters()).device

    def run(batch: list[EncodedSequence], _k: int) -> list[float]:
        padded = pad_sequences(batch, pad_id)
        _, end = model(padded["input_ids"].to(device), padded["attention_mask"].to(device))
        return end.float().cpu().tolist()

    with _EvalMode(model):
        scores = in_length_order(sequences, lambda s: len(s.input_ids), batch_size, run, desc="score",
                                 progress=progress)
    return torch.tensor(scores, dtype=torch.float32)


def response_logps(policy, pairs: Sequence[EncodedPair], pad_id: int, *, batch_size: int = 8,
                   desc: str = "log-probs", progress: bool = True) -> list[tuple[float, float]]:
    """(better, worse) summed response log-probs of a Policy for each pair, in input order."""
    device = next(policy.parameters()).device

    def run(batch: list[EncodedPair], _k: int) -> list[tuple[float, float]]:
        padded = collate_pairs(batch, pad_id)
        logps, _ = policy(*(padded[k].to(device) for k in ("input_ids", "attention_mask", "response_mask")))
        better, worse = logps.float().cpu().chunk(2)
        return list(zip(better.tolist(), worse.tolist()))

    with _EvalMode(policy):
        return in_length_order(pairs, lambda p: p.length, batch_size, run, desc=desc, progress=progress)


def sequence_kl(policy_lm, reference_lm, encoder: ChatEncoder, prompts: Sequence[Sequence[Message]],
                responses: Sequence[str], *, batch_size: int = 8, chunk: int = 2048, desc: str = "KL",
                progress: bool = True) -> list[float]:
    """KL(policy || reference) along each (prompt, response), in nats, in input order: the sum over the
    response's tokens (as `encoder.encode` gives them, turn ending included) of the full-vocabulary KL
    between the two models' next-token distributions, sum_v p(v) (log p(v) - log q(v)), at temperature 1.

    Each term is >= 0. For responses sampled from the policy itself, the mean over responses estimates the
    sequence-level KL(policy || reference) with less variance than the mean log-ratio log p(y) - log q(y)
    (both have that expectation). Both models must share the tokenizer and sit on one device. Logits are
    made only at the positions that predict a response token, `chunk` of them at a time."""
    import torch.nn.functional as F
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encoder.encode(p, r) for p, r in zip(prompts, responses)]
    device = next(policy_lm.parameters()).device
    models = [decoder_and_head(policy_lm), decoder_and_head(reference_lm)]

    def run(batch: list[EncodedSequence], _k: int) -> list[float]:
        padded = pad_sequences(batch, encoder.tokenizer.pad_token_id)
        ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
        where = response_positions(padded["response_mask"]).to(device)
        rows = torch.div(where, ids.shape[1], rounding_mode="floor")
        states = []
        for decoder, _ in models:
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            states.append(hidden.reshape(-1, hidden.shape[-1]).index_select(0, where))
        terms = []
        for i in range(0, where.shape[0], chunk):
            logp, logq = (F.log_softmax(head(h[i:i + chunk]).float(), -1) for h, (_, head) in zip(states, models))
            terms.append((logp.exp() * (logp - logq)).sum(-1))
        total = torch.zeros(len(batch), device=device, dtype=torch.float32)
        if terms:
            total.index_add_(0, rows, torch.cat(terms))
        return total.cpu().tolist()

    with _EvalMode(policy_lm), _EvalMode(reference_lm):
        return in_length_order(encoded, lambda s: len(s.input_ids), batch_size, run, desc=desc, progress=progress)


def score_texts(model, encoder: ChatEncoder, prompts: Sequence[Sequence[Message]], responses: Sequence[str],
                *, batch_size: int = 16, progress: bool = True, scores: Sequence[float] | None = None
                ) -> pd.DataFrame:
    """Score each (prompt, response). Returns DataFrame(prompt, response, score, prompt_tokens,
    response_tokens, response_cut) in the input order. `scores` given (already computed by this model on
    this encoding, e.g. by the training run's evaluation): the model is not run again."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encoder.encode(p, r) for p, r in zip(prompts, responses)]
    if scores is None:
        scores = end_scores(model, encoded, encoder.tokenizer.pad_token_id, batch_size=batch_size,
                            progress=progress).tolist()
    elif len(scores) != len(encoded):
        raise ValueError(f"{len(scores)} scores for {len(encoded)} responses")
    return pd.DataFrame({
        "prompt": [json.dumps(list(p), ensure_ascii=False) for p in prompts],
        "response": list(responses),
        "score": list(scores),
        "prompt_tokens": [e.prompt_length for e in encoded],
        "response_tokens": [len(e.input_ids) - e.prompt_length for e in encoded],
        "response_cut": [e.response_cut for e in encoded],
    })


def score_pairs(model, encoder: ChatEncoder, pairs: Sequence[PreferencePair], *, batch_size: int = 16,
                progress: bool = True, scores: tuple[Sequence[float], Sequence[float]] | None = None
                ) -> pd.DataFrame:
    """Both sides of each pair -> one row per response with `pair_id` and `side` ('better'/'worse').
    `scores` = (better, worse) per pair, when already computed (see `score_texts`)."""
    prompts = [p.prompt for p in pairs for _ in (0, 1)]
    responses = [r for p in pairs for r in (p.better, p.worse)]
    flat = None if scores is None else [s for b, w in zip(*scores) for s in (b, w)]
    table = score_texts(model, encoder, prompts, responses, batch_size=batch_size, progress=progress, scores=flat)
    table.insert(0, "side", ["better", "worse"] * len(pairs))
    if any(p.meta.get("better_harm_categories") is not None for p in pairs):
        table["categories"] = [";".join(_pair_categories(p)) for p in pairs for _ in (0, 1)]
    table.insert(0, "pair_id", [i for i in range(len(pairs)) for _ in (0, 1)])
    return table


def _pair_categories(pair: PreferencePair) -> list[str]:
    """Harm categories flagged on either response (PKU-SafeRLHF), or 'none'."""
    found = set(pair.meta.get("better_harm_categories") or []) | set(pair.meta.get("worse_harm_categories") or [])
    return sorted(found) or ["none"]


def generate(lm, encoder: ChatEncoder, prompts: Sequence[Sequence[Message]], gen: GenerationConfig, *,
             seed: int, desc: str = "generate") -> list[dict]:
    """One response per prompt, in input order: {'response', 'response_tokens', 'hit_limit'}.

    Prompts are rendered with the chat template and cut to the encoder's `max_prompt_length` (their end
    kept), exactly as the reward model sees them. Batch k (of the length-sorted prompts) samples with seed
    `seed + k`, so two models given the same prompts draw from the same random streams."""
    tokenizer = encoder.tokenizer
    end_of_turn = encoder.ending[0] if encoder.ending else tokenizer.eos_token_id  # ChatML: <|im_end|>
    stop = sorted({end_of_turn, tokenizer.eos_token_id})
    encoded = [encoder.prompt_ids(p)[-encoder.max_prompt_length:] for p in prompts]
    device = next(lm.parameters()).device

    def run(batch: list[list[int]], k: int) -> list[dict]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        torch.manual_seed(seed + k)
        new = lm.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                          max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                          temperature=gen.temperature if gen.do_sample else None,
                          top_p=gen.top_p if gen.do_sample else None, top_k=None,
                          repetition_penalty=gen.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=stop, use_cache=True)[:, width:].cpu()
        out = []
        for row in range(len(batch)):
            tokens = new[row].tolist()
            ended = next((j for j, t in enumerate(tokens) if t in stop), None)
            kept = tokens[:ended] if ended is not None else tokens
            out.append({"response": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                        "response_tokens": len(kept), "hit_limit": ended is None})
        return out

    with _EvalMode(lm):
        return in_length_order(encoded, len, gen.batch_size, run, desc=desc, progress=True)


def answer_encoder(tokenizer, data: DataConfig, max_new_tokens: int) -> ChatEncoder:
    """The encoder that reads generated answers back (`sequence_kl`): the prompt cut as `generate` cut it (its
    last `data.max_prompt_length` tokens), the answer whole. Its length is the evaluation length or the prompt
    plus twice `max_new_tokens` plus 16 (a decoded answer re-tokenized may take more tokens than were generated,
    and the turn ending follows), whichever is larger."""
    return ChatEncoder(tokenizer, max(data.eval_lengths()[0], data.max_prompt_length + 2 * max_new_tokens + 16),
                       data.max_prompt_length)


def decoding_settings(gen: GenerationConfig, seed: int) -> dict:
    """What to record next to generated text so it can be reproduced (`kl_prompts` says what is measured on the
    text, not how it is decoded, so it is left out)."""
    settings = {k: v for k, v in asdict(gen).items() if k != "kl_prompts"}
    return {**settings, "seed": seed, "seeding": "batch k of the length-sorted prompts uses seed + k"}
