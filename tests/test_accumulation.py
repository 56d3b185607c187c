"""Gradient accumulation weighs items alike: a step of a ragged epoch (10 pairs in batches of 4 -> micro-batches
of 4, 4 and 2) gives the gradients, the update and the logged metrics of one batch of all 10 pairs."""
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from alignkit.config import TrainConfig
from alignkit.data.tokenize import ChatEncoder, encode_pairs
from alignkit.models import RewardModel, TrainableConfig, make_trainable
from alignkit.train.loop import item_weights, train
from alignkit.train.rm import RewardTask


def test_item_weights_are_each_micro_batch_share_of_the_step_times_the_ranks():
    assert item_weights([[[0, 1, 2, 3]], [[4, 5, 6, 7]], [[8, 9]]]) == [0.4, 0.4, 0.2]
    assert item_weights([[[0, 1]], [[2, 3]]]) == [0.5, 0.5]  # full micro-batches: 1 / grad_accum
    # two ranks (DDP / DeepSpeed then halve the summed gradients): 8 items, rank 1 holds 2 + 1 of them
    two_ranks = [[[0, 1], [2, 3]], [[4, 5, 6], [7]]]
    assert item_weights(two_ranks, rank=0) == [2 * 2 / 8, 3 * 2 / 8]
    assert item_weights(two_ranks, rank=1) == [2 * 2 / 8, 1 * 2 / 8]


def _one_step(tiny_model_dir, tokenizer, items, tmp_path, batch_size, grad_accum):
    """One optimizer step over all `items` -> (sizes of its micro-batches, the gradients the optimizer got,
    the updated weights, the step's logged metrics)."""
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode="full"))
    task = RewardTask(tokenizer.pad_token_id)
    sizes, grads = [], {}
    collate = task.collate
    task.collate = lambda batch: sizes.append(len(batch)) or collate(batch)

    def record(optimizer, args, kwargs):
        grads.update({id(p): p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]})

    cfg = TrainConfig(epochs=1, batch_size=batch_size, grad_accum=grad_accum, lr=1e-3, warmup_ratio=0.0,
                      max_grad_norm=0.0)
    handle = register_optimizer_step_pre_hook(record)
    try:
        result = train(rm, task, items, [], [i.length for i in items], cfg, seed=0,
                       checkpoint_dir=tmp_path / f"ck{batch_size}", tensorboard_dir=None)
    finally:
        handle.remove()
    names = {id(p): n for n, p in rm.named_parameters()}
    return (sizes, {names[k]: g for k, g in grads.items()},
            {n: p.detach().clone() for n, p in rm.named_parameters()}, result)


def test_a_ragged_step_equals_one_batch_of_all_its_items(tiny_model_dir, tokenizer, homework_pairs, tmp_path):
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:10])
    assert len(items) == 10
    sizes, ragged_grads, ragged, ragged_result = _one_step(tiny_model_dir, tokenizer, items, tmp_path, 4, 3)
    big_sizes, big_grads, big, big_result = _one_step(tiny_model_dir, tokenizer, items, tmp_path, 10, 1)
    assert ragged_result["steps"] == big_result["steps"] == 1
    assert sorted(sizes) == [2, 4, 4] and big_sizes == [10]
    assert ragged_grads.keys() == big_grads.keys() and "score_head.weight" in big_grads
    # equal gradients: a weighting of 1/3 per micro-batch would move the short batch's pairs from 2/10 to 1/3
    for name, grad in big_grads.items():
        assert torch.allclose(ragged_grads[name], grad, rtol=1e-4, atol=1e-7), name
    # Adam's first update is lr * g / (|g| + eps): where a gradient is near eps, float noise moves a weight by a
    # share of lr (1e-3), hence lr / 100; a gradient of another direction moves weights by up to 2 * lr
    for name, value in big.items():
        assert torch.allclose(ragged[name], value, rtol=0, atol=1e-5), name
    for key in ("loss", "accuracy", "reward_margin"):  # the step's logged metrics: means over its 10 pairs
        assert ragged_result["last_train"][key] == pytest.approx(big_result["last_train"][key], rel=1e-5, abs=1e-7), key
