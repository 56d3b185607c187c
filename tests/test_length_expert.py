"""rm.length_expert: the product-of-experts length expert inside the reward-model trainer. The loss the trainer
computes equals a hand computation, the coefficient trains and resumes exactly, the export leaves it out and
loads in plain transformers, and with the option off the loss is the plain Bradley-Terry loss, bit for bit."""
import json
import math

import pytest
import torch
from torch import nn

from alignkit.data.tokenize import ChatEncoder, encode_pairs
from alignkit.errors import AlignkitError
from alignkit.losses import bradley_terry_loss
from alignkit.models import RewardModel, TrainableConfig, make_trainable
from alignkit.train.loop import train
from alignkit.train.rm import (PackedRewardTask, RewardTask, rm_identity, run_reward_model,
                               whole_response_tokens)
from conftest import tiny_config


class _Given(RewardTask):
    """A task whose rewards are given, so the loss can be checked by hand."""

    def __init__(self, better, worse, **kw):
        super().__init__(0, **kw)
        self.given = torch.tensor(better), torch.tensor(worse)

    def end_scores(self, model, batch):
        return self.given


class _Coef(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.length_coef = nn.Parameter(torch.tensor(value))


def _softplus(x):
    return math.log1p(math.exp(x))


def test_the_trainers_poe_loss_equals_a_hand_computation():
    # r_better = (1, -0.5), r_worse = (0.5, 0.25); tokens (10, 4) and (2, 8); coef 0.1 per token:
    # pair 1: (1 + 1.0) - (0.5 + 0.4) = 1.1; pair 2: (-0.5 + 0.2) - (0.25 + 0.8) = -1.35
    task = _Given([1.0, -0.5], [0.5, 0.25], length_expert=True)
    batch = {"response_tokens": torch.tensor([[10, 4], [2, 8]])}
    loss, metrics = task.step(_Coef(0.1), batch)
    assert loss.item() == pytest.approx((_softplus(-1.1) + _softplus(1.35)) / 2, abs=1e-6)
    assert metrics["length_coef"].item() == pytest.approx(0.1)
    assert metrics["accuracy"].item() == 0.5  # the quality reward alone: 1 > 0.5, -0.5 < 0.25
    # margin and centring: the margin inside the log-sigmoid, the centring on the quality reward only
    task = _Given([1.0, -0.5], [0.5, 0.25], length_expert=True, margin=0.3, center_coef=0.5)
    loss, _ = task.step(_Coef(0.1), batch)
    centre = 0.5 * ((1.5 ** 2 + (-0.25) ** 2) / 2)
    assert loss.item() == pytest.approx((_softplus(-1.1 + 0.3) + _softplus(1.35 + 0.3)) / 2 + centre, abs=1e-6)
    # the gradient reaches the coefficient: d loss / d coef = mean(-sigmoid(-h) * (len_b - len_w))
    coef = _Coef(0.1)
    _Given([1.0, -0.5], [0.5, 0.25], length_expert=True).step(coef, batch)[0].backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert coef.length_coef.grad.item() == pytest.approx((-sig(-1.1) * 6 - sig(1.35) * -6) / 2, abs=1e-6)
    with pytest.raises(AlignkitError, match="rm.length_expert"):
        _Given([1.0], [0.0], length_expert=True).step(nn.Module(), {"response_tokens": torch.tensor([[1, 2]])})


@pytest.mark.parametrize("task_class", [RewardTask, PackedRewardTask])
def test_on_the_tiny_model_both_tasks_add_the_expert_and_off_is_plain_bradley_terry(
        task_class, tiny_model_dir, tokenizer, homework_pairs):
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:3])
    off = task_class(tokenizer.pad_token_id, margin=0.2, center_coef=0.1)
    batch = off.collate(items)
    tokens = torch.tensor([[len(s.input_ids) - s.prompt_length for s in (i.better, i.worse)] for i in items])
    assert torch.equal(batch["response_tokens"], tokens)
    with torch.no_grad():
        better, worse = off.end_scores(rm, batch)
        loss, metrics = off.step(rm, batch)
        assert torch.equal(loss, bradley_terry_loss(better, worse, margin=0.2, center_coef=0.1))
        assert "length_coef" not in metrics and rm.length_coef is None
        on = task_class(tokenizer.pad_token_id, margin=0.2, center_coef=0.1, length_expert=True)
        rm.add_length_expert().fill_(0.03)
        loss_on, _ = on.step(rm, batch)
        h = better + 0.03 * tokens[:, 0] - worse - 0.03 * tokens[:, 1] - 0.2
        expected = torch.nn.functional.softplus(-h).mean() + 0.1 * ((better + worse) ** 2).mean()
        assert loss_on.item() == pytest.approx(expected.item(), abs=1e-6)
        assert loss_on.item() != pytest.approx(loss.item(), abs=1e-4)  # the expert does change the loss
    # the expert reads the whole responses' lengths where given (a response cut for training counts in full)
    whole = whole_response_tokens(ChatEncoder(tokenizer, 2048, 2047), homework_pairs[:3])
    assert all(w >= t for pair, row in zip(whole, tokens.tolist()) for w, t in zip(pair, row))
    assert whole != [tuple(row) for row in tokens.tolist()]  # 64 tokens cut at least one of these responses
    given = task_class(tokenizer.pad_token_id, length_expert=True, expert_tokens=whole).collate(items[::-1])
    assert given["response_tokens"].tolist() == [list(w) for w in whole[::-1]]  # by pair index, not position


def _setup(tiny_model_dir, tokenizer, pairs):
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode="lora", lora_r=4))
    rm.add_length_expert()
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), pairs)
    return rm, items


def test_the_coefficient_trains_and_is_restored_exactly_on_resume(tiny_model_dir, tokenizer, homework_pairs,
                                                                  tmp_path, data_dir):
    over = {"rm.train.max_steps": 4, "rm.train.save_every": 2, "rm.train.batch_size": 2, "rm.train.lr": 1e-2,
            "rm.length_expert": True}
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **over)
    task = PackedRewardTask(tokenizer.pad_token_id, length_expert=True)

    def run(rm, items, name, resume=False):
        return train(rm, task, items, [], [i.length for i in items], cfg.rm.train, seed=cfg.seed,
                     checkpoint_dir=tmp_path / name, tensorboard_dir=None, resume=resume)

    rm, items = _setup(tiny_model_dir, tokenizer, homework_pairs[:8])
    straight = run(rm, items, "straight")
    assert rm.length_coef.item() != 0.0  # the optimiser moved it
    assert [row["length_coef"] for row in straight["train_history"]][0] == 0.0  # read before step 1's update

    rm2, _ = _setup(tiny_model_dir, tokenizer, homework_pairs[:8])
    calls, original = {"n": 0}, task.step

    class Interrupt(Exception):
        pass

    def crash_at_step_3(model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return original(model, batch)

    task.step = crash_at_step_3
    with pytest.raises(Interrupt):
        run(rm2, items, "resumed")
    task.step = original
    saved = torch.load(tmp_path / "resumed" / "step-000002" / "trainable.pt")
    assert saved["length_coef"].item() == rm2.length_coef.item() != 0.0
    rm3, _ = _setup(tiny_model_dir, tokenizer, homework_pairs[:8])
    run(rm3, items, "resumed", resume=True)
    assert rm3.length_coef.item() == pytest.approx(rm.length_coef.item(), abs=1e-7)
    for (name, a), b in zip(rm3.named_parameters(), rm.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_length_expert_run_records_its_coefficient_and_exports_a_plain_hf_model(tiny_model_dir, tmp_path,
                                                                                   data_dir):
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2, "rm.length_expert": True})
    metrics = run_reward_model(cfg)
    coef = metrics["length_expert"]["coef_per_token"]
    assert coef != 0.0 and [r["length_coef"] for r in metrics["train_history"]][-1] != coef  # last row: before
    assert json.loads((cfg.out / "rm" / "metrics.json").read_text())["length_expert"]["coef_per_token"] == coef
    with safe_open(str(cfg.out / "rm" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    hf = AutoModelForSequenceClassification.from_pretrained(cfg.out / "rm").eval()
    assert keys == set(hf.state_dict()) and not any("length" in k for k in keys)  # no extra tensor
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        ours = RewardModel.from_pretrained(str(cfg.out / "rm")).eval()(ids, torch.ones_like(ids))[1]
        theirs = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.squeeze()
    assert theirs.item() == pytest.approx(ours.item(), abs=1e-4)


def test_the_option_is_in_a_runs_identity_only_when_on(tiny_model_dir, tmp_path, data_dir):
    off = rm_identity(tiny_config(tiny_model_dir, tmp_path, data_dir))
    on = rm_identity(tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.length_expert": True}))
    assert "length_expert" not in off["rm"]  # runs made before the option existed are still reused
    assert on["rm"]["length_expert"] is True
