"""FLOPs of one training step of alignkit's reward model and DPO policy, counted from a Hugging Face config.

Definitions (one multiply-add = 2 FLOPs; only matrix products are counted — norms, RoPE, softmax, the
activation function, the loss and the optimizer are element-wise work, left out here as in every MFU
convention and in `torch.utils.flop_counter.FlopCounterMode`):

* **Forward, per forwarded token:** 2 × the matmul parameters of the transformer blocks (q, k, v, o and the
  three matrices of the gated MLP of Llama / Qwen2 / Mistral; biases and norm weights are not products; the
  embedding is a lookup).
* **Attention:** 2 × 2 × layers × ctx × d_attn per token (scores q·kᵀ and the weighted sum of values), with
  d_attn = heads × head_dim (the query heads: grouped-query attention shares k and v, not the work) and ctx
  the row's length: the **full square** L × L of each row, not the causal half. That is what the kernels
  alignkit runs compute — eager attention, and SDPA with the explicit masks that padded batches and
  shared-prompt packing pass — and what `FlopCounterMode` counts (flash kernels skip masked tiles; then the
  full square over-counts by up to 2× on this term, which is a few percent of the total at length 1024).
* **Heads:** the LM head (2 × hidden × vocab) only for the tokens whose logits are needed — DPO: the
  positions that predict a response token, which is what `alignkit.models.Policy` computes; the reward head
  (2 × hidden, one output) at every position it is applied to (`RewardModel.forward`: all positions;
  the packed training step: the two response ends of each row).
* **Training step = 3 × forward** (the backward pass computes the gradient of each product's input and of its
  weight, each as costly as the product): exact when every weight trains and the embedding does too (full
  fine-tuning). Frozen weights and LoRA skip weight gradients; model FLOPs still use 3 ×, by convention.
* **Model FLOPs vs hardware FLOPs:** recomputation (activation checkpointing) is hardware work, not model
  work. `StepFlops.hardware` adds the forward passes run again in the backward: the LM head's chunks when a
  DPO batch has more response tokens than `Policy.logits_chunk`, and every block's forward when gradient
  checkpointing of the blocks is on (exact for reentrant checkpointing; torch's non-reentrant default stops
  once the tensors the backward needs are back, so it skips each block's last product, the MLP's down
  projection: an upper bound there).

Which tokens to pass: the row lengths the kernels see (the padded B × L shape) give what the step
executes and what FlopCounterMode counts; the real (non-pad) lengths give the FLOPs the step needed, the
numerator of model FLOPs utilisation (`mfu`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

BACKWARD_FACTOR = 2
"""Backward FLOPs per forward FLOP of a product: its input's gradient and its weight's gradient."""


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step (forward + backward), with the forward split by part."""

    blocks: int
    """Forward FLOPs of the blocks' linear layers (all forwarded tokens)."""
    attention: int
    """Forward FLOPs of attention scores and value sums (full L × L square per row and layer)."""
    head: int
    """Forward FLOPs of the LM head (DPO) or the reward head (RM)."""
    recomputed: int = 0
    """Forward FLOPs run a second time in the backward (checkpointing); hardware work only."""

    @property
    def forward(self) -> int:
        return self.blocks + self.attention + self.head

    @property
    def model(self) -> int:
        """Required model FLOPs of the step: 3 × forward."""
        return (1 + BACKWARD_FACTOR) * self.forward

    @property
    def hardware(self) -> int:
        """FLOPs the step executes: model FLOPs plus recomputed forwards."""
        return self.model + self.recomputed


def _get(config, name: str) -> int:
    value = getattr(config, name, None)
    if value is None:
        raise ValueError(f"the model config has no {name!r}; alignkit.flops needs num_hidden_layers, "
                         "hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, vocab_size")
    return int(value)


def head_dim(config) -> int:
    """config.head_dim when the config sets it, else hidden_size / num_attention_heads."""
    explicit = getattr(config, "head_dim", None)
    return int(explicit) if explicit else _get(config, "hidden_size") // _get(config, "num_attention_heads")


def block_matmul_params(config) -> int:
    """Weights one token passes through as products in one transformer block (no biases, no norms):
    q and o (hidden × heads·head_dim), k and v (hidden × kv_heads·head_dim), gate, up, down (hidden × ffn)."""
    hidden, ffn = _get(config, "hidden_size"), _get(config, "intermediate_size")
    d_q = _get(config, "num_attention_heads") * head_dim(config)
    d_kv = (getattr(config, "num_key_value_heads", None) or _get(config, "num_attention_heads")) * head_dim(config)
    return 2 * hidden * d_q + 2 * hidden * d_kv + 3 * hidden * ffn


def parameter_count(config, *, score_head: bool = False) -> int:
    """All parameters of a Llama / Qwen2-style causal LM: embedding, blocks (products, q/k/v biases when
    config.attention_bias or model_type 'qwen2', two norms each), final norm, the LM head when untied, and a
    reward head (hidden × 1) with `score_head`. Qwen2.5-0.5B: 494,032,768."""
    hidden, layers, vocab = _get(config, "hidden_size"), _get(config, "num_hidden_layers"), _get(config, "vocab_size")
    d_q = _get(config, "num_attention_heads") * head_dim(config)
    d_kv = (getattr(config, "num_key_value_heads", None) or _get(config, "num_attention_heads")) * head_dim(config)
    bias = getattr(config, "attention_bias", getattr(config, "model_type", "") == "qwen2")
    per_block = block_matmul_params(config) + 2 * hidden + ((d_q + 2 * d_kv) if bias else 0)
    untied = 0 if getattr(config, "tie_word_embeddings", True) else vocab * hidden
    return vocab * hidden + layers * per_block + hidden + untied + (hidden if score_head else 0)


def _lengths(sequence_lengths: Sequence[int]) -> list[int]:
    lengths = [int(n) for n in sequence_lengths]
    if any(n < 0 for n in lengths):
        raise ValueError(f"sequence lengths must be >= 0, got {min(lengths)}")
    return lengths


def blocks_forward_flops(config, sequence_lengths: Sequence[int]) -> tuple[int, int]:
    """(linear-layer FLOPs, attention FLOPs) of one forward of the blocks over rows of these lengths."""
    lengths = _lengths(sequence_lengths)
    layers = _get(config, "num_hidden_layers")
    d_attn = _get(config, "num_attention_heads") * head_dim(config)
    linear = 2 * layers * block_matmul_params(config) * sum(lengths)
    attention = 2 * 2 * layers * d_attn * sum(n * n for n in lengths)
    return linear, attention


def rm_step_flops(config, sequence_lengths: Sequence[int], scored_positions: int | None = None, *,
                  gradient_checkpointing: bool = False) -> StepFlops:
    """One reward-model training step over rows of `sequence_lengths` tokens (a packed row counts once, with
    its prompt once). `scored_positions`: positions the reward head is applied to — default one per row;
    a packed row has two (`alignkit.train.rm.packed_end_scores`); `RewardModel.forward` scores every
    position (sum of the lengths)."""
    lengths = _lengths(sequence_lengths)
    linear, attention = blocks_forward_flops(config, lengths)
    scored = len(lengths) if scored_positions is None else int(scored_positions)
    head = 2 * _get(config, "hidden_size") * scored
    return StepFlops(linear, attention, head, recomputed=(linear + attention) if gradient_checkpointing else 0)


def dpo_step_flops(config, sequence_lengths: Sequence[int], response_tokens: int, *,
                   logits_chunk: int | None = None, gradient_checkpointing: bool = False) -> StepFlops:
    """One DPO training step (policy forward + backward; a cached reference costs nothing in the step) over
    rows of `sequence_lengths` (better and worse rows of every pair), with vocabulary logits at the
    `response_tokens` positions that predict a response token (`response_mask[:, 1:].sum()`).

    `logits_chunk`: `Policy.logits_chunk`; when there are more response tokens than that, the head's
    forward runs again in the backward (hardware FLOPs only)."""
    lengths = _lengths(sequence_lengths)
    linear, attention = blocks_forward_flops(config, lengths)
    head = 2 * _get(config, "hidden_size") * _get(config, "vocab_size") * int(response_tokens)
    recomputed = head if logits_chunk is not None and response_tokens > logits_chunk else 0
    if gradient_checkpointing:
        recomputed += linear + attention
    return StepFlops(linear, attention, head, recomputed)


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: `flops` done in `seconds` as a fraction of `peak_flops` (FLOP/s; the H100
    SXM's dense bf16 peak is 989e12)."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds and peak_flops must be > 0, got {seconds} and {peak_flops}")
    return flops / seconds / peak_flops
