"""Base vs DPO policy, judged by the trained reward model: generate on held-out test prompts and on random
training prompts, score every response, compare with and without length control, pick case studies.

Writes outputs/<profile>/generations/: generations.parquet/.jsonl (one row per prompt x model),
summary.json (statistics, decoding settings, verdict) and figures in outputs/<profile>/figures/.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from alignkit.config import RunConfig
from alignkit.errors import AlignkitError
from alignkit.io import atomic_path, atomic_write_json

MODELS = ("base", "dpo")


def pick_prompts(cfg: RunConfig) -> dict[str, list]:
    """{'test': [...], 'train': [...]} unique prompts (message tuples) from the profile's split, seeded; train
    prompts come from the pairs DPO trained on."""
    from alignkit.data.sources import load_pairs
    from alignkit.train.dpo import dpo_training_pairs
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
    from alignkit.train.dpo import dpo_config
    from alignkit.train.rm import rm_config
    return {"rm": rm_config(cfg), "dpo": dpo_config(cfg), "generation": cfg.to_dict()["generation"]}


def generate_and_score(cfg: RunConfig) -> pd.DataFrame:
    """One row per (split, prompt, model): response, tokens, hit_limit, RM score."""
    import torch
    from transformers import AutoModelForCausalLM
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.generation import generate
    from alignkit.models import RewardModel, compute_device, load_tokenizer, resolve_model
    from alignkit.scoring import score_texts
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    prompts = pick_prompts(cfg)
    flat = [(split, pid, prompt) for split, items in prompts.items() for pid, prompt in items]
    sources = {"base": resolve_model(cfg.model.name), "dpo": str(cfg.out / "dpo")}
    encoder = ChatEncoder(load_tokenizer(cfg.model.name), cfg.data.max_length, cfg.data.max_prompt_length)
    rows = []
    for name, source in sources.items():
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, cfg.model.dtype)).to(compute_device())
        made = generate(lm, encoder, [p for _, _, p in flat], cfg.generation, seed=cfg.seed, desc=f"generate {name}")
        rows += [{"split": s, "prompt_id": pid, "model": name, "prompt": list(p), **m}
                 for (s, pid, p), m in zip(flat, made)]
        del lm
    rm_dir = cfg.out / "rm"
    rm = RewardModel.from_pretrained(str(rm_dir))
    rm_encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())
    scored = score_texts(rm, rm_encoder, [r["prompt"] for r in rows], [r["response"] for r in rows],
                         batch_size=cfg.train.eval_batch_size)
    table = pd.DataFrame(rows)
    table["prompt"] = scored["prompt"]
    table["score"] = scored["score"]
    table["scored_tokens"] = scored["response_tokens"]
    return table


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, prompt): score_base, score_dpo, tokens_base, tokens_dpo, responses, difference."""
    w = table.pivot(index=["split", "prompt_id"], columns="model",
                    values=["score", "response_tokens", "response", "hit_limit"])
    w.columns = [f"{value}_{model}" for value, model in w.columns]
    w = w.reset_index().merge(table[table.model == "base"][["split", "prompt_id", "prompt"]], on=["split", "prompt_id"])
    w["difference"] = w.score_dpo - w.score_base
    return w


def summarize_generations(table: pd.DataFrame, *, seed: int = 0, dataset_scores: pd.Series | None = None) -> dict:
    """Per split: DPO's win rate over base, mean scores and lengths, length-controlled effect, score-length
    correlation, responses at the token limit, and (given the RM's scores of dataset responses) how many
    generations score outside the range the RM saw on real data."""
    from alignkit.stats import correlations, outside_range, paired_comparison
    w = wide(table)
    out = {}
    for split, rows in w.groupby("split"):
        c = paired_comparison(rows.score_base, rows.score_dpo, rows.response_tokens_base,
                              rows.response_tokens_dpo, seed=seed)
        sub = table[table.split == split]
        entry = {"n": c["n"], "win_rate": c["win_rate"], "win_rate_ci95": c["win_rate_ci95"],
                 "mean_score_base": c["mean_score_a"], "mean_score_dpo": c["mean_score_b"],
                 "mean_difference": c["mean_difference"], "mean_difference_ci95": c["mean_difference_ci95"],
                 "mean_length_base": c["mean_length_a"], "mean_length_dpo": c["mean_length_b"],
                 "mean_length_difference_ci95": c["mean_length_difference_ci95"],
                 "hit_limit_base": float(rows.hit_limit_base.mean()), "hit_limit_dpo": float(rows.hit_limit_dpo.mean()),
                 "score_length_spearman": correlations(sub.response_tokens, sub.score)["spearman"],
                 "length_controlled": {**c["length_controlled"], "dpo_effect": c["length_controlled"]["effect"],
                                       "dpo_effect_ci95": c["length_controlled"]["effect_ci95"]}}
        if dataset_scores is not None and len(dataset_scores):
            entry["out_of_range"] = {m: outside_range(sub[sub.model == m].score, dataset_scores) for m in MODELS}
            entry["dataset_mean_score"] = float(dataset_scores.mean())
        out[split] = entry
    out["verdict"] = verdict(out)
    return out


def verdict(summary: dict) -> str:
    """A sentence per split saying what the numbers support, built only from those numbers."""
    parts = []
    for split in ("test", "train"):
        s = summary.get(split)
        if not s:
            continue
        lo, hi = s["win_rate_ci95"]
        raw = ("scores DPO above base" if lo > 0.5 else "scores DPO below base" if hi < 0.5
               else "shows no clear preference between DPO and base (the CI spans 0.5)")
        lc = s["length_controlled"]
        elo, ehi = lc["effect_ci95"]
        at_equal = "positive" if elo > 0 else "negative" if ehi < 0 else "indistinguishable from zero"
        text = (f"{split}: the RM {raw} (DPO win rate {s['win_rate']:.2f} [{lo:.2f}, {hi:.2f}], "
                f"n={s['n']}); DPO responses average {s['mean_length_dpo']:.0f} tokens vs {s['mean_length_base']:.0f}; "
                f"score-length Spearman {s['score_length_spearman']:.2f}; of the mean score difference "
                f"{s['mean_difference']:+.2f}, length accounts for {lc['length_part']:+.2f}, and at equal length "
                f"the DPO effect is {lc['effect']:+.2f} [{elo:+.2f}, {ehi:+.2f}] ({at_equal}).")
        if lc["per_token_ci95"][0] > 0 and abs(lc["length_part"]) > abs(lc["effect"]):
            text += " Length bias explains most of the difference."
        elif lc["per_token_ci95"][0] > 0:
            text += " The RM rewards length, but length does not explain most of the difference."
        else:
            text += " The data do not show a length effect on the difference."
        capped = max(s["hit_limit_base"], s["hit_limit_dpo"])
        if capped > 0.5:
            text += (f" Caveat: {capped:.0%} of responses hit the token budget, so lengths vary little and the "
                     f"length test has little power.")
        oor = s.get("out_of_range")
        if oor:
            share = {m: oor[m]["below"] + oor[m]["above"] for m in MODELS}
            text += (f" Outside the 1-99% range of the RM's scores on dataset responses: base {share['base']:.0%}, "
                     f"DPO {share['dpo']:.0%}.")
        parts.append(text)
    return " ".join(parts)


def case_studies(table: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """The k prompts per split where DPO beat base by the most, and the k where it lost by the most."""
    w = wide(table)
    picks = []
    for _, rows in w.groupby("split"):
        rows = rows.sort_values("difference")
        picks += [rows.tail(k).iloc[::-1], rows.head(k)]
    cols = ["split", "prompt_id", "difference", "score_base", "score_dpo", "response_tokens_base",
            "response_tokens_dpo", "prompt", "response_base", "response_dpo"]
    return pd.concat(picks)[cols].reset_index(drop=True)


def compare_profile(cfg: RunConfig, *, force: bool = False) -> dict:
    """Generate, score, summarise and plot; reuses outputs/<profile>/generations/ when it was made with the
    same RM, DPO and generation settings after both models were last written."""
    from alignkit.plots import generation_figures
    from alignkit.scoring import write_table
    gen_dir = cfg.out / "generations"
    models = [cfg.out / "rm" / "model.safetensors", cfg.out / "dpo" / "model.safetensors"]
    for path, chapter, command in zip(models, ("chapter 1 (notebooks/01_reward_model.ipynb)",
                                               "chapter 4 (notebooks/04_dpo.ipynb)"), ("rm train", "dpo train")):
        if not path.exists():
            raise AlignkitError(f"{path} is missing: run {chapter} first, or "
                                f"`alignkit {command} --profile {cfg.profile}`")
    summary_path = gen_dir / "summary.json"
    if not force and summary_path.exists():
        saved = json.loads(summary_path.read_text())
        newer = all(summary_path.stat().st_mtime >= m.stat().st_mtime for m in models)
        if newer and saved.get("identity") == json.loads(json.dumps(_identity(cfg))):
            return {**saved, "reused": True}
    from alignkit.generation import decoding_settings
    table = generate_and_score(cfg)
    dataset = cfg.out / "scores" / "trained-test.parquet"
    dataset_scores = pd.read_parquet(dataset).score if dataset.exists() else None
    summary = {**summarize_generations(table, seed=cfg.seed, dataset_scores=dataset_scores),
               "decoding": decoding_settings(cfg.generation, cfg.seed), "identity": _identity(cfg)}
    write_table(table.assign(prompt=table.prompt.astype(str)), gen_dir / "generations")
    write_table(case_studies(table), gen_dir / "case_studies")
    figures = cfg.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt
    for name, fig in generation_figures(table).items():
        with atomic_path(figures / f"generations_{name}.png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
    atomic_write_json(summary_path, summary)  # last: its presence means the folder is complete
    return summary


def load_generations(cfg: RunConfig) -> pd.DataFrame:
    return pd.read_parquet(Path(cfg.out) / "generations" / "generations.parquet")
