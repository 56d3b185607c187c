"""Reward-model training throughput: alignkit's training loop (RewardTask through `alignkit.train.loop.train`)
vs TRL's `RewardTrainer`, in one process, alternating and repeated.

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
"""
from __future__ import annotations

import argparse
import json
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


def _trl_trainer(model_path: str, tokenizer, items, *, batch_size: int, max_length: int, lr: float,
                 trainable: str, sampling: str, out_dir: str, seed: int):
    """TRL's RewardTrainer on the same token ids, weights and trainable set; returns (trainer, step timer)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, PrinterCallback, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from alignkit.models import TrainableConfig, make_trainable

    class StepWindow(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.first = self.last = None

        def on_step_begin(self, args, state, control, **kw):
            if self.first is None:
                self.first = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.last = time.perf_counter()

    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.pad_token = PEER_PAD
    pad_id = tokenizer.pad_token_id
    if pad_id == tokenizer.eos_token_id or any(pad_id in s.input_ids for i in items for s in (i.better, i.worse)):
        raise SystemExit(f"{PEER_PAD} is eos or occurs in the rows; TRL's pad-id pooling would read the wrong token")
    torch.manual_seed(seed)  # the same fresh score head as alignkit's RewardModel.from_pretrained(seed=seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
    peft_config = None
    if trainable == "lora":
        peft_config = LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.0,
                                 target_modules="all-linear")
    else:
        make_trainable(model.model, TrainableConfig(mode=trainable))
    dataset = Dataset.from_dict({"chosen_ids": [list(i.better.input_ids) for i in items],
                                 "rejected_ids": [list(i.worse.input_ids) for i in items]})
    args = RewardConfig(
        output_dir=out_dir, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
        max_steps=len(items) // batch_size, learning_rate=lr, weight_decay=0.0, warmup_steps=0,
        max_grad_norm=1.0, max_length=max_length, bf16=False, gradient_checkpointing=False,
        train_sampling_strategy=sampling, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        seed=seed, pad_token=PEER_PAD)
    window = StepWindow()
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config, callbacks=[window])
    trainer.remove_callback(PrinterCallback)  # the end-of-train summary print
    return trainer, window


def run(quick: bool = False, repeats: int = 3, *, model: str | None = None, n_rows: int | None = None,
        batch_size: int = 4, max_length: int | None = None, max_prompt_length: int | None = None,
        trainable: str = "lora", lr: float = 1e-4, peer_sampling: str = "random", seed: int = 0) -> dict:
    """Train both sides for one epoch over the same `n_rows` pairs per repeat; tokens/s of each, and the
    ratio. `quick` uses a tiny random Llama (unless `model` is given) and short sequences."""
    common.quiet()
    from alignkit.config import TrainConfig
    from alignkit.models import RewardModel, TrainableConfig, load_tokenizer, make_trainable
    from alignkit.train.loop import train
    from alignkit.train.rm import RewardTask
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-rm-")
    if model is None:
        model = str(common.tiny_model(Path(tmp.name) / "tiny")) if quick else "smollm2"
    n_rows = n_rows or 16
    max_length = max_length or (64 if quick else 160)
    max_prompt_length = max_prompt_length or max_length * 2 // 5
    n_rows -= n_rows % batch_size
    if n_rows < batch_size:
        raise SystemExit(f"n_rows must be at least one batch ({batch_size})")

    pairs, source = common.preference_pairs(n_rows, seed)
    tokenizer = load_tokenizer(model)
    items = _encoded_items(pairs, tokenizer, max_length, max_prompt_length)
    tokens = sum(len(s.input_ids) for i in items for s in (i.better, i.worse))

    from alignkit.models import resolve_model
    ours = RewardModel.from_pretrained(model, seed=seed)
    ours.backbone = make_trainable(ours.backbone, TrainableConfig(mode=trainable))
    task = RewardTask(tokenizer.pad_token_id)
    trainer, window = _trl_trainer(resolve_model(model), tokenizer, items, batch_size=batch_size,
                                   max_length=max_length, lr=lr, trainable=trainable, sampling=peer_sampling,
                                   out_dir=str(Path(tmp.name) / "trl"), seed=seed)
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_peer = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if n_ours != n_peer:
        raise SystemExit(f"trainable parameters differ: alignkit {n_ours}, TRL {n_peer}")

    class FirstCollate:
        """RewardTask, noting when the loop asks for its first batch (the start of the timed window)."""

        def __init__(self):
            self.start = None

        def collate(self, batch_items):
            if self.start is None:
                self.start = time.perf_counter()
            return task.collate(batch_items)

        def step(self, m, batch):
            return task.step(m, batch)

        def evaluate(self, m, eval_items):
            return task.evaluate(m, eval_items)

    def alignkit_side(steps: int | None = None) -> common.Work:
        cfg = TrainConfig(epochs=1.0, max_steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.0,
                          max_grad_norm=1.0, eval_every=0, save_every=0, log_every=10 ** 9)
        timed = FirstCollate()
        train(ours, timed, items, [], [i.length for i in items], cfg, seed=seed,
              checkpoint_dir=Path(tmp.name) / "ckpt", tensorboard_dir=None, desc="bench rm")
        return common.Work(tokens, time.perf_counter() - timed.start)

    trl_tokens = []

    def peer_side(steps: int | None = None) -> common.Work:
        trainer.args.max_steps = steps or len(items) // batch_size
        before = trainer._total_train_tokens
        trainer.train()
        trl_tokens.append(trainer._total_train_tokens - before)
        return common.Work(tokens, window.last - window.first)

    measured = common.alternate({"alignkit": alignkit_side, "peer": peer_side}, repeats,
                                warmup={"alignkit": lambda: alignkit_side(1), "peer": lambda: peer_side(1)})
    if any(n != tokens for n in trl_tokens[1:]):  # [0] is the one-step warm-up
        raise SystemExit(f"TRL counted {trl_tokens[1:]} non-pad tokens per epoch, alignkit {tokens}: rows differ")
    settings = {"model": "smollm2" if model == "smollm2" else (common.QUICK_MODEL if quick else model),
                "data": Path(source).name, "n_rows": n_rows, "sequences": 2 * n_rows, "tokens_per_repeat": tokens,
                "batch_size": batch_size, "max_length": max_length, "max_prompt_length": max_prompt_length,
                "trainable": trainable, "trainable_params": n_ours, "dtype": "float32",
                "steps_per_repeat": n_rows // batch_size, "lr": lr,
                "peer": {"pad_token": PEER_PAD, "bf16": False, "gradient_checkpointing": False,
                         "train_sampling_strategy": peer_sampling, "optim": str(trainer.args.optim)},
                "alignkit_batches": "length-grouped (alignkit.train.loop)",
                "timing": "TRL: first on_step_begin -> last on_step_end; alignkit: first collate -> train() returns",
                "memory": "peak RSS minus RSS before the repeat (sampled every 5 ms)"}
    tmp.cleanup()
    return common.make_result("rm", "tokens/s", "alignkit RewardTask", f"trl {common._version('trl')} RewardTrainer",
                              measured, settings, time.perf_counter() - t0, aim=1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model, short sequences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="default: smollm2 (tiny random model with --quick)")
    parser.add_argument("--n-rows", type=int, help="preference pairs per repeat (default 16)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--max-length", type=int, help="default 160 (64 with --quick)")
    parser.add_argument("--trainable", default="lora", choices=["lora", "last_k", "full"])
    parser.add_argument("--peer-sampling", default="random", choices=["random", "group_by_length"],
                        help="TRL's train_sampling_strategy (its default: random)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = run(args.quick, args.repeats, model=args.model, n_rows=args.n_rows, batch_size=args.batch_size,
                 max_length=args.max_length, trainable=args.trainable, peer_sampling=args.peer_sampling)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(common.summary_line(result))


if __name__ == "__main__":
    main()
