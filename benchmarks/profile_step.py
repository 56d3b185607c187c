"""Where alignkit's training step spends its time: one epoch of the RM (packed) or DPO task through
`alignkit.train.loop.train` under torch.profiler, after a warm-up epoch. Prints the costliest operators
(self GPU time on a GPU, self CPU time otherwise) and how busy the GPU was.

    python benchmarks/profile_step.py --task dpo --device cuda --bf16 --model random:qwen2.5-0.5b
    .venv/bin/python benchmarks/profile_step.py --task rm --max-length 160 --max-prompt-length 64 --trainable lora
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def build(task_name: str, model: str, tokenizer, device, bf16: bool, trainable: str, pairs, max_length: int,
          max_prompt_length: int):
    """(model, task, items, lengths) for one training task on encoded real pairs."""
    from alignkit.config import DPOConfig
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    from alignkit.models import Policy, RewardModel, TrainableConfig, make_trainable
    from alignkit.data.packing import packed_length
    from alignkit.train.rm import PackedRewardTask
    from alignkit.train.dpo import DPOItem, DPOTask, reference_logps
    from alignkit.train.loop import autocast
    items, _ = encode_pairs(ChatEncoder(tokenizer, max_length, max_prompt_length), pairs)
    mode = TrainableConfig(mode=trainable)
    pad = tokenizer.pad_token_id
    if task_name == "rm":
        net = RewardModel.from_pretrained(model).to(device)
        net.backbone = make_trainable(net.backbone, mode)
        return net, PackedRewardTask(pad), items, [packed_length(i) for i in items]
    net = Policy.from_pretrained(model).to(device)
    with autocast(bf16, device):
        refs = reference_logps(net, items, pad, cache=None, batch_size=8)
    net.lm = make_trainable(net.lm, mode)
    items = [DPOItem(e, refs[i]) for i, e in enumerate(items)]
    return net, DPOTask(pad, DPOConfig(trainable=mode)), items, [i.pair.length for i in items]


def dpo_memory(net, task, items, batch_size: int, device, bf16: bool) -> None:
    """Peak GPU memory of one forward + backward on the longest DPO batch: alignkit's response-only logits
    (`Policy.forward`) vs the usual full-sequence logits (`lm(...).logits`, then log-softmax and gather)."""
    from alignkit.train.loop import autocast
    batch_items = sorted(items, key=lambda i: i.pair.length)[-batch_size:]
    batch = {k: v.to(device) for k, v in task.collate(batch_items).items()}
    ids, mask, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]

    def full_logits_loss():
        logits = net.lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        token_logps = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:, None])[..., 0]
        return -(token_logps * response[:, 1:]).sum()

    for name, loss_fn in (("alignkit response-only logits", lambda: task.step(net, batch)[0]),
                          ("full-sequence logits", full_logits_loss)):
        net.zero_grad(set_to_none=True)
        common.release_memory()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with autocast(bf16, device):
            loss = loss_fn()
        after_forward = torch.cuda.max_memory_allocated() - base
        loss.backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        print(f"memory, {name}: batch {tuple(ids.shape)}, {int(response[:, 1:].sum())} response tokens: "
              f"peak {after_forward / common.MB:.0f} MB after forward, {peak / common.MB:.0f} MB with backward")
    net.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["rm", "dpo"], default="rm")
    parser.add_argument("--model", help="default smollm2; random:SHAPE = random weights ("
                                        + ", ".join(common.SHAPES) + ")")
    parser.add_argument("--n-rows", type=int, default=64, help="preference pairs in the profiled epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-prompt-length", type=int, default=512)
    parser.add_argument("--trainable", default="full", choices=["full", "lora", "last_k"])
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    parser.add_argument("--memory", action="store_true",
                        help="dpo on a GPU: also compare peak memory of response-only vs full-sequence logits")
    common.add_device_options(parser)
    args = parser.parse_args()
    common.quiet()
    from alignkit.config import TrainConfig
    from alignkit.models import load_tokenizer
    from alignkit.train.loop import train
    tmp = tempfile.TemporaryDirectory(prefix="profile-step-")
    device = common.pick_device(args.device)
    model, label = common.pick_model(args.model, False, Path(tmp.name), args.tokenizer)
    tokenizer = load_tokenizer(model)
    pairs, _ = common.preference_pairs(args.n_rows)
    net, task, items, lengths = build(args.task, model, tokenizer, device, args.bf16, args.trainable, pairs,
                                      args.max_length, args.max_prompt_length)
    cfg = TrainConfig(epochs=1.0, batch_size=args.batch_size, lr=1e-5, warmup_ratio=0.0, eval_every=0,
                      save_every=0, log_every=10 ** 9, bf16=args.bf16)

    def epoch():
        train(net, task, items, [], lengths, cfg, seed=0, checkpoint_dir=Path(tmp.name) / "ckpt",
              tensorboard_dir=None, desc=args.task)
        common.synchronize(device)

    if args.memory and args.task == "dpo" and device.type == "cuda":
        dpo_memory(net, task, items, args.batch_size, device, args.bf16)
    epoch()  # warm-up: kernel selection, allocator growth
    start = time.perf_counter()
    epoch()
    plain = time.perf_counter() - start
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        epoch()
    events = prof.key_averages()
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows))
    steps = len(items) // args.batch_size
    tokens = sum(len(s.input_ids) for i in items for s in ((i.pair.better, i.pair.worse) if args.task == "dpo"
                                                               else (i.better, i.worse)))
    line = (f"{args.task} on {label} ({device}, {'bf16 autocast' if args.bf16 else 'fp32'}, {args.trainable}): "
            f"{steps} steps, {plain / steps * 1000:.0f} ms/step, {tokens / plain:.0f} tokens/s without the profiler")
    if device.type == "cuda":
        busy = sum(e.self_device_time_total for e in events) / 1e6
        line += f"; GPU kernels {busy / steps * 1000:.0f} ms/step ({busy / plain:.0%} of the wall time)"
    print(line)
    tmp.cleanup()


if __name__ == "__main__":
    main()
