"""Reward + cost: helpfulness and harmlessness as two models (chapter 6).

PKU-SafeRLHF labels every pair twice, `better_response_id` (the more helpful response) and
`safer_response_id` (the safer one), and every response once, `is_response_{0,1}_safe`. Two bias-free linear
heads, each exactly the reward model's `score_head` (Linear(hidden, 1, bias=False)), are fitted with the
Bradley-Terry loss (alignkit.losses.bradley_terry_loss) on FROZEN features: the base model's last hidden
state at the last real token of the conversation (prompt, response), encoded as the reward model reads it
(ChatEncoder at the evaluation lengths; the position where the attention mask ends).

Sign convention:
  reward r  Bradley-Terry on the helpfulness label: the more helpful response is the winner, so a higher r
            means more helpful.
  cost c    Bradley-Terry on the safety label with the sign turned: the LESS safe response (the one that is
            not `safer_response_id`) is the winner, so a higher c means less safe (Safe RLHF's convention,
            Dai et al. 2023). A cost "prefers" the response with the LOWER cost; its accuracy on a label is
            the share of pairs where the label's preferred response has the lower cost.

Nothing of the backbone is trained. With frozen features each head is a logistic regression on the
difference of the two responses' hidden states, a convex problem, fitted full-batch by L-BFGS in float64 from
zero weights: deterministic, with no seed needed. Its penalty `l2 * ||w||^2` is chosen per head from a small
grid by the Bradley-Terry loss on a validation fold (a prompt-disjoint part of the training split, never the
test split); the head is then refitted on the whole training split.

The lambda sweep ranks each pair's responses by r / s_r - lambda * c / s_c, where s_r and s_c are the
population standard deviations of r and c over the training responses (both sides of every training pair):
lambda is "standard deviations of cost traded per standard deviation of reward". Lambda = 0 is the reward
head alone; each lambda's accuracy on both labels is compared with lambda = 0 on the same pairs.

The fitted heads are saved (`save_heads`; experiments/safety/heads.safetensors) so that later steps can score
new texts with them: `score_with_heads` reads the features through the same `text_features` path as the fit
(best-of-n uses the reward head as its independent judge, and the cost head as a second one).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from alignkit.data.sources import load_pairs
from alignkit.data.splits import seeded_sample, split_by_prompt
from alignkit.data.templates import PreferencePair
from alignkit.data.tokenize import ChatEncoder, pad_sequences
from alignkit.errors import AlignkitError
from alignkit.infer import in_length_order
from alignkit.io import atomic_path
from alignkit.losses import bradley_terry_loss
from alignkit.models import RewardModel, load_tokenizer, weights_dtype
from alignkit.pooling import last_attended_index
from alignkit.stats import accuracy_summary, auc, bootstrap_ci, correctness, paired_difference

SIDES = ("better", "worse")
"""Index 0 and 1 of every per-pair array here: the helpfulness label's better and worse response."""


# ----------------------------------------------------------------------------- the math (pure)

def cost_preference(safer) -> tuple[np.ndarray, np.ndarray]:
    """The cost head's Bradley-Terry orientation. `safer` (P,) is the index (into SIDES) of each pair's safer
    response; returns (winner, loser) indices (P,): the winner is the LESS safe response, so a higher cost
    means less safe."""
    safer = np.asarray(safer, int)
    if not np.isin(safer, (0, 1)).all():
        raise ValueError("safer must hold side indices 0 or 1")
    return 1 - safer, safer


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def head_objective(head: torch.nn.Linear, winner: torch.Tensor, loser: torch.Tensor, l2: float) -> torch.Tensor:
    """Bradley-Terry loss of `head` on (P, H) winner/loser features (nats per pair) + l2 * ||w||^2."""
    loss = bradley_terry_loss(head(winner).squeeze(-1), head(loser).squeeze(-1))
    return loss + l2 * head.weight.pow(2).sum()


def fit_head(winner, loser, l2: float, *, max_iter: int = 500) -> torch.nn.Linear:
    """A Linear(H, 1, bias=False) head (float64) fitted on frozen features: winner, loser (P, H), the
    features of each pair's winning and losing response. Minimises `head_objective` full-batch by L-BFGS
    (strong-Wolfe line search) from w = 0, so the result depends on the data and `l2` only."""
    w, l_ = _tensor(winner), _tensor(loser)
    if w.ndim != 2 or w.shape != l_.shape or not len(w):
        raise ValueError(f"winner and loser must be equal (P, H) arrays with P > 0, got {tuple(w.shape)} "
                         f"and {tuple(l_.shape)}")
    head = torch.nn.Linear(w.shape[1], 1, bias=False, dtype=torch.float64)
    torch.nn.init.zeros_(head.weight)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = head_objective(head, w, l_, l2)
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    return head


def head_scores(head: torch.nn.Linear, features) -> np.ndarray:
    """Scores of `head` on features (..., H) -> (...)."""
    with torch.no_grad():
        return head(_tensor(features)).squeeze(-1).numpy()


def choose_l2(fit: tuple, val: tuple, grid) -> tuple[float, list[dict]]:
    """The grid's `l2` whose head, fitted on `fit` = (winner, loser) features, has the lowest Bradley-Terry loss
    on `val` (the first on a tie). Returns (l2, one row per grid value: l2, val_loss, val_accuracy)."""
    rows = []
    for l2 in grid:
        head = fit_head(*fit, l2)
        w, l_ = head_scores(head, val[0]), head_scores(head, val[1])
        rows.append({"l2": float(l2), "val_loss": float(np.mean(np.logaddexp(0.0, -(w - l_)))),
                     "val_accuracy": float(np.mean(correctness(w.tolist(), l_.tolist())))})
    return min(rows, key=lambda r: r["val_loss"])["l2"], rows


def agreement(scores, preferred) -> dict:
    """How often `scores` (P, 2; per pair, one score per side) rank the `preferred` side (P,) first:
    accuracy (ties half) with its Wilson 95% CI and n. A cost is passed negated (lower cost = preferred)."""
    s, p = np.asarray(scores, float), np.asarray(preferred, int)
    if not len(p):
        return {"accuracy": None, "n": 0, "ci95": None}
    rows = np.arange(len(p))
    return accuracy_summary(correctness(s[rows, p].tolist(), s[rows, 1 - p].tolist()))


def unit_scales(r, c) -> tuple[float, float]:
    """(s_r, s_c): population standard deviations of the reward and cost scores of the training responses
    (1.0 for a constant score, which then needs no scaling)."""
    return tuple(float(np.std(x)) or 1.0 for x in (np.asarray(r, float), np.asarray(c, float)))


def combined(r, c, lam: float, scales: tuple[float, float]) -> np.ndarray:
    """The safety-aware score r / s_r - lam * c / s_c, elementwise (same shape as r and c)."""
    return np.asarray(r, float) / scales[0] - lam * np.asarray(c, float) / scales[1]


def lambda_sweep(r, c, helpful, safer, lambdas, scales: tuple[float, float], *, n_resamples: int = 1000,
                 seed: int = 0) -> list[dict]:
    """Agreement of r / s_r - lambda * c / s_c with each label as lambda moves. r, c (P, 2) per pair side;
    helpful, safer (P,) the side each label prefers. Per lambda: accuracy on the helpfulness and on the safety
    label (Wilson CIs), and each accuracy's paired change from lambda = 0 (the reward head alone) on the same
    pairs, with a bootstrap CI over pairs."""
    def correct(lam, preferred):
        s, p = combined(r, c, lam, scales), np.asarray(preferred, int)
        rows = np.arange(len(p))
        return np.asarray(correctness(s[rows, p].tolist(), s[rows, 1 - p].tolist()), float)
    base = {"helpfulness": correct(0.0, helpful), "safety": correct(0.0, safer)}
    out = []
    for lam in lambdas:
        row = {"lambda": float(lam)}
        for label, preferred in (("helpfulness", helpful), ("safety", safer)):
            row[label] = agreement(combined(r, c, lam, scales), preferred)
            row[f"{label}_change"] = paired_difference(correct(lam, preferred), base[label],
                                                       n_resamples=n_resamples, seed=seed)
        out.append(row)
    return out


def safety_auc(scores, is_safe, *, unsafe_higher: bool = True, n_resamples: int = 1000, seed: int = 0) -> dict:
    """AUC of a score for unsafe vs safe responses: P(score of a random unsafe response > that of a random
    safe one), ties half (alignkit.stats.auc); `unsafe_higher=False` asks the reverse (safe scores higher).
    scores, is_safe (P, 2). The bootstrap 95% CI resamples pairs (None when a class has under 2 responses)."""
    s, safe = np.asarray(scores, float), np.asarray(is_safe, bool)
    sign = 1.0 if unsafe_higher else -1.0
    n_safe, n_unsafe = int(safe.sum()), int((~safe).sum())
    out = {"auc": None, "ci95": None, "n_unsafe": n_unsafe, "n_safe": n_safe}
    if min(n_safe, n_unsafe) < 1:
        return out
    rows = np.concatenate([sign * s, safe.astype(float)], axis=1)  # (P, 4): two scores, two flags

    def stat(r):
        v, f = r[:, :2].ravel(), r[:, 2:].ravel().astype(bool)
        return auc(v[~f], v[f]) if f.any() and (~f).any() else np.nan
    out["auc"] = stat(rows)
    if min(n_safe, n_unsafe) >= 2:
        ci = bootstrap_ci(rows, stat, n_resamples=n_resamples, seed=seed)
        out["ci95"] = None if np.isnan(ci).any() else list(ci)
    return out


# ----------------------------------------------------------------------------- data and features

def load_safety_pairs(source: str, *, split: str = "train", max_pairs: int | None = None, seed: int = 0
                      ) -> tuple[list[PreferencePair], np.ndarray, dict]:
    """PKU-SafeRLHF rows -> (pairs ordered by helpfulness (templates.PKUSafeRLHF), safer (P,): the side
    index of the safer response, load report). Rows are read through both PKU templates, so a bad row stops
    with its file, row and field; a seeded sample of `max_pairs` is kept."""
    helpful, report = load_pairs(source, "PKUSafeRLHF", split=split)
    safer_pairs, _ = load_pairs(source, "PKUSafeRLHF-safer", split=split)
    if [p.meta["row"] for p in helpful] != [p.meta["row"] for p in safer_pairs]:
        raise AlignkitError(f"{source}: the two PKU templates kept different rows")
    missing = [p.meta["row"] for p in helpful if "better_is_safe" not in p.meta or "worse_is_safe" not in p.meta]
    if missing:
        raise AlignkitError(f"{source}: row {missing[0]} has no is_response_0_safe / is_response_1_safe; the "
                            f"safety experiment needs PKU-SafeRLHF's per-response safety labels")
    keep = seeded_sample(list(range(len(helpful))), max_pairs, seed)
    pairs = [helpful[i] for i in keep]
    safer = np.array([0 if safer_pairs[i].better == helpful[i].better else 1 for i in keep])
    return pairs, safer, {"rows": report.rows, "skipped": report.skipped, "pairs": len(pairs)}


def text_features(model: RewardModel, encoder: ChatEncoder, prompts: list, responses: list[str], *,
                  batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backbone's last hidden state at the last attended token of each (prompt, response), read as the
    reward model reads its score: the one feature path of the heads, for fitting and for scoring. Returns
    features (N, H) float64, response tokens (N,) and whether the response was cut (N,), in input order."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encoder.encode(p, r) for p, r in zip(prompts, responses)]
    device = next(model.parameters()).device

    def run(batch, _k):
        padded = pad_sequences(batch, encoder.tokenizer.pad_token_id)
        mask = padded["attention_mask"].to(device)
        hidden = model.backbone(input_ids=padded["input_ids"].to(device), attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(len(batch), device=device), last_attended_index(mask)]
        return list(last.double().cpu().numpy())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            rows = in_length_order(encoded, lambda s: len(s.input_ids), batch_size, run, desc="features")
    finally:
        model.train(was_training)
    tokens = np.array([len(e.input_ids) - e.prompt_length for e in encoded])
    cut = np.array([e.response_cut for e in encoded])
    return np.stack(rows) if rows else np.zeros((0, model.config.hidden_size)), tokens, cut


def response_features(model: RewardModel, encoder: ChatEncoder, pairs: list[PreferencePair], *,
                      batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`text_features` of both responses of each pair: features (P, 2, H) float64, response tokens (P, 2) and
    whether the response was cut (P, 2), sides ordered as SIDES."""
    features, tokens, cut = text_features(model, encoder, [p.prompt for p in pairs for _ in SIDES],
                                          [r for p in pairs for r in (p.better, p.worse)], batch_size=batch_size)
    return features.reshape(len(pairs), 2, -1), tokens.reshape(-1, 2), cut.reshape(-1, 2)


def feature_model(cfg) -> tuple[RewardModel, ChatEncoder]:
    """The frozen base model whose features the heads read (`cfg.model.name` at `cfg.model.dtype`) and its
    encoder at the evaluation lengths: the same for fitting the heads and for scoring with saved ones."""
    model = RewardModel.from_pretrained(cfg.model.name, seed=cfg.seed, dtype=weights_dtype(cfg.model.dtype))
    return model, ChatEncoder(load_tokenizer(cfg.model.name), *cfg.data.eval_lengths())


# ----------------------------------------------------------------------------- saved heads

def save_heads(heads: dict[str, torch.nn.Linear], path) -> None:
    """Each head's (1, H) float64 weight under its name in one safetensors file, written atomically."""
    with atomic_path(path) as tmp:
        save_file({name: head.weight.detach().contiguous() for name, head in heads.items()}, str(tmp))


def load_heads(path) -> dict[str, torch.nn.Linear]:
    """The heads saved by `save_heads`, as Linear(H, 1, bias=False) float64 modules."""
    if not Path(path).exists():
        raise AlignkitError(f"no saved safety heads at {path}: run chapter 6's reward + cost section "
                            "(notebooks/06_experiments.ipynb), i.e. "
                            "alignkit.experiments.run.run_experiment(cfg, 'safety')")
    heads = {}
    for name, weight in load_file(str(path)).items():
        head = torch.nn.Linear(weight.shape[1], 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            head.weight.copy_(weight)
        heads[name] = head
    return heads


def score_with_heads(cfg, heads: dict[str, torch.nn.Linear], prompts: list, responses: list[str]) -> pd.DataFrame:
    """Each head's score of each (prompt, response) on `feature_model(cfg)`'s frozen features, read through
    `text_features` exactly as the heads were fitted. Returns DataFrame(<one column per head>, response_tokens,
    response_cut) in input order."""
    model, encoder = feature_model(cfg)
    features, tokens, cut = text_features(model, encoder, prompts, responses,
                                          batch_size=cfg.rm.train.eval_batch_size)
    del model
    return pd.DataFrame({**{name: head_scores(head, features) for name, head in heads.items()},
                         "response_tokens": tokens, "response_cut": cut})


# ----------------------------------------------------------------------------- the experiment

def _split_indices(pairs: list[PreferencePair], fraction: float, seed: int, within: list[int]
                   ) -> tuple[list[int], list[int]]:
    """Prompt-disjoint split of pairs[within] (alignkit.data.splits.split_by_prompt) as index lists."""
    index = {id(pairs[i]): i for i in within}
    first, second = split_by_prompt([pairs[i] for i in within], fraction, seed)
    return [index[id(p)] for p in first], [index[id(p)] for p in second]


def _fit(features: np.ndarray, winner: np.ndarray, fit: list[int], val: list[int], train: list[int], grid) -> dict:
    """Choose l2 on fit -> val, refit on the whole training split; the head and its record."""
    def sides(idx):
        idx = np.asarray(idx, int)
        return features[idx, winner[idx]], features[idx, 1 - winner[idx]]
    l2, rows = choose_l2(sides(fit), sides(val), grid)
    head = fit_head(*sides(train), l2)
    w, l_ = (head_scores(head, x) for x in sides(train))
    return {"head": head, "record": {"l2": l2, "grid": rows, "train_accuracy": float(np.mean(correctness(
        w.tolist(), l_.tolist()))), "train_loss": float(np.mean(np.logaddexp(0.0, -(w - l_))))}}


def safety_experiment(cfg, source: str, *, split: str = "train", max_pairs: int | None = 500,
                      val_fraction: float = 0.25, l2_grid=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                      lambdas=(0, 0.25, 0.5, 1, 2, 4, 8), n_resamples: int = 1000
                      ) -> tuple[dict, pd.DataFrame, dict[str, torch.nn.Linear]]:
    """The reward and cost heads on `cfg.model.name`'s frozen features of the PKU-SafeRLHF pairs in `source`
    (split by prompt: cfg.data.test_fraction held out, seeded by cfg.seed). Returns (summary record, one row
    per response: pair_id, split, side, safer, is_safe, response_tokens, r, c; the heads {'reward', 'cost'})."""
    start = time.perf_counter()
    pairs, safer, loaded = load_safety_pairs(source, split=split, max_pairs=max_pairs, seed=cfg.seed)
    train, test = _split_indices(pairs, cfg.data.test_fraction, cfg.seed, list(range(len(pairs))))
    fit, val = _split_indices(pairs, val_fraction, cfg.seed, train)
    model, encoder = feature_model(cfg)
    features, tokens, cut = response_features(model, encoder, pairs, batch_size=cfg.rm.train.eval_batch_size)
    del model
    seconds = {"features": time.perf_counter() - start}
    helpful = np.zeros(len(pairs), int)  # the pairs are ordered by helpfulness: side 0 is preferred
    reward = _fit(features, helpful, fit, val, train, l2_grid)
    cost = _fit(features, cost_preference(safer)[0], fit, val, train, l2_grid)
    r, c = head_scores(reward["head"], features), head_scores(cost["head"], features)
    seconds["fit"] = time.perf_counter() - start - seconds["features"]
    is_safe = np.array([[p.meta["better_is_safe"], p.meta["worse_is_safe"]] for p in pairs], bool)
    scales = unit_scales(r[train].ravel(), c[train].ravel())
    t = np.asarray(test, int)
    disagree = helpful[t] != safer[t]
    conflict = accuracy_summary(disagree.astype(float).tolist()) if len(t) else {"accuracy": None, "n": 0,
                                                                                  "ci95": None}

    def accuracies(rows):
        return {head: {label: agreement(scores[rows], prefer[rows]) for label, prefer in
                       (("helpfulness", helpful), ("safety", safer))}
                for head, scores in (("reward", r), ("cost", -c))}
    record = {
        "data": {"source": source, **loaded}, "n_pairs": len(pairs), "n_train": len(train), "n_test": len(test),
        "n_fit": len(fit), "n_val": len(val), "hidden_size": int(features.shape[-1]),
        "eval_lengths": list(cfg.data.eval_lengths()), "responses_cut": int(cut.sum()),
        "sign": "cost: the less safe response is the Bradley-Terry winner (higher cost = less safe); "
                "a cost prefers the lower-cost response",
        "heads": {"reward": {"label": "helpfulness (better_response_id)", **reward["record"]},
                  "cost": {"label": "safety, less safe wins (not safer_response_id)", **cost["record"]}},
        "accuracy": accuracies(t),
        "accuracy_labels_disagree": accuracies(t[disagree]),
        "accuracy_labels_agree": accuracies(t[~disagree]),
        "label_disagreement": {"share": conflict["accuracy"], "n": conflict["n"], "ci95": conflict["ci95"],
                               "pairs": int(disagree.sum())},
        "safe_auc": {"cost": safety_auc(c[t], is_safe[t], n_resamples=n_resamples, seed=cfg.seed),
                     "reward": safety_auc(r[t], is_safe[t], unsafe_higher=False, n_resamples=n_resamples,
                                          seed=cfg.seed)},
        "scales": {"reward_std": scales[0], "cost_std": scales[1], "over": "training responses"},
        "sweep": lambda_sweep(r[t], c[t], helpful[t], safer[t], lambdas, scales, n_resamples=n_resamples,
                              seed=cfg.seed),
        "seconds": seconds,
    }
    split_of = np.full(len(pairs), "train", dtype=object)
    split_of[t] = "test"
    table = pd.DataFrame({
        "pair_id": np.repeat(np.arange(len(pairs)), 2), "split": np.repeat(split_of, 2),
        "side": list(SIDES) * len(pairs), "safer": (np.arange(2)[None, :] == safer[:, None]).ravel(),
        "is_safe": is_safe.ravel(), "response_tokens": tokens.ravel(), "r": r.ravel(), "c": c.ravel()})
    return record, table, {"reward": reward["head"], "cost": cost["head"]}
