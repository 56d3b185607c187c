"""DPO and its variants head to head (alignkit/experiments/variants.py, alignkit/train/kto.py, run.py's
`dpo_variants` step): KTO's loss and reference point by hand, KTO's step in the trainer against the paper's
formula on a tiny model's own log-probs, the per-method summaries by hand, the config's refusals, the whole
step on the tiny random model (every method, reuse, force, identity) and the report layer's table and reading."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from alignkit import losses
from alignkit.config import load_config
from alignkit.errors import AlignkitError
from alignkit.experiments import run as runner
from alignkit.experiments.online import label_samples, online_vs_offline
from alignkit.experiments.variants import choose, generation_summary, method_config, onpolicy_summary, pair_summary
from alignkit.io import reuse
from alignkit.train.kto import KTOItem, KTOTask, mismatched_pairs, mismatched_partners
from conftest import tiny_config


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_kto_loss_by_hand():
    """beta 0.1, z0 0.2. A desirable response with log-ratio -1 - (-1.5) = 0.5: 1 - sigmoid(0.1 (0.5 - 0.2))
    = 1 - sigmoid(0.03) = 0.492501. An undesirable one with log-ratio -2 - (-1) = -1: 1 - sigmoid(0.1 (0.2 + 1))
    = 1 - sigmoid(0.12) = 0.470036, times lambda_U = 2."""
    pi, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    desirable = torch.tensor([True, False])
    got = losses.kto_loss(pi, ref, desirable, torch.tensor(0.2), beta=0.1)
    assert got.tolist() == pytest.approx([0.492501, 0.470036], abs=1e-6)
    assert 1 - sigmoid(0.03) == pytest.approx(0.492501, abs=1e-6)
    assert 1 - sigmoid(0.12) == pytest.approx(0.470036, abs=1e-6)
    weighted = losses.kto_loss(pi, ref, desirable, 0.2, beta=0.1, desirable_weight=3.0, undesirable_weight=2.0)
    assert weighted.tolist() == pytest.approx([3 * 0.492501, 2 * 0.470036], abs=1e-5)
    # a policy equal to its reference at z0 = 0: every example's loss is lambda / 2
    assert losses.kto_loss(pi, pi, desirable, 0.0, beta=0.1).tolist() == [0.5, 0.5]
    # a desirable example gains when its log-ratio rises; an undesirable one when it falls
    up = losses.kto_loss(pi + 1, ref, desirable, 0.2, beta=0.1)
    assert up[0] < got[0] and up[1] > got[1]


def test_kto_reference_point_is_the_clamped_detached_mean_log_ratio():
    """Mismatched log-ratios (-3 + 3.5, -2 + 2.1) = (0.5, 0.1): z0 = 0.3. A negative mean is clamped to 0."""
    pi = torch.tensor([-3.0, -2.0], requires_grad=True)
    z0 = losses.kto_reference_point(pi, torch.tensor([-3.5, -2.1]))
    assert z0.item() == pytest.approx(0.3) and not z0.requires_grad
    assert losses.kto_reference_point(torch.tensor([-3.0, -2.0]), torch.tensor([-2.0, -1.0])).item() == 0.0


def test_mismatched_partners_pick_the_next_other_prompt():
    assert mismatched_partners(["a", "a", "b", "c"]) == [2, 2, 3, 0]
    assert mismatched_partners(["a", "b"]) == [1, 0]
    assert mismatched_partners(["a", "a"]) == [0, 1]  # one prompt only: nothing else to mismatch with


def _kto_items(tiny_model_dir, tokenizer, homework_pairs, offsets=None):
    """Three pairs of three prompts, their mismatched partners, and reference log-probs: the tiny policy's own
    (before any update) plus `offsets` (for the pairs, for the mismatched)."""
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    from alignkit.infer import response_logps
    from alignkit.models import Policy
    seen, pairs = set(), []
    for p in homework_pairs:
        if p.prompt_id not in seen:
            seen.add(p.prompt_id)
            pairs.append(p)
        if len(pairs) == 3:
            break
    encoder = ChatEncoder(tokenizer, 48, 24)
    encoded = encode_pairs(encoder, pairs)[0]
    mismatched = encode_pairs(encoder, mismatched_pairs(pairs))[0]
    policy = Policy.from_pretrained(str(tiny_model_dir))
    own, own_m = (response_logps(policy, e, tokenizer.pad_token_id, progress=False) for e in (encoded, mismatched))
    (a, b), (c, d) = offsets or ((0.0, 0.0), (0.0, 0.0))
    items = [KTOItem(p, m, (r[0] + a, r[1] + b), (s[0] + c, s[1] + d))
             for p, m, r, s in zip(encoded, mismatched, own, own_m)]
    return policy, items


def test_kto_step_in_the_trainer_matches_the_formula(tiny_model_dir, tokenizer, homework_pairs):
    """KTOTask.step on the tiny model: with references equal to the policy's own log-probs the first loss is
    exactly 1/2 (as DPO's first loss is ln 2) and z0 = 0. With references moved by hand, (-0.5, +0.3) for the
    pairs and -0.4 for every mismatched answer, every desirable log-ratio is +0.5, every undesirable one -0.3
    and z0 = 0.4, so the loss is (1 - sigmoid(b (0.5 - 0.4)) + 1 - sigmoid(b (0.4 + 0.3))) / 2, and the
    gradient flows through the examples only."""
    beta = 0.5
    policy, items = _kto_items(tiny_model_dir, tokenizer, homework_pairs)
    task = KTOTask(tokenizer.pad_token_id, beta)
    policy.eval()
    loss, metrics = task.step(policy, task.collate(items))
    assert loss.item() == pytest.approx(0.5, abs=1e-5) and metrics["kl"].item() == pytest.approx(0.0, abs=1e-5)
    policy, items = _kto_items(tiny_model_dir, tokenizer, homework_pairs, ((-0.5, 0.3), (-0.4, -0.4)))
    policy.eval()
    loss, metrics = task.step(policy, task.collate(items))
    expected = (1 - sigmoid(beta * (0.5 - 0.4)) + 1 - sigmoid(beta * (0.4 + 0.3))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert metrics["kl"].item() == pytest.approx(0.4, abs=1e-5)
    assert metrics["rewards_chosen"].item() == pytest.approx(beta * 0.5, abs=1e-5)
    assert metrics["rewards_rejected"].item() == pytest.approx(-beta * 0.3, abs=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    summary = task.evaluate(policy, items)
    assert summary["n"] == 3 and summary["reward_accuracy"] == 1.0 and summary["kl"] == pytest.approx(0.4, abs=1e-5)


# ----------------------------------------------------------------------------- the summaries by hand

def test_pair_summary_and_choice_by_hand():
    """Log-ratios chosen (+1, -1, 0, -2), rejected (0, -2, 0, -1): the chosen is above in pairs 1 and 2, tied in
    3, below in 4 -> accuracy (1 + 1 + 0.5 + 0) / 4 = 0.625; mean chosen change -0.5, rejected -0.75."""
    rows = pd.DataFrame({"chosen_policy": [-9.0, -11.0, -10.0, -12.0], "chosen_reference": [-10.0] * 4,
                         "rejected_policy": [-20.0, -22.0, -20.0, -21.0], "rejected_reference": [-20.0] * 4})
    s = pair_summary(rows, n_resamples=200)
    assert s["accuracy"]["accuracy"] == 0.625 and s["accuracy"]["n"] == 4
    assert s["chosen_change"]["mean"] == -0.5 and s["rejected_change"]["mean"] == -0.75
    assert s["margin_change"]["mean"] == 0.25 and s["chosen_change"]["n"] == 4
    assert s["chosen_falls"] is False  # its interval reaches above 0
    falls = pair_summary(rows.assign(chosen_policy=rows.chosen_policy - 5), n_resamples=200)
    assert falls["chosen_falls"] is True and falls["chosen_change"]["ci95"][1] < 0
    a = {"accuracy": {"accuracy": 0.6}, "margin_change": {"mean": 0.1}}
    b = {"accuracy": {"accuracy": 0.6}, "margin_change": {"mean": 0.3}}
    c = {"accuracy": {"accuracy": 0.7}, "margin_change": {"mean": -1.0}}
    assert choose([a, b]) == 1 and choose([a, b, c]) == 2 and choose([a, a]) == 0  # ties: the earlier point


def test_generation_summary_by_hand():
    """Three prompts. Scores base (1, 2, 3), policy (2, 2, 1): a win, a tie and a loss -> win rate 0.5; lengths
    10, 20, 30 with one at the cap; KL 0.1, 0.2, 0.3 -> mean 0.2."""
    base = pd.DataFrame({"prompt_id": ["a", "b", "c"], "score": [1.0, 2.0, 3.0], "response_tokens": [5, 5, 5],
                         "hit_limit": [False] * 3})
    policy = pd.DataFrame({"prompt_id": ["a", "b", "c"], "score": [2.0, 2.0, 1.0], "response_tokens": [10, 20, 30],
                           "hit_limit": [False, False, True], "kl": [0.1, 0.2, 0.3]})
    g = generation_summary(base, policy, n_resamples=200)
    assert g["win"]["win_rate"] == 0.5 and g["win"]["n"] == 3 and g["win"]["mean_difference"] == pytest.approx(-1 / 3)
    assert g["length"]["mean"] == 20.0 and g["length"]["hit_limit"] == pytest.approx(1 / 3)
    assert g["kl"]["mean"] == pytest.approx(0.2) and g["kl"]["n"] == 3
    lo, hi = g["kl"]["ci95"]
    assert 0.1 <= lo <= 0.2 <= hi <= 0.3
    with pytest.raises(ValueError, match="same prompts"):
        generation_summary(base, policy.iloc[::-1])


# ----------------------------------------------------------------------------- config

def test_the_config_section_refuses_what_cannot_run():
    assert load_config("cpu").dpo_variants.methods == ""  # the cpu profile leaves the head-to-head to the gpu profile
    assert load_config("tiny").dpo_variants.methods == "sigmoid,kto,online"
    assert load_config("gpu").dpo_variants.beta_scales == "0.5,1,2"
    with pytest.raises(AlignkitError, match=r"dpo_variants.methods.*sigmoid, cdpo.*got 'dpo,kto'"):
        load_config("cpu", {"dpo_variants.methods": "dpo,kto"})
    with pytest.raises(AlignkitError, match="dpo_variants.methods.*'kto,kto'"):
        load_config("cpu", {"dpo_variants.methods": "kto,kto"})
    with pytest.raises(AlignkitError, match="dpo_variants.beta_scales"):
        load_config("cpu", {"dpo_variants.beta_scales": "1,x"})
    with pytest.raises(AlignkitError, match="dpo_variants.beta_scales"):
        load_config("cpu", {"dpo_variants.beta_scales": "0,1"})
    with pytest.raises(AlignkitError, match="dpo_variants.steps"):
        load_config("cpu", {"dpo_variants.steps": 0})
    with pytest.raises(AlignkitError, match=r"unknown option 'dpo_variants.beta'.*dpo_variants.beta_scales"):
        load_config("cpu", {"dpo_variants.beta": 0.1})


def test_each_method_trains_the_dpo_section_with_its_own_strength():
    cfg = load_config("cpu", {"dpo.label_smoothing": 0.2, "dpo_variants.steps": 2})
    dpo = method_config(cfg, "sigmoid", 2.0, 0.1)
    assert dpo.loss == "sigmoid" and dpo.beta == pytest.approx(0.2) and dpo.label_smoothing == 0.0
    assert dpo.train.max_steps == cfg.dpo_variants.steps == 2 and dpo.train.save_every == 0
    assert dpo.train.launcher == "none"
    assert dpo.train.lr == cfg.dpo.train.lr and dpo.trainable == cfg.dpo.trainable
    cdpo = method_config(cfg, "cdpo", 1.0, 0.1)
    assert cdpo.loss == "sigmoid" and cdpo.label_smoothing == 0.1
    orpo = method_config(cfg, "orpo", 0.5, 0.1)
    assert orpo.orpo_lambda == pytest.approx(cfg.dpo.orpo_lambda / 2) and orpo.beta == cfg.dpo.beta
    assert method_config(cfg, "kto", 1.0, 0.1).loss == "kto"
    online = method_config(cfg, "online", 1.0, 0.1, steps=7)  # DPO's loss, offline DPO's number of steps
    assert online.loss == "sigmoid" and online.label_smoothing == 0.0 and online.train.max_steps == 7


# ----------------------------------------------------------------------------- the online round by hand

def test_on_policy_pairs_by_hand():
    """Four prompts, two samples each. Scores (1, 2): the second is better, margin 1, lengths 30 vs 10;
    (3, 1): the first, margin 2, 20 vs 4; (0.5, 0.5): a tie, dropped; (2, -1): the first, margin 3, 7 vs 3.
    Three pairs, one tie in four (25%), mean margin 2, mean length difference (20 + 16 + 4) / 3, and the
    better answer is the longer one in all three pairs."""
    prompts = [({"role": "user", "content": q},) for q in "abcd"]
    first = [{"response": f"{q}1", "response_tokens": n} for q, n in zip("abcd", (10, 20, 5, 7))]
    second = [{"response": f"{q}2", "response_tokens": n} for q, n in zip("abcd", (30, 4, 5, 3))]
    pairs, labels = label_samples(prompts, first, second, [1.0, 3.0, 0.5, 2.0], [2.0, 1.0, 0.5, -1.0])
    assert [(p.prompt[0]["content"], p.better, p.worse) for p in pairs] == [("a", "a2", "a1"), ("b", "b1", "b2"),
                                                                            ("d", "d1", "d2")]
    assert labels.tie.tolist() == [False, False, True, False] and labels.margin.tolist() == [1.0, 2.0, 0.0, 3.0]
    s = onpolicy_summary(labels, trained_pairs=3, n_resamples=200)
    assert (s["prompts"], s["ties"], s["tie_share"], s["pairs"], s["trained_pairs"]) == (4, 1, 0.25, 3, 3)
    assert s["samples_per_prompt"] == 2 and s["margin"]["mean"] == 2.0 and s["margin"]["n"] == 3
    assert s["length_difference"]["mean"] == pytest.approx(40 / 3)
    assert s["longer_preferred"]["accuracy"] == 1.0 and s["longer_preferred"]["n"] == 3
    with pytest.raises(ValueError, match="one entry per prompt"):
        label_samples(prompts, first, second[:3], [0.0] * 4, [1.0] * 4)


def test_online_vs_offline_is_paired_by_prompt():
    """Base scores (1, 2, 3, 4). Offline DPO (2, 1, 3, 5): win, loss, tie, win -> 0.625; online (2, 3, 4, 3):
    win, win, win, loss -> 0.75. Per prompt online - offline = (0, 1, 0.5, -1): mean 0.125, 3 prompts differ."""
    answers = pd.DataFrame({"model": ["base"] * 4 + ["sigmoid"] * 4 + ["online"] * 4, "prompt_id": list("abcd") * 3,
                            "score": [1.0, 2, 3, 4, 2, 1, 3, 5, 2, 3, 4, 3]})
    c = online_vs_offline(answers, n_resamples=200)
    assert c["offline_win_rate"] == 0.625 and c["online_win_rate"] == 0.75
    assert c["difference"] == pytest.approx(0.125) and c["n"] == 4 and c["changed_pairs"] == 3
    assert c["ci95"][0] <= 0.125 <= c["ci95"][1]
    with pytest.raises(ValueError, match="same order"):
        online_vs_offline(answers.iloc[[0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]])


# ----------------------------------------------------------------------------- the step on the tiny model

def _settings(monkeypatch):
    monkeypatch.setitem(runner.SETTINGS, "dpo_variants", {**runner.SETTINGS["dpo_variants"], "n_resamples": 20})


def test_variants_step_on_the_tiny_model(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    """Every method, one step, a grid of two strengths chosen on the validation fold: summary.json names every
    method, its numbers are the tables' (pairs.parquet, answers.parquet), reused on a second call, retrained on
    force, and a new setting is a new identity."""
    from alignkit.train.rm import reward_model_metrics
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    _settings(monkeypatch)
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1})
    with pytest.raises(AlignkitError, match=r"reward model.*DPO variants.*chapter 1.*alignkit rm train --profile tiny"):
        runner.run_experiment(cfg, "dpo_variants")
    reward_model_metrics(cfg)
    record = runner.run_experiment(cfg, "dpo_variants")
    folder = cfg.out / "experiments" / "dpo_variants"
    assert json.loads((folder / "summary.json").read_text())["identity"] == record["identity"]
    methods = cfg.dpo_variants.methods.split(",")
    assert list(record["methods"]) == methods and len(methods) == 9 and "online" in methods
    sizes = record["sizes"]
    assert sizes["steps"] == 1 and sizes["train_pairs"] == cfg.dpo.train.batch_size * cfg.dpo.train.grad_accum
    assert sizes["validation_run"] and sizes["validation_pairs"] > 0 and sizes["beta_scales"] == [1.0, 2.0]
    pairs, answers = pd.read_parquet(folder / "pairs.parquet"), pd.read_parquet(folder / "answers.parquet")
    assert set(answers.model) == {"base", *methods} and (answers.groupby("model").size() == sizes["prompts"]).all()
    assert (answers.response_tokens <= cfg.generation.max_new_tokens).all()
    assert (answers[answers.model == "base"].kl == 0).all() and (answers[answers.model != "base"].kl >= -1e-6).all()
    base = answers[answers.model == "base"].reset_index(drop=True)
    for method, m in record["methods"].items():
        assert m["training"]["steps"] == 1, method  # the same number of optimiser steps for every method
        values = [g["validation"]["accuracy"]["accuracy"] for g in m["grid"]]
        assert m["chosen_by"] == "validation" and len(m["grid"]) == 2
        assert m["strength"]["scale"] in (1.0, 2.0) and values[[1.0, 2.0].index(m["strength"]["scale"])] == max(values)
        test = pairs[(pairs.split == "test") & (pairs.method == method)]
        assert len(test) == sizes["test_pairs"] == m["accuracy"]["n"] and set(test.scale) == {m["strength"]["scale"]}
        assert m["chosen_change"]["mean"] == pytest.approx((test.chosen_policy - test.chosen_reference).mean())
        assert m["accuracy"]["accuracy"] == pair_summary(test, n_resamples=1)["accuracy"]["accuracy"]
        mine = answers[answers.model == method].reset_index(drop=True)
        assert list(mine.prompt_id) == list(base.prompt_id)
        assert m["win"]["win_rate"] == pytest.approx(np.mean(np.where(mine.score == base.score, 0.5,
                                                                       mine.score > base.score)))
        assert m["kl"]["mean"] == pytest.approx(mine.kl.mean()) and m["length"]["n"] == sizes["prompts"]
    # one reference cache for all methods: every reference column is the same numbers for every method
    ref = pairs[pairs.split == "test"].groupby("pair").chosen_reference.nunique()
    assert (ref == 1).all()
    strengths = {k: m["strength"]["name"] for k, m in record["methods"].items()}
    assert strengths["ipo"] == "tau" and strengths["orpo"] == "lambda" and strengths["kto"] == "beta"
    # the online round: one pair per kept training pair's prompt unless tied, trained for offline DPO's steps
    online = record["online"]
    assert online["prompts"] == sizes["train_pairs"] and online["pairs"] + online["ties"] == online["prompts"]
    assert 0 < online["trained_pairs"] <= online["pairs"] and online["tie_share"] == online["ties"] / online["prompts"]
    assert online["margin"]["mean"] > 0 and online["longer_preferred"]["n"] == online["pairs"]
    vs = online["vs_offline"]
    assert vs["n"] == sizes["prompts"] and vs["online_win_rate"] == record["methods"]["online"]["win"]["win_rate"]
    assert vs["difference"] == pytest.approx(vs["online_win_rate"] - vs["offline_win_rate"])
    config = record["config"]
    assert config["dpo_variants"]["steps"] == 1 and "launcher" not in config["dpo"]["train"]
    # reused while the identity holds; recomputed on force and when a setting changes
    monkeypatch.setattr(runner, "variants_experiment", lambda *a, **kw: pytest.fail("recomputed a reused step"))
    assert runner.run_experiment(cfg, "dpo_variants") == record
    with pytest.raises(pytest.fail.Exception):
        runner.run_experiment(cfg, "dpo_variants", force=True)
    rm_dir, test_split = cfg.out / "rm", cfg.out / "data" / "test.jsonl"
    assert reuse(folder / "summary.json", runner.variants_identity(cfg, rm_dir, test_split)) is not None
    for change in ({"dpo_variants.steps": 2}, {"dpo_variants.methods": "sigmoid"}, {"dpo.beta": 0.2},
                   {"dpo_variants.max_new_tokens": 4}, {"generation.temperature": 0.9}):
        changed = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, **change})
        assert reuse(folder / "summary.json", runner.variants_identity(changed, rm_dir, test_split)) is None, change
    for same in ({"dpo.train.launcher": "deepspeed"}, {"dpo.loss": "ipo"}, {"dpo.train.save_every": 7}):
        unchanged = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, **same})
        assert reuse(folder / "summary.json", runner.variants_identity(unchanged, rm_dir, test_split)) is not None


# ----------------------------------------------------------------------------- the report layer

def _record() -> dict:
    """A summary of two methods on 40 pairs and 30 prompts: 'sigmoid' ranks every pair right, raises the
    chosen log-prob and the reward model prefers its answers; 'kto' ranks half the pairs right, its chosen
    log-prob falls by 2 nats on every pair, and its answers score as the base's."""
    from alignkit.experiments.variants import summarize_variants
    rng = np.random.default_rng(0)
    n, k = 40, 30
    pairs = []
    for method, chosen, rejected in (("sigmoid", np.full(n, 1.0), np.full(n, -1.0)),
                                     ("kto", np.full(n, -2.0), np.where(np.arange(n) % 2, -1.0, -3.0))):
        pairs.append(pd.DataFrame({"split": "test", "method": method, "scale": 1.0, "pair": range(n),
                                   "chosen_policy": -50 + chosen + rng.normal(0, 0.01, n), "chosen_reference": -50.0,
                                   "rejected_policy": -60 + rejected, "rejected_reference": -60.0}))
    base_scores = rng.normal(size=k)
    answers = pd.concat([pd.DataFrame({"model": model, "prompt_id": [str(i) for i in range(k)], "score": score,
                                       "response_tokens": rng.integers(20, 65, k), "hit_limit": rng.random(k) < 0.3,
                                       "kl": 0.0 if model == "base" else rng.random(k)})
                         for model, score in (("base", base_scores), ("sigmoid", base_scores + 1),
                                              ("kto", base_scores + rng.normal(0, 0.01, k)))], ignore_index=True)
    grids = {m: [{"scale": 1.0, "name": "beta", "value": 0.1}] for m in ("sigmoid", "kto")}
    base = answers[answers.model == "base"]
    return {"methods": summarize_variants(pd.concat(pairs), answers, grids, n_resamples=200),
            "base": {"length": {"mean": float(base.response_tokens.mean()), "ci95": [30.0, 50.0], "n": k,
                                "hit_limit": 0.3}, "mean_score": 0.0},
            "sizes": {"train_pairs": 40, "pairs_per_step": 8, "steps": 5, "beta_scales": [1.0], "validation_run": False,
                      "validation_pairs": 0, "test_pairs": n, "prompts": k, "trainable": "lora"},
            "decoding": {"max_new_tokens": 64}, "seconds": {"total": 330.0}, "config": {"n_resamples": 200}}


def test_variant_outcome_reads_both_intervals_and_every_category_has_words():
    from alignkit.report import readings
    from alignkit.report.variants import OUTCOMES, variant_outcome
    above, holds, below = [0.55, 0.7], [0.4, 0.6], [0.3, 0.45]
    assert variant_outcome(above, below) == "better" and variant_outcome(below, above) == "worse"
    assert variant_outcome(holds, above) == "ranks_only" and variant_outcome(holds, below) == "misranks"
    assert variant_outcome(holds, holds) == "nothing" and variant_outcome([0.5, 0.7], [0.5, 0.6]) == "nothing"
    assert variant_outcome(None, above) is None
    texts = readings.texts()
    for key, categories in (("exp_variant_outcome", OUTCOMES), ("exp_chosen_change", ("above", "below", "holds")),
                            ("exp_variant_kept", ("kept", "not_kept", "fixed")),
                            ("exp_variant_strength", ("fixed", "validation"))):
        for category in categories:
            assert {"en", "zh"} <= set(texts[key][category]), (key, category)


def test_variants_table_and_reading_take_their_categories_from_the_numbers():
    from alignkit.report import variants as rv
    rec = _record()
    table = rv.variants_table(rec)
    assert list(table.index) == ["DPO", "KTO", "base model"]
    assert table.loc["DPO", "implicit-reward accuracy [95% CI]"] == "1.00 [0.91, 1.00]"  # 40 of 40: Wilson
    assert table.loc["DPO", "n pairs"] == 40 and table.loc["KTO", "n prompts"] == 30
    assert table.loc["DPO", "RM win rate vs base [95% CI]"] == "1.00 [1.00, 1.00]"
    assert table.loc["DPO", "reading"].startswith("the RM prefers its answers")
    assert table.loc["KTO", "reading"].startswith("a null result at this size")
    assert table.loc["KTO", "chosen likelihood"].startswith("falls")
    assert table.loc["DPO", "chosen likelihood"].startswith("rises")
    assert table.loc["KTO", "Δ log p chosen, nats [95% CI]"].startswith("-2.00 [")
    assert table.loc["DPO", "strength"] == "β = 0.100"
    en, zh = rv.variants_reading(rec)
    assert "2 methods each trained 5 optimiser steps" in en and "fixed at the dpo section's value" in en
    assert "answers shown better than the base model's: DPO; shown worse: none" in en
    assert "not shown different (the win rate's CI holds 0.5): KTO" in en
    assert "ranks above chance for: DPO." in en and "log-prob falls beyond noise for: KTO;" in en
    assert "DPO" in zh and "无" in zh
    size = rv.variants_run_size(rec)
    assert size.loc["optimiser steps per method", "value"] == 5 and size.loc["wall time, all methods (minutes)",
                                                                             "value"] == "5.50"
    strengths = rv.strength_table(rec)
    assert strengths.loc["DPO", "kept"].startswith("fixed") and strengths["n validation pairs"].isna().all()


def test_a_profile_without_variants_says_which_profile_decides_them(tmp_path):
    """dpo_variants.methods empty: the step writes a not-run record over an older summary (nothing trains, no
    reward model is needed), and every variants table and reading says the profile does not run them."""
    import json
    from alignkit.experiments.run import run_experiment
    from alignkit.report import readings as r, variants as rv
    cfg = load_config("tiny", {"dpo_variants.methods": "", "output_dir": str(tmp_path / "out")})
    summary = cfg.out / "experiments" / "dpo_variants" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps(_record()))  # an older run's numbers
    rec = run_experiment(cfg, "dpo_variants")
    assert rec == {"not_run": "tiny", "methods": {}} == json.loads(summary.read_text())
    said = r.both("exp_variants_not_run", profile="tiny")
    for table in (rv.variants_run_size(rec), rv.variants_table(rec), rv.strength_table(rec), rv.online_table(rec)):
        assert list(table["value"]) == [said]
    assert rv.variants_reading(rec) == rv.online_reading(rec) == (
        r.words("exp_variants_not_run", lang="en", profile="tiny"), r.words("exp_variants_not_run", lang="zh", profile="tiny"))
    numbers = rv.variants_numbers(rec)
    assert numbers["exp.variants_not_run"] == "tiny" and numbers["exp.variants_methods"] is None
