"""KTO on unpaired examples derived from preference pairs: the shared loop with a batch -> loss function.

Each training pair gives two unpaired examples of its prompt: the better response as a desirable one and the
worse as an undesirable one. KTO's loss (alignkit.losses.kto_loss) reads each example alone against a
reference point z0, the batch's estimate of KL(pi || pi_ref) from MISMATCHED examples: every pair's prompt
with the responses of another pair of a different prompt (`mismatched_pairs`), read by the policy without
gradient (Ethayarajh et al., 2024; TRL's KTOTrainer does the same). Reference log-probs, of the examples and
of their mismatched partners, come from alignkit.train.dpo's cache, so a step makes one forward with
gradients and one without.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from alignkit import losses
from alignkit.data.templates import PreferencePair
from alignkit.data.tokenize import EncodedPair, causal_padding_mask, collate_pairs
from alignkit.models import response_positions
from alignkit.stats import accuracy_summary, correctness


def mismatched_partners(prompt_ids: Sequence[str]) -> list[int]:
    """For each example i, the example whose responses i's prompt is paired with for the KL estimate: the
    next one (cyclically) with a different prompt; i itself only when every example has the same prompt."""
    n = len(prompt_ids)
    out = []
    for i in range(n):
        j = next((k % n for k in range(i + 1, i + n) if prompt_ids[k % n] != prompt_ids[i]), i)
        out.append(j)
    return out


def mismatched_pairs(pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """Each pair's prompt with its mismatched partner's two responses (`mismatched_partners`)."""
    partner = mismatched_partners([p.prompt_id for p in pairs])
    return [PreferencePair(p.prompt, pairs[j].better, pairs[j].worse, {"mismatched_with": j})
            for p, j in zip(pairs, partner)]


@dataclass(frozen=True)
class KTOItem:
    pair: EncodedPair
    """better = the desirable example, worse = the undesirable one: two unpaired examples of one prompt."""
    mismatched: EncodedPair
    """This pair's prompt with another prompt's two responses: the sample behind the reference point."""
    reference: tuple[float, float]
    """Reference log-probs of (better, worse)."""
    mismatched_reference: tuple[float, float]
    """Reference log-probs of the mismatched (better, worse)."""


def _collate(pairs: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    batch = collate_pairs(pairs, pad_id)
    batch["response_index"] = response_positions(batch["response_mask"])  # on the CPU: no device read later
    batch["attention_mask"] = causal_padding_mask(batch["attention_mask"])
    return batch


class KTOTask:
    """Plugs KTO into the shared loop. A batch of B items is 2B examples, rows [0, B) desirable and [B, 2B)
    undesirable, and 2B mismatched examples for z0. Metrics follow DPOTask's names (rewards are the implicit
    rewards beta * (log pi - log pi_ref) of the better and the worse response), plus `kl`, the batch's z0."""

    def __init__(self, pad_id: int, beta: float, *, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                 eval_batch_size: int = 8):
        self.pad_id, self.beta, self.eval_batch_size = pad_id, beta, eval_batch_size
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight

    def collate(self, items: Sequence[KTOItem]) -> dict[str, torch.Tensor]:
        batch = _collate([i.pair for i in items], self.pad_id)
        batch.update({f"kl_{k}": v for k, v in _collate([i.mismatched for i in items], self.pad_id).items()})
        batch["reference_logps"] = torch.tensor([i.reference[0] for i in items] + [i.reference[1] for i in items])
        batch["kl_reference_logps"] = torch.tensor([i.mismatched_reference[0] for i in items] +
                                                   [i.mismatched_reference[1] for i in items])
        return batch

    def _forward(self, model, batch):
        logps, _ = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"], batch["response_index"])
        with torch.no_grad():
            kl_logps, _ = model(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_response_mask"],
                                batch["kl_response_index"])
        z0 = losses.kto_reference_point(kl_logps.float(), batch["kl_reference_logps"].to(kl_logps.device).float())
        reference = batch["reference_logps"].to(logps)
        half = logps.shape[0] // 2
        desirable = torch.arange(logps.shape[0], device=logps.device) < half
        per_example = losses.kto_loss(logps, reference, desirable, z0, beta=self.beta,
                                      desirable_weight=self.desirable_weight,
                                      undesirable_weight=self.undesirable_weight)
        rewards = self.beta * (logps - reference).detach()
        chosen, rejected = rewards[:half], rewards[half:]
        return per_example, {"loss": per_example.detach(), "kl": z0,
                             "reward_accuracy": losses.pairwise_accuracy(chosen, rejected),
                             "rewards_chosen": chosen, "rewards_rejected": rejected, "reward_margin": chosen - rejected,
                             "logps_chosen": logps[:half].detach(), "logps_rejected": logps[half:].detach()}

    def step(self, model, batch):
        per_example, values = self._forward(model, batch)
        return per_example.mean(), {k: v.mean() for k, v in values.items() if k != "loss"}

    def evaluate(self, model, items: Sequence[KTOItem]) -> dict:
        """Means over batches of `eval_batch_size` items in the given order (z0 is a batch statistic, so the
        batches are those items, not length-sorted ones); reward accuracy (ties half) with its Wilson CI."""
        device = next(model.parameters()).device
        loss, kl, chosen, rejected = [], [], [], []
        for start in range(0, len(items), self.eval_batch_size):
            batch = {k: v.to(device) for k, v in self.collate(items[start:start + self.eval_batch_size]).items()}
            per_example, values = self._forward(model, batch)
            loss.append(per_example.float().sum().item())
            kl.append(values["kl"].item())
            chosen += values["rewards_chosen"].float().cpu().tolist()
            rejected += values["rewards_rejected"].float().cpu().tolist()
        summary = accuracy_summary(correctness(chosen, rejected))
        return {"loss": sum(loss) / (2 * len(items)), "kl": sum(kl) / len(kl),
                "rewards_chosen": sum(chosen) / len(chosen), "rewards_rejected": sum(rejected) / len(rejected),
                "reward_accuracy": summary["accuracy"], "reward_accuracy_ci95": summary["ci95"], "n": len(items)}
