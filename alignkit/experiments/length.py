"""Length bias, mitigated and measured (chapter 6).

Post-hoc: the regression correction of Huang et al. (2024, "Post-hoc reward calibration: a case study on
length bias"), in its linear form. The reward's dependence on length is fitted by ordinary least squares,
`score = a + b * tokens`, over the reward model's scores of TRAINING responses (both sides of each pair), and
`b * tokens` is subtracted from every score. The intercept `a` cancels in every pairwise comparison. Huang
et al. also fit a local (LOWESS) curve; the linear fit is its one-parameter version. The corrected scores
are then compared with the plain ones on the same held-out pairs.

Training time: a product of experts in the spirit of Shen et al. (2023) and ODIN (Chen et al., 2024). A
length "expert" `coef * tokens` is added to the reward while training, so it absorbs the part of the
preference that length explains; only the quality reward `r` is used at inference. Here the length expert is
linear in length with one learnable coefficient (Shen et al. use a small expert model). The loss,
`poe_length_loss`, lives in `alignkit.losses` (re-exported here); the reward-model trainer uses it when
`rm.length_expert` is on (alignkit.train.rm; the coefficient is `RewardModel.length_coef`, left out of the
export). No profile's report trains that second reward model: sweeps/rm_sweep.py's candidate `lora-poe` does,
judged on a validation fold next to the plain one (`spearman_length` below gives its Spearman with a CI).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from alignkit.losses import poe_length_loss  # noqa: F401  (its home is alignkit.losses; kept importable here)
from alignkit.stats import (accuracy_summary, bootstrap_ci, correctness, length_diagnostics, length_matched,
                            paired_difference)
from alignkit.study.scores import paired


def fit_length_slope(scores, tokens) -> tuple[float, float]:
    """OLS fit `score = intercept + slope * tokens` over responses -> (intercept, slope). `slope` is in
    score units per token. With no spread in length, the slope is 0 and the intercept is the mean score."""
    x, y = np.asarray(tokens, float), np.asarray(scores, float)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"need equal, non-zero numbers of scores and lengths, got {len(y)} and {len(x)}")
    if np.ptp(x) == 0:
        return float(y.mean()), 0.0
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    return float(y.mean() - slope * x.mean()), slope


def debias(scores, tokens, slope: float) -> np.ndarray:
    """Scores with the fitted length effect removed: `score - slope * tokens`, same shape as `scores`."""
    return np.asarray(scores, float) - slope * np.asarray(tokens, float)


def _pair_rows(table: pd.DataFrame) -> np.ndarray:
    """(P, 4) array, one row per pair: score_better, score_worse, tokens_better, tokens_worse."""
    p = paired(table)
    return p[["score_better", "score_worse", "tokens_better", "tokens_worse"]].to_numpy(float)


def _slope_of_pairs(rows: np.ndarray) -> float:
    return fit_length_slope(np.concatenate([rows[:, 0], rows[:, 1]]), np.concatenate([rows[:, 2], rows[:, 3]]))[1]


def _spearman_of_pairs(rows: np.ndarray) -> float:
    """Spearman(score, length) over both responses of every pair; 0 when either side is constant."""
    s, t = np.concatenate([rows[:, 0], rows[:, 1]]), np.concatenate([rows[:, 2], rows[:, 3]])
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return 0.0
    return float(scipy_stats.spearmanr(s, t)[0])


def spearman_length(score_better, score_worse, len_better, len_worse, *, n_resamples: int = 1000,
                    seed: int = 0) -> dict:
    """Spearman(score, length) over both responses of every pair (each argument (P,), lengths in tokens),
    with a bootstrap CI over pairs: {'n' (pairs), 'spearman', 'ci95'}. 0 when scores or lengths are constant."""
    rows = np.column_stack([score_better, score_worse, len_better, len_worse]).astype(float)
    return {"n": len(rows), "spearman": _spearman_of_pairs(rows),
            "ci95": list(bootstrap_ci(rows, _spearman_of_pairs, n_resamples=n_resamples, seed=seed))}


def _correct(rows: np.ndarray) -> np.ndarray:
    return np.asarray(correctness(rows[:, 0].tolist(), rows[:, 1].tolist()))


def _scorer_summary(rows: np.ndarray, tolerance: float, n_resamples: int, seed: int) -> dict:
    """Accuracy (Wilson CI), accuracy on length-matched pairs (Wilson CI), Spearman(score, length) with a
    bootstrap CI over pairs."""
    diag = length_diagnostics(rows[:, 0].tolist(), rows[:, 1].tolist(), rows[:, 2].tolist(), rows[:, 3].tolist(),
                              tolerance)
    return {"accuracy": accuracy_summary(_correct(rows).tolist()), "length_matched": diag["length_matched"],
            "spearman_length": _spearman_of_pairs(rows),
            "spearman_length_ci95": list(bootstrap_ci(rows, _spearman_of_pairs, n_resamples=n_resamples, seed=seed))}


def _difference(plain: np.ndarray, corrected: np.ndarray, n_resamples: int, seed: int) -> dict:
    """Paired accuracy difference corrected - plain over the same pairs, with a bootstrap CI over pairs."""
    return paired_difference(_correct(corrected), _correct(plain), n_resamples=n_resamples, seed=seed)


def length_debiasing(train: pd.DataFrame, test: pd.DataFrame, *, tolerance: float = 0.1,
                     n_resamples: int = 1000, seed: int = 0) -> dict:
    """The post-hoc length correction fitted on `train` and judged on `test`.

    `train` and `test` are score tables with one row per response (columns pair_id, side in {'better',
    'worse'}, score, response_tokens), as chapter 3 writes them. The slope is fitted on every training
    response and its bootstrap CI resamples training pairs. On the test pairs, each scorer (plain, corrected)
    gets its accuracy, its accuracy on length-matched pairs (lengths within `tolerance` of the longer one),
    both with Wilson CIs, and Spearman(score, length) with a bootstrap CI over pairs. The "longer wins" rule
    is the same for both. `difference` is the paired accuracy difference corrected - plain over all test
    pairs and over the length-matched ones, each with a bootstrap CI over pairs (ties count half)."""
    train_rows, test_rows = _pair_rows(train), _pair_rows(test)
    intercept, slope = fit_length_slope(np.concatenate([train_rows[:, 0], train_rows[:, 1]]),
                                        np.concatenate([train_rows[:, 2], train_rows[:, 3]]))
    corrected = test_rows.copy()
    corrected[:, 0] = debias(test_rows[:, 0], test_rows[:, 2], slope)
    corrected[:, 1] = debias(test_rows[:, 1], test_rows[:, 3], slope)
    matched = np.asarray(length_matched(test_rows[:, 2].tolist(), test_rows[:, 3].tolist(), tolerance), bool)
    diag = length_diagnostics(*(test_rows[:, i].tolist() for i in range(4)), tolerance)
    return {
        "n": len(test_rows), "tolerance": tolerance,
        "fit": {"n_train_pairs": len(train_rows), "n_train_responses": 2 * len(train_rows),
                "intercept": intercept, "slope_per_token": slope,
                "slope_per_token_ci95": list(bootstrap_ci(train_rows, _slope_of_pairs, n_resamples=n_resamples,
                                                          seed=seed))},
        "plain": _scorer_summary(test_rows, tolerance, n_resamples, seed),
        "corrected": _scorer_summary(corrected, tolerance, n_resamples, seed),
        "longer_wins": diag["longer_wins"],
        "difference": {"all": _difference(test_rows, corrected, n_resamples, seed),
                       "length_matched": _difference(test_rows[matched], corrected[matched], n_resamples, seed)},
    }
