"""alignkit.flops against torch's own FLOP counter (`FlopCounterMode`, which counts every matrix product the
autograd engine runs) on tiny random Llama / Qwen2 models going through alignkit's real RewardModel and
Policy paths, forward and backward. The formulas must match the counter exactly (integers, no tolerance)."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig, Qwen2Config)

from alignkit.data.packing import pack_pairs
from alignkit.data.tokenize import EncodedPair, EncodedSequence, collate_pairs
from alignkit.flops import dpo_step_flops, mfu, parameter_count, rm_step_flops
from alignkit.models import Policy, RewardModel, response_positions
from alignkit.train.rm import packed_end_scores

PAD = 0
SHAPES = {
    "llama": (LlamaConfig, {}),
    "qwen2": (Qwen2Config, {}),  # q/k/v biases: additions, not products, so not counted
    "llama-head-dim": (LlamaConfig, {"head_dim": 32}),  # heads x head_dim (128) != hidden (64)
}


def tiny_config(shape: str):
    cls, extra = SHAPES[shape]
    return cls(vocab_size=500, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=PAD,
               num_labels=1, attn_implementation="eager", **extra)


def synthetic_pairs(n: int = 3, seed: int = 0) -> list[EncodedPair]:
    """Pairs of random token ids with a shared prompt and responses of different lengths (so rows pad)."""
    rng = random.Random(seed)
    pairs = []
    for index in range(n):
        prompt = [rng.randrange(1, 500) for _ in range(rng.randrange(4, 12))]
        sides = [EncodedSequence(tuple(prompt + [rng.randrange(1, 500) for _ in range(rng.randrange(3, 20))]),
                                 len(prompt)) for _ in range(2)]
        pairs.append(EncodedPair(sides[0], sides[1], index))
    return pairs


def counted(step) -> int:
    """Matmul FLOPs torch counts while `step()` runs (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def reward_model(config) -> RewardModel:
    torch.manual_seed(0)
    return RewardModel(AutoModelForSequenceClassification.from_config(config)).train()


def policy(config) -> Policy:
    torch.manual_seed(0)
    return Policy(AutoModelForCausalLM.from_config(config)).train()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_parameter_count_matches_the_built_model(shape):
    config = tiny_config(shape)
    assert parameter_count(config) == sum(p.numel() for p in policy(config).parameters())
    assert parameter_count(config, score_head=True) == sum(p.numel() for p in reward_model(config).parameters())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_reward_model_forward_backward_on_a_padded_batch(shape):
    config, pairs = tiny_config(shape), synthetic_pairs()
    model, batch = reward_model(config), collate_pairs(synthetic_pairs(), PAD)
    rows, length = batch["input_ids"].shape

    def step():
        _, end = model(batch["input_ids"], batch["attention_mask"])
        end.sum().backward()

    # RewardModel.forward applies the score head at every position of the padded (rows, length) batch
    expected = rm_step_flops(config, [length] * rows, scored_positions=rows * length)
    assert counted(step) == expected.hardware == expected.model
    assert len(pairs) * 2 == rows


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_reward_model_packed_training_step(shape):
    """The RM's training path: one packed row per pair (full-square 4D mask), scores at two ends per row."""
    config = tiny_config(shape)
    model, batch = reward_model(config), pack_pairs(synthetic_pairs(), PAD)
    rows, length = batch["input_ids"].shape

    def step():
        better, worse = packed_end_scores(model, batch)
        (better - worse).sum().backward()

    assert counted(step) == rm_step_flops(config, [length] * rows, scored_positions=2 * rows).model


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_dpo_policy_step_counts_logits_at_response_tokens_only(shape):
    config = tiny_config(shape)
    model, batch = policy(config), collate_pairs(synthetic_pairs(), PAD)
    rows, length = batch["input_ids"].shape
    response_tokens = int(batch["response_mask"][:, 1:].sum())
    index = response_positions(batch["response_mask"])
    assert response_tokens == index.numel() < model.logits_chunk  # one chunk: nothing recomputed

    def step():
        logps, _ = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"], index)
        logps.sum().backward()

    flops = counted(step)
    expected = dpo_step_flops(config, [length] * rows, response_tokens, logits_chunk=model.logits_chunk)
    assert flops == expected.model == expected.hardware
    # the wrong formulas fail: logits over every token, the causal half of attention, forward only (no 3x)
    over_all_tokens = dpo_step_flops(config, [length] * rows, rows * length)
    assert flops < over_all_tokens.model
    causal_half = expected.model - 3 * expected.attention // 2
    assert flops != causal_half
    assert flops != 2 * expected.forward


def test_forward_only_is_one_third_of_a_step():
    config = tiny_config("llama")
    model, batch = policy(config), collate_pairs(synthetic_pairs(), PAD)
    rows, length = batch["input_ids"].shape
    response_tokens = int(batch["response_mask"][:, 1:].sum())
    with torch.no_grad():
        flops = counted(lambda: model(batch["input_ids"], batch["attention_mask"], batch["response_mask"]))
    assert flops == dpo_step_flops(config, [length] * rows, response_tokens).forward


def test_chunked_logits_are_recomputed_hardware_flops_not_model_flops():
    config = tiny_config("llama")
    model, batch = policy(config), collate_pairs(synthetic_pairs(), PAD)
    rows, length = batch["input_ids"].shape
    response_tokens = int(batch["response_mask"][:, 1:].sum())
    model.logits_chunk = 8  # several chunks, each checkpointed: the head's forward runs again in backward
    assert response_tokens > model.logits_chunk

    def step():
        logps, _ = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
        logps.sum().backward()

    flops = counted(step)
    expected = dpo_step_flops(config, [length] * rows, response_tokens, logits_chunk=model.logits_chunk)
    assert expected.recomputed == expected.head > 0
    assert flops == expected.hardware
    assert flops != expected.model


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_of_the_blocks_is_hardware_flops(reentrant):
    config = tiny_config("llama")
    model, batch = reward_model(config), pack_pairs(synthetic_pairs(), PAD)
    model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    rows, length = batch["input_ids"].shape

    def step():
        better, worse = packed_end_scores(model, batch)
        (better - worse).sum().backward()

    flops = counted(step)
    expected = rm_step_flops(config, [length] * rows, 2 * rows, gradient_checkpointing=True)
    assert expected.hardware == expected.model + expected.blocks + expected.attention
    if reentrant:  # every block's forward runs again
        assert flops == expected.hardware
    else:  # torch's default stops recomputing once the saved tensors are back: each block's down projection
        down = 2 * 2 * config.hidden_size * config.intermediate_size * rows * length
        assert flops == expected.hardware - down


def test_qwen25_05b_by_hand():
    """The gpu profile's model (config.json of Qwen/Qwen2.5-0.5B-Instruct), one 1024-token row: worked out
    by hand from the definitions in alignkit.flops."""
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
    assert parameter_count(config) == 494_032_768  # the Hub's reported size
    per_block = 2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864  # q, o; k, v; gate, up, down
    step = dpo_step_flops(config, [1024], 512)
    assert step.blocks == 2 * 24 * per_block * 1024
    assert step.attention == 4 * 24 * 896 * 1024 ** 2
    assert step.head == 2 * 896 * 151936 * 512
    assert step.model == 3 * (step.blocks + step.attention + step.head)


def test_mfu():
    assert mfu(989e12, 2.0, 989e12) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seconds"):
        mfu(1.0, 0.0, 989e12)


def test_missing_config_field_names_it():
    class Partial:
        hidden_size = 64
    with pytest.raises(ValueError, match="num_hidden_layers"):
        rm_step_flops(Partial(), [8])
