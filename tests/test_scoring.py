import json

import numpy as np
import pandas as pd
import pytest

from alignkit.cli import main
from alignkit.data.tokenize import ChatEncoder
from alignkit.io import atomic_path, atomic_write_text
from alignkit.models import RewardModel
from alignkit.infer import score_pairs
from alignkit.study.scores import paired, summarize
from alignkit.stats import auc, bootstrap_ci, preference_summary


def test_batched_scores_equal_one_at_a_time(tiny_model_dir, tokenizer, homework_pairs):
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=5)
    encoder = ChatEncoder(tokenizer, 96, 48)
    pairs = homework_pairs[:6]
    batched = score_pairs(rm, encoder, pairs, batch_size=5, progress=False)
    alone = score_pairs(rm, encoder, pairs, batch_size=1, progress=False)
    assert len(set(batched.response_tokens)) > 1  # lengths differ, so the batches were padded
    np.testing.assert_allclose(batched.score, alone.score, atol=1e-5)
    assert list(batched.side[:2]) == ["better", "worse"] and batched.response[0] == pairs[0].better
    assert json.loads(batched.prompt[0]) == list(pairs[0].prompt)


def test_auc_and_summary_by_hand():
    assert auc([3, 2], [1, 2]) == (1 + 1 + 1 + 0.5) / 4
    s = preference_summary([2.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0], n_resamples=200)
    assert s["accuracy"] == (1 + 1 + 0 + 0.5) / 4 and s["mean_margin"] == 0.25 and s["n"] == 4
    assert s["accuracy_ci95"][0] <= s["accuracy"] <= s["accuracy_ci95"][1]


def test_bootstrap_ci_known_case():
    # mean of 1000 fair coin flips: CI half-width ≈ 1.96 * sqrt(.25/1000) ≈ 0.031
    values = np.array([0, 1] * 500)
    low, high = bootstrap_ci(values, np.mean, n_resamples=2000, seed=1)
    assert low == pytest.approx(0.469, abs=0.006) and high == pytest.approx(0.531, abs=0.006)
    assert bootstrap_ci(np.ones(10), np.mean) == (1.0, 1.0)


def test_summary_length_diagnostics_on_a_length_scorer():
    """A scorer that returns the length is exactly the 'longer wins' rule."""
    table = pd.DataFrame({"pair_id": [0, 0, 1, 1, 2, 2], "side": ["better", "worse"] * 3,
                          "score": [10.0, 5.0, 3.0, 8.0, 7.0, 2.0], "response_tokens": [10, 5, 3, 8, 7, 2]})
    s = summarize(table)
    assert s["accuracy"] == s["length"]["longer_wins"]["accuracy"] == pytest.approx(2 / 3)
    assert s["score_vs_length"]["pearson"] == pytest.approx(1.0)
    assert list(paired(table).margin) == [5.0, -5.0, 5.0]


def test_spearman_with_length_carries_an_interval_over_pairs():
    """Both answers of every pair count; pairs move together. A score that is the length has rho 1 in every
    resample (the interval [1, 1]); its negative -1; a score unrelated to length an interval around 0."""
    from alignkit.study.scores import spearman_length_ci
    pairs = pd.DataFrame({"tokens_better": [10, 30, 50, 70], "tokens_worse": [20, 40, 60, 80]})
    exact = pairs.assign(score_better=pairs.tokens_better * 0.1, score_worse=pairs.tokens_worse * 0.1)
    assert spearman_length_ci(exact, n_resamples=50) == [1.0, 1.0]
    flipped = exact.assign(score_better=-exact.score_better, score_worse=-exact.score_worse)
    assert spearman_length_ci(flipped, n_resamples=50) == [-1.0, -1.0]
    rng = np.random.default_rng(0)
    many = pd.DataFrame({"tokens_better": rng.integers(1, 500, 200), "tokens_worse": rng.integers(1, 500, 200),
                         "score_better": rng.normal(size=200), "score_worse": rng.normal(size=200)})
    low, high = spearman_length_ci(many, n_resamples=200)
    assert low < 0 < high and high - low < 0.3


def test_interrupted_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "scores.jsonl"
    atomic_write_text(target, "old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half a ta")
            raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


def test_score_cli_writes_tables_and_summary(tiny_model_dir, tmp_path, data_dir):
    out = tmp_path / "scores" / "untrained-pku"
    assert main(["score", "--model", str(tiny_model_dir), "--data", str(data_dir / "pku_saferlhf_500.jsonl"),
                 "--template", "PKUSafeRLHF", "--out", str(out), "--profile", "tiny",
                 "--set", "data.eval_max_length=64"]) == 0
    table = pd.read_parquet(out.with_suffix(".parquet"))
    assert len(table) == 1000 and set(table.side) == {"better", "worse"}
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    # AUC as scipy's Mann-Whitney U / (n1 n2) over the table's better and worse scores (ties half)
    from scipy.stats import mannwhitneyu
    better, worse = (table[table.side == side].score.to_numpy() for side in ("better", "worse"))
    assert summary["n"] == 500
    assert summary["auc"] == pytest.approx(mannwhitneyu(better, worse).statistic / (500 * 500), abs=1e-12)
    assert sum(v["n"] for v in summary["per_category"].values()) >= 500  # every pair under some tag


def test_score_profile_writes_the_two_by_two_and_is_reused_while_the_rm_is_the_same(tiny_model_dir, tmp_path, data_dir):
    from conftest import tiny_config
    from alignkit.study.scores import score_profile
    from alignkit.train.rm import run_reward_model
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2, "data.train.max_pairs": 16})
    metrics = run_reward_model(cfg)
    summaries = score_profile(cfg)
    assert set(summaries) == {"untrained-test", "untrained-train", "trained-test", "trained-train"}
    n_test = len((cfg.out / "data" / "test.jsonl").read_text().splitlines())
    n_train = len((cfg.out / "data" / "train.jsonl").read_text().splitlines())
    assert summaries["trained-test"]["n"] == n_test < n_train
    # the train split is scored on the sample the training run measured its train accuracy on
    assert summaries["trained-train"]["n"] == metrics["train"]["n"] == n_test
    assert summaries["trained-train"]["accuracy"] == pytest.approx(metrics["train"]["accuracy"])
    assert summaries["trained-test"]["accuracy"] == pytest.approx(metrics["eval"]["accuracy"])
    assert (cfg.out / "scores" / "trained-train.parquet").exists()
    assert not (cfg.out / "figures").exists()  # the core draws no figures
    # one reuse rule: the same reward model -> the saved summaries; another reward model -> rescored
    from alignkit.study.scores import profile_scores
    (cfg.out / "scores" / "trained-test.parquet").unlink()  # a rescoring would write it again
    with pytest.raises(FileNotFoundError):
        profile_scores(cfg)
    other = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2, "data.train.max_pairs": 16,
                                                               "rm.margin": 0.5})
    run_reward_model(other)
    summaries, tables = profile_scores(other)
    assert (cfg.out / "scores" / "trained-test.parquet").exists() and set(tables) == set(summaries)


def test_two_by_two_reuses_the_training_runs_scores_and_they_equal_a_rescoring(tiny_model_dir, tmp_path, data_dir):
    """Chapter 3 takes three of its four tables from the RM run's evaluations (rm/eval_scores.json) instead
    of scoring again; those scores equal scoring the saved model afresh."""
    import pandas as pd
    from conftest import tiny_config
    from alignkit.study.scores import score_profile
    from alignkit.train.rm import EVAL_SCORES
    from alignkit.train.rm import run_reward_model
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2, "data.train.max_pairs": 16,
                                                             "rm.trainable.mode": "lora", "rm.trainable.lora_r": 4})
    run_reward_model(cfg)
    saved = json.loads((cfg.out / "rm" / EVAL_SCORES).read_text())
    assert set(saved) == {"untrained-test", "trained-test", "trained-train"}
    score_profile(cfg)
    reused = {k: pd.read_parquet(cfg.out / "scores" / f"{k}.parquet") for k in saved}
    (cfg.out / "rm" / EVAL_SCORES).unlink()
    score_profile(cfg)
    for key, table in reused.items():
        fresh = pd.read_parquet(cfg.out / "scores" / f"{key}.parquet")
        assert table.drop(columns="score").equals(fresh.drop(columns="score"))
        assert table.score.tolist() == pytest.approx(fresh.score.tolist(), abs=1e-5)


def test_precision_check_compares_float32_and_bfloat16_scores_of_the_trained_rm(tiny_model_dir, tmp_path, data_dir):
    from conftest import tiny_config
    from alignkit.study.scores import precision_check
    from alignkit.train.rm import run_reward_model
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2, "data.train.max_pairs": 16})
    metrics = run_reward_model(cfg)
    result = precision_check(cfg)
    assert result["n"] == metrics["eval"]["n"]
    assert result["accuracy_reference"] == pytest.approx(metrics["eval"]["accuracy"])  # fp32 = the run's eval
    assert 0 < result["max_abs_difference"] < 1  # bf16 really ran: the scores moved, a little
    assert json.loads((cfg.out / "scores" / "precision.json").read_text())["flips"] == result["flips"]
    int8 = result["int8"]  # int8 dynamic quantization: the whole split against the run's own float32 scores
    assert int8["n"] == metrics["eval"]["n"] and int8["accuracy_reference"] == pytest.approx(metrics["eval"]["accuracy"])
    assert 1e-5 < int8["max_abs_difference"] < 1 and int8["speedup"] > 0  # int8 really ran: scores moved
    from alignkit.report.bench import precision_frame
    assert precision_frame(result)["precision"].tolist() == ["bfloat16", "int8"]


@pytest.mark.parametrize("native", [True, False])
def test_precision_check_samples_pairs_only_where_bf16_is_emulated(tiny_model_dir, tmp_path, data_dir, monkeypatch,
                                                                   native):
    from conftest import tiny_config
    import alignkit.study.scores as scores
    from alignkit.report.bench import precision_reading
    from alignkit.train.rm import run_reward_model
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "data.train.max_pairs": 24})
    metrics = run_reward_model(cfg)
    monkeypatch.setattr(scores, "native_bf16", lambda device: native)
    monkeypatch.setattr(scores, "EMULATED_BF16_PAIRS", 3)
    result = scores.precision_check(cfg)
    assert result["native_bf16"] is native and result["n"] == (metrics["eval"]["n"] if native else 3)
    en, zh = precision_reading(result)
    assert ("emulated" in en) is (not native) and ("模拟" in zh) is (not native)
    assert result["score_dtype"] == {"setting": "float32", "here": "float32"} and "scored in float32" in en
    # what chapters 5 and 6 scored in is said; bf16 scoring where the check fails says how to undo it
    failed = {**result, "holds": False, "score_dtype": {"setting": "auto", "here": "bfloat16"}}
    assert "rm.score_dtype=float32" in precision_reading(failed)[0]
    assert "rm.score_dtype=float32" not in precision_reading({**failed, "holds": True})[0]
