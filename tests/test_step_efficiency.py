"""A training micro-step makes no device-to-host sync: the GPU can run ahead of Python."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alignkit.data.tokenize import ChatEncoder, encode_pairs

# Ops whose result (or output shape) the host must read back before it can go on.
SYNCING = {"_local_scalar_dense", "nonzero", "nonzero_static", "is_nonzero", "equal", "masked_select",
           "_unique", "_unique2", "unique_dim", "unique_consecutive", "item"}


class SyncRecorder(TorchDispatchMode):
    """Records every dispatched op that forces a device-to-host synchronisation."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        syncs = name in SYNCING
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            syncs = True
        if name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                   for i in (args[1] if len(args) > 1 else []) if i is not None):
            syncs = True  # boolean indexing needs nonzero to size its output
        if syncs:
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def _micro_step(task, model, batch) -> list[str]:
    with SyncRecorder() as rec:
        loss, _ = task.step(model, batch)
        loss.backward()
    return rec.syncs


def test_rm_packed_micro_step_does_not_sync(tiny_model_dir, tokenizer, homework_pairs):
    from alignkit.data.packing import pack_pairs
    from alignkit.models import RewardModel
    from alignkit.train.rm import PackedRewardTask
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 24), homework_pairs[:4])
    model = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    task = PackedRewardTask(tokenizer.pad_token_id)
    assert _micro_step(task, model, pack_pairs(items, tokenizer.pad_token_id)) == []


def _dpo_syncs(tiny_model_dir, tokenizer, homework_pairs) -> list[str]:
    from alignkit.config import DPOConfig
    from alignkit.models import Policy
    from alignkit.train.dpo import DPOItem, DPOTask, reference_logps
    torch.manual_seed(0)
    policy = Policy.from_pretrained(str(tiny_model_dir))
    pairs, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:4])
    refs = reference_logps(policy, pairs, tokenizer.pad_token_id, cache=None)
    task = DPOTask(tokenizer.pad_token_id, DPOConfig())
    batch = task.collate([DPOItem(p, r) for p, r in zip(pairs, refs)])
    return _micro_step(task, policy, batch)


def test_dpo_micro_step_finds_no_response_positions_on_the_device(tiny_model_dir, tokenizer, homework_pairs):
    """Before collate built `response_index`, Policy.forward ran nonzero + boolean indexing (5 syncs)."""
    syncs = _dpo_syncs(tiny_model_dir, tokenizer, homework_pairs)
    assert not any("nonzero" in s or "index.Tensor" in s for s in syncs), syncs


def test_dpo_micro_step_does_not_sync(tiny_model_dir, tokenizer, homework_pairs):
    """With collate's 4-D mask, transformers has no 2-D padding mask to check (its padding_mask.all() read)."""
    assert _dpo_syncs(tiny_model_dir, tokenizer, homework_pairs) == []


def test_a_2d_mask_in_the_dpo_step_syncs(tiny_model_dir, tokenizer, homework_pairs, monkeypatch):
    """The recorder sees the read the 4-D mask removes: with collate's 2-D mask the step syncs."""
    import alignkit.train.dpo as dpo
    monkeypatch.setattr(dpo, "causal_padding_mask", lambda mask: mask)
    assert any("_local_scalar_dense" in s for s in _dpo_syncs(tiny_model_dir, tokenizer, homework_pairs))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_4d_mask_gives_the_2d_masks_logps_and_gradients(tiny_model_dir, tokenizer, homework_pairs, attention):
    from alignkit.data.tokenize import causal_padding_mask, collate_pairs
    from alignkit.models import Policy
    pairs, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:4])
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # the batch has padding
    out = []
    for mask in (batch["attention_mask"], causal_padding_mask(batch["attention_mask"])):
        policy = Policy.from_pretrained(str(tiny_model_dir))
        policy.lm.config._attn_implementation = attention
        logps, _ = policy(batch["input_ids"], mask, batch["response_mask"])
        logps.sum().backward()
        out.append((logps.detach(), [p.grad for p in policy.parameters()]))
    (a, ga), (b, gb) = out
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_collate_indices_give_the_same_logps_and_gradients_as_the_mask(tiny_model_dir, tokenizer, homework_pairs):
    """Indices built in collate pick exactly the rows the mask picked: bit-identical sums and gradients."""
    from alignkit.config import DPOConfig
    from alignkit.models import Policy
    from alignkit.train.dpo import DPOItem, DPOTask
    pairs, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:4])
    batch = DPOTask(tokenizer.pad_token_id, DPOConfig()).collate([DPOItem(p, None) for p in pairs])
    out = []
    for index in (None, batch["response_index"]):
        policy = Policy.from_pretrained(str(tiny_model_dir))
        logps, n = policy(batch["input_ids"], batch["attention_mask"], batch["response_mask"], index)
        logps.sum().backward()
        out.append((logps.detach(), n, [p.grad.clone() for p in policy.parameters() if p.grad is not None]))
    (a, na, ga), (b, nb, gb) = out
    assert torch.equal(a, b) and torch.equal(na, nb) and len(ga) == len(gb)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    predicts = batch["response_mask"][:, 1:].bool()  # the old path, written out: boolean indexing
    assert batch["response_index"].numel() == int(predicts.sum())


def test_mask_only_path_is_documented_to_sync(tiny_model_dir, tokenizer, homework_pairs):
    from alignkit.models import Policy
    from alignkit.data.tokenize import collate_pairs
    pairs, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:2])
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    policy = Policy.from_pretrained(str(tiny_model_dir))
    with SyncRecorder() as rec:
        policy(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    assert any("nonzero" in s for s in rec.syncs)
