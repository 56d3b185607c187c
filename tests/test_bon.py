"""Best-of-n wired end to end (alignkit/experiments/bon.py, run.py's `bon` step): the n grid and the per-sample
summary by hand, then the whole step on the tiny random model (reward model from chapter 1, heads from the
safety step): errors naming what to run, reuse, recompute on force, identity."""
import json

import numpy as np
import pandas as pd
import pytest

from alignkit.errors import AlignkitError
from alignkit.experiments import run as runner
from alignkit.experiments.bon import bon_generation, n_grid, summarize_samples
from alignkit.experiments.safety import load_heads, score_with_heads
from alignkit.io import reuse
from conftest import tiny_config


def test_n_grid_is_powers_of_two_up_to_k():
    assert n_grid(1) == [1] and n_grid(2) == [1, 2] and n_grid(4) == [1, 2, 4]
    assert n_grid(16) == [1, 2, 4, 8, 16] and n_grid(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="at least one"):
        n_grid(0)


def test_summarize_samples_by_hand():
    """Two prompts, k = 2. Prompt a: proxy 1, 3; judge 5, 1; cost 0, 2; tokens 10, 30 (the second at the cap).
    Prompt b: proxy 2, 0; judge 2, 4; cost 1, 1; tokens 20, 20. Best of 2 picks the higher proxy: judge 1 and 2
    (mean 1.5) against a random sample's (3 + 3) / 2 = 3 -> judge gain -1.5; proxy 2.5 against 1.5 -> +1;
    cost (2 + 1) / 2 - 1 = +0.5; tokens (30 + 20) / 2 - 20 = +5; capped 1/2 against 1/4."""
    table = pd.DataFrame({"prompt_id": ["a", "a", "b", "b"], "sample": [0, 1, 0, 1], "proxy": [1.0, 3.0, 2.0, 0.0],
                          "judge": [5.0, 1.0, 2.0, 4.0], "cost": [0.0, 2.0, 1.0, 1.0],
                          "response_tokens": [10, 30, 20, 20], "hit_limit": [False, True, False, False]})
    s = summarize_samples(table, seed=0, n_resamples=50)
    assert s["prompts"] == 2 and s["samples"] == 2 and s["n_values"] == [1, 2] and s["responses"] == 4
    one, two = s["curves"]["judge"]
    assert one["judge"] == pytest.approx(3.0) and one["judge_gain"] == 0.0 and one["proxy_gain"] == 0.0
    assert two["proxy"] == pytest.approx(2.5) and two["proxy_gain"] == pytest.approx(1.0)
    assert two["judge"] == pytest.approx(1.5) and two["judge_gain"] == pytest.approx(-1.5)
    assert s["curves"]["cost"][1]["judge_gain"] == pytest.approx(0.5)
    assert s["curves"]["tokens"][1]["judge"] == pytest.approx(25.0) and s["curves"]["tokens"][1]["judge_gain"] == 5.0
    assert s["curves"]["capped"][1]["judge"] == pytest.approx(0.5) and s["hit_limit"] == 0.25
    assert s["scales"]["proxy"] == pytest.approx(np.std([1, 3, 2, 0])) and s["mean_tokens"] == 20.0
    # pooled ranks: proxy 2, 4, 3, 1 and judge 4, 1, 2, 3; sum d^2 = 18, rho = 1 - 6 * 18 / (4 * 15) = -0.8
    assert s["spearman"]["proxy_judge"] == pytest.approx(-0.8)
    constant = table.assign(response_tokens=7)
    assert summarize_samples(constant, n_resamples=10)["spearman"]["proxy_tokens"] is None  # undefined, not NaN
    with pytest.raises(ValueError, match="same number of samples"):
        summarize_samples(table.iloc[:3])
    with pytest.raises(ValueError, match="consecutive"):
        summarize_samples(table.iloc[[0, 2, 1, 3]])


def _bon_settings(monkeypatch):
    monkeypatch.setitem(runner.SETTINGS, "safety", {**runner.SETTINGS["safety"], "n_resamples": 20})
    monkeypatch.setitem(runner.SETTINGS, "bon", {**runner.SETTINGS["bon"], "n_resamples": 20})


def test_bon_step_on_the_tiny_model(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    from alignkit.train.rm import reward_model_metrics
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    _bon_settings(monkeypatch)
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1})
    with pytest.raises(AlignkitError, match=r"reward model.*chapter 1.*alignkit rm train --profile tiny"):
        runner.run_experiment(cfg, "bon")
    reward_model_metrics(cfg)
    with pytest.raises(AlignkitError, match=r"chapter 6's reward \+ cost section.*run_experiment\(cfg, 'safety'\)"):
        runner.run_experiment(cfg, "bon")
    runner.run_experiment(cfg, "safety")
    record = runner.run_experiment(cfg, "bon")
    folder = cfg.out / "experiments" / "bon"
    assert json.loads((folder / "summary.json").read_text())["identity"] == record["identity"]
    k, prompts = cfg.best_of_n.samples, record["prompts"]
    assert k == 4 and 1 <= prompts <= cfg.best_of_n.prompts and record["n_values"] == [1, 2, 4]
    table = pd.read_parquet(folder / "samples.parquet")
    assert len(table) == prompts * k == record["responses"] and table.groupby("prompt_id").size().eq(k).all()
    assert (table.response_tokens <= cfg.generation.max_new_tokens).all()
    # one prompt's k copies sit in one batch but sample independently: best-of-n has something to choose from
    assert (table.groupby("prompt_id").response.nunique() > 1).all()
    assert record["decoding"]["max_new_tokens"] == cfg.generation.max_new_tokens  # best_of_n.max_new_tokens unset
    # the curves are the table's: n = 1 is a random sample's mean, n = k the proxy's best of each prompt
    one, top = record["curves"]["judge"][0], record["curves"]["judge"][-1]
    assert one["judge"] == pytest.approx(table.judge.mean()) and one["proxy"] == pytest.approx(table.proxy.mean())
    best = table.loc[table.groupby("prompt_id").proxy.idxmax()]
    assert top["proxy"] == pytest.approx(best.proxy.mean())
    # the judge columns are the saved heads' scores of these texts
    again = score_with_heads(cfg, load_heads(cfg.out / "experiments" / "safety" / "heads.safetensors"),
                             [tuple(json.loads(p)) for p in table.prompt[:3]], list(table.response[:3]))
    np.testing.assert_allclose(again["reward"], table.judge[:3], atol=1e-6)
    np.testing.assert_allclose(again["cost"], table.cost[:3], atol=1e-6)
    config = record["config"]
    assert len(config["rm"]["safetensors"]) == 1 and len(config["safety_heads"]) == 16
    assert config["decoding"]["seed"] == cfg.seed and config["best_of_n"]["samples"] == 4
    # reused while the identity holds; recomputed on force and when a setting changes
    monkeypatch.setattr(runner, "bon_experiment", lambda *a, **kw: pytest.fail("recomputed a reused step"))
    assert runner.run_experiment(cfg, "bon") == record
    with pytest.raises(pytest.fail.Exception):
        runner.run_experiment(cfg, "bon", force=True)
    rm_dir, test = cfg.out / "rm", cfg.out / "data" / "test.jsonl"
    heads = cfg.out / "experiments" / "safety" / "heads.safetensors"
    assert reuse(folder / "summary.json", runner.bon_identity(cfg, rm_dir, test, heads)) is not None
    for change in ({"best_of_n.samples": 2}, {"best_of_n.prompts": 2}, {"best_of_n.max_new_tokens": 4},
                   {"generation.temperature": 0.9}):
        changed = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, **change})
        assert reuse(folder / "summary.json", runner.bon_identity(changed, rm_dir, test, heads)) is None, change
    assert bon_generation(changed).temperature == 0.9
    # what chapter 5 measures on its text (generation.kl_prompts) is not how best-of-n decodes: still reused
    measured = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "generation.kl_prompts": 1})
    assert reuse(folder / "summary.json", runner.bon_identity(measured, rm_dir, test, heads)) is not None
    # new heads (or a new reward model) are new inputs: their fingerprints are in the identity
    heads.write_bytes(heads.read_bytes() + b" ")
    assert reuse(folder / "summary.json", runner.bon_identity(cfg, rm_dir, test, heads)) is None


# ----------------------------------------------------------------------------- the report layer
def _summary(judge_sign: float) -> dict:
    """A best-of-n summary of 30 prompts x 4 samples whose judge follows the proxy (+1) or opposes it (-1);
    the cost rises with the proxy, lengths do not depend on it."""
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(30, 4))
    table = pd.DataFrame({"prompt_id": np.repeat(np.arange(30), 4), "sample": np.tile(np.arange(4), 30),
                          "proxy": proxy.ravel(), "judge": judge_sign * proxy.ravel() + 0.1 * rng.normal(size=120),
                          "cost": proxy.ravel(), "response_tokens": rng.integers(40, 65, 120),
                          "hit_limit": rng.random(120) < 0.8})
    return {**summarize_samples(table, seed=0, n_resamples=200), "decoding": {"max_new_tokens": 64},
            "config": {"n_resamples": 200}}


def test_bon_tables_reading_and_figure_take_their_categories_from_the_numbers():
    from alignkit.report import experiments as ex
    from alignkit.report import figures
    tracks, falls = _summary(1.0), _summary(-1.0)
    assert ex.bon_goodhart(tracks) == ("tracks", None) and ex.bon_goodhart(falls) == ("judge_falls", 2)
    table = ex.bon_table(falls)
    assert list(table.index) == [1, 2, 4] and table.loc[1, "proxy (RM) gain [95% CI]"] == ex.BASELINE
    assert table.loc[4, "KL_BoN (nats)"] == pytest.approx(np.log(4) - 0.75)
    assert table.loc[4, "judge (helpfulness head) gain [95% CI]"].startswith("−") or \
        table.loc[4, "judge (helpfulness head) gain [95% CI]"].startswith("-")
    en, zh = ex.bon_reading(falls)
    assert "30 held-out prompts × 4 samples" in en and "best of n = 4" in en and "over-optimisation measured" in en
    assert "from n = 2" in en and "raises the cost head's harm score" in en and "stop at the token limit" in en
    assert "过度优化" in zh
    en, _ = ex.bon_reading(tracks)
    assert "the judge confirms the proxy's gain" in en and "The judge itself" not in en
    # with the safety record, the reading also says whether the judge itself is shown better than chance
    def safety(accuracy, ci):
        return {"n_test": 98, "accuracy": {"reward": {"helpfulness": {"accuracy": accuracy, "ci95": ci}}}}
    en, zh = ex.bon_reading(tracks, safety(0.551, [0.452, 0.646]))
    assert "ranks 98 held-out PKU-SafeRLHF pairs by helpfulness at 0.551 [0.452, 0.646], not shown better" in en
    assert "its verdict, a gain or none, is weak evidence" in en and "未显示优于随机" in zh
    en, _ = ex.bon_reading(tracks, safety(0.70, [0.61, 0.78]))
    assert "above chance, so its verdict carries information" in en
    size = ex.bon_run_size(falls)
    assert size.loc["responses generated and scored", "value"] == 120 and size.loc["n read (exact estimator over "
                                                                                   "all n-subsets)", "value"] == "1, 2, 4"
    figures.best_of_n_curves(falls)


def test_the_qa_cites_best_of_n(tmp_path):
    from alignkit.config import load_config
    from alignkit.report import evidence
    cfg = load_config("tiny", {"output_dir": str(tmp_path)})
    rows = evidence.evidence(cfg, "robustness").set_index("measure")
    judge = "best-of-n, largest n: independent judge (helpfulness head) gain [95% CI]"
    assert rows.loc[judge, "reading"] == evidence.NOT_RUN  # no run: not run yet, never an error
    (tmp_path / "experiments" / "bon").mkdir(parents=True)
    (tmp_path / "experiments" / "bon" / "summary.json").write_text(json.dumps(_summary(-1.0)))
    rows = evidence.evidence(cfg, "robustness").set_index("measure")
    assert rows.loc[judge, "reading"].startswith("over-optimisation") and rows.loc[judge, "n"] == 30
    assert rows.loc["best-of-n: prompts × samples, largest n", "value"] == "30 × 4, n = 4 (KL_BoN 0.64 nats)"
    assert rows.loc["best-of-n, largest n: cost head (harm) gain [95% CI]", "reading"].startswith("picking")
