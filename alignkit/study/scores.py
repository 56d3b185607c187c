"""Chapter 3's scores and the performance chapter's precision check (chapter 8), as artifacts: the reward model (untrained and trained)
on the test split and on a train sample, summarised with intervals; float32 vs bfloat16 agreement.

Writes outputs/<profile>/scores/: <model>-<split>.parquet/.jsonl (one row per response), summary.json and
precision.json, each reused while the reward model it scored is the same (alignkit.io.reuse)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from alignkit.data.sources import load_pairs
from alignkit.data.splits import seeded_sample, train_check_pairs
from alignkit.data.tokenize import ChatEncoder
from alignkit.errors import AlignkitError
from alignkit.infer import end_scores, score_pairs
from alignkit.io import atomic_path, atomic_write_json, dtype_name, fingerprint, reuse, stamped
from alignkit.models import RewardModel, compute_device, int8_linears, load_tokenizer, native_bf16, weights_dtype
from alignkit.stats import (accuracy_summary, bootstrap_ci, correctness, correlations, length_diagnostics,
                            precision_agreement, preference_summary)
from alignkit.train.rm import EVAL_SCORES, rm_identity, scorer_identity


def per_category(table: pd.DataFrame) -> dict:
    """Accuracy with a 95% Wilson CI for each category tag (a pair counts under each of its tags)."""
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


def spearman_length_ci(pairs: pd.DataFrame, *, seed: int = 0, n_resamples: int = 1000) -> list[float]:
    """Bootstrap 95% CI of Spearman(score, response tokens) over both answers of each pair, resampling pairs
    (`paired` rows: both answers of a pair move together)."""
    rows = pairs[["tokens_better", "tokens_worse", "score_better", "score_worse"]].to_numpy(float)

    def rho(r):
        return correlations(np.concatenate([r[:, 0], r[:, 1]]), np.concatenate([r[:, 2], r[:, 3]]))["spearman"]
    return list(bootstrap_ci(rows, rho, n_resamples=n_resamples, seed=seed))


def summarize(table: pd.DataFrame, *, seed: int = 0) -> dict:
    """Accuracy, AUC and mean margin with bootstrap CIs; length diagnostics; score-length correlation."""
    pairs = paired(table)
    out = preference_summary(pairs.score_better, pairs.score_worse, seed=seed)
    out["length"] = length_diagnostics(pairs.score_better.tolist(), pairs.score_worse.tolist(),
                                       pairs.tokens_better.tolist(), pairs.tokens_worse.tolist())
    out["score_vs_length"] = {**correlations(table.response_tokens, table.score),
                              "spearman_ci95": spearman_length_ci(pairs, seed=seed)}
    if "categories" in table:
        out["per_category"] = per_category(table)
    return out


def score_file(cfg, model_name: str, data: str, template: str, out: str | Path) -> dict:
    """Score every pair of a preference file with a reward model (a saved RM, or a base model with a fresh
    head seeded by `cfg.seed`), at `cfg`'s evaluation lengths and batch size; writes `out`.parquet/.jsonl and
    `out`.summary.json."""
    pairs, _ = load_pairs(data, template)
    model = RewardModel.from_pretrained(model_name, seed=cfg.seed)
    max_length, max_prompt_length = cfg.data.eval_lengths()
    encoder = ChatEncoder(load_tokenizer(model_name), max_length, max_prompt_length)
    table = score_pairs(model, encoder, pairs, batch_size=cfg.rm.train.eval_batch_size)
    summary = {"model": model_name, "data": data, "template": template, "seed": cfg.seed,
               "max_length": max_length, **summarize(table, seed=cfg.seed)}
    out = Path(out)
    write_table(table, out)
    atomic_write_json(out.with_suffix(".summary.json"), summary)
    return summary


def _require_rm(cfg) -> Path:
    rm_dir = cfg.out / "rm"
    if not (rm_dir / "config.json").exists():
        raise AlignkitError(f"no trained reward model in {rm_dir}: run chapter 1 (notebooks/01_reward_model.ipynb) "
                            f"first, or `alignkit rm train --profile {cfg.profile}`")
    return rm_dir


def _scoring_identity(cfg) -> dict:
    """What a score table depends on: the reward model (its own identity), the evaluation encoding, the batch."""
    return {"rm": fingerprint(rm_identity(cfg)), "eval_lengths": list(cfg.data.eval_lengths()),
            "batch_size": cfg.rm.train.eval_batch_size}


STAMP = ("config", "identity")


def score_profile(cfg) -> dict:
    """The study's 2 x 2: {untrained (base + seeded fresh head), trained RM} x {test, train} splits of a
    profile's reward-model run ('train': the same seeded sample the training run measured its train accuracy
    on, as large as the test split). Scores the training run's evaluations already computed are reused from
    rm/eval_scores.json. Writes outputs/<profile>/scores/<model>-<split>.* and summary.json."""
    rm_dir = _require_rm(cfg)
    splits = {name: load_pairs(str(cfg.out / "data" / f"{name}.jsonl"), "ALIGNKIT")[0] for name in ("test", "train")}
    splits["train"] = train_check_pairs(splits["train"], splits["test"], cfg.seed)
    encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())
    saved_path = rm_dir / EVAL_SCORES
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    summaries = {}
    for model_name, source in (("untrained", cfg.model.name), ("trained", str(rm_dir))):
        model = None
        for split, pairs in splits.items():
            key = f"{model_name}-{split}"
            scores = saved.get(key)  # the training run's evaluation scored these pairs already
            if scores is not None and len(scores["better"]) != len(pairs):
                scores = None
            if scores is None and model is None:
                model = RewardModel.from_pretrained(source, seed=cfg.seed)
            table = score_pairs(model, encoder, pairs, batch_size=cfg.rm.train.eval_batch_size,
                                scores=None if scores is None else (scores["better"], scores["worse"]))
            write_table(table, cfg.out / "scores" / key)
            summaries[key] = summarize(table, seed=cfg.seed)
    atomic_write_json(cfg.out / "scores" / "summary.json", stamped(summaries, _scoring_identity(cfg)))
    return summaries


def profile_scores(cfg, *, force: bool = False) -> tuple[dict, dict[str, pd.DataFrame]]:
    """(summaries, tables) of `score_profile`, reused from outputs/<profile>/scores/ while the reward model
    and the scoring settings are the same; `force=True` re-scores."""
    saved = None if force else reuse(cfg.out / "scores" / "summary.json", _scoring_identity(cfg))
    summaries = score_profile(cfg) if saved is None else {k: v for k, v in saved.items() if k not in STAMP}
    tables = {key: pd.read_parquet(cfg.out / "scores" / f"{key}.parquet") for key in summaries}
    return summaries, tables


EMULATED_BF16_PAIRS = 40
"""Pairs the precision check scores where the device has no native bf16 (alignkit.models.native_bf16)."""


def precision_check(cfg, *, force: bool = False) -> dict:
    """The trained reward model on the profile's test split in float32 and with bfloat16 weights, each
    timed: `stats.precision_agreement` of the two plus {'float32_s', 'bfloat16_s', 'speedup', 'native_bf16',
    'score_dtype': `rm.score_dtype` and what it resolves to here, the precision chapters 5 and 6 score in}.
    Where bf16 is emulated (no AVX512-BF16/AMX), on a seeded sample of `EMULATED_BF16_PAIRS` pairs.
    On the CPU, `int8`: the same for int8 dynamic quantization of the backbone's linear layers
    (`models.int8_linears`), its agreement on the whole split against the float32 scores (those the training
    run's evaluation saved, when it scored this split), its speed-up timed against float32 on the same
    sequences. Writes outputs/<profile>/scores/precision.json; reused while the reward model is the same."""
    path = cfg.out / "scores" / "precision.json"
    identity = {**_scoring_identity(cfg), **scorer_identity(cfg)}  # its reading says what chapters 5 and 6 used
    saved = None if force else reuse(path, identity)
    if saved is not None:
        return saved
    rm_dir = _require_rm(cfg)
    test = load_pairs(str(cfg.out / "data" / "test.jsonl"), "ALIGNKIT")[0]
    native = native_bf16(compute_device())
    pairs = test if native else seeded_sample(test, EMULATED_BF16_PAIRS, cfg.seed)
    encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())

    def scored(pairs, dtype=torch.float32, prepare=lambda m: m):
        sequences = [e for p in pairs for e in (encoder.encode(p.prompt, p.better), encoder.encode(p.prompt, p.worse))]
        model = prepare(RewardModel.from_pretrained(str(rm_dir), dtype=dtype))
        start = time.perf_counter()
        flat = end_scores(model, sequences, encoder.tokenizer.pad_token_id, batch_size=cfg.rm.train.eval_batch_size,
                          progress=True)
        return (flat[0::2].tolist(), flat[1::2].tolist()), round(time.perf_counter() - start, 2)

    reference, float32_s = scored(pairs)
    other, bfloat16_s = scored(pairs, torch.bfloat16)
    result = {**precision_agreement(reference, other, seed=cfg.seed), "float32_s": float32_s,
              "bfloat16_s": bfloat16_s, "speedup": round(float32_s / bfloat16_s, 2), "threads": torch.get_num_threads(),
              "native_bf16": native, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "score_dtype": {"setting": cfg.rm.score_dtype,
                              "here": dtype_name(weights_dtype(cfg.rm.score_dtype))}}
    if compute_device().type == "cpu":
        saved_scores = json.loads((rm_dir / EVAL_SCORES).read_text()).get("trained-test") if (
            rm_dir / EVAL_SCORES).exists() else None
        whole = ((saved_scores["better"], saved_scores["worse"]) if saved_scores and len(saved_scores["better"]) == len(test)
                 else scored(test)[0])
        int8_whole, int8_whole_s = scored(test, prepare=int8_linears)
        if pairs is test:  # the same sequences timed in float32 above
            int8_s, timed_float32_s = int8_whole_s, float32_s
        else:
            int8_s, timed_float32_s = scored(pairs, prepare=int8_linears)[1], float32_s
        result["int8"] = {**precision_agreement(whole, int8_whole, seed=cfg.seed), "timed_pairs": len(pairs),
                          "float32_s": timed_float32_s, "int8_s": int8_s, "speedup": round(timed_float32_s / int8_s, 2),
                          "engine": torch.backends.quantized.engine}
    result = stamped(result, identity)
    atomic_write_json(path, result)
    return result
