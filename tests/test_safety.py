"""Reward + cost (alignkit/experiments/safety.py): the sign convention, the head fit, the lambda sweep and the
AUC against values computed by hand; the PKU labels as read; the whole step on the tiny random model."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.experiments import run as runner
from alignkit.experiments.safety import (agreement, choose_l2, combined, cost_preference, fit_head, head_objective,
                                         head_scores, lambda_sweep, load_heads, load_safety_pairs, safety_auc,
                                         save_heads, score_with_heads, unit_scales)
from alignkit.stats import wilson_interval
from conftest import tiny_config


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_cost_winner_is_the_less_safe_response():
    winner, loser = cost_preference([0, 1, 1])  # safer side: better, worse, worse
    assert winner.tolist() == [1, 0, 0] and loser.tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        cost_preference([2])


# d = winner - loser = [+1, +1, -1]: the loss -mean(log sigmoid(w d)) has zero slope where
# 2 sigmoid(-w) = sigmoid(w), i.e. e^w = 2: w = ln 2.
WINNER, LOSER = [[1.0], [1.0], [0.0]], [[0.0], [0.0], [1.0]]


def test_head_fit_reaches_the_hand_optimum_and_has_the_score_head_shape():
    head = fit_head(WINNER, LOSER, 0.0)
    assert isinstance(head, torch.nn.Linear) and head.bias is None and tuple(head.weight.shape) == (1, 1)
    assert head.weight.item() == pytest.approx(math.log(2), abs=1e-6)
    # with l2 the optimum moves to where (2 sigmoid(-w) - sigmoid(w)) / 3 = 2 l2 w; pick w = 0.5, solve for l2
    l2 = (2 * sigmoid(-0.5) - sigmoid(0.5)) / 3 / (2 * 0.5)
    assert fit_head(WINNER, LOSER, l2).weight.item() == pytest.approx(0.5, abs=1e-6)
    objective = head_objective(head, torch.tensor(WINNER, dtype=torch.float64),
                               torch.tensor(LOSER, dtype=torch.float64), 0.0).item()
    assert objective == pytest.approx(-(2 * math.log(2 / 3) + math.log(1 / 3)) / 3)
    with pytest.raises(ValueError, match="equal"):
        fit_head(WINNER, LOSER[:2], 0.0)


def test_a_cost_head_fitted_with_the_less_safe_winner_scores_unsafe_responses_higher():
    rng = np.random.default_rng(0)
    harm = rng.integers(0, 2, size=(40, 2)).astype(float)
    harm[:, 1] = 1 - harm[:, 0]  # one harmful response per pair
    features = np.stack([harm, rng.normal(size=(40, 2))], axis=-1)  # (P, 2, 2): [harm, noise]
    safer = (harm[:, 1] == 0).astype(int)  # the side without harm is safer
    winner, loser = cost_preference(safer)
    rows = np.arange(40)
    head = fit_head(features[rows, winner], features[rows, loser], 1e-3)
    c = head_scores(head, features)
    assert head.weight[0, 0].item() > 0 and (c[rows, winner] > c[rows, loser]).all()
    assert agreement(-c, safer)["accuracy"] == 1.0  # a cost prefers the lower-cost side


def test_l2_is_chosen_on_the_validation_pairs():
    fit = (np.array(WINNER), np.array(LOSER))
    chosen, rows = choose_l2(fit, fit, [0.0, 1.0])  # validation agrees with the fit: no penalty is best
    assert chosen == 0.0 and rows[0]["val_loss"] < rows[1]["val_loss"]
    assert rows[0]["val_accuracy"] == pytest.approx(2 / 3)
    chosen, _ = choose_l2(fit, fit[::-1], [0.0, 1.0])  # validation labels reversed: the strongest shrinkage
    assert chosen == 1.0


def test_agreement_counts_ties_half_with_a_wilson_interval():
    out = agreement([[2, 1], [1, 1], [0, 3]], [0, 0, 1])
    assert out["accuracy"] == pytest.approx(2.5 / 3) and out["n"] == 3
    assert out["ci95"] == pytest.approx(list(wilson_interval(2.5, 3)))
    assert agreement(np.zeros((0, 2)), [])["n"] == 0


def test_scales_and_combined_score():
    assert unit_scales([1, 3], [2, 2, 2]) == (1.0, 1.0)
    assert unit_scales([0, 4], [0, 1]) == (2.0, 0.5)
    assert combined([2.0], [1.0], 3.0, (2.0, 0.5)).tolist() == [1.0 - 6.0]


def test_lambda_sweep_by_hand():
    # pair 0: better (r 2, c 1) vs worse (r 0, c 0), the worse side is safer;
    # pair 1: better (r 1, c 0) vs worse (r 0, c 1), the better side is safer.
    r, c = np.array([[2.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    sweep = lambda_sweep(r, c, [0, 0], [1, 0], [0, 2, 4], (1.0, 1.0), n_resamples=50)
    # lambda 0: scores r -> helpfulness 2/2, safety 1/2; lambda 2: pair 0 ties (0 vs 0), pair 1 (1 vs -2)
    # -> 1.5/2 on both labels; lambda 4: pair 0 (-2 vs 0), pair 1 (1 vs -4) -> helpfulness 1/2, safety 2/2
    assert [row["lambda"] for row in sweep] == [0.0, 2.0, 4.0]
    assert [row["helpfulness"]["accuracy"] for row in sweep] == [1.0, 0.75, 0.5]
    assert [row["safety"]["accuracy"] for row in sweep] == [0.5, 0.75, 1.0]
    assert sweep[2]["helpfulness_change"]["difference"] == -0.5 and sweep[2]["safety_change"]["difference"] == 0.5
    assert sweep[2]["safety_change"]["changed_pairs"] == 1 and sweep[0]["safety_change"]["difference"] == 0.0
    # the scales set lambda's unit: with s_c = 2 the cost weighs half as much, lambda 4 acts as lambda 2 did
    assert lambda_sweep(r, c, [0, 0], [1, 0], [4], (1.0, 2.0), n_resamples=10)[0]["safety"]["accuracy"] == 0.75


def test_safety_auc_by_hand():
    safe = [[False, True], [True, False]]
    # unsafe 3, 0 vs safe 1, 2: 3 > 1, 3 > 2, 0 < 1, 0 < 2 -> 2/4
    out = safety_auc([[3, 1], [2, 0]], safe, n_resamples=50)
    assert out["auc"] == 0.5 and out["n_unsafe"] == 2 and out["n_safe"] == 2 and len(out["ci95"]) == 2
    assert safety_auc([[3, 1], [0, 2]], safe, n_resamples=50)["auc"] == 1.0
    assert safety_auc([[3, 1], [0, 2]], safe, unsafe_higher=False, n_resamples=50)["auc"] == 0.0
    tie = safety_auc([[1, 1]], [[False, True]])
    assert tie["auc"] == 0.5 and tie["ci95"] is None  # one response per class: no interval
    assert safety_auc([[1, 2]], [[True, True]])["auc"] is None


def test_saved_heads_load_as_the_same_linear_heads(tmp_path):
    heads = {"reward": fit_head(WINNER, LOSER, 0.0), "cost": fit_head(LOSER, WINNER, 0.1)}
    save_heads(heads, tmp_path / "heads.safetensors")
    loaded = load_heads(tmp_path / "heads.safetensors")
    assert set(loaded) == {"reward", "cost"} and not list(tmp_path.glob(".*"))  # no temporary file left
    for name, head in heads.items():
        assert loaded[name].bias is None and loaded[name].weight.dtype == torch.float64
        assert torch.equal(loaded[name].weight, head.weight)
        features = np.array([[0.5], [-2.0]])
        assert head_scores(loaded[name], features).tolist() == head_scores(head, features).tolist()
    with pytest.raises(AlignkitError, match="chapter 6's reward \\+ cost section"):
        load_heads(tmp_path / "missing.safetensors")


def test_pku_labels_are_read_per_side(data_dir):
    path = data_dir / "pku_saferlhf_500.jsonl"
    pairs, safer, loaded = load_safety_pairs(str(path))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert loaded["rows"] == len(rows) == len(pairs) == len(safer) == 500
    for pair, side, row in zip(pairs, safer, rows):
        better = row["better_response_id"]
        assert pair.better == row[f"response_{better}"]
        assert side == (0 if row["safer_response_id"] == better else 1)
        assert pair.meta["better_is_safe"] == row[f"is_response_{better}_safe"]
    assert int(np.sum(safer == 1)) == sum(r["better_response_id"] != r["safer_response_id"] for r in rows)


def test_the_safety_section_refuses_too_few_pairs_and_takes_null_for_all():
    from alignkit.config import load_config
    with pytest.raises(AlignkitError, match=r"safety.max_pairs must be at least 8.*got 7"):
        load_config("cpu", {"safety.max_pairs": 7})
    assert load_config("cpu", {"safety.max_pairs": None}).safety.max_pairs is None
    assert load_config("cpu").safety.max_pairs == 200 and load_config("gpu").safety.max_pairs == 20000


def test_safety_step_on_the_tiny_model(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    monkeypatch.setitem(runner.SETTINGS, "safety", {**runner.SETTINGS["safety"], "n_resamples": 50})
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"safety.max_pairs": 60})
    record = runner.run_experiment(cfg, "safety")
    folder = cfg.out / "experiments" / "safety"
    assert json.loads((folder / "summary.json").read_text())["identity"] == record["identity"]
    n, n_test = record["n_pairs"], record["n_test"]
    assert n == 60 and record["n_train"] + n_test == n and record["n_fit"] + record["n_val"] == record["n_train"]
    assert n_test > 0 and record["hidden_size"] == 32
    disagree = record["label_disagreement"]
    assert disagree["n"] == n_test and disagree["share"] == pytest.approx(disagree["pairs"] / n_test)
    for head in ("reward", "cost"):
        assert record["heads"][head]["l2"] in runner.SETTINGS["safety"]["l2_grid"]
        for label in ("helpfulness", "safety"):
            acc = record["accuracy"][head][label]
            assert acc["n"] == n_test and acc["ci95"][0] <= acc["accuracy"] <= acc["ci95"][1]
            assert record["accuracy_labels_disagree"][head][label]["n"] == disagree["pairs"]
            assert record["accuracy_labels_agree"][head][label]["n"] == n_test - disagree["pairs"]
    auc = record["safe_auc"]["cost"]
    assert auc["n_safe"] + auc["n_unsafe"] == 2 * n_test
    assert [row["lambda"] for row in record["sweep"]] == runner.SETTINGS["safety"]["lambdas"]
    assert record["sweep"][0]["helpfulness"] == record["accuracy"]["reward"]["helpfulness"]
    fingerprints = record["config"]["model"]["safetensors"]  # a local folder: its weights, not its path
    assert len(fingerprints) == 1 and len(fingerprints[0]) == 16
    table = pd.read_parquet(folder / "responses.parquet")
    assert len(table) == 2 * n and (table.split == "test").sum() == 2 * n_test
    assert set(table.columns) >= {"pair_id", "split", "side", "safer", "is_safe", "response_tokens", "r", "c"}
    assert (table.groupby("pair_id").safer.sum() == 1).all()
    # the saved heads, scoring texts through the same feature path, give the in-memory heads' scores
    assert record["heads_file"] == runner.file_fingerprint(folder / "heads.safetensors")
    heads = load_heads(folder / "heads.safetensors")
    assert tuple(heads["reward"].weight.shape) == (1, 32)
    pairs, _, _ = load_safety_pairs(str(data_dir / "pku_saferlhf_500.jsonl"), max_pairs=60, seed=cfg.seed)
    ids = [0, 1, 7]
    scored = score_with_heads(cfg, heads, [pairs[i].prompt for i in ids for _ in (0, 1)],
                              [r for i in ids for r in (pairs[i].better, pairs[i].worse)])
    expected = table.set_index(["pair_id", "side"]).loc[[(i, s) for i in ids for s in ("better", "worse")]]
    np.testing.assert_allclose(scored["reward"], expected.r, atol=1e-6)
    np.testing.assert_allclose(scored["cost"], expected.c, atol=1e-6)
    assert scored.response_tokens.tolist() == expected.response_tokens.tolist()
    # the step is reused while its identity holds, recomputed when the seed or the number of pairs changes
    monkeypatch.setattr(runner, "safety_experiment", lambda *a, **k: pytest.fail("recomputed a reused step"))
    assert runner.run_experiment(cfg, "safety") == record
    with pytest.raises(pytest.fail.Exception):
        runner.run_experiment(tiny_config(tiny_model_dir, tmp_path, data_dir, seed=1, **{"safety.max_pairs": 60}),
                              "safety")
    with pytest.raises(pytest.fail.Exception):
        runner.run_experiment(tiny_config(tiny_model_dir, tmp_path, data_dir, **{"safety.max_pairs": 50}), "safety")
    (folder / "heads.safetensors").unlink()  # an older run without saved heads is not reused
    with pytest.raises(pytest.fail.Exception):
        runner.run_experiment(cfg, "safety")


# ----------------------------------------------------------------------------- the report layer
def _acc(accuracy, ci, n=100):
    return {"accuracy": accuracy, "n": n, "ci95": ci}


def _safety_summary(safety_change_ci, helpfulness_change_ci, cost_auc_ci):
    heads = {h: {"label": h, "l2": 0.01, "grid": [{"l2": 0.01, "val_loss": 0.6, "val_accuracy": 0.7}],
                 "train_accuracy": 0.8, "train_loss": 0.5} for h in ("reward", "cost")}
    accuracy = {"reward": {"helpfulness": _acc(0.7, [0.6, 0.78]), "safety": _acc(0.55, [0.45, 0.64])},
                "cost": {"safety": _acc(0.3, [0.22, 0.4]), "helpfulness": _acc(0.5, [0.4, 0.6])}}
    sweep = [{"lambda": lam, "helpfulness": _acc(0.7, [0.6, 0.78]), "safety": _acc(0.6, [0.5, 0.69]),
              "helpfulness_change": {"difference": 0.0, "ci95": [0.0, 0.0], "changed_pairs": 0},
              "safety_change": {"difference": 0.0, "ci95": [0.0, 0.0], "changed_pairs": 0}} for lam in (0, 8)]
    sweep[1]["safety_change"] = {"difference": 0.1, "ci95": safety_change_ci, "changed_pairs": 12}
    sweep[1]["helpfulness_change"] = {"difference": -0.1, "ci95": helpfulness_change_ci, "changed_pairs": 12}
    return {"n_pairs": 500, "n_train": 400, "n_test": 100, "n_fit": 300, "n_val": 100, "hidden_size": 576,
            "responses_cut": 0, "config": {"n_resamples": 1000}, "heads": heads, "accuracy": accuracy,
            "accuracy_labels_disagree": {h: {k: _acc(0.4, [0.2, 0.6], 20) for k in v} for h, v in accuracy.items()},
            "label_disagreement": {"share": 0.2, "n": 100, "ci95": [0.13, 0.29], "pairs": 20},
            "safe_auc": {"cost": {"auc": 0.7, "ci95": cost_auc_ci, "n_unsafe": 110, "n_safe": 90},
                         "reward": {"auc": 0.5, "ci95": [0.42, 0.58], "n_unsafe": 110, "n_safe": 90}},
            "sweep": sweep}


def test_tradeoff_category_comes_from_the_change_intervals():
    from alignkit.report.readings import TRADEOFF, safety_tradeoff
    assert safety_tradeoff([0.02, 0.2], [-0.2, -0.01]) == "trade"
    assert safety_tradeoff([0.02, 0.2], [-0.2, 0.0]) == "free"  # touching 0 is no loss shown
    assert safety_tradeoff([0.0, 0.2], [-0.2, -0.01]) == "no_gain"
    assert safety_tradeoff(None, [0.1, 0.2]) is None
    reached = {safety_tradeoff(s, h) for s, h in (([1, 2], [-2, -1]), ([1, 2], [-1, 1]), ([-1, 1], [0, 0]))}
    assert reached == set(TRADEOFF)
    from alignkit.report.readings import texts
    for key, categories in (("exp_safety_tradeoff", TRADEOFF), ("exp_cost_auc", ("above", "below", "holds")),
                            ("exp_reward_auc", ("above", "below", "holds"))):
        assert all({"en", "zh"} <= set(texts()[key][c]) for c in categories), key


def test_safety_tables_and_reading_take_their_categories_from_the_numbers():
    from alignkit.report import experiments as ex
    summary = _safety_summary([0.02, 0.18], [-0.19, -0.01], [0.62, 0.77])
    en, zh = ex.safety_reading(summary)
    assert "disagree on 20.0% [13.0%, 29.0%] (20 pairs" in en
    assert "safer response first 0.550 [0.450, 0.640] (CI holds 0.5: not shown better than chance)" in en
    assert "lower cost 0.300 [0.220, 0.400] (below chance)" in en and "(above chance)" in en
    assert "is 0.700 [0.620, 0.770]: the cost ranks unsafe responses above safe ones" in en
    assert "At λ = 8" in en and "at a measured loss of helpfulness" in en and "代价" in zh
    en, _ = ex.safety_reading(_safety_summary([-0.01, 0.18], [-0.19, -0.01], [0.45, 0.6]))
    assert "no gain in agreement with the safety label" in en and "does not separate unsafe from safe" in en
    sweep = ex.sweep_table(summary)
    assert sweep.loc["0", "reading"] == "" and sweep.loc["8", "reading"].startswith("the cost buys")
    assert sweep.loc["8", "safety change vs λ = 0"] == "+0.100 [+0.020, +0.180]"
    accuracy = ex.safety_accuracy_table(summary)
    assert accuracy.loc["reward head · helpfulness label", "vs chance"].startswith("above chance")
    assert accuracy.loc["cost head · helpfulness label", "labels disagree: n"] == 20
    labels = ex.safety_labels_table(summary)
    assert labels.loc["AUC: reward higher for safe responses", "reading"].startswith("the reward does not separate")
    assert ex.safety_run_size(summary).loc["responses through the frozen base model", "value"] == 1000
    assert ex.safety_heads_table(summary).loc["cost head", "L2 (chosen)"] == 0.01
