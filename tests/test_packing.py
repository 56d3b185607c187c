"""Shared-prompt packing gives the same rewards, loss and gradients as the plain concatenated batch."""
import pytest
import torch

from alignkit.data.tokenize import ChatEncoder, encode_pairs


@pytest.fixture(scope="module")
def items(homework_pairs, tokenizer):
    encoded, _ = encode_pairs(ChatEncoder(tokenizer, 64, 24), homework_pairs[:6])
    return encoded


def _model(tiny_model_dir, attn="sdpa"):
    from alignkit.models import RewardModel
    model = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    model.config._attn_implementation = attn
    model.backbone.config._attn_implementation = attn
    return model.eval()


def test_pack_layout_shares_the_prompt(items, tokenizer):
    from alignkit.data.packing import pack_pairs
    batch = pack_pairs(items[:2], tokenizer.pad_token_id)
    pair = items[0]
    p, b, w = pair.better.prompt_length, len(pair.better.input_ids), len(pair.worse.input_ids)
    n = b + w - p
    assert batch["input_ids"][0, :n].tolist() == list(pair.better.input_ids) + list(pair.worse.input_ids[p:])
    assert batch["position_ids"][0, b:n].tolist() == list(range(p, w))
    assert batch["ends"][0].tolist() == [b - 1, n - 1]
    mask = batch["attention_mask"][0, 0]
    assert not mask[b:n, p:b].any() and mask[b:n, :p].all()  # worse sees the prompt, never the better side
    assert mask.any(-1).all()  # no all-masked row (padding attends to itself)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_scores_and_gradients_match_the_plain_batch(items, tokenizer, tiny_model_dir, attn):
    from alignkit.train.rm import PackedRewardTask
    from alignkit.train.rm import RewardTask
    plain, packed = RewardTask(tokenizer.pad_token_id), PackedRewardTask(tokenizer.pad_token_id)
    grads, scores = [], []
    for task in (plain, packed):
        model = _model(tiny_model_dir, attn)
        better, worse = task.end_scores(model, task.collate(items))
        loss, _ = task.step(model, task.collate(items))
        loss.backward()
        scores.append(torch.cat([better, worse]).detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(scores[1], scores[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-3)


def test_unshared_prompt_is_refused(items, tokenizer):
    from dataclasses import replace
    from alignkit.errors import AlignkitError
    from alignkit.data.packing import pack_pairs
    pair = items[0]
    bad = replace(pair, worse=replace(pair.worse, input_ids=(7,) + pair.worse.input_ids[1:]))
    with pytest.raises(AlignkitError, match="share their prompt"):
        pack_pairs([bad], tokenizer.pad_token_id)
