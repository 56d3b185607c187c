"""Score (prompt, response) texts with a reward model -> a table, one row per response.

Prompt and response stay separate fields from the start (no decoding and re-splitting on a role marker).
Batches are length-sorted (little padding) and run under `torch.inference_mode()`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from alignkit.data.templates import Message, PreferencePair
from alignkit.data.tokenize import ChatEncoder, EncodedSequence, pad_sequences
from alignkit.errors import AlignkitError
from alignkit.io import atomic_path


EVAL_SCORES = "eval_scores.json"
"""Per-pair scores of the training run's evaluations, saved beside the reward model:
{"untrained-test" | "trained-test" | "trained-train": {"better": [...], "worse": [...]}} in pair order."""


def end_scores(model, sequences: Sequence[EncodedSequence], pad_id: int, *, batch_size: int = 16,
               progress: bool = False) -> torch.Tensor:
    """(N,) reward at each sequence's last real token, in input order; length-sorted batches, inference mode."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].input_ids))
    scores = torch.empty(len(sequences))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="score", disable=not progress,
                          dynamic_ncols=True):
            chunk = order[start:start + batch_size]
            batch = pad_sequences([sequences[i] for i in chunk], pad_id)
            _, end = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            scores[chunk] = end.float().cpu()
    model.train(was_training)
    return scores


def score_texts(model, encoder: ChatEncoder, prompts: Sequence[Sequence[Message]], responses: Sequence[str],
                *, batch_size: int = 16, progress: bool = True, scores: Sequence[float] | None = None
                ) -> pd.DataFrame:
    """Score each (prompt, response). Returns DataFrame(prompt, response, score, prompt_tokens,
    response_tokens, response_cut) in the input order. `scores` given (already computed by this model on
    this encoding, e.g. by the training run's evaluation): the model is not run again."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encoder.encode(p, r) for p, r in zip(prompts, responses)]
    if scores is None:
        scores = end_scores(model, encoded, encoder.tokenizer.pad_token_id, batch_size=batch_size,
                            progress=progress).tolist()
    elif len(scores) != len(encoded):
        raise ValueError(f"{len(scores)} scores for {len(encoded)} responses")
    return pd.DataFrame({
        "prompt": [json.dumps(list(p), ensure_ascii=False) for p in prompts],
        "response": list(responses),
        "score": list(scores),
        "prompt_tokens": [e.prompt_length for e in encoded],
        "response_tokens": [len(e.input_ids) - e.prompt_length for e in encoded],
        "response_cut": [e.response_cut for e in encoded],
    })


def score_pairs(model, encoder: ChatEncoder, pairs: Sequence[PreferencePair], *, batch_size: int = 16,
                progress: bool = True, scores: tuple[Sequence[float], Sequence[float]] | None = None
                ) -> pd.DataFrame:
    """Both sides of each pair -> one row per response with `pair_id` and `side` ('better'/'worse').
    `scores` = (better, worse) per pair, when already computed (see `score_texts`)."""
    prompts = [p.prompt for p in pairs for _ in (0, 1)]
    responses = [r for p in pairs for r in (p.better, p.worse)]
    flat = None if scores is None else [s for b, w in zip(*scores) for s in (b, w)]
    table = score_texts(model, encoder, prompts, responses, batch_size=batch_size, progress=progress, scores=flat)
    table.insert(0, "side", ["better", "worse"] * len(pairs))
    if any(p.meta.get("better_harm_categories") is not None for p in pairs):
        table["categories"] = [";".join(_pair_categories(p)) for p in pairs for _ in (0, 1)]
    table.insert(0, "pair_id", [i for i in range(len(pairs)) for _ in (0, 1)])
    return table


def _pair_categories(pair: PreferencePair) -> list[str]:
    """Harm categories flagged on either response (PKU-SafeRLHF), or 'none'."""
    found = set(pair.meta.get("better_harm_categories") or []) | set(pair.meta.get("worse_harm_categories") or [])
    return sorted(found) or ["none"]


def per_category(table: pd.DataFrame) -> dict:
    """Accuracy with a 95% Wilson CI for each category tag (a pair counts under each of its tags)."""
    from alignkit.stats import accuracy_summary, correctness
    pairs = paired(table).join(table[table.side == "better"].set_index("pair_id").categories)
    out = {}
    for tag in sorted({t for tags in pairs.categories for t in tags.split(";")}):
        rows = pairs[pairs.categories.str.split(";").apply(lambda tags: tag in tags)]
        out[tag] = accuracy_summary(correctness(rows.score_better.tolist(), rows.score_worse.tolist()))
    return out


def paired(table: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: score_better, score_worse, tokens_better, tokens_worse, margin."""
    wide = table.pivot(index="pair_id", columns="side", values=["score", "response_tokens"])
    out = pd.DataFrame({"score_better": wide["score"]["better"], "score_worse": wide["score"]["worse"],
                        "tokens_better": wide["response_tokens"]["better"],
                        "tokens_worse": wide["response_tokens"]["worse"]})
    out["margin"] = out.score_better - out.score_worse
    return out


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """`path`.parquet and `path`.jsonl, each written atomically."""
    path = Path(path)
    with atomic_path(path.with_suffix(".parquet")) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(path.with_suffix(".jsonl")) as tmp:
        table.to_json(tmp, orient="records", lines=True, force_ascii=False)


def summarize(table: pd.DataFrame, *, seed: int = 0) -> dict:
    """Accuracy, AUC and mean margin with bootstrap CIs; length diagnostics; score-length correlation."""
    from alignkit.stats import correlations, length_diagnostics, preference_summary
    pairs = paired(table)
    out = preference_summary(pairs.score_better, pairs.score_worse, seed=seed)
    out["length"] = length_diagnostics(pairs.score_better.tolist(), pairs.score_worse.tolist(),
                                       pairs.tokens_better.tolist(), pairs.tokens_worse.tolist())
    out["score_vs_length"] = correlations(table.response_tokens, table.score)
    if "categories" in table:
        out["per_category"] = per_category(table)
    return out


def score_file(model_name: str, data: str, template: str, out: str | Path, *, max_length: int = 192,
               max_prompt_length: int = 96, batch_size: int = 16, seed: int = 0) -> dict:
    """Score every pair of a preference file with a reward model (a saved RM, or a base model with a
    fresh head seeded by `seed`); writes `out`.parquet/.jsonl and `out`.summary.json."""
    from alignkit.data.sources import load_pairs
    from alignkit.io import atomic_write_json
    from alignkit.models import RewardModel, load_tokenizer
    pairs, _ = load_pairs(data, template)
    model = RewardModel.from_pretrained(model_name, seed=seed)
    encoder = ChatEncoder(load_tokenizer(model_name), max_length, max_prompt_length)
    table = score_pairs(model, encoder, pairs, batch_size=batch_size)
    summary = {"model": model_name, "data": data, "template": template, "seed": seed,
               "max_length": max_length, **summarize(table, seed=seed)}
    out = Path(out)
    write_table(table, out)
    atomic_write_json(out.with_suffix(".summary.json"), summary)
    return summary


def score_profile(cfg, *, batch_size: int = 16) -> dict:
    """The study's 2 x 2: {untrained (base + seeded fresh head), trained RM} x {test, train} splits of a
    profile's reward-model run ('train': the same seeded sample the training run measured its train accuracy
    on, as large as the test split). Writes outputs/<profile>/scores/<model>-<split>.* and figures/."""
    from alignkit.io import atomic_write_json
    from alignkit.models import RewardModel, load_tokenizer
    from alignkit.data.sources import load_pairs
    from alignkit.plots import margin_and_length, score_distributions
    from alignkit.train.rm import train_check_pairs
    rm_dir = _require_rm(cfg)
    splits = {name: load_pairs(str(cfg.out / "data" / f"{name}.jsonl"), "ALIGNKIT")[0] for name in ("test", "train")}
    splits["train"] = train_check_pairs(splits["train"], splits["test"], cfg.seed)
    encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())
    saved_path = rm_dir / EVAL_SCORES
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    tables, summaries = {}, {}
    for model_name, source in (("untrained", cfg.model.name), ("trained", str(rm_dir))):
        model = None
        for split, pairs in splits.items():
            key = f"{model_name}-{split}"
            scores = saved.get(key)  # the training run's evaluation scored these pairs already
            if scores is not None and len(scores["better"]) != len(pairs):
                scores = None
            if scores is None and model is None:
                model = RewardModel.from_pretrained(source, seed=cfg.seed)
            table = score_pairs(model, encoder, pairs, batch_size=batch_size,
                                scores=None if scores is None else (scores["better"], scores["worse"]))
            write_table(table, cfg.out / "scores" / key)
            tables[key], summaries[key] = table, summarize(table, seed=cfg.seed)
    atomic_write_json(cfg.out / "scores" / "summary.json", summaries)
    figures = cfg.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt
    for name, fig in (("score_distributions", score_distributions({k.replace("-", " · "): t for k, t in tables.items()})),
                      ("margin_and_length", margin_and_length({k: paired(t) for k, t in tables.items()
                                                               if k.endswith("test")}))):
        with atomic_path(figures / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)  # saved, not shown: notebooks draw their own
    return summaries


def _newer_than_rm(path: Path, cfg) -> bool:
    """True when `path` was written after the profile's reward model (so it scored that model)."""
    model_file = cfg.out / "rm" / "model.safetensors"
    return path.exists() and model_file.exists() and path.stat().st_mtime >= model_file.stat().st_mtime


def _require_rm(cfg) -> Path:
    rm_dir = cfg.out / "rm"
    if not (rm_dir / "config.json").exists():
        raise AlignkitError(f"no trained reward model in {rm_dir}: run chapter 1 (notebooks/01_reward_model.ipynb) "
                            f"first, or `alignkit rm train --profile {cfg.profile}`")
    return rm_dir


def profile_scores(cfg, *, force: bool = False) -> tuple[dict, dict[str, pd.DataFrame]]:
    """(summaries, tables) of `score_profile`, reused from outputs/<profile>/scores/ when they are newer
    than the reward model they scored; `force=True` re-scores."""
    summary_path = cfg.out / "scores" / "summary.json"
    summaries = json.loads(summary_path.read_text()) if _newer_than_rm(summary_path, cfg) and not force \
        else score_profile(cfg)
    tables = {key: pd.read_parquet(cfg.out / "scores" / f"{key}.parquet") for key in summaries}
    return summaries, tables


def summary_frame(summaries: dict) -> pd.DataFrame:
    """One row per scored table: accuracy, AUC, margin (with CIs), length rule and length-matched accuracy."""
    def ci(values):
        return f"{values[0]:.3f}–{values[1]:.3f}"
    rows = {}
    for key, s in summaries.items():
        rows[key] = {"n": s["n"], "accuracy": s["accuracy"], "accuracy 95% CI": ci(s["accuracy_ci95"]),
                     "AUC": s["auc"], "AUC 95% CI": ci(s["auc_ci95"]), "mean margin": s["mean_margin"],
                     "longer-wins rule": s["length"]["longer_wins"]["accuracy"],
                     "length-matched acc.": s["length"]["length_matched"]["accuracy"],
                     "length-matched n": s["length"]["length_matched"]["n"],
                     "Spearman(score, length)": s["score_vs_length"]["spearman"]}
    return pd.DataFrame(rows).T


def precision_check(cfg, *, batch_size: int = 16, force: bool = False) -> dict:
    """The trained reward model on the profile's test split in float32 and with bfloat16 weights, each
    timed: `stats.precision_agreement` of the two plus {'float32_s', 'bfloat16_s', 'speedup'}. Writes
    outputs/<profile>/scores/precision.json; reused while it is newer than the reward model."""
    import time
    from alignkit.data.sources import load_pairs
    from alignkit.io import atomic_write_json
    from alignkit.models import RewardModel, load_tokenizer
    from alignkit.stats import precision_agreement
    path = cfg.out / "scores" / "precision.json"
    if not force and _newer_than_rm(path, cfg):
        return json.loads(path.read_text())
    rm_dir = _require_rm(cfg)
    pairs = load_pairs(str(cfg.out / "data" / "test.jsonl"), "ALIGNKIT")[0]
    encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())
    sequences = [e for p in pairs for e in (encoder.encode(p.prompt, p.better), encoder.encode(p.prompt, p.worse))]
    scores, seconds = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        model = RewardModel.from_pretrained(str(rm_dir), dtype=dtype)
        start = time.perf_counter()
        flat = end_scores(model, sequences, encoder.tokenizer.pad_token_id, batch_size=batch_size, progress=True)
        seconds[str(dtype).split(".")[-1]] = round(time.perf_counter() - start, 2)
        scores[dtype] = (flat[0::2].tolist(), flat[1::2].tolist())
        del model
    result = {**precision_agreement(scores[torch.float32], scores[torch.bfloat16], seed=cfg.seed),
              **{f"{k}_s": v for k, v in seconds.items()},
              "speedup": round(seconds["float32"] / seconds["bfloat16"], 2), "threads": torch.get_num_threads()}
    atomic_write_json(path, result)
    return result
