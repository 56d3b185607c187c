"""Reward-model training throughput: alignkit's training loop (`alignkit.train.loop.train` with the reward
task; by default `PackedRewardTask`, which computes a pair's shared prompt once, see alignkit/packing.py) vs
TRL's `RewardTrainer`, in one process, alternating and repeated.

Both sides get the same model weights (same seed for the fresh score head), the same token ids (alignkit's
chat-template encoding and truncation, handed to TRL pre-tokenized as chosen_ids/rejected_ids), the same
batch size, max length, optimizer (AdamW, same lr, no weight decay, clip 1.0) and trainable set (LoRA
all-linear r=16 alpha=32 + the score head, by default). One repeat = one epoch over the rows.

Fairness notes, recorded in the result's settings:
- TRL pools the reward at the last non-pad token, so its tokenizer gets a pad token distinct from eos
  (`<|endoftext|>`, an existing special token that never occurs in the rows; SmolLM2 pads with its eos).
- TRL runs fp32 with gradient checkpointing off (its defaults are bf16 autocast, which stalls on this CPU,
  and checkpointing, which recomputes the forward): the same arithmetic as alignkit, so the ratio measures
  the training loop, not a precision or memory trade-off.
- Timed windows: TRL from its first `on_step_begin` to its last `on_step_end` (its set-up and the first
  batch's collation excluded); alignkit from its first collate call to the return of `train` (collation
  included). Tokens/s counts non-pad tokens (identical rows, so identical counts; TRL's own counter is
  checked against ours).

    .venv/bin/python benchmarks/bench_rm.py                 # SmolLM2-135M from the cache
    .venv/bin/python benchmarks/bench_rm.py --quick         # tiny random model
    python benchmarks/bench_rm.py --device cuda --bf16 --model random:qwen2.5-0.5b --trainable full \
        --batch-size 8 --max-length 1024 --n-rows 128          # the gpu profile's shape on a GPU (+ MFU)

On a GPU (`--device cuda`, with `--bf16` both sides autocast to bf16 over fp32 weights) the timed windows end
with a CUDA synchronize, and the result gets `mfu` (see common.model_flops_utilisation).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PEER_PAD = "<|endoftext|>"


def _encoded_items(pairs, tokenizer, max_length: int, max_prompt_length: int):
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    items, _ = encode_pairs(ChatEncoder(tokenizer, max_length, max_prompt_length), pairs)
    return items


def _dataset(items):
    """TRL's pre-tokenized preference format; `length` feeds its group_by_length sampler when asked for."""
    from datasets import Dataset
    return Dataset.from_dict({"chosen_ids": [list(i.better.input_ids) for i in items],
                              "rejected_ids": [list(i.worse.input_ids) for i in items],
                              "length": [i.length for i in items]})


def _trl_trainer(model_path: str, tokenizer, items, *, batch_size: int, max_length: int, lr: float,
                 trainable: str, sampling: str, out_dir: str, seed: int, device: torch.device, bf16: bool,
                 last_k: int = 2):
    """TRL's RewardTrainer on the same token ids, weights and trainable set; returns (trainer, step window)."""
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, PrinterCallback
    from trl import RewardConfig, RewardTrainer
    from alignkit.models import TrainableConfig, make_trainable

    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.pad_token = PEER_PAD
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise SystemExit(f"{PEER_PAD} is this tokenizer's eos; TRL's pad-id pooling needs a distinct pad token")
    torch.manual_seed(seed)  # the same fresh score head as alignkit's RewardModel.from_pretrained(seed=seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
    peft_config = None
    if trainable == "lora":
        peft_config = LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules="all-linear")
    else:
        make_trainable(model.model, TrainableConfig(mode=trainable, last_k=last_k))  # requires_grad=False below
    args = RewardConfig(
        output_dir=out_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        max_steps=len(items) // batch_size, learning_rate=lr, weight_decay=0.0, warmup_steps=0,
        max_grad_norm=1.0, max_length=max_length, bf16=bf16, gradient_checkpointing=False,
        train_sampling_strategy=sampling, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=device.type == "cpu", dataloader_num_workers=0,
        seed=seed, remove_unused_columns=False)  # keep `length` for the sampler; the collator ignores it
    window = common.step_window(device)
    trainer = RewardTrainer(model=model, args=args, train_dataset=_dataset(items), processing_class=tokenizer,
                            peft_config=peft_config, callbacks=[window])
    trainer.remove_callback(PrinterCallback)  # the end-of-train summary print
    return trainer, window


def run(quick: bool = False, repeats: int = 3, *, model: str | None = None, n_rows: int | None = None,
        batch_size: int = 4, max_length: int | None = None, max_prompt_length: int | None = None,
        trainable: str = "lora", lr: float = 1e-4, peer_sampling: str = "random", alignkit_task: str = "packed",
        seed: int = 0, device: str = "cpu", bf16: bool = False, tokenizer: str = "smollm2", last_k: int = 8,
        epochs: int = 1, cache_prefix: bool = True,
        prefix_dtype: str = "float32") -> dict:
    """Per repeat r, both sides train `epochs` epochs over the same `n_rows` pairs (chunk r of a seeded sample of
    `n_rows * repeats` pairs, so the repeats cover different rows); tokens/s of each, and the ratio.
    `quick` uses a tiny random Llama (unless `model` is given) and short sequences. `alignkit_task`:
    'packed' (PackedRewardTask: shared-prompt packing) or 'plain' (RewardTask: concatenated batch).
    `model` 'random:SHAPE' builds random weights of a known architecture with `tokenizer` (common.SHAPES).
    `trainable` 'last_k': the top `last_k` blocks, final norm and head on both sides (TRL's bottom blocks
    `requires_grad=False`); alignkit then keeps the frozen prefix's output (alignkit.prefix) unless
    `cache_prefix` is off, a fresh cache per repeat, filled in its first epoch, computed in `prefix_dtype`
    ('float32', 'bfloat16' or 'auto': alignkit.config.TrainableConfig.prefix_dtype; TRL stays float32)."""
    common.quiet()
    from alignkit.io import dtype_name
    from alignkit.models import (RewardModel, TrainableConfig, load_tokenizer, make_trainable, resolve_model,
                                 weights_dtype)
    from alignkit.data.packing import packed_length
    from alignkit.prefix import prefix_cache_for
    from alignkit.train.rm import PackedRewardTask
    from alignkit.train.rm import RewardTask
    tasks = {"packed": PackedRewardTask, "plain": RewardTask}
    if alignkit_task not in tasks:
        raise SystemExit(f"alignkit_task must be one of {sorted(tasks)}, got {alignkit_task!r}")
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-rm-")
    device = common.pick_device(device)
    model, model_label = common.pick_model(model, quick, Path(tmp.name), tokenizer)
    n_rows = n_rows or (16 if quick else 32)
    max_length = max_length or (64 if quick else 160)
    max_prompt_length = max_prompt_length or max_length * 2 // 5
    n_rows -= n_rows % batch_size
    if n_rows < batch_size:
        raise SystemExit(f"n_rows must be at least one batch ({batch_size})")

    pairs, source = common.preference_pairs(n_rows * repeats, seed)
    tokenizer = load_tokenizer(model)
    items = _encoded_items(pairs, tokenizer, max_length, max_prompt_length)
    chunks = [items[r * n_rows:(r + 1) * n_rows] for r in range(repeats)]
    tokens = [sum(len(s.input_ids) for i in chunk for s in (i.better, i.worse)) for chunk in chunks]
    datasets = [_dataset(chunk) for chunk in chunks]

    ours = RewardModel.from_pretrained(model, seed=seed)
    trainable_cfg = TrainableConfig(mode=trainable, last_k=last_k, cache_prefix=cache_prefix)
    ours.backbone = make_trainable(ours.backbone, trainable_cfg)
    ours.to(device)

    prefix_compute = weights_dtype(prefix_dtype, device)

    def fresh_prefix():
        ours.prefix = prefix_cache_for(trainable_cfg, ours.backbone, None, prefix_compute)
    task = tasks[alignkit_task](tokenizer.pad_token_id)
    group_key = packed_length if alignkit_task == "packed" else (lambda pair: pair.length)
    trainer, window = _trl_trainer(resolve_model(model), tokenizer, chunks[0], batch_size=batch_size,
                                   max_length=max_length, lr=lr, trainable=trainable, sampling=peer_sampling,
                                   out_dir=str(Path(tmp.name) / "trl"), seed=seed, device=device, bf16=bf16,
                                   last_k=last_k)
    peer_pad = trainer.processing_class.pad_token_id
    if any(peer_pad in s.input_ids for i in items for s in (i.better, i.worse)):
        raise SystemExit(f"{PEER_PAD} occurs in the rows; TRL's pad-id pooling would read the wrong token")
    n_ours = common.check_same_trainable(ours, trainer.model)

    lengths = [[group_key(i) for i in chunk] for chunk in chunks]
    measured = common.race_training(ours, task, chunks, lengths, tokens, trainer, window, datasets,
                                    repeats=repeats, batch_size=batch_size, lr=lr, bf16=bf16, seed=seed,
                                    device=device, folder=Path(tmp.name), desc="bench rm", epochs=epochs,
                                    before_repeat=fresh_prefix)
    settings = {"model": model_label, "device": str(device),
                "data": Path(source).name, "n_rows": n_rows, "rows_in_all": n_rows * repeats,
                "sequences": 2 * n_rows, "tokens_per_repeat": tokens,
                "batch_size": batch_size, "max_length": max_length, "max_prompt_length": max_prompt_length,
                "trainable": trainable, "trainable_params": n_ours, "epochs": epochs,
                **({"last_k": last_k, "cache_prefix": cache_prefix,
                    "prefix_dtype": dtype_name(prefix_compute)} if trainable == "last_k" else {}),
                "dtype": "float32 weights, bf16 autocast" if bf16 else "float32",
                "steps_per_repeat": epochs * (n_rows // batch_size), "lr": lr,
                "peer": {"pad_token": PEER_PAD, "bf16": bf16, "gradient_checkpointing": False,
                         "train_sampling_strategy": peer_sampling, "optim": str(trainer.args.optim)},
                "alignkit_task": alignkit_task,
                "alignkit_batches": "length-grouped (alignkit.train.loop)"
                                    + (" by packed length, one row per pair: [prompt | better | worse]"
                                       if alignkit_task == "packed" else ", better rows then worse rows"),
                "rows": "repeat r trains both sides on chunk r of the sample (same rows, different per repeat)",
                "timing": "TRL: first on_step_begin -> last on_step_end; alignkit: first collate -> train() returns",
                "memory": common.memory_note(device)}
    n_matmul = common.matmul_params(trainer.model, lm_head=False)
    tmp.cleanup()
    label = "alignkit PackedRewardTask" if alignkit_task == "packed" else "alignkit RewardTask"
    if trainable == "last_k" and cache_prefix:
        label += f" (cached {'bf16 ' if prefix_compute == torch.bfloat16 else ''}prefix, last {last_k} blocks)"
    result = common.make_result("rm", "tokens/s", label, f"trl {common._version('trl')} RewardTrainer",
                                measured, settings, time.perf_counter() - t0, aim=1.5)
    if device.type == "cuda" and bf16:
        result["mfu"] = common.model_flops_utilisation(result, n_matmul)
    return result


def main() -> None:
    parser = common.bench_parser(__doc__, "tiny random model, short sequences")
    parser.add_argument("--n-rows", type=int, help="preference pairs per repeat (default 32; 16 with --quick)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--max-length", type=int, help="default 160 (64 with --quick)")
    parser.add_argument("--trainable", default="lora", choices=["lora", "last_k", "full"])
    parser.add_argument("--last-k", type=int, default=8, help="blocks trained with --trainable last_k (default 8)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs over each repeat's rows, both sides (default 1)")
    parser.add_argument("--no-cache-prefix", action="store_true",
                        help="last_k: run alignkit's frozen blocks at every step, as TRL does")
    parser.add_argument("--peer-sampling", default="random", choices=["random", "group_by_length"],
                        help="TRL's train_sampling_strategy (its default: random)")
    parser.add_argument("--alignkit-task", default="packed", choices=["packed", "plain"],
                        help="packed: shared-prompt rows (alignkit.packing); plain: concatenated batch")
    common.add_device_options(parser)
    args = parser.parse_args()
    result = run(args.quick, args.repeats, model=args.model, n_rows=args.n_rows, batch_size=args.batch_size,
                 max_length=args.max_length, trainable=args.trainable, peer_sampling=args.peer_sampling,
                 alignkit_task=args.alignkit_task, device=args.device, bf16=args.bf16, tokenizer=args.tokenizer,
                 last_k=args.last_k, epochs=args.epochs, cache_prefix=not args.no_cache_prefix)
    common.finish(result, args.json)


if __name__ == "__main__":
    main()
