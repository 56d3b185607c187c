"""The cached frozen prefix of `last_k` (alignkit.prefix): the split forward equals the whole one for the reward
model (padded and packed) and for DPO's policy, a training step's gradients equal the uncached step's, a killed
run resumes exactly, rows past the memory budget go to disk and come back equal."""
import pytest
import torch

from alignkit.config import TrainableConfig
from alignkit.errors import AlignkitError
from alignkit.data.packing import pack_pairs, packed_length
from alignkit.data.tokenize import ChatEncoder, causal_padding_mask, collate_pairs, encode_pairs
from alignkit.models import Policy, RewardModel, make_trainable
from alignkit.prefix import PrefixCache, blocks_forward, prefix_cache_for
from alignkit.train.rm import PackedRewardTask, packed_end_scores
from conftest import tiny_config

LAST_K = TrainableConfig(mode="last_k", last_k=1)  # the tiny model has 2 blocks: 1 frozen, 1 trained


def _items(tokenizer, homework_pairs, n=6):
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:n])
    return items


def _reward_model(tiny_model_dir, cached: bool, spill_dir=None, max_gb=8.0):
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    rm.backbone = make_trainable(rm.backbone, LAST_K)
    if cached:
        rm.prefix = prefix_cache_for(TrainableConfig(mode="last_k", last_k=1, prefix_cache_gb=max_gb),
                                     rm.backbone, spill_dir)
    return rm


def _scores(rm, kind, batch):
    if kind == "packed":
        return torch.cat(packed_end_scores(rm, batch))
    return rm(batch["input_ids"], batch["attention_mask"])[1]


@pytest.mark.parametrize("kind", ["padded", "packed"])
def test_reward_model_cached_forward_equals_the_whole_forward(kind, tiny_model_dir, tokenizer, homework_pairs):
    items = _items(tokenizer, homework_pairs)
    batch = (pack_pairs(items, tokenizer.pad_token_id) if kind == "packed"
             else collate_pairs(items, tokenizer.pad_token_id))
    whole, cached = _reward_model(tiny_model_dir, False), _reward_model(tiny_model_dir, True)
    with torch.no_grad():
        expected = _scores(whole, kind, batch)
        first = _scores(cached, kind, batch)  # fills the cache
        again = _scores(cached, kind, batch)  # reads it
    rows = len(batch["input_ids"])
    assert cached.prefix.stats()["misses"] == rows and cached.prefix.stats()["hits"] == rows
    assert torch.allclose(first, expected, atol=1e-5) and torch.allclose(again, expected, atol=1e-5)
    assert expected.std() > 1e-3  # scores that differ, so a slip shows


def test_a_row_is_cached_whatever_batch_and_padding_it_came_in(tiny_model_dir, tokenizer, homework_pairs):
    """A row cached inside one padded batch serves the same row inside a batch padded to another length."""
    items = _items(tokenizer, homework_pairs)
    by_length = sorted(items, key=packed_length)
    whole, cached = _reward_model(tiny_model_dir, False), _reward_model(tiny_model_dir, True)
    with torch.no_grad():
        packed_end_scores(cached, pack_pairs(by_length, tokenizer.pad_token_id))  # longest pads everyone
        small = pack_pairs(by_length[:2], tokenizer.pad_token_id)  # the two shortest, little padding
        got = torch.cat(packed_end_scores(cached, small))
        expected = torch.cat(packed_end_scores(whole, small))
    assert cached.prefix.stats()["hits"] == 2
    assert torch.allclose(got, expected, atol=1e-5)


def test_policy_cached_log_probs_equal_the_whole_forward(tiny_model_dir, tokenizer, homework_pairs):
    """DPO's policy: the reference pass (2-D mask) fills the cache; training batches (4-D mask) read it."""
    items = _items(tokenizer, homework_pairs)
    batch = collate_pairs(items, tokenizer.pad_token_id)
    mask4 = causal_padding_mask(batch["attention_mask"])
    whole, cached = Policy.from_pretrained(str(tiny_model_dir)), Policy.from_pretrained(str(tiny_model_dir))
    cached.prefix = prefix_cache_for(LAST_K, cached.lm.get_decoder(), None)
    with torch.no_grad():
        expected = whole(batch["input_ids"], mask4, batch["response_mask"])[0]
        reference_pass = cached(batch["input_ids"], batch["attention_mask"], batch["response_mask"])[0]
        training_pass = cached(batch["input_ids"], mask4, batch["response_mask"])[0]
    assert cached.prefix.stats() == {**cached.prefix.stats(), "misses": 12, "hits": 12}
    assert torch.allclose(reference_pass, expected, atol=1e-5)
    assert torch.allclose(training_pass, expected, atol=1e-5)


def test_split_forward_of_all_blocks_is_the_decoders_forward(tiny_model_dir, tokenizer, homework_pairs):
    """blocks_forward over every block (no cache) is Hugging Face's decoder forward: the split runs the blocks
    with the decoder's own masks and rotary embedding."""
    batch = collate_pairs(_items(tokenizer, homework_pairs, 3), tokenizer.pad_token_id)
    backbone = RewardModel.from_pretrained(str(tiny_model_dir)).backbone
    with torch.no_grad():
        expected = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mine = blocks_forward(backbone, backbone.embed_tokens(batch["input_ids"]), batch["attention_mask"], None,
                              0, len(backbone.layers), final_norm=True)
    real = batch["attention_mask"].bool()
    assert torch.allclose(mine[real], expected[real], atol=1e-5)


@pytest.mark.parametrize("task_kind", ["rm", "dpo"])
def test_a_training_step_from_the_cache_has_the_uncached_gradients(task_kind, tiny_model_dir, tokenizer,
                                                                   homework_pairs):
    items = _items(tokenizer, homework_pairs, 4)
    grads = []
    for cached in (False, True):
        if task_kind == "rm":
            model = _reward_model(tiny_model_dir, cached)
            task = PackedRewardTask(tokenizer.pad_token_id)
            run = [task.collate(items)] * (2 if cached else 1)  # cached: an epoch fills, the next one reads
        else:
            from alignkit.config import DPOConfig
            from alignkit.train.dpo import DPOItem, DPOTask, reference_logps
            model = Policy.from_pretrained(str(tiny_model_dir))
            if cached:
                model.prefix = prefix_cache_for(LAST_K, model.lm.get_decoder(), None)
            refs = reference_logps(model, items, tokenizer.pad_token_id, cache=None)  # fills the cache
            model.lm = make_trainable(model.lm, LAST_K)
            with torch.no_grad():  # move the policy off its reference, so the DPO gradient is not symmetric
                for p in (p for p in model.parameters() if p.requires_grad):
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
            task = DPOTask(tokenizer.pad_token_id, DPOConfig())
            run = [task.collate([DPOItem(p, r) for p, r in zip(items, refs)])]
        for batch in run:
            model.zero_grad(set_to_none=True)
            loss, _ = task.step(model, batch)
            loss.backward()
        if cached:
            assert model.prefix.stats()["hits"] >= len(items)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 2
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4), name
    assert any(g.abs().max() > 1e-4 for g in grads[0].values())


def test_rows_past_the_memory_budget_go_to_disk_and_come_back_equal(tiny_model_dir, tokenizer, homework_pairs,
                                                                    tmp_path):
    items = _items(tokenizer, homework_pairs)
    batch = pack_pairs(items, tokenizer.pad_token_id)
    whole = _reward_model(tiny_model_dir, False)
    spilling = _reward_model(tiny_model_dir, True, spill_dir=tmp_path / "cache", max_gb=20e3 / 2**30)  # 20 kB
    with torch.no_grad():
        expected = _scores(whole, "packed", batch)
        _scores(spilling, "packed", batch)
        again = _scores(spilling, "packed", batch)
    stats = spilling.prefix.stats()
    assert stats["mb_on_disk"] > 0 and stats["hits"] == len(items)
    assert torch.allclose(again, expected, atol=1e-5)
    assert list((tmp_path / "cache").iterdir()) == []  # the spill file lives only as long as the process


def test_a_prefix_needs_a_frozen_block_and_the_options_are_read(tiny_model_dir):
    backbone = RewardModel.from_pretrained(str(tiny_model_dir)).backbone
    assert prefix_cache_for(TrainableConfig(mode="lora"), backbone, None) is None
    assert prefix_cache_for(TrainableConfig(mode="last_k", last_k=1, cache_prefix=False), backbone, None) is None
    assert prefix_cache_for(TrainableConfig(mode="last_k", last_k=2), backbone, None) is None  # nothing frozen
    assert prefix_cache_for(LAST_K, backbone, None).frozen_blocks == 1
    with pytest.raises(AlignkitError, match="last_k must be in 1..2"):
        prefix_cache_for(TrainableConfig(mode="last_k", last_k=3), backbone, None)
    with pytest.raises(AlignkitError, match="at least one frozen block"):
        PrefixCache(0)


def test_cached_run_equals_the_uncached_run_and_resumes_exactly(tiny_model_dir, tmp_path, data_dir):
    """The library's run (reward model, last_k) with and without the cache, and a cached run killed after its
    first checkpoint and resumed in a fresh process: the same evaluations and weights."""
    from alignkit.train import rm as rm_module
    over = {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 1, "rm.train.epochs": 2, "rm.train.save_every": 2,
            "rm.train.batch_size": 4, "rm.train.grad_accum": 1}

    def run(name, **more):
        cfg = tiny_config(tiny_model_dir, tmp_path / name, data_dir, **{**over, **more})
        return cfg, rm_module.run_reward_model(cfg, resume=True)

    _, plain = run("plain", **{"rm.trainable.cache_prefix": False})
    cfg, cached = run("cached")
    assert "prefix_cache" not in plain and cached["prefix_cache"]["hits"] > 0
    for key in ("eval_untrained", "eval", "train"):
        assert cached[key]["accuracy"] == plain[key]["accuracy"], key
        assert cached[key]["loss"] == pytest.approx(plain[key]["loss"], abs=1e-5), key

    class Killed(Exception):
        pass

    original, calls = rm_module.PackedRewardTask.step, {"n": 0}

    def killed_at_step_7(self, model, batch):  # one micro-batch per step; checkpoints at steps 2, 4, 6
        calls["n"] += 1
        if calls["n"] == 7:
            raise Killed
        return original(self, model, batch)

    rm_module.PackedRewardTask.step = killed_at_step_7
    try:
        with pytest.raises(Killed):
            run("resumed")
    finally:
        rm_module.PackedRewardTask.step = original
    assert sorted(p.name for p in (tmp_path / "resumed" / "out" / "checkpoints" / "rm").glob("step-*"))[-1] == "step-000006"
    _, resumed = run("resumed")  # a fresh model and an empty cache, from the checkpoint of step 6
    assert resumed["eval"]["loss"] == cached["eval"]["loss"]
    assert [r["loss"] for r in resumed["train_history"]] == [r["loss"] for r in cached["train_history"]]


def test_a_bf16_prefix_runs_the_frozen_blocks_under_bf16_autocast(tiny_model_dir, tokenizer, homework_pairs):
    """`prefix_dtype: bfloat16`: the frozen blocks run under bf16 autocast (exactly what autocast gives, not the
    float32 states), their output is kept in the weights' float32, and the scores stay close to float32's."""
    items = _items(tokenizer, homework_pairs)
    batch = collate_pairs(items, tokenizer.pad_token_id)
    fp32, bf16 = _reward_model(tiny_model_dir, False), _reward_model(tiny_model_dir, False)
    bf16.prefix = prefix_cache_for(LAST_K, bf16.backbone, None, torch.bfloat16)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        got = bf16.prefix.hidden(bf16.backbone, ids, mask)
        plain = blocks_forward(fp32.backbone, fp32.backbone.embed_tokens(ids), mask, None, 0, 1, final_norm=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = blocks_forward(fp32.backbone, fp32.backbone.embed_tokens(ids), mask, None, 0, 1,
                                      final_norm=False)
        expected, scores = _scores(fp32, "padded", batch), _scores(bf16, "padded", batch)
    real = mask.bool()
    assert got.dtype == torch.float32 and bf16.prefix.stats()["compute_dtype"] == "bfloat16"
    assert torch.equal(got[real], autocast.float()[real])
    assert (got[real] - plain[real]).abs().max() > 1e-4  # bf16 rounding shows: the autocast ran
    assert torch.allclose(scores, expected, atol=0.05 * expected.abs().max().item())
    with pytest.raises(AlignkitError, match="float32 or bfloat16"):
        PrefixCache(1, compute_dtype=torch.float16)


def test_the_prefix_precision_is_checked_and_part_of_a_runs_identity(tiny_model_dir, tmp_path, data_dir, tokenizer,
                                                                    homework_pairs):
    from alignkit.config import load_config
    from alignkit.models import native_bf16
    from alignkit.train.dpo import dpo_identity, reference_key
    from alignkit.train.rm import rm_identity
    with pytest.raises(AlignkitError, match="dpo.trainable.prefix_dtype must be one of"):
        load_config("tiny", {"dpo.trainable.prefix_dtype": "fp16"})
    with pytest.raises(AlignkitError, match="rm.trainable.prefix_dtype must be one of"):
        load_config("tiny", {"rm.trainable.prefix_dtype": "half"})
    base = tiny_config(tiny_model_dir, tmp_path, data_dir)
    assert "prefix_dtype" not in rm_identity(base)["rm"]["trainable"]  # float32: identities from before it hold
    auto = f"auto: {'bfloat16' if native_bf16(torch.device('cpu')) else 'float32'}"
    for setting, recorded in (("bfloat16", "bfloat16"), ("auto", auto)):
        cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.trainable.prefix_dtype": setting,
                                                                 "dpo.trainable.prefix_dtype": setting})
        assert rm_identity(cfg)["rm"]["trainable"]["prefix_dtype"] == recorded
        assert dpo_identity(cfg)["dpo"]["trainable"]["prefix_dtype"] == recorded
    pairs = _items(tokenizer, homework_pairs, 2)
    backbone = RewardModel.from_pretrained(str(tiny_model_dir)).backbone
    keys = {dtype: reference_key(str(tiny_model_dir), tokenizer, pairs, torch.float32,
                                 prefix_cache_for(LAST_K, backbone, None, dtype))
            for dtype in (torch.float32, torch.bfloat16)}
    assert keys[torch.float32] == reference_key(str(tiny_model_dir), tokenizer, pairs, torch.float32)
    assert keys[torch.bfloat16] != keys[torch.float32]  # a bf16 reference pass never reuses a float32 one
