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


def poe_length_loss(r_better: torch.Tensor, r_worse: torch.Tensor, len_better: torch.Tensor,
                    len_worse: torch.Tensor, coef: torch.Tensor, *, margin: float = 0.0,
                    center_coef: float = 0.0) -> torch.Tensor:
    """Bradley-Terry loss of a product of experts (Shen et al., 2023; ODIN, Chen et al., 2024): the quality
    reward `r` (B,) plus a length expert `coef * len` (B,) that exists only while training,
    `-logsigmoid((r_better + coef * len_better) - (r_worse + coef * len_worse) - margin).mean()`.

    `coef` is a learnable scalar (a 0-dim tensor that requires grad, e.g. `nn.Parameter(torch.zeros(()))`),
    trained with the reward model's parameters; its unit is score per length unit (per token when lengths
    are token counts). Only `r` is used at inference. The length expert absorbs what length alone predicts,
    so `r` is not pushed to learn it. `center_coef` adds `coef * mean((r_better + r_worse)^2)` on the
    quality reward only (the reward that is kept), as `bradley_terry_loss` does."""
    loss = bradley_terry_loss(r_better + coef * len_better.to(r_better.dtype),
                              r_worse + coef * len_worse.to(r_worse.dtype), margin=margin)
    if center_coef:
        loss = loss + center_coef * ((r_better + r_worse) ** 2).mean()
    return loss


def pairwise_accuracy(better: torch.Tensor, worse: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs with r_better > r_worse; a tie counts as half."""
    return ((better > worse).float() + 0.5 * (better == worse).float()).mean()


# ----------------------------------------------------------------------------- DPO and its variants
# Inputs are per-sequence log-probs (B,): policy `pw`/`pl` for the chosen (w) and rejected (l) response,
# reference `rw`/`rl`. Each loss returns per-pair losses (B,); the trainer takes the mean.

def dpo_loss(pw: torch.Tensor, pl: torch.Tensor, rw: torch.Tensor, rl: torch.Tensor, *, beta: float,
             label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al., 2023): `-logsigmoid(beta * ((pw - rw) - (pl - rl)))`.

    `label_smoothing = eps > 0` is conservative DPO (cDPO): the label is assumed flipped with probability
    eps, so the loss is the cross-entropy against (1 - eps, eps) and no longer rewards infinite margins."""
    h = beta * ((pw - rw) - (pl - rl))
    return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)


def robust_dpo_loss(pw, pl, rw, rl, *, beta: float, flip_rate: float) -> torch.Tensor:
    """Robust DPO (Chowdhury et al., 2024): an unbiased estimate of the clean-label DPO loss when labels
    are flipped with probability `flip_rate` < 0.5: `((1-e) l(h) - e l(-h)) / (1 - 2e)`, l = -logsigmoid."""
    h = beta * ((pw - rw) - (pl - rl))
    return (-(1 - flip_rate) * F.logsigmoid(h) + flip_rate * F.logsigmoid(-h)) / (1 - 2 * flip_rate)


def ipo_loss(pw, pl, rw, rl, *, tau: float) -> torch.Tensor:
    """IPO (Azar et al., 2023): `((pw - rw) - (pl - rl) - 1/(2 tau))^2`. A squared loss toward a finite
    margin, so it does not push the likelihood ratio to infinity on deterministic preferences. Pass
    length-averaged log-probs for the usual normalised form (as TRL does)."""
    return ((pw - rw) - (pl - rl) - 1 / (2 * tau)) ** 2


def rdpo_loss(pw, pl, rw, rl, len_w: torch.Tensor, len_l: torch.Tensor, *, beta: float, alpha: float
              ) -> torch.Tensor:
    """R-DPO (Park et al., 2024): DPO with a length penalty in the margin,
    `-logsigmoid(beta * h - alpha * (len_w - len_l))`, so a longer chosen response must earn its length."""
    h = beta * ((pw - rw) - (pl - rl))
    return -F.logsigmoid(h - alpha * (len_w - len_l))


def simpo_loss(avg_pw: torch.Tensor, avg_pl: torch.Tensor, *, beta: float, gamma: float) -> torch.Tensor:
    """SimPO (Meng et al., 2024): reference-free, length-normalised:
    `-logsigmoid(beta * (avg_pw - avg_pl) - gamma)` with per-token average log-probs and a target margin."""
    return -F.logsigmoid(beta * (avg_pw - avg_pl) - gamma)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_odds_ratio_loss(avg_pw: torch.Tensor, avg_pl: torch.Tensor) -> torch.Tensor:
    """ORPO's odds-ratio term (Hong et al., 2024): `-logsigmoid(log odds(w) - log odds(l))`, with
    odds(y) = p / (1 - p) and p the per-token average probability. Reference-free; ORPO adds it, weighted
    by lambda, to the chosen response's SFT loss (see `orpo_loss`)."""
    log_odds = (avg_pw - avg_pl) - (log1mexp(avg_pw) - log1mexp(avg_pl))
    return -F.logsigmoid(log_odds)


def orpo_loss(avg_pw: torch.Tensor, avg_pl: torch.Tensor, *, lam: float) -> torch.Tensor:
    """ORPO: SFT on the chosen response (`-avg_pw`, its per-token NLL) + lam * odds-ratio term."""
    return -avg_pw + lam * orpo_odds_ratio_loss(avg_pw, avg_pl)


# ----------------------------------------------------------------------------- KTO (unpaired)
# Inputs are per-response log-probs (N,) of responses labelled one at a time: desirable or undesirable.

def kto_reference_point(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z0 (Ethayarajh et al., 2024): the batch estimate of KL(pi || pi_ref),
    `mean(log pi - log pi_ref)` over MISMATCHED (prompt, response) pairs (a prompt with another example's
    response), clamped at 0 and detached, so no gradient flows through it (as in the paper and TRL). (N,) -> scalar."""
    return (policy_logps - reference_logps).mean().clamp(min=0).detach()


def kto_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, desirable: torch.Tensor,
             reference_point: torch.Tensor | float, *, beta: float, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"): per response,
    with implicit reward r = log pi - log pi_ref and reference point z0 (`kto_reference_point`),
    `lambda_D * (1 - sigmoid(beta * (r - z0)))` for a desirable response and
    `lambda_U * (1 - sigmoid(beta * (z0 - r)))` for an undesirable one. `desirable` is a (N,) bool mask.
    Returns (N,) losses; at r = z0 each is lambda / 2."""
    r = policy_logps - reference_logps
    return torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (r - reference_point))),
                       undesirable_weight * (1 - torch.sigmoid(beta * (reference_point - r))))
