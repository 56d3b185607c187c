"""DPO training throughput: alignkit's training loop (`alignkit.train.loop.train` with `DPOTask`, sigmoid loss,
reference log-probs cached before training) vs TRL's `DPOTrainer` (`precompute_ref_log_probs=True`), in one
process, alternating and repeated.

Both sides get the same model weights, the same rows, the same token ids (checked), the same batch size, max
length, optimizer (AdamW, same lr, no weight decay, clip 1.0), loss (sigmoid, beta 0.1) and trainable set
(LoRA all-linear r=16 alpha=32 on the causal LM; the reference is the model with its adapter disabled). One
repeat = one epoch over that repeat's rows.

Fairness notes, recorded in the result's settings:
- Reference log-probs: both sides compute them once, before training, over every row of every repeat
  (alignkit: `reference_logps`, before `make_trainable`; TRL: in its constructor). Those passes are timed
  apart (settings.reference_precompute_s) and are not in the ratio, which measures training steps only.
- Same tokens: TRL gets conversational rows ({prompt: messages, chosen/rejected: [assistant message]}) and
  tokenizes them with the chat template itself, as alignkit's `ChatEncoder` does (the whole rendering, the
  newline after "<|im_end|>" included). Rows are kept only if alignkit's encoding cuts nothing (prompt <=
  max_prompt_length, each sequence <= max_length), so neither side truncates (TRL has no prompt limit and
  cuts sequence ends instead). The bench then checks that TRL's prompt + chosen/rejected ids equal
  alignkit's token for token, and that TRL's own non-pad token counter matches ours.
- TRL runs fp32 with gradient checkpointing off (its defaults would be bf16 autocast, which stalls on this
  CPU, and checkpointing, which recomputes the forward): the same arithmetic as alignkit.
- Timed windows: TRL from its first `on_step_begin` to its last `on_step_end` (its set-up and the first
  batch's collation excluded); alignkit from its first collate call to the return of `train` (collation
  included). Tokens/s counts non-pad tokens of the chosen and rejected sequences (identical on both sides).

    .venv/bin/python benchmarks/bench_dpo.py                 # SmolLM2-135M from the cache
    .venv/bin/python benchmarks/bench_dpo.py --quick         # tiny random model
    python benchmarks/bench_dpo.py --device cuda --bf16 --model random:qwen2.5-0.5b --trainable full \
        --batch-size 8 --max-length 1024 --max-prompt-length 512 --n-rows 128   # gpu profile's shape (+ MFU)

With `--trainable full` the reference is the untrained policy itself (alignkit caches its log-probs before
the first update; TRL precomputes them in its constructor), as in the gpu profile.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BETA = 0.1
LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}
def _uncut_pairs(n: int, tokenizer, max_length: int, max_prompt_length: int, seed: int):
    """`n` seeded pairs whose encoding alignkit does not truncate, with their encodings (renumbered 0..n-1)."""
    from dataclasses import replace
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    asked = 2 * n + 16
    while True:
        pairs, source = common.preference_pairs(asked, seed)
        encoded, _ = encode_pairs(ChatEncoder(tokenizer, max_length, max_prompt_length), pairs)
        keep = [(pairs[e.index], e) for e in encoded
                if not any(s.response_cut or s.prompt_cut for s in (e.better, e.worse))][:n]
        if len(keep) == n:
            return [p for p, _ in keep], [replace(e, index=i) for i, (_, e) in enumerate(keep)], source
        asked *= 2  # preference_pairs raises once the data runs out


def _rows(pairs):
    """TRL's conversational preference format."""
    from datasets import Dataset
    return Dataset.from_list([{"prompt": [dict(m) for m in p.prompt],
                               "chosen": [{"role": "assistant", "content": p.better}],
                               "rejected": [{"role": "assistant", "content": p.worse}]} for p in pairs])


def _trl_trainer(model_path: str, tokenizer, pairs, *, batch_size: int, max_length: int, lr: float,
                 out_dir: str, seed: int, trainable: str, device: torch.device, bf16: bool, last_k: int = 8):
    """TRL's DPOTrainer on the same rows, weights and trainable set; its constructor precomputes the
    reference log-probs of every row (timed). Returns (trainer, step window, precompute seconds)."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import DPOConfig, DPOTrainer

    class TimedPrecompute(DPOTrainer):
        precompute_s = 0.0

        def _precompute_ref_logps(self, dataset, name, batch_size):
            start = time.perf_counter()
            try:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            finally:
                TimedPrecompute.precompute_s += time.perf_counter() - start

    import datasets
    datasets.disable_progress_bars()
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if trainable == "last_k":  # the same trainable set as alignkit's: bottom blocks requires_grad=False
        from alignkit.models import TrainableConfig, make_trainable
        make_trainable(model, TrainableConfig(mode="last_k", last_k=last_k))
    peft_config = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **LORA) if trainable == "lora" else None
    args = DPOConfig(
        output_dir=out_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        max_steps=len(pairs) // batch_size, learning_rate=lr, weight_decay=0.0, warmup_steps=0,
        max_grad_norm=1.0, max_length=max_length, beta=BETA, loss_type=["sigmoid"],
        precompute_ref_log_probs=True, precompute_ref_batch_size=8, bf16=bf16, gradient_checkpointing=False,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=device.type == "cpu", dataloader_num_workers=0, seed=seed)
    window = common.step_window(device)
    trainer = TimedPrecompute(model=model, args=args, train_dataset=_rows(pairs), processing_class=tokenizer,
                              peft_config=peft_config, callbacks=[window])
    trainer.remove_callback(PrinterCallback)  # the end-of-train summary print
    return trainer, window, TimedPrecompute.precompute_s


def run(quick: bool = False, repeats: int = 3, *, model: str | None = None, n_rows: int | None = None,
        batch_size: int = 4, max_length: int = 160, max_prompt_length: int = 64, lr: float = 1e-4,
        seed: int = 0, trainable: str = "lora", device: str = "cpu", bf16: bool = False,
        tokenizer: str = "smollm2", last_k: int = 8, epochs: int = 1, cache_prefix: bool = True,
        prefix_dtype: str = "float32") -> dict:
    """Per repeat r, both sides train `epochs` epochs over the same `n_rows` pairs (chunk r of a seeded sample of
    `n_rows * repeats` pairs that alignkit encodes without truncation); tokens/s of each, and the ratio.
    `quick` uses a tiny random Llama (unless `model` is given); 'random:SHAPE' = random weights of a known
    architecture with `tokenizer` (common.SHAPES). `trainable`: 'lora' (all-linear r=16), 'full', or 'last_k'
    (the top `last_k` blocks and final norm; alignkit's reference pass also fills its frozen-prefix cache,
    alignkit.prefix, unless `cache_prefix` is off, so its training steps run the top blocks only), computed in
    `prefix_dtype` ('float32', 'bfloat16' or 'auto': alignkit.config.TrainableConfig.prefix_dtype)."""
    common.quiet()
    from alignkit.config import DPOConfig, TrainConfig
    from alignkit.io import dtype_name
    from alignkit.models import Policy, TrainableConfig, load_tokenizer, make_trainable, resolve_model, weights_dtype
    from alignkit.train.dpo import DPOItem, DPOTask, reference_logps
    from alignkit.train import loop as training_loop
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-dpo-")
    if trainable not in ("lora", "full", "last_k"):
        raise SystemExit(f"trainable must be 'lora', 'full' or 'last_k', got {trainable!r}")
    device = common.pick_device(device)
    model, model_label = common.pick_model(model, quick, Path(tmp.name), tokenizer)
    n_rows = n_rows or (16 if quick else 32)
    n_rows -= n_rows % batch_size
    if n_rows < batch_size:
        raise SystemExit(f"n_rows must be at least one batch ({batch_size})")

    tok = load_tokenizer(model)
    pad = tok.pad_token_id
    pairs, encoded, source = _uncut_pairs(n_rows * repeats, tok, max_length, max_prompt_length, seed)
    tokens = [sum(len(s.input_ids) for e in encoded[r * n_rows:(r + 1) * n_rows] for s in (e.better, e.worse))
              for r in range(repeats)]

    trainable_cfg = (TrainableConfig(mode="lora", lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                                     lora_targets=LORA["target_modules"]) if trainable == "lora"
                     else TrainableConfig(mode=trainable, last_k=last_k, cache_prefix=cache_prefix))
    ours = Policy.from_pretrained(model).to(device)
    from alignkit.prefix import prefix_cache_for
    prefix_compute = weights_dtype(prefix_dtype, device)
    ours.prefix = prefix_cache_for(trainable_cfg, ours.lm.get_decoder(), None,
                                   prefix_compute)  # filled by the reference pass
    start = time.perf_counter()
    with training_loop.autocast(bf16, device):  # the untrained policy = the reference
        refs = reference_logps(ours, encoded, pad, cache=None, batch_size=8)
    ours_precompute = time.perf_counter() - start
    ours.lm = make_trainable(ours.lm, trainable_cfg)
    items = [DPOItem(e, refs[i]) for i, e in enumerate(encoded)]
    chunks = [items[r * n_rows:(r + 1) * n_rows] for r in range(repeats)]
    task = DPOTask(pad, DPOConfig(loss="sigmoid", beta=BETA, trainable=trainable_cfg,
                                  train=TrainConfig(batch_size=batch_size, lr=lr)))

    trainer, window, peer_precompute = _trl_trainer(resolve_model(model), tok, pairs, batch_size=batch_size,
                                                    max_length=max_length, lr=lr, out_dir=str(Path(tmp.name) / "trl"),
                                                    seed=seed, trainable=trainable, device=device, bf16=bf16,
                                                    last_k=last_k)
    prepared = trainer.train_dataset  # tokenized, with ref_chosen_logps / ref_rejected_logps
    if len(prepared) != len(encoded):
        raise SystemExit(f"TRL kept {len(prepared)} of {len(encoded)} rows")
    for row, e in zip(prepared, encoded):
        if (row["prompt_ids"] + row["chosen_ids"] != list(e.better.input_ids)
                or row["prompt_ids"] + row["rejected_ids"] != list(e.worse.input_ids)
                or len(row["prompt_ids"]) != e.better.prompt_length):
            raise SystemExit(f"row {e.index}: TRL's token ids differ from alignkit's")
    ref_gap = max(max(abs(row["ref_chosen_logps"] - r[0]), abs(row["ref_rejected_logps"] - r[1]))
                  for row, r in zip(prepared, refs))
    datasets = [prepared.select(range(r * n_rows, (r + 1) * n_rows)) for r in range(repeats)]
    n_ours = common.check_same_trainable(ours, trainer.model)

    lengths = [[i.pair.length for i in chunk] for chunk in chunks]
    measured = common.race_training(ours, task, chunks, lengths, tokens, trainer, window, datasets,
                                    repeats=repeats, batch_size=batch_size, lr=lr, bf16=bf16, seed=seed,
                                    device=device, folder=Path(tmp.name), desc="bench dpo", epochs=epochs)
    prompt_tokens = sum(e.better.prompt_length for e in encoded)
    settings = {"model": model_label, "device": str(device),
                "data": Path(source).name, "n_rows": n_rows, "rows_in_all": n_rows * repeats,
                "rows_filter": f"only pairs alignkit encodes uncut (prompt <= {max_prompt_length}, "
                               f"sequence <= {max_length} tokens)",
                "sequences": 2 * n_rows, "tokens_per_repeat": tokens,
                "mean_sequence_tokens": round(sum(tokens) / (2 * n_rows * repeats), 1),
                "mean_prompt_tokens": round(prompt_tokens / len(encoded), 1),
                "batch_size": batch_size, "max_length": max_length, "max_prompt_length": max_prompt_length,
                "trainable": trainable, **({"lora": LORA} if trainable == "lora" else {}), "epochs": epochs,
                **({"last_k": last_k, "cache_prefix": cache_prefix,
                    "prefix_dtype": dtype_name(prefix_compute)} if trainable == "last_k" else {}),
                "trainable_params": n_ours, "dtype": "float32 weights, bf16 autocast" if bf16 else "float32",
                "loss": "sigmoid", "beta": BETA, "steps_per_repeat": epochs * (n_rows // batch_size), "lr": lr,
                "reference_precompute_s": {"alignkit": round(ours_precompute, 2), "peer": round(peer_precompute, 2),
                                           "rows": len(encoded), "batch_size": 8,
                                           "max_abs_difference": ref_gap},
                "peer": {"bf16": bf16, "gradient_checkpointing": False, "precompute_ref_log_probs": True,
                         "chat_template": "the tokenizer's own (both sides)",
                         "optim": str(trainer.args.optim), "train_sampling_strategy": "random"},
                "alignkit_batches": "length-grouped (alignkit.train.loop), better rows then worse rows",
                "rows": "repeat r trains both sides on chunk r of the sample (same rows, different per repeat)",
                "timing": "TRL: first on_step_begin -> last on_step_end; alignkit: first collate -> train() returns",
                "memory": common.memory_note(device)}
    n_matmul = common.matmul_params(trainer.model, lm_head=True)
    tmp.cleanup()
    bf16_prefix = "bf16 " if prefix_compute == torch.bfloat16 else ""
    label = "alignkit DPOTask (cached reference" + (f", cached {bf16_prefix}prefix, last {last_k} blocks)"
                                                   if trainable == "last_k" and cache_prefix else ")")
    result = common.make_result("dpo", "tokens/s", label,
                                f"trl {common._version('trl')} DPOTrainer", measured, settings,
                                time.perf_counter() - t0, aim=1.5)
    if device.type == "cuda" and bf16:
        result["mfu"] = common.model_flops_utilisation(result, n_matmul)
    return result


def main() -> None:
    parser = common.bench_parser(__doc__, "tiny random model")
    parser.add_argument("--n-rows", type=int, help="preference pairs per repeat (default 32; 16 with --quick)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--max-prompt-length", type=int, default=64)
    parser.add_argument("--trainable", default="lora", choices=["lora", "full", "last_k"])
    parser.add_argument("--last-k", type=int, default=8, help="blocks trained with --trainable last_k (default 8)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs over each repeat's rows, both sides (default 1)")
    parser.add_argument("--no-cache-prefix", action="store_true",
                        help="last_k: run alignkit's frozen blocks at every step, as TRL does")
    common.add_device_options(parser)
    args = parser.parse_args()
    result = run(args.quick, args.repeats, model=args.model, n_rows=args.n_rows, batch_size=args.batch_size,
                 max_length=args.max_length, max_prompt_length=args.max_prompt_length, trainable=args.trainable,
                 device=args.device, bf16=args.bf16, tokenizer=args.tokenizer, last_k=args.last_k,
                 epochs=args.epochs, cache_prefix=not args.no_cache_prefix)
    common.finish(result, args.json)
    print("reference precompute (s):", result["settings"]["reference_precompute_s"])


if __name__ == "__main__":
    main()
