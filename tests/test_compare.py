"""Base vs DPO comparison: the statistics by hand, generation determinism, the profile pipeline on tiny."""
import json

import pytest

from conftest import tiny_config


def test_paired_comparison_by_hand():
    from alignkit.stats import paired_comparison
    base, dpo = [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]
    len_base, len_dpo = [10, 10, 10, 10], [12, 10, 8, 14]
    c = paired_comparison(base, dpo, len_base, len_dpo, n_resamples=200)
    assert c["win_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert c["mean_difference"] == pytest.approx(0.5)
    # d_score = [1, 0, -1, 2] on d_len = [2, 0, -2, 4]: OLS slope 0.5, intercept 0
    assert c["length_controlled"]["per_token"] == pytest.approx(0.5)
    assert c["length_controlled"]["effect"] == pytest.approx(0.0, abs=1e-9)
    assert c["length_controlled"]["length_part"] == pytest.approx(0.5)  # 0.5 * mean d_len 1.0
    lo, hi = c["win_rate_ci95"]
    assert 0 <= lo <= c["win_rate"] <= hi <= 1
    # d_len = [2, 0, -2, 4]: resampled means lie within [-2, 4] and the interval holds the mean 1.0
    lo, hi = c["mean_length_difference_ci95"]
    assert -2 <= lo <= 1.0 <= hi <= 4
    same = paired_comparison(base, dpo, len_base, [13, 13, 13, 13], n_resamples=50)
    assert same["mean_length_difference_ci95"] == pytest.approx([3.0, 3.0])  # every resample: +3 tokens


def test_outside_range_counts_both_tails():
    from alignkit.stats import outside_range
    got = outside_range([-100, 0, 50, 100], list(range(101)), low=10, high=90)
    assert got["range"] == [10.0, 90.0] and got["below"] == 0.5 and got["above"] == 0.25


def test_generation_is_seeded_and_stops_at_end_of_turn(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM
    from alignkit.config import GenerationConfig
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.infer import generate
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [({"role": "user", "content": "Hi there, how are you today?"},), ({"role": "user", "content": "Why?"},),
               ({"role": "user", "content": "Name three colours " * 30},)]
    gen = GenerationConfig(max_new_tokens=6, batch_size=2)
    encoder = ChatEncoder(tokenizer, 64, 32)
    first, again = generate(lm, encoder, prompts, gen, seed=1), generate(lm, encoder, prompts, gen, seed=1)
    assert first == again
    assert all(r["response_tokens"] <= 6 and r["hit_limit"] == (r["response_tokens"] == 6) for r in first)
    assert generate(lm, encoder, prompts, gen, seed=2) != first


def test_answer_encoder_reads_generated_answers_whole_after_the_prompt_generation_saw(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM
    from alignkit.config import DataConfig, GenerationConfig
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.infer import answer_encoder, generate
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [({"role": "user", "content": "Name three colours " * 30},), ({"role": "user", "content": "Why?"},)]
    data = DataConfig(max_length=40, max_prompt_length=16)  # no eval_max_length: the training length, 40
    gen = GenerationConfig(max_new_tokens=48, batch_size=2, temperature=1.5)
    made = generate(lm, ChatEncoder(tokenizer, data.max_length, data.max_prompt_length), prompts, gen, seed=3)
    reader = answer_encoder(tokenizer, data, gen.max_new_tokens)
    assert reader.max_prompt_length == 16 and reader.max_length == 16 + 2 * 48 + 16  # above the training length
    for prompt, answer in zip(prompts, made):
        seq = reader.encode(prompt, answer["response"])
        assert list(seq.input_ids[:seq.prompt_length]) == reader.prompt_ids(prompt)[-16:]  # generation's cut
        assert not seq.response_cut and len(seq.input_ids) - seq.prompt_length >= answer["response_tokens"]
        assert len(seq.input_ids) > data.max_length or not answer["hit_limit"]  # the training length would cut it
    assert answer_encoder(tokenizer, DataConfig(eval_max_length=4096), 8).max_length == 4096


def test_compare_profile_on_tiny_writes_tables_summary_and_reuses(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    from alignkit.io import reuse
    from alignkit.study.generations import _identity, compare_profile, load_generations
    from alignkit.errors import AlignkitError
    from alignkit.train.dpo import dpo_metrics
    from alignkit.train.rm import reward_model_metrics
    from alignkit.data.sources import load_pairs
    from alignkit.data.splits import seeded_sample
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "dpo.train.max_steps": 1,
                                                             "dpo.max_pairs": 12})
    reward_model_metrics(cfg)
    with pytest.raises(AlignkitError, match="dpo train"):
        compare_profile(cfg)
    dpo_metrics(cfg)
    summary = compare_profile(cfg)
    table = load_generations(cfg)
    assert set(table.model) == {"base", "dpo"} and set(table.split) == {"test", "train"}
    seeds = cfg.generation.seeds
    assert seeds == 2 and sorted(table.seed.unique()) == [cfg.seed, cfg.seed + 1000]
    assert len(table) == 2 * seeds * (cfg.generation.test_prompts + cfg.generation.train_prompts)
    assert summary["test"]["n"] == cfg.generation.test_prompts and "verdict" not in summary  # words: report layer
    assert summary["test"]["seeds"] == seeds and len(summary["test"]["win_rate_per_seed"]) == seeds
    assert summary["decoding"]["sampling_seeds"] == [cfg.seed, cfg.seed + 1000]
    # the two seeds draw different answers to the same prompts
    test_rows = table[(table.split == "test") & (table.model == "base")]
    assert test_rows.groupby("prompt_id").response.nunique().gt(1).any()
    assert summary["decoding"]["seed"] == cfg.seed
    saved = json.loads((tmp_path / "out" / "generations" / "summary.json").read_text())
    assert saved["test"]["win_rate"] == summary["test"]["win_rate"]
    assert not (tmp_path / "out" / "figures").exists()  # the core draws no figures
    # KL(DPO || base) on exactly kl_prompts held-out DPO rows, nowhere else; non-negative, and its summary by hand
    has_kl = table.kl_to_base.notna()
    assert has_kl.sum() == cfg.generation.kl_prompts
    assert set(table[has_kl].model) == {"dpo"} and set(table[has_kl].split) == {"test"}
    assert (table[has_kl].kl_to_base >= 0).all()
    kl = summary["test"]["kl_dpo_base"]
    assert kl["n"] == cfg.generation.kl_prompts
    assert kl["mean"] == pytest.approx(table[has_kl].kl_to_base.mean())
    assert kl["ci95"][0] <= kl["mean"] <= kl["ci95"][1]
    assert "kl_dpo_base" not in summary["train"]
    assert compare_profile(cfg)["reused"]
    changed = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "dpo.train.max_steps": 1,
                                                                 "dpo.max_pairs": 12, "generation.temperature": 0.9})
    assert reuse(tmp_path / "out" / "generations" / "summary.json", _identity(changed)) is None
    # scoring in another precision re-scores the saved answers (and keeps their KL) without sampling again;
    # new generation settings sample anew
    import numpy as np
    from alignkit.study import generations

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again")
    monkeypatch.setattr(generations, "generate", no_sampling)
    bf16 = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1, "dpo.train.max_steps": 1,
                                                              "dpo.max_pairs": 12, "rm.score_dtype": "bfloat16"})
    assert not compare_profile(bf16).get("reused")
    again = load_generations(bf16)
    assert again.response.tolist() == table.response.tolist() and again.prompt.tolist() == table.prompt.tolist()
    assert again.kl_to_base.equals(table.kl_to_base) and not np.allclose(again.score, table.score)
    with pytest.raises(AssertionError, match="sampled again"):
        compare_profile(changed)
    # train prompts are drawn from the pairs DPO trained on
    all_train = load_pairs(str(cfg.out / "data" / "train.jsonl"), "ALIGNKIT")[0]
    trained_on = {p.prompt_id for p in seeded_sample(all_train, 12, cfg.seed)}
    assert set(table[table.split == "train"].prompt_id) <= trained_on < {p.prompt_id for p in all_train}


def _generations(rows):
    """A hand-made generations table: (prompt_id, seed, base score, dpo score) on the test split, 10 tokens each."""
    import pandas as pd
    out = []
    for pid, seed, base, dpo in rows:
        for model, score in (("base", base), ("dpo", dpo)):
            out.append({"split": "test", "prompt_id": pid, "seed": seed, "model": model, "prompt": pid,
                        "response": f"{pid}{seed}{model}", "response_tokens": 10 + (model == "dpo"),
                        "hit_limit": False, "score": score})
    return pd.DataFrame(out)


def test_win_rate_over_prompts_and_seeds_by_hand():
    """Prompt a: DPO wins under seed 0, loses under seed 1 (per prompt 0.5); prompt b: wins, then a tie (0.75).
    Win rate (0.5 + 0.75) / 2 = 0.625; per seed 1.0 and 0.25, spread sd = 0.75 / sqrt(2) = 0.530."""
    import numpy as np
    from alignkit.stats import mean_ci, paired_comparison
    from alignkit.study.generations import summarize_generations, wide
    table = _generations([("a", 0, 1.0, 2.0), ("a", 1, 1.0, 0.0), ("b", 0, 0.0, 1.0), ("b", 1, 0.0, 0.0)])
    s = summarize_generations(table, seed=0)["test"]
    assert s["n"] == 2 and s["seeds"] == 2 and s["win_rate"] == pytest.approx(0.625)
    assert s["win_rate_per_seed"] == {"0": 1.0, "1": 0.25}
    assert s["seed_spread"]["min"] == 0.25 and s["seed_spread"]["max"] == 1.0
    assert s["seed_spread"]["sd"] == pytest.approx(0.75 / np.sqrt(2))
    assert s["win_rate_ci95"] == mean_ci([0.5, 0.75], seed=0)["ci95"]  # resampled over prompts, seeds inside
    # scores and lengths: each prompt's mean over its seeds (a: base 1, DPO 1; b: base 0, DPO 0.5)
    assert s["mean_score_dpo"] == pytest.approx(0.75) and s["mean_difference"] == pytest.approx(0.25)
    assert wide(table).win.tolist() == [1.0, 0.0, 1.0, 0.5]
    # one seed: the same numbers as the paired comparison over prompts
    one = _generations([("a", 0, 1.0, 2.0), ("b", 0, 0.0, -1.0), ("c", 0, 0.5, 0.7)])
    s = summarize_generations(one, seed=3)["test"]
    c = paired_comparison([1.0, 0.0, 0.5], [2.0, -1.0, 0.7], [10] * 3, [11] * 3, seed=3)
    assert s["win_rate"] == c["win_rate"] and s["win_rate_ci95"] == c["win_rate_ci95"] and s["seed_spread"]["sd"] == 0.0
