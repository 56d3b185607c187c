"""DPO through the shared loop on a tiny random model: TRL-style invariants, the reference cache, the run."""
import json
import math

import pytest
import torch

from conftest import tiny_config


def _encoded(tokenizer, homework_pairs, n=4):
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:n])
    return items


def _setup(tiny_model_dir, tokenizer, homework_pairs, *, mode="full", reference="cache", n=4, **dpo):
    from alignkit.config import DPOConfig, TrainConfig
    from alignkit.models import Policy, TrainableConfig, make_trainable
    from alignkit.train.dpo import DPOItem, DPOTask, reference_logps
    torch.manual_seed(0)
    policy = Policy.from_pretrained(str(tiny_model_dir))
    pairs = _encoded(tokenizer, homework_pairs, n)
    refs = reference_logps(policy, pairs, tokenizer.pad_token_id, cache=None) if reference == "cache" else None
    items = [DPOItem(p, refs[i] if refs else None) for i, p in enumerate(pairs)]
    policy.lm = make_trainable(policy.lm, TrainableConfig(mode=mode, lora_r=4))
    cfg = DPOConfig(**dpo)
    return policy, DPOTask(tokenizer.pad_token_id, cfg), items


@pytest.mark.parametrize("mode,reference", [("full", "cache"), ("lora", "forward")])
def test_first_step_loss_is_ln2_with_zero_margins(mode, reference, tiny_model_dir, tokenizer, homework_pairs):
    policy, task, items = _setup(tiny_model_dir, tokenizer, homework_pairs, mode=mode, reference=reference)
    loss, metrics = task.step(policy, task.collate(items))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert metrics["reward_margin"].item() == pytest.approx(0.0, abs=1e-5)
    assert metrics["rewards_chosen"].item() == pytest.approx(0.0, abs=1e-5)


def test_log_ratios_are_policy_minus_reference_per_sequence(tiny_model_dir, tokenizer, homework_pairs):
    policy, task, items = _setup(tiny_model_dir, tokenizer, homework_pairs, n=3, beta=0.5)
    with torch.no_grad():  # move the policy off its reference
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    batch = task.collate(items)
    with torch.no_grad():
        _, values = task._forward(policy, batch)
        logps, _ = policy(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    reference = batch["reference_logps"]
    by_hand = logps - reference
    assert torch.allclose(values["logratio_chosen"], by_hand[:3], atol=1e-5)
    assert torch.allclose(values["logratio_rejected"], by_hand[3:], atol=1e-5)
    assert torch.allclose(values["logratio"], (by_hand[:3] + by_hand[3:]) / 2, atol=1e-5)
    assert not torch.allclose(values["logratio"], torch.zeros(3), atol=1e-4)
    assert torch.allclose(values["rewards_chosen"], 0.5 * by_hand[:3], atol=1e-5)
    evaluated = task.evaluate(policy, items)
    assert evaluated["logratio"] == pytest.approx(float(values["logratio"].mean()), abs=1e-5)


def test_sequence_kl_matches_the_full_logits_by_hand_and_is_zero_against_itself(tiny_model_dir, tokenizer,
                                                                               homework_pairs):
    from transformers import AutoModelForCausalLM
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.infer import sequence_kl
    torch.manual_seed(0)
    p_lm = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    q_lm = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        for p in q_lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    encoder = ChatEncoder(tokenizer, 96, 48)
    prompts = [p.prompt for p in homework_pairs[:5]]
    responses = [p.better[:40 + 30 * i] for i, p in enumerate(homework_pairs[:5])]
    got = sequence_kl(p_lm, q_lm, encoder, prompts, responses, batch_size=2, chunk=7, progress=False)
    for prompt, response, kl in zip(prompts, responses, got):
        seq = encoder.encode(prompt, response)
        ids = torch.tensor([seq.input_ids])
        with torch.no_grad():  # one sequence, no padding, the whole vocabulary at every position
            logp = torch.log_softmax(p_lm(ids).logits[0].double(), -1)
            logq = torch.log_softmax(q_lm(ids).logits[0].double(), -1)
        positions = range(seq.prompt_length - 1, len(seq.input_ids) - 1)
        by_hand = sum(float((logp[t].exp() * (logp[t] - logq[t])).sum()) for t in positions)
        assert kl == pytest.approx(by_hand, rel=1e-4, abs=1e-5)
        assert kl > 0
    assert sequence_kl(p_lm, p_lm, encoder, prompts, responses, progress=False) == pytest.approx([0.0] * 5, abs=1e-5)


def _one_step(tiny_model_dir, tokenizer, homework_pairs, tmp_path, batch_size, grad_accum):
    from alignkit.config import TrainConfig
    from alignkit.train.loop import train
    policy, task, items = _setup(tiny_model_dir, tokenizer, homework_pairs)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    cfg = TrainConfig(max_steps=1, batch_size=batch_size, grad_accum=grad_accum, lr=1e-2, warmup_ratio=0.0,
                      max_grad_norm=0.0)
    result = train(policy, task, items, [], [i.pair.length for i in items], cfg, seed=0,
                   checkpoint_dir=tmp_path / f"ck{batch_size}", tensorboard_dir=None)
    return before, dict(policy.named_parameters()), result


def test_batch1_x_accum4_equals_batch4_x_accum1_and_parameters_change(tiny_model_dir, tokenizer, homework_pairs,
                                                                      tmp_path):
    before, one_by_four, _ = _one_step(tiny_model_dir, tokenizer, homework_pairs, tmp_path, 1, 4)
    _, four_by_one, result = _one_step(tiny_model_dir, tokenizer, homework_pairs, tmp_path, 4, 1)
    assert result["last_train"]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    changed = [n for n in before if not torch.equal(before[n], four_by_one[n].detach())]
    assert changed, "no parameter changed after a DPO step"
    # Adam's first update is lr * g / (|g| + eps): an element whose gradient is near eps (1e-8) moves by a share
    # of lr (1e-2) on float noise, so the tolerance is lr / 100. A wrong batch (a pad token counted, a pair
    # mixed up) turns gradients' signs and moves weights by up to 2 * lr.
    for name in before:
        assert torch.allclose(one_by_four[name], four_by_one[name], atol=1e-4), name


def test_variants_train_and_reference_free_losses_need_no_reference(tiny_model_dir, tokenizer, homework_pairs):
    for loss in ("robust", "ipo", "rdpo", "simpo", "orpo"):
        policy, task, items = _setup(tiny_model_dir, tokenizer, homework_pairs, loss=loss,
                                     reference="none" if loss in ("simpo", "orpo") else "cache",
                                     label_smoothing=0.1)
        value, metrics = task.step(policy, task.collate(items))
        assert torch.isfinite(value), loss
        value.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters()), loss


def test_reference_cache_is_written_once_and_read_back(tiny_model_dir, tokenizer, homework_pairs, tmp_path):
    from alignkit.models import Policy
    from alignkit.train.dpo import reference_logps
    policy = Policy.from_pretrained(str(tiny_model_dir))
    pairs = _encoded(tokenizer, homework_pairs)
    path = tmp_path / "ref.pt"
    first = reference_logps(policy, pairs, tokenizer.pad_token_id, cache=path)
    assert path.exists()
    with torch.no_grad():  # a changed model would give other values: equal results prove the cache was read
        for p in policy.parameters():
            p.add_(1.0)
    assert reference_logps(policy, pairs, tokenizer.pad_token_id, cache=path) == first
    assert reference_logps(policy, pairs, tokenizer.pad_token_id, cache=None) != first


def test_unknown_loss_is_refused_by_name(tokenizer):
    from alignkit.config import DPOConfig
    from alignkit.errors import AlignkitError
    from alignkit.train.dpo import DPOTask
    with pytest.raises(AlignkitError, match="dpo.loss must be one of"):
        DPOTask(tokenizer.pad_token_id, DPOConfig(loss="kto_pairs"))


def test_dpo_run_writes_a_causal_lm_and_is_reused(tiny_model_dir, tmp_path, data_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    from alignkit.train.dpo import dpo_metrics
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"dpo.train.max_steps": 2, "dpo.trainable.mode": "lora",
                                                             "dpo.trainable.lora_r": 4, "dpo.max_pairs": 20})
    metrics = dpo_metrics(cfg)
    out = tmp_path / "out" / "dpo"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["steps"] == 2
    # the held-out reward accuracy by plain transformers: the exported policy and the base model's summed
    # response log-probs on the test split, implicit reward beta * (policy - base), ties half
    from alignkit.data.sources import load_pairs
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    test, _ = load_pairs(str(tmp_path / "out" / "data" / "test.jsonl"), "ALIGNKIT")
    encoded, _ = encode_pairs(ChatEncoder(AutoTokenizer.from_pretrained(out), 64, 32), test)
    policy, base = (AutoModelForCausalLM.from_pretrained(m).eval() for m in (out, tiny_model_dir))

    def logp(model, seq):
        ids = torch.tensor([seq.input_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].double().log_softmax(-1)
        return float(logits.gather(1, ids[0, 1:, None])[seq.prompt_length - 1:].sum())

    rewards = [[logp(policy, s) - logp(base, s) for s in (e.better, e.worse)] for e in encoded]
    by_hand = sum(1.0 if b > w else 0.5 if b == w else 0.0 for b, w in rewards) / len(rewards)
    assert saved["eval"]["n"] == len(encoded) and saved["eval"]["reward_accuracy"] == by_hand
    assert saved["train"]["n"] == saved["eval"]["n"] < 20 == saved["data"]["n_dpo_train"] < saved["data"]["n_train"]
    caches = list((tmp_path / "out" / "cache").glob("ref-*.pt"))
    assert caches, "reference log-probs were not cached"
    # reference log-probs only for the sampled training pairs (and the test split)
    assert sorted(len(torch.load(c)) for c in caches) == sorted([20, saved["eval"]["n"]])
    scalars = list((tmp_path / "out" / "tensorboard" / "dpo").glob("events.out.tfevents.*"))
    assert scalars
    lm = AutoModelForCausalLM.from_pretrained(out)
    generate = pipeline("text-generation", model=lm, tokenizer=AutoTokenizer.from_pretrained(out))
    assert isinstance(generate("Hello", max_new_tokens=3)[0]["generated_text"], str)
    assert dpo_metrics(cfg)["reused"] and not metrics.get("reused")


DETERMINISM_SCRIPT = """
import hashlib, json, sys
import torch
from alignkit.config import load_config
from alignkit.train.dpo import run_dpo
overrides = json.loads(sys.argv[1])
if sys.argv[2] == "busy":  # a process that used the global RNG before training (other notebook cells)
    torch.rand(1000)
metrics = run_dpo(load_config("tiny", overrides))
weights = (load_config("tiny", overrides).out / "dpo" / "model.safetensors").read_bytes()
print(json.dumps({"eval": metrics["eval"], "train": metrics["train"], "weights": hashlib.sha256(weights).hexdigest()}))
"""


def test_dpo_run_is_identical_across_processes(tiny_model_dir, tmp_path, data_dir):
    """Same seed and config in two fresh processes (different hash seeds, one of them with the global RNG
    used first) -> the same metrics and the same saved weights, bit for bit."""
    import os
    import subprocess
    import sys
    results = []
    for hash_seed, state in (("1", "fresh"), ("2", "busy")):
        cfg = tiny_config(tiny_model_dir, tmp_path / hash_seed, data_dir)
        overrides = {"model.name": cfg.model.name, "output_dir": str(cfg.output_dir),
                     "data.train.path": cfg.data.train.path, "data.train.local_name": None, "dpo.train.max_steps": 2,
                     "dpo.trainable.mode": "lora", "dpo.trainable.lora_r": 4, "dpo.max_pairs": 12}
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, json.dumps(overrides), state],
                             capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
