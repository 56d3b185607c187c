"""Base vs DPO policy, judged by the trained reward model: generate on held-out test prompts and on random
training prompts, score every response, compare with and without length control, pick case studies.

Writes outputs/<profile>/generations/: samples.parquet and samples.json (the answers of both models and DPO's
KL to base, reused while the DPO model and the generation settings are the same: retraining the reward model
or changing the precision it scores in re-scores them without sampling again), generations.parquet/.jsonl (one
row per prompt x seed x model, scored), case_studies.parquet/.jsonl and summary.json (statistics and decoding
settings), reused while the reward model, the DPO model and the generation settings are the same
(alignkit.io.reuse).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM

from alignkit.config import RunConfig
from alignkit.data.sources import load_pairs
from alignkit.data.tokenize import ChatEncoder
from alignkit.errors import AlignkitError
from alignkit.infer import answer_encoder, decoding_settings, generate, score_texts, sequence_kl
from alignkit.io import atomic_path, atomic_write_json, fingerprint, reuse, stamped
from alignkit.models import compute_device, load_tokenizer, resolve_model, weights_dtype
from alignkit.stats import correlations, mean_ci, outside_range, paired_comparison
from alignkit.study.scores import write_table
from alignkit.train.dpo import dpo_identity, dpo_training_pairs
from alignkit.train.rm import rm_identity, scorer, scorer_identity

MODELS = ("base", "dpo")


def pick_prompts(cfg: RunConfig) -> dict[str, list]:
    """{'test': [...], 'train': [...]} unique prompts (message tuples) from the profile's split, seeded; train
    prompts come from the pairs DPO trained on."""
    out = {}
    for split, limit in (("test", cfg.generation.test_prompts), ("train", cfg.generation.train_prompts)):
        path = cfg.out / "data" / f"{split}.jsonl"
        if not path.exists():
            raise AlignkitError(f"{path} is missing: run chapter 1 (notebooks/01_reward_model.ipynb) first, or "
                                f"`alignkit rm train --profile {cfg.profile}`, so the test/train split exists")
        pairs = load_pairs(str(path), "ALIGNKIT")[0]
        if split == "train":
            pairs = dpo_training_pairs(cfg, pairs)
        unique = {p.prompt_id: p.prompt for p in pairs}
        ids = sorted(unique)
        random.Random(f"{cfg.seed}-{split}").shuffle(ids)
        out[split] = [(i, unique[i]) for i in ids[:limit]]
    return out


def _identity(cfg: RunConfig) -> dict:
    """What the generations and their scores depend on: both models (by their identities), the decoding
    settings and the reward model's evaluation encoding."""
    return {"rm": fingerprint(rm_identity(cfg)), "dpo": fingerprint(dpo_identity(cfg)),
            "generation": cfg.to_dict()["generation"], "eval_lengths": list(cfg.data.eval_lengths()),
            **scorer_identity(cfg)}


def _sampling_identity(cfg: RunConfig) -> dict:
    """What the sampled answers and their KL depend on: the DPO model (its identity holds the base model, the
    data, the split's seed) and the generation settings, not the reward model that scores them."""
    generation = cfg.to_dict()["generation"]
    del generation["score_batch_size"]  # scoring only
    return {"dpo": fingerprint(dpo_identity(cfg)), "generation": generation}


SEED_STRIDE = 1000
"""Seed i of `generation.seeds` samples with cfg.seed + SEED_STRIDE * i (batch k adds k: the streams never meet)."""


def sampling_seeds(cfg: RunConfig) -> list[int]:
    """The seeds chapter 5 generates under: cfg.seed, cfg.seed + SEED_STRIDE, ... (`generation.seeds` of them)."""
    return [cfg.seed + SEED_STRIDE * i for i in range(cfg.generation.seeds)]


def sampled(cfg: RunConfig) -> pd.DataFrame:
    """One row per (split, prompt, seed, model): prompt (its messages), response, tokens, hit_limit and
    kl_to_base; reused from generations/samples.* while `_sampling_identity` is unchanged, else sampled and
    saved (the parquet first, the record last: a record means a complete table)."""
    gen_dir = cfg.out / "generations"
    if reuse(gen_dir / "samples.json", _sampling_identity(cfg)) is not None and (gen_dir / "samples.parquet").exists():
        table = pd.read_parquet(gen_dir / "samples.parquet")
        table["prompt"] = [json.loads(p) for p in table.prompt]
        return table
    table = sample(cfg)
    with atomic_path(gen_dir / "samples.parquet") as tmp:
        table.assign(prompt=[json.dumps(list(p), ensure_ascii=False) for p in table.prompt]).to_parquet(tmp, index=False)
    atomic_write_json(gen_dir / "samples.json", stamped({"rows": len(table)}, _sampling_identity(cfg)))
    return table


def sample(cfg: RunConfig) -> pd.DataFrame:
    """Both models answer the picked prompts under every sampling seed; DPO's KL to base on a sample of them."""
    prompts = pick_prompts(cfg)
    flat = [(split, pid, prompt) for split, items in prompts.items() for pid, prompt in items]
    sources = {"base": resolve_model(cfg.model.name), "dpo": str(cfg.out / "dpo")}
    encoder = ChatEncoder(load_tokenizer(cfg.model.name), cfg.data.max_length, cfg.data.max_prompt_length)
    rows, lms = [], {}
    for name, source in sources.items():
        lms[name] = AutoModelForCausalLM.from_pretrained(source, dtype=weights_dtype(cfg.model.dtype)).to(compute_device())
        for seed in sampling_seeds(cfg):
            made = generate(lms[name], encoder, [p for _, _, p in flat], cfg.generation, seed=seed,
                            desc=f"generate {name} (seed {seed})")
            rows += [{"split": s, "prompt_id": pid, "seed": seed, "model": name, "prompt": list(p), **m}
                     for (s, pid, p), m in zip(flat, made)]
    kl = kl_to_base(cfg, lms, rows)
    return pd.DataFrame(rows).assign(kl_to_base=kl)


def generate_and_score(cfg: RunConfig) -> pd.DataFrame:
    """`sampled` answers, each scored by the trained reward model (in `rm.score_dtype`): one row per (split,
    prompt, seed, model) with response, tokens, hit_limit, kl_to_base and the RM score."""
    if cfg.generation.threads:
        torch.set_num_threads(cfg.generation.threads)
    table = sampled(cfg)
    rm_dir = cfg.out / "rm"
    rm_encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())
    scored = score_texts(scorer(cfg, rm_dir), rm_encoder, list(table.prompt), list(table.response),
                         batch_size=cfg.generation.score_batch_size)
    kl = table.pop("kl_to_base")
    table["prompt"] = scored["prompt"]
    table["score"] = scored["score"]
    table["scored_tokens"] = scored["response_tokens"]
    table["kl_to_base"] = kl
    return table


def kl_to_base(cfg: RunConfig, lms: dict, rows: list[dict]) -> list[float]:
    """Per row: KL(DPO || base) in nats along the DPO model's response (`alignkit.infer.sequence_kl`), for the
    DPO rows of the first seed on a seeded sample of `generation.kl_prompts` held-out test prompts; NaN elsewhere.
    The prompt is cut as generation cut it; the response is read whole."""
    first = sampling_seeds(cfg)[0]
    picked = [i for i, r in enumerate(rows) if r["model"] == "dpo" and r["split"] == "test" and r["seed"] == first]
    limit = cfg.generation.kl_prompts
    random.Random(f"{cfg.seed}-kl").shuffle(picked)
    picked = sorted(picked[:limit] if limit is not None else picked)
    out = [float("nan")] * len(rows)
    if not picked:
        return out
    encoder = answer_encoder(load_tokenizer(cfg.model.name), cfg.data, cfg.generation.max_new_tokens)
    values = sequence_kl(lms["dpo"], lms["base"], encoder, [rows[i]["prompt"] for i in picked],
                         [rows[i]["response"] for i in picked], batch_size=cfg.generation.score_batch_size,
                         desc="KL(dpo || base)")
    for i, v in zip(picked, values):
        out[i] = v
    return out


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, prompt, seed): score_base, score_dpo, tokens_base, tokens_dpo, responses, difference,
    and `win` (1 when the RM scores DPO's answer higher, 0.5 on a tie, else 0)."""
    keys = ["split", "prompt_id", "seed"]
    w = table.pivot(index=keys, columns="model", values=["score", "response_tokens", "response", "hit_limit"])
    w.columns = [f"{value}_{model}" for value, model in w.columns]
    w = w.reset_index().merge(table[table.model == "base"][[*keys, "prompt"]], on=keys)
    w["difference"] = w.score_dpo - w.score_base
    w["win"] = (w.difference > 0).astype(float) + 0.5 * (w.difference == 0)
    return w


def over_seeds(rows: pd.DataFrame, *, seed: int = 0) -> dict:
    """The win rate over prompts and sampling seeds, from `wide` rows of one split: per prompt the mean win
    over its seeds, then the mean over prompts with a bootstrap CI over prompts (`alignkit.stats.mean_ci`, so
    the interval covers both the prompts and the sampling noise); and per seed the win rate over the prompts,
    with the spread between seeds (min, max, standard deviation)."""
    per_prompt = rows.groupby("prompt_id", sort=True).win.mean()
    pooled = mean_ci(per_prompt.to_numpy(), seed=seed)
    per_seed = rows.groupby("seed", sort=True).win.mean()
    return {"win_rate": pooled["mean"], "win_rate_ci95": pooled["ci95"], "prompts": len(per_prompt),
            "seeds": {str(k): float(v) for k, v in per_seed.items()},
            "seed_spread": {"min": float(per_seed.min()), "max": float(per_seed.max()),
                            "sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0}}


def summarize_generations(table: pd.DataFrame, *, seed: int = 0, dataset_scores: pd.Series | None = None) -> dict:
    """Per split: DPO's win rate over base (over prompts and sampling seeds, `over_seeds`, with each seed's win
    rate and their spread), mean scores and lengths and the length-controlled effect (on each prompt's means over
    its seeds), score-length correlation, responses at the token limit, and (given the RM's scores of dataset
    responses) how many generations score outside the range the RM saw on real data."""
    w = wide(table)
    out = {}
    for split, rows in w.groupby("split"):
        # per prompt, the mean over its seeds: every interval is over prompts, with the seeds averaged inside
        means = rows.groupby("prompt_id", sort=True)[["score_base", "score_dpo", "response_tokens_base",
                                                      "response_tokens_dpo"]].mean()
        c = paired_comparison(means.score_base, means.score_dpo, means.response_tokens_base,
                              means.response_tokens_dpo, seed=seed)
        wins = over_seeds(rows, seed=seed)
        sub = table[table.split == split]
        entry = {"n": c["n"], "win_rate": wins["win_rate"], "win_rate_ci95": wins["win_rate_ci95"],
                 "seeds": len(wins["seeds"]), "win_rate_per_seed": wins["seeds"], "seed_spread": wins["seed_spread"],
                 "mean_score_base": c["mean_score_a"], "mean_score_dpo": c["mean_score_b"],
                 "mean_difference": c["mean_difference"], "mean_difference_ci95": c["mean_difference_ci95"],
                 "mean_length_base": c["mean_length_a"], "mean_length_dpo": c["mean_length_b"],
                 "mean_length_difference_ci95": c["mean_length_difference_ci95"],
                 "hit_limit_base": float(rows.hit_limit_base.mean()), "hit_limit_dpo": float(rows.hit_limit_dpo.mean()),
                 "score_length_spearman": correlations(sub.response_tokens, sub.score)["spearman"],
                 "length_controlled": {**c["length_controlled"], "dpo_effect": c["length_controlled"]["effect"],
                                       "dpo_effect_ci95": c["length_controlled"]["effect_ci95"]}}
        kl = sub[sub.model == "dpo"]["kl_to_base"].dropna() if "kl_to_base" in sub else []
        if len(kl):
            tokens = sub.loc[kl.index, "response_tokens"].clip(lower=1)
            entry["kl_dpo_base"] = {**mean_ci(kl, seed=seed), "per_token": float(kl.sum() / tokens.sum())}
        if dataset_scores is not None and len(dataset_scores):
            entry["out_of_range"] = {m: outside_range(sub[sub.model == m].score, dataset_scores) for m in MODELS}
            entry["dataset_mean_score"] = float(dataset_scores.mean())
        out[split] = entry
    return out


def case_studies(table: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """The k prompts per split where DPO beat base by the most, and the k where it lost by the most."""
    w = wide(table)
    picks = []
    for _, rows in w.groupby("split"):
        rows = rows.sort_values("difference")
        picks += [rows.tail(k).iloc[::-1], rows.head(k)]
    cols = ["split", "prompt_id", "seed", "difference", "score_base", "score_dpo", "response_tokens_base",
            "response_tokens_dpo", "prompt", "response_base", "response_dpo"]
    return pd.concat(picks)[cols].reset_index(drop=True)


def compare_profile(cfg: RunConfig, *, force: bool = False) -> dict:
    """Generate, score and summarise; reuses outputs/<profile>/generations/ while both models and the
    generation settings are the same (`force=True` regenerates)."""
    gen_dir = cfg.out / "generations"
    models = [cfg.out / "rm" / "model.safetensors", cfg.out / "dpo" / "model.safetensors"]
    for path, chapter, command in zip(models, ("chapter 1 (notebooks/01_reward_model.ipynb)",
                                               "chapter 4 (notebooks/04_dpo.ipynb)"), ("rm train", "dpo train")):
        if not path.exists():
            raise AlignkitError(f"{path} is missing: run {chapter} first, or "
                                f"`alignkit {command} --profile {cfg.profile}`")
    summary_path = gen_dir / "summary.json"
    saved = None if force else reuse(summary_path, _identity(cfg))
    if saved is not None:
        return {**saved, "reused": True}
    table = generate_and_score(cfg)
    dataset = cfg.out / "scores" / "trained-test.parquet"
    dataset_scores = pd.read_parquet(dataset).score if dataset.exists() else None
    summary = {**summarize_generations(table, seed=cfg.seed, dataset_scores=dataset_scores),
               "decoding": {**decoding_settings(cfg.generation, cfg.seed), "sampling_seeds": sampling_seeds(cfg)}}
    write_table(table.assign(prompt=table.prompt.astype(str)), gen_dir / "generations")
    write_table(case_studies(table), gen_dir / "case_studies")
    summary = stamped(summary, _identity(cfg))
    atomic_write_json(summary_path, summary)  # last: its presence means the folder is complete
    return summary


def load_generations(cfg: RunConfig) -> pd.DataFrame:
    return pd.read_parquet(Path(cfg.out) / "generations" / "generations.parquet")
