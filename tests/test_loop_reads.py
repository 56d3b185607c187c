"""The loop reads a step's metrics from the device once, after its micro-batches: the same numbers (and the
same trained weights) as a plain loop that reads each micro-batch's metrics as it comes, written out here with
the loop's arithmetic (AdamW, clipping, each micro-batch weighted by its share of the step's items)."""
import random

import torch

from alignkit.config import TrainConfig, TrainableConfig
from alignkit.data.packing import packed_length
from alignkit.data.tokenize import ChatEncoder, encode_pairs, length_grouped_order
from alignkit.models import RewardModel, make_trainable
from alignkit.train import loop
from alignkit.train.rm import PackedRewardTask


def _read_as_it_comes(model, task, items, _eval_items, lengths, cfg, *, seed, **_):
    """One process, no DeepSpeed: each micro-batch's loss and metrics read with float() right after its step."""
    torch.manual_seed(seed)
    random.seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    plan = loop.make_plan(len(items), cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: loop.cosine_lr_factor(s, 0, plan.total_steps))

    def orders(epoch):
        return length_grouped_order(lengths, cfg.batch_size, seed * 1000 + epoch)[:plan.batches_per_epoch]

    model.train()
    for step in range(plan.total_steps):
        batches = [ranks[0] for ranks in plan.micro_batches(step, orders)]
        total, sums = sum(len(b) for b in batches), {}
        for indices in batches:
            share = len(indices) / total
            loss, metrics = task.step(model, task.collate([items[i] for i in indices]))
            (loss * share).backward()
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0) + float(value.detach()) * share
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return {"last_train": sums}


def _run(train_fn, tiny_model_dir, tokenizer, pairs, tmp_path, name):
    encoder = ChatEncoder(tokenizer, 64, 32)
    items, _ = encode_pairs(encoder, pairs[:16])
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode="lora", lora_r=4), 0)
    task = PackedRewardTask(tokenizer.pad_token_id)
    # 16 pairs in batches of 3: five of 3 and one of 1 per epoch, 3 per step, so one step of the first two is ragged
    cfg = TrainConfig(max_steps=3, batch_size=3, grad_accum=3, lr=1e-3, warmup_ratio=0.0)
    result = train_fn(rm, task, items, items[:4], [packed_length(p) for p in items], cfg, seed=0,
                      checkpoint_dir=tmp_path / name, tensorboard_dir=None)
    return result["last_train"], {n: p.detach().clone() for n, p in rm.named_parameters() if p.requires_grad}


def test_one_read_per_step_gives_the_same_metrics_and_weights(tiny_model_dir, tokenizer, homework_pairs, tmp_path):
    new_last, new_weights = _run(loop.train, tiny_model_dir, tokenizer, homework_pairs, tmp_path, "new")
    plain_last, plain_weights = _run(_read_as_it_comes, tiny_model_dir, tokenizer, homework_pairs, tmp_path, "plain")
    assert new_last == plain_last  # exactly: the same float64 sums in the same order
    assert all(torch.equal(new_weights[n], plain_weights[n]) for n in new_weights)
