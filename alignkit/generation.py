"""Batched generation: chat prompts -> responses, left-padded batches with the KV cache, seeded sampling."""
from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import torch
from tqdm.auto import tqdm

from alignkit.config import GenerationConfig
from alignkit.data.templates import Message
from alignkit.data.tokenize import ChatEncoder


def generate(lm, encoder: ChatEncoder, prompts: Sequence[Sequence[Message]], gen: GenerationConfig, *,
             seed: int, desc: str = "generate") -> list[dict]:
    """One response per prompt, in input order: {'response', 'response_tokens', 'hit_limit'}.

    Prompts are rendered with the chat template and cut to the encoder's `max_prompt_length` (their end
    kept), exactly as the reward model sees them. Batches are length-sorted; batch k samples with seed
    `seed + k`, so two models given the same prompts draw from the same random streams."""
    tokenizer = encoder.tokenizer
    end_of_turn = encoder.ending[0] if encoder.ending else tokenizer.eos_token_id  # ChatML: <|im_end|>
    stop = sorted({end_of_turn, tokenizer.eos_token_id})
    encoded = [encoder.prompt_ids(p)[-encoder.max_prompt_length:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(lm.parameters()).device
    out: list[dict | None] = [None] * len(prompts)
    was_training = lm.training
    lm.eval()
    with torch.inference_mode():
        for k, start in enumerate(tqdm(range(0, len(order), gen.batch_size), desc=desc, dynamic_ncols=True)):
            chunk = order[start:start + gen.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # left padding: every prompt ends where generation starts
                input_ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                attention[row, width - len(encoded[i]):] = 1
            torch.manual_seed(seed + k)
            new = lm.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                              max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                              temperature=gen.temperature if gen.do_sample else None,
                              top_p=gen.top_p if gen.do_sample else None, top_k=None,
                              repetition_penalty=gen.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=stop, use_cache=True)[:, width:].cpu()
            for row, i in enumerate(chunk):
                tokens = new[row].tolist()
                ended = next((j for j, t in enumerate(tokens) if t in stop), None)
                kept = tokens[:ended] if ended is not None else tokens
                out[i] = {"response": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                          "response_tokens": len(kept), "hit_limit": ended is None}
    lm.train(was_training)
    return out  # type: ignore[return-value]


def decoding_settings(gen: GenerationConfig, seed: int) -> dict:
    """What to record next to generated text so it can be reproduced."""
    return {**asdict(gen), "seed": seed, "seeding": "batch k of the length-sorted prompts uses seed + k"}
