"""A roofline of one training step of the gpu profile (Qwen2.5-0.5B, full fine-tuning, fp32 master weights
with bf16 autocast, 8 pairs per step) on an H100: the time the step's FLOPs, its memory traffic and its
kernel launches each need at the least, the predicted step time and MFU, beside the MFU measured by
benchmarks/run_gpu.sh (benchmarks/results/gpu_h100.json) when that file has one.

    .venv/bin/python benchmarks/roofline.py [--out roofline.json] [--launch-us 5]

Two shapes per task: 'bench', the mean lengths of the rows the GPU bench trained on (from the results
file), and 'max', every sequence at the profile's max_length with a max_prompt_length prompt (the ceiling).

The model, first order:
* FLOPs: alignkit.flops (matrix products only; hardware FLOPs, so DPO's recomputed logits chunks count).
* Bytes: weights read in forward and backward, gradients, optimizer state, activations, the attention
  mask and DPO's logits (BYTES_* below; each says what it counts). Caches and fusion are ignored.
* Launches: the kernels of one step (the aten ops called from Python or from autograd that do work, under
  torch.profiler) counted on the same architecture shrunk to 2 and 4 layers, extrapolated to 24 layers, times --launch-us each.
* Predicted step = max(launch-bound, FLOP-bound + bandwidth-bound): products are compute-bound and
  everything else is memory-bound, and one GPU runs them in turn; the CPU issues launches meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("ALIGNKIT_DEVICE", "cpu")  # the launch count runs a tiny model on the CPU

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from alignkit.config import load_config  # noqa: E402
from alignkit.flops import (block_matmul_params, dpo_step_flops, head_dim, parameter_count,  # noqa: E402
                            rm_step_flops)

REPO = Path(__file__).resolve().parent.parent
H100_PEAK_FLOPS = 989e12
"""H100 SXM dense bf16 tensor-core peak (NVIDIA H100 Tensor Core GPU datasheet: 1,979 TFLOPS with
sparsity, half that dense); the same figure as common.PEAK_BF16_TFLOPS."""
H100_BANDWIDTH = 3.35e12
"""H100 SXM HBM3 bandwidth, bytes/s (same datasheet)."""

# bytes per element, fp32 master weights (4 B) with bf16 autocast copies (2 B), as the bench and the profile run
BYTES_PRODUCT_WEIGHT = 18
"""Per weight of a product per micro-batch: forward 8 (autocast reads fp32 4, writes the bf16 copy 2, the
product reads it 2); backward 10 (input-gradient product reads the copy 2; the weight-gradient product
writes bf16 2, accumulated into the fp32 .grad: read 2, write 4)."""
BYTES_EMBEDDING_GRAD = 4
"""Per embedding weight per micro-batch: its dense fp32 gradient written (the lookup itself reads only the
rows used). In DPO the embedding is also the tied LM head, a product weight."""
BYTES_OPTIMIZER = 28 + 12
"""Per trainable weight per optimizer step: fused AdamW reads weight, grad, m, v (16) and writes weight, m,
v (12); gradient clipping reads the grads for the norm (4) and scales them (read 4, write 4)."""
BYTES_ACTIVATION = 2 * 3
"""Per activation element a block produces (counted by `activation_elements`): written and read once in
the forward (bf16: 2 + 2 bytes), its gradient written and read in the backward, and the saved tensor read
again: ~3 × (2 + 2) = 12 bytes; taken as 6 because half of the elements are bf16 product outputs that
the next op reads from cache-sized tiles only once."""
BYTES_MASK = 2 * 3
"""Per (row, query, key) entry per layer: the bf16 additive mask of padded / packed batches, read once
in the forward and twice in the backward."""
BYTES_LOGIT = 38
"""Per (response token, vocabulary) logit in DPO: head output bf16 write 2, .float() read 2 write 4,
log-softmax read 4 write 4; backward: gradient of log-softmax read 8 write 4, cast to bf16 read 4
write 2, read twice by the head's two gradient products 4."""


def qwen25_05b():
    """config.json of Qwen/Qwen2.5-0.5B-Instruct on the Hub (hard-coded in common.SHAPES, no download)."""
    spec = dict(common.SHAPES["qwen2.5-0.5b"])
    return SimpleNamespace(**spec, tie_word_embeddings=True)


def activation_elements(config) -> int:
    """Elements one token's pass through one block writes: norm, q/k/v and their RoPE, attention output,
    o-projection, residual, norm, gate, up, activation, product, down, residual."""
    h, f = config.hidden_size, config.intermediate_size
    d_q, d_kv = config.num_attention_heads * head_dim(config), config.num_key_value_heads * head_dim(config)
    return 6 * h + 3 * d_q + 3 * d_kv + 4 * f


def shapes(cfg, results: dict | None) -> dict[str, dict]:
    """{'bench' | 'max': {'sequence': mean tokens per sequence, 'prompt': mean prompt tokens}}."""
    out = {"max": {"sequence": cfg.data.max_length, "prompt": cfg.data.max_prompt_length}}
    dpo = next((b for b in (results or {}).get("benchmarks", []) if b["name"] == "dpo"), None)
    if dpo and "mean_sequence_tokens" in dpo["settings"]:
        out = {"bench": {"sequence": dpo["settings"]["mean_sequence_tokens"],
                         "prompt": dpo["settings"]["mean_prompt_tokens"]}, **out}
    return out


def step_model(task: str, config, pairs: int, sequence: float, prompt: float, grad_accum: int) -> dict:
    """FLOPs (hardware and model) and bytes of one optimizer step of `grad_accum` micro-batches of `pairs`.
    RM: one packed row per pair [prompt | better | worse], scored at its two ends; DPO: 2 × pairs rows with
    logits at the response tokens. Rows are taken as equally long (length-grouped batches: little padding)."""
    sequence, prompt = round(sequence), round(prompt)
    layers, hidden, vocab = config.num_hidden_layers, config.hidden_size, config.vocab_size
    n_params = parameter_count(config, score_head=task == "rm")
    products = layers * block_matmul_params(config) + (vocab * hidden if task == "dpo" else 0)
    if task == "rm":
        rows = [2 * sequence - prompt] * pairs
        flops = rm_step_flops(config, rows, 2 * pairs)
        logits = 0
    else:
        rows = [sequence] * (2 * pairs)
        response = 2 * pairs * (sequence - prompt)
        flops = dpo_step_flops(config, rows, response, logits_chunk=2048)
        logits = response * vocab
    tokens = sum(rows)
    per_micro = (BYTES_PRODUCT_WEIGHT * products + BYTES_EMBEDDING_GRAD * vocab * hidden
                 + BYTES_ACTIVATION * activation_elements(config) * layers * tokens
                 + BYTES_MASK * layers * sum(n * n for n in rows) + BYTES_LOGIT * logits)
    return {"rows": len(rows), "row_length": rows[0], "tokens_forwarded": tokens,
            "model_flops": grad_accum * flops.model, "hardware_flops": grad_accum * flops.hardware,
            "bytes": grad_accum * per_micro + BYTES_OPTIMIZER * n_params}


def count_launches(task: str, layers: int, bf16: bool = True) -> int:
    """Kernels one training step of a tiny model of Qwen2.5's architecture (`layers` blocks) launches: the
    outermost aten ops under torch.profiler that do work (views and allocations launch nothing), on the CPU
    under bf16 autocast, with the fused AdamW step and gradient clipping the loop runs."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Qwen2Config
    from alignkit.data.tokenize import EncodedPair, EncodedSequence, collate_pairs
    from alignkit.data.packing import pack_pairs
    from alignkit.losses import bradley_terry_loss, dpo_loss
    from alignkit.models import Policy, RewardModel, response_positions
    from alignkit.train.rm import packed_end_scores
    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, num_labels=1,
                         pad_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    pairs = [EncodedPair(EncodedSequence(tuple(range(1, 1 + 12 + k)), 6),
                         EncodedSequence(tuple(range(1, 1 + 9 + k)), 6), k) for k in range(4)]
    if task == "rm":
        model = RewardModel(AutoModelForSequenceClassification.from_config(config))
        batch = pack_pairs(pairs, 0)

        def loss():
            return bradley_terry_loss(*packed_end_scores(model, batch))
    else:
        model = Policy(AutoModelForCausalLM.from_config(config))
        batch = collate_pairs(pairs, 0)
        index = response_positions(batch["response_mask"])
        reference = torch.zeros(2 * len(pairs))

        def loss():
            logps, _ = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"], index)
            half = len(pairs)
            return dpo_loss(logps[:half], logps[half:], reference[:half], reference[half:], beta=0.1).mean()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            value = loss()
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: lazy state (optimizer moments) is made once, not every step
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    no_kernel = {"view", "_unsafe_view", "as_strided", "empty", "empty_strided", "t", "transpose", "expand",
                 "reshape", "_reshape_alias", "unsqueeze", "squeeze", "permute", "slice", "select", "detach",
                 "alias", "resolve_conj", "resolve_neg", "empty_like", "lift_fresh", "result_type", "unbind",
                 "split", "chunk", "narrow", "split_with_sizes", "_local_scalar_dense", "item", "is_nonzero",
                 "set_", "unflatten", "flatten", "expand_as", "view_as", "contiguous", "to", "_to_copy",
                 "numpy_T", "movedim", "squeeze_", "unsqueeze_", "as_strided_", "_has_compatible_shallow_copy_type"}
    # an op called from Python or from an autograd node (its parent is not an aten op) is one kernel on a GPU:
    # what it calls inside (the CPU's own decompositions, foreach fallbacks, bf16 repacking) is one launch there
    top = [e for e in prof.events() if e.name.startswith("aten::")
           and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    return sum(1 for e in top if e.name.removeprefix("aten::") not in no_kernel)


def launches_at(task: str, layers: int) -> dict:
    """Launches of one step at `layers` blocks, extrapolated linearly from 2 and 4 blocks."""
    two, four = count_launches(task, 2), count_launches(task, 4)
    per_layer = (four - two) / 2
    return {"at_2_layers": two, "at_4_layers": four, "per_layer": per_layer,
            "total": round(two + per_layer * (layers - 2))}


def measured(results: dict | None, task: str, config, pairs: int, shape: dict) -> dict:
    """The bench's recorded MFU (6·N·tokens/s, N = common.matmul_params) and its step time, re-expressed
    with alignkit.flops at the bench's mean lengths."""
    bench = next((b for b in (results or {}).get("benchmarks", []) if b["name"] == task), None)
    if bench is None or "mfu" not in bench:
        return {}
    steps = bench["settings"].get("steps_per_repeat")
    out = {"mfu_6n": bench["mfu"]["alignkit"]}
    if steps and shape:
        seconds = statistics.median(bench["alignkit"]["seconds"][common.WARMUP_REPEATS:]) / steps  # as race_ratio
        flops = step_model(task, config, pairs, shape["sequence"], shape["prompt"], 1)["model_flops"]
        out.update(step_s=seconds, mfu_flops=flops / seconds / H100_PEAK_FLOPS)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "gpu_h100.json"),
                        help="the GPU bench's results (measured MFU and the 'bench' shape); missing: 'max' only")
    parser.add_argument("--launch-us", type=float, default=5.0,
                        help="CPU time to issue one kernel (dispatcher + launch), microseconds (default 5)")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per optimizer step (default 1, as the bench; the profile's "
                             "rm.train.grad_accum is 2)")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    cfg = load_config("gpu")
    config = qwen25_05b()
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    rows = []
    for task, pairs in (("rm", cfg.rm.train.batch_size), ("dpo", cfg.dpo.train.batch_size)):
        launches = launches_at(task, config.num_hidden_layers)
        for name, shape in shapes(cfg, results).items():
            model = step_model(task, config, pairs, shape["sequence"], shape["prompt"], args.grad_accum)
            flop_s = model["hardware_flops"] / H100_PEAK_FLOPS
            byte_s = model["bytes"] / H100_BANDWIDTH
            launch_s = args.grad_accum * launches["total"] * args.launch_us * 1e-6
            step_s = max(launch_s, flop_s + byte_s)
            row = {"task": task, "shape": name, "pairs": pairs, **shape, **model, "launches": launches,
                   "flop_bound_ms": 1e3 * flop_s, "bandwidth_bound_ms": 1e3 * byte_s,
                   "launch_bound_ms": 1e3 * launch_s, "predicted_step_ms": 1e3 * step_s,
                   "predicted_mfu": model["model_flops"] / step_s / H100_PEAK_FLOPS}
            if name == "bench":
                row["measured"] = measured(results, task, config, pairs, shape)
            rows.append(row)
    print(f"{cfg.model.name} architecture, {config.num_hidden_layers} layers; {args.grad_accum} micro-batch(es) "
          f"per step; H100 {H100_PEAK_FLOPS / 1e12:.0f} TFLOPS bf16, {H100_BANDWIDTH / 1e12:.2f} TB/s, "
          f"{args.launch_us:g} us per launch")
    header = ("task", "shape", "seq/prompt", "TFLOP", "GB", "launches", "FLOP ms", "bytes ms", "launch ms",
              "pred ms", "pred MFU", "meas ms", "meas MFU (flops)", "meas MFU (6N)")
    print(" | ".join(header))
    for r in rows:
        m = r.get("measured", {})
        print(" | ".join([r["task"], r["shape"], f"{r['sequence']:.0f}/{r['prompt']:.0f}",
                          f"{r['model_flops'] / 1e12:.2f}", f"{r['bytes'] / 1e9:.1f}", str(r["launches"]["total"]),
                          f"{r['flop_bound_ms']:.1f}", f"{r['bandwidth_bound_ms']:.1f}", f"{r['launch_bound_ms']:.1f}",
                          f"{r['predicted_step_ms']:.1f}", f"{r['predicted_mfu']:.1%}",
                          f"{1e3 * m['step_s']:.0f}" if "step_s" in m else "-",
                          f"{m['mfu_flops']:.1%}" if "mfu_flops" in m else "-",
                          f"{m['mfu_6n']:.1%}" if "mfu_6n" in m else "-"]))
    out = {"gpu": "H100 SXM", "peak_flops": H100_PEAK_FLOPS, "bandwidth": H100_BANDWIDTH,
           "launch_us": args.launch_us, "grad_accum": args.grad_accum, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
