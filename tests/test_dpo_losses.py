"""DPO-family losses and response log-probs: hand-computed values, and TRL's implementation as a peer."""
import copy
import math
from types import SimpleNamespace

import pytest
import torch

from alignkit import losses
from alignkit.models import Policy


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor, *,
                   average: bool = False) -> torch.Tensor:
    """The textbook full-logits gather that `Policy`'s response-only projection is tested against. Log-probability of each sequence's response tokens. logits (B, L, V), input_ids and
    response_mask (B, L) -> (B,). Token t is predicted by the logits at t-1, so the prompt (mask False)
    and padding never count. `average=True` divides by the number of response tokens."""
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(logits.dtype)
    token_logps = torch.gather(logits[:, :-1].float().log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def softplus(x):  # -log(sigmoid(x)) = log(1 + e^-x)
    return math.log1p(math.exp(-x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


PW, PL, RW, RL = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0]), torch.tensor([-11.0, -18.0]), \
    torch.tensor([-11.0, -16.0])
# log-ratio margins h = (pw - rw) - (pl - rl): pair 0: 1 - (-1) = 2; pair 1: -2 - 1 = -3


def test_dpo_and_conservative_dpo_by_hand():
    got = losses.dpo_loss(PW, PL, RW, RL, beta=0.5).tolist()
    assert got == pytest.approx([softplus(1.0), softplus(-1.5)], rel=1e-6)
    smoothed = losses.dpo_loss(PW, PL, RW, RL, beta=0.5, label_smoothing=0.1).tolist()
    assert smoothed == pytest.approx([0.9 * softplus(1.0) + 0.1 * softplus(-1.0),
                                      0.9 * softplus(-1.5) + 0.1 * softplus(1.5)], rel=1e-6)


def test_robust_dpo_by_hand():
    e = 0.2
    got = losses.robust_dpo_loss(PW, PL, RW, RL, beta=0.5, flip_rate=e).tolist()
    want = [((1 - e) * softplus(h) - e * softplus(-h)) / (1 - 2 * e) for h in (1.0, -1.5)]
    assert got == pytest.approx(want, rel=1e-6)


def test_ipo_rdpo_simpo_by_hand():
    assert losses.ipo_loss(PW, PL, RW, RL, tau=0.25).tolist() == pytest.approx([(2 - 2) ** 2, (-3 - 2) ** 2])
    lw, ll = torch.tensor([10.0, 4.0]), torch.tensor([5.0, 8.0])
    got = losses.rdpo_loss(PW, PL, RW, RL, lw, ll, beta=0.5, alpha=0.1).tolist()
    assert got == pytest.approx([softplus(1.0 - 0.5), softplus(-1.5 + 0.4)], rel=1e-6)
    aw, al = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    got = losses.simpo_loss(aw, al, beta=2.0, gamma=0.5).tolist()
    assert got == pytest.approx([softplus(2.0 * 0.5 - 0.5), softplus(2.0 * -1.0 - 0.5)], rel=1e-6)


def test_orpo_by_hand():
    aw, al = torch.tensor([-0.5]), torch.tensor([-2.0])
    pw, pl = math.exp(-0.5), math.exp(-2.0)
    log_odds = math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))
    assert losses.orpo_odds_ratio_loss(aw, al).item() == pytest.approx(softplus(log_odds), rel=1e-6)
    assert losses.orpo_loss(aw, al, lam=0.1).item() == pytest.approx(0.5 + 0.1 * softplus(log_odds), rel=1e-6)
    tiny = torch.tensor([-1e-6, -30.0])  # log1mexp stays finite at both ends
    assert torch.isfinite(losses.log1mexp(tiny)).all()


def test_sequence_logps_by_hand_and_response_only_policy_agrees(tiny_model_dir):
    # vocab of 3; sequence [0, 1, 2, 2] with the response = the last two tokens
    logits = torch.log(torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 1, 2, 2]])
    mask = torch.tensor([[False, False, True, True]])
    want = math.log(0.8) + math.log(0.4)  # p(2 | ..1) + p(2 | ..2); the prompt token 1 does not count
    assert sequence_logps(logits, ids, mask).item() == pytest.approx(want, rel=1e-6)
    assert sequence_logps(logits, ids, mask, average=True).item() == pytest.approx(want / 2, rel=1e-6)

    policy = Policy.from_pretrained(str(tiny_model_dir))
    ids = torch.randint(0, 500, (3, 12))
    attention = torch.ones(3, 12, dtype=torch.long)
    attention[1, 8:] = 0
    response = torch.zeros(3, 12, dtype=torch.bool)
    response[:, 5:] = True
    response[1, 8:] = False
    with torch.no_grad():
        total, n = policy(ids, attention, response)
        full = sequence_logps(policy.lm(input_ids=ids, attention_mask=attention).logits, ids, response)
    assert torch.allclose(total, full, atol=1e-5)
    assert n.tolist() == [7, 3, 7]


def test_chunked_response_logits_equal_unchunked_in_value_and_gradient(tiny_model_dir):
    def run(chunk):
        torch.manual_seed(0)
        policy = Policy.from_pretrained(str(tiny_model_dir))
        policy.logits_chunk = chunk
        ids = torch.randint(0, 500, (3, 16), generator=torch.Generator().manual_seed(1))
        attention = torch.ones_like(ids)
        attention[2, 11:] = 0
        response = torch.zeros(3, 16, dtype=torch.bool)
        response[:, 4:] = True
        response[2, 11:] = False
        total, _ = policy(ids, attention, response)
        total.sum().backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        return total.detach(), grads

    whole, whole_grads = run(10 ** 6)
    chunked, chunked_grads = run(5)  # 30 response tokens -> 6 chunks, recomputed in backward
    assert torch.allclose(whole, chunked, atol=1e-6)
    with torch.no_grad():  # the reference pass and evaluation chunk too, without recomputation
        policy = Policy.from_pretrained(str(tiny_model_dir))
        ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(2))
        attention, response = torch.ones_like(ids), torch.zeros(2, 16, dtype=torch.bool)
        response[:, 3:] = True
        unchunked = policy(ids, attention, response)[0]
        policy.logits_chunk = 4
        assert torch.allclose(policy(ids, attention, response)[0], unchunked, atol=1e-6)
    assert whole_grads.keys() == chunked_grads.keys() and len(whole_grads) > 0
    for name, grad in whole_grads.items():  # the head's gradient is summed chunk by chunk: rounding only
        gap = (grad - chunked_grads[name]).abs().max() / grad.abs().max()
        assert gap < 1e-5, (name, gap.item())


# ----------------------------------------------------------------------------- TRL as a peer

def _trl_rows(n=4):
    return [{"prompt": [{"role": "user", "content": f"Question number {i}?"}],
             "chosen": [{"role": "assistant", "content": "A careful answer " * (i + 1)}],
             "rejected": [{"role": "assistant", "content": "no " * (2 * i + 1)}]} for i in range(n)]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "robust"])
def test_dpo_losses_equal_trl_on_the_same_batch(loss_type, tiny_model_dir, tokenizer, tmp_path):
    """TRL's DPOTrainer.compute_loss vs alignkit's loss on the same batch: TRL's own per-sequence log-probs
    go into our loss functions, and our response-only log-probs must equal TRL's for the policy."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = copy.deepcopy(reference)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    beta, smoothing = 0.1, 0.2 if loss_type == "robust" else 0.0
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=[loss_type], label_smoothing=smoothing,
                     per_device_train_batch_size=4, max_length=64, report_to=[], use_cpu=True)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(_trl_rows()),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    labels = ids.masked_fill(completion == 0, -100)
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
        logps = [m(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True,
                   use_cache=False).log_probs.sum(1) for m in (trainer.model, trainer.ref_model)]
        ours_policy, n = Policy(policy)(ids, attention, completion.bool())
    assert torch.allclose(ours_policy, logps[0], atol=1e-4)
    (pw, pl), (rw, rl) = (x.chunk(2) for x in logps)
    if loss_type == "sigmoid":
        ours = losses.dpo_loss(pw, pl, rw, rl, beta=beta)
    elif loss_type == "robust":
        ours = losses.robust_dpo_loss(pw, pl, rw, rl, beta=beta, flip_rate=smoothing)
    else:
        nw, nl = n.float().chunk(2)
        ours = losses.ipo_loss(pw / nw, pl / nl, rw / nw, rl / nl, tau=beta)
    assert ours.mean().item() == pytest.approx(trl_loss, rel=1e-5)


def test_simpo_and_orpo_equal_trl_on_random_inputs():
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer
    torch.manual_seed(1)
    aw, al = -torch.rand(8) * 3, -torch.rand(8) * 3
    cpu = SimpleNamespace(device="cpu")
    cpo = SimpleNamespace(alpha=0.0, beta=2.0, simpo_gamma=0.5, label_smoothing=0.0, loss_type="simpo",
                          accelerator=cpu)
    trl_simpo = CPOTrainer.cpo_loss(cpo, aw, al)[0]
    assert torch.allclose(losses.simpo_loss(aw, al, beta=2.0, gamma=0.5), trl_simpo, atol=1e-6)
    trl_odds = ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=1.0, accelerator=cpu), aw, al)[0]
    assert torch.allclose(losses.orpo_odds_ratio_loss(aw, al), -trl_odds, atol=1e-6)  # TRL returns +logsigmoid
