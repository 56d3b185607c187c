"""Preference losses as pure functions of per-sequence scores. Shapes: (B,) in, scalar out."""
import torch
import torch.nn.functional as F


def bradley_terry_loss(better: torch.Tensor, worse: torch.Tensor, *, margin: float | torch.Tensor = 0.0,
                       center_coef: float = 0.0) -> torch.Tensor:
    """Reward-model loss `-logsigmoid(r_better - r_worse - margin).mean()`.

    `center_coef` adds `coef * mean((r_better + r_worse)^2)`, which pins rewards near zero (the
    "reward centring" regularizer of Eisenstein et al., 2023) without changing their order.
    """
    loss = -F.logsigmoid(better - worse - margin).mean()
    if center_coef:
        loss = loss + center_coef * ((better + worse) ** 2).mean()
    return loss


def pairwise_accuracy(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs with r_better > r_worse; a tie counts as half."""
    return ((better > worse).float() + 0.5 * (better == worse).float()).mean()
