"""DPO and its variants, head to head (chapter 6).

Every method of `dpo_variants.methods` (DPO, cDPO, robust DPO, IPO, R-DPO, SimPO, ORPO: alignkit.losses via
alignkit.train.dpo.DPOTask; KTO on the pairs taken apart into unpaired examples: alignkit.train.kto.KTOTask)
trains a fresh copy of the base policy with the `dpo` section's trainable parameters (LoRA initialised from
the seed), optimiser and schedule, on the same pairs in the same batch order for the same number of optimiser
steps, in this process (no launcher, nothing saved); `online` trains DPO's loss on on-policy pairs of the same
prompts instead (the base policy's own samples labelled by chapter 1's reward model: alignkit.experiments.online),
for the same number of steps. The pairs are a seeded sample of the fit fold: the
training split without its validation fold, a prompt-disjoint part of it that only chooses each method's
strength (beta; IPO's tau; ORPO's lambda) from `dpo_variants.beta_scales`. The test split is never used for
a choice.

Each method's kept policy is then read on held-out test pairs (reference log-probs from alignkit.train.dpo's
cache, computed once for all methods): the implicit-reward accuracy, whether log pi - log pi_ref of the better
answer exceeds that of the worse (the same reward for every method; SimPO and ORPO never see the reference
while training), and the mean change of the chosen and of the rejected log-prob from the reference. It also
answers held-out test prompts, as the base model does with the same seeds: mean answer length and the share
at the token cap; the reward model's (chapter 1's) win rate against the base model's answer to the same
prompt; and KL(policy || base) along its own answers (alignkit.infer.sequence_kl), in nats. With `online` and
`sigmoid` both run, the record also compares online with offline DPO on the win rate, paired by prompt.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time

import pandas as pd
import torch

from alignkit.config import DPOConfig, GenerationConfig
from alignkit.data.sources import load_pairs
from alignkit.data.splits import seeded_sample, split_by_prompt
from alignkit.data.tokenize import ChatEncoder, encode_pairs
from alignkit.errors import AlignkitError
from alignkit.experiments.online import SAMPLES, online_vs_offline, sample_onpolicy
from alignkit.infer import answer_encoder, decoding_settings, generate, response_logps, score_texts, sequence_kl
from alignkit.models import (Policy, load_tokenizer, make_trainable, merged, trainable_in_fp32,
                             weights_dtype)
from alignkit.stats import accuracy_summary, correctness, mean_ci, paired_comparison
from alignkit.train.dpo import DPOItem, DPOTask, reference_key, reference_logps
from alignkit.train.rm import scorer
from alignkit.train.kto import KTOItem, KTOTask, mismatched_pairs
from alignkit.train.loop import make_plan, train

STRENGTH = {"ipo": "tau", "orpo": "lambda"}
"""The strength each method's grid scales (every other method: beta)."""


# ----------------------------------------------------------------------------- the numbers, from the tables

def pair_summary(rows: pd.DataFrame, *, seed: int = 0, n_resamples: int = 1000) -> dict:
    """A policy on preference pairs, one row each: chosen_policy, rejected_policy, chosen_reference,
    rejected_reference (summed response log-probs, nats). The implicit-reward accuracy (log pi - log pi_ref of
    the chosen above the rejected's; ties half; Wilson CI), the mean change from the reference of the chosen
    and of the rejected log-prob and of their margin (bootstrap CIs over pairs), and `chosen_falls`: whether
    the chosen change's interval lies below 0 (the policy made the preferred answers less likely)."""
    chosen = (rows.chosen_policy - rows.chosen_reference).to_numpy(float)
    rejected = (rows.rejected_policy - rows.rejected_reference).to_numpy(float)
    out = {"accuracy": accuracy_summary(correctness(chosen.tolist(), rejected.tolist()))}
    for name, values in (("chosen_change", chosen), ("rejected_change", rejected),
                         ("margin_change", chosen - rejected)):
        out[name] = mean_ci(values, seed=seed, n_resamples=n_resamples)
    out["chosen_falls"] = out["chosen_change"]["ci95"][1] < 0
    return out


def choose(validation: list[dict]) -> int:
    """Index of the grid point kept: the highest validation accuracy, then the larger mean margin change, then
    the earlier grid point."""
    keys = [(v["accuracy"]["accuracy"], v["margin_change"]["mean"], -i) for i, v in enumerate(validation)]
    return max(range(len(keys)), key=keys.__getitem__)


def generation_summary(base: pd.DataFrame, policy: pd.DataFrame, *, seed: int = 0, n_resamples: int = 1000) -> dict:
    """A policy's answers against the base model's, one row per prompt in the same order (columns score,
    response_tokens, hit_limit; the policy's also kl): the reward model's win rate of the policy (ties half)
    and mean score difference with bootstrap CIs over prompts, the mean length with its CI and the share at
    the token cap, and the mean KL(policy || base) along the answers with its CI."""
    if list(base.prompt_id) != list(policy.prompt_id):
        raise ValueError("base and policy answers must be for the same prompts, in the same order")
    c = paired_comparison(base.score, policy.score, base.response_tokens, policy.response_tokens, seed=seed,
                          n_resamples=n_resamples)
    win = {k: c[k] for k in ("n", "win_rate", "win_rate_ci95", "mean_difference", "mean_difference_ci95")}
    return {"win": win, "length": {**mean_ci(policy.response_tokens, seed=seed, n_resamples=n_resamples),
                                   "hit_limit": float(policy.hit_limit.mean())},
            "kl": mean_ci(policy.kl, seed=seed, n_resamples=n_resamples)}


def summarize_variants(pairs: pd.DataFrame, answers: pd.DataFrame, grids: dict[str, list[dict]], *, seed: int = 0,
                       n_resamples: int = 1000) -> dict:
    """Per method (in the order of `grids`): its grid with each point's validation summary, the kept point,
    `pair_summary` on the test pairs and `generation_summary` against the base model. `pairs` has one row per
    (split 'validation'/'test', method, scale, pair); `answers` one per (model 'base' or method, prompt);
    `grids` {method: [{'scale', 'value', 'name'}, ...]}."""
    base = answers[answers.model == "base"]
    out = {}
    for method, grid in grids.items():
        rows = pairs[pairs.method == method]
        validation = [pair_summary(rows[(rows.split == "validation") & (rows.scale == g["scale"])], seed=seed,
                                   n_resamples=n_resamples) if len(grid) > 1 else None for g in grid]
        kept = choose(validation) if len(grid) > 1 else 0
        test = rows[(rows.split == "test") & (rows.scale == grid[kept]["scale"])]
        out[method] = {"strength": grid[kept], "chosen_by": "validation" if len(grid) > 1 else "fixed (grid of one)",
                       "grid": [{**g, "validation": v} for g, v in zip(grid, validation)],
                       **pair_summary(test, seed=seed, n_resamples=n_resamples),
                       **generation_summary(base, answers[answers.model == method], seed=seed, n_resamples=n_resamples)}
    return out


def onpolicy_summary(labels: pd.DataFrame, trained_pairs: int, *, seed: int = 0, n_resamples: int = 1000) -> dict:
    """The online round's pairs, from alignkit.experiments.online.label_samples' table (one row per prompt):
    prompts sampled, ties dropped (count and share), pairs kept and `trained_pairs` (those the encoding's
    truncation rule kept), the reward model's score margin better minus worse and the length difference better
    minus worse in tokens (means with bootstrap CIs over pairs), and `longer_preferred`: the share of pairs whose
    better answer is the longer one (equal lengths half; Wilson CI), i.e. whether the labels prefer length."""
    kept = labels[~labels.tie.astype(bool)]
    return {"prompts": len(labels), "samples_per_prompt": SAMPLES, "ties": int(labels.tie.sum()),
            "tie_share": float(labels.tie.mean()), "pairs": len(kept), "trained_pairs": trained_pairs,
            "margin": mean_ci(kept.margin, seed=seed, n_resamples=n_resamples),
            "length_difference": mean_ci(kept.better_tokens - kept.worse_tokens, seed=seed, n_resamples=n_resamples),
            "longer_preferred": accuracy_summary(correctness(kept.better_tokens.tolist(), kept.worse_tokens.tolist()))}


# ----------------------------------------------------------------------------- one method

def method_config(cfg, method: str, scale: float, label_smoothing: float, steps: int | None = None) -> DPOConfig:
    """The `dpo` section as `method` trains it: its loss (online: DPO's sigmoid), its strength times `scale`,
    the flip rate of cDPO and robust DPO (plain DPO: none), `steps` optimiser steps (None: `dpo_variants.steps`),
    no mid-run evaluation, checkpoint or launcher (KTO's loss name is 'kto', which only alignkit.train.kto reads)."""
    d = cfg.dpo
    steps = steps or cfg.dpo_variants.steps
    loop = dataclasses.replace(d.train, max_steps=steps or d.train.max_steps, eval_every=0, save_every=0,
                               deepspeed=None, launcher="none")
    strength = {"orpo_lambda": d.orpo_lambda * scale} if method == "orpo" else {"beta": d.beta * scale}
    flips = label_smoothing if method in ("cdpo", "robust") else 0.0
    return dataclasses.replace(d, loss={"cdpo": "sigmoid", "online": "sigmoid"}.get(method, method),
                               label_smoothing=flips, train=loop, **strength)


def strength(method: str, d: DPOConfig, scale: float) -> dict:
    """{'scale', 'name', 'value'} of a grid point of `method` (its config `d` already scaled)."""
    name = STRENGTH.get(method, "beta")
    return {"scale": scale, "name": name, "value": d.orpo_lambda if method == "orpo" else d.beta}


def train_method(cfg, method: str, mcfg: DPOConfig, base: Policy, items: list, pad: int) -> tuple[Policy, dict]:
    """A fresh copy of `base` trained with `method` on `items` (DPOItem, or KTOItem for KTO). Returns the
    policy and the loop's record (steps, last training metrics, seconds)."""
    policy = Policy(copy.deepcopy(base.lm))
    policy.lm = trainable_in_fp32(make_trainable(policy.lm, mcfg.trainable, cfg.seed))
    task = (KTOTask(pad, mcfg.beta, eval_batch_size=mcfg.train.eval_batch_size) if method == "kto"
            else DPOTask(pad, mcfg, None, mcfg.train.eval_batch_size))
    ckpt = cfg.out / "checkpoints" / "dpo_variants" / method
    result = train(policy, task, items, [], [i.pair.length for i in items], mcfg.train, seed=cfg.seed,
                   checkpoint_dir=ckpt, tensorboard_dir=None, desc=f"{method} train")
    shutil.rmtree(ckpt, ignore_errors=True)
    policy.eval()
    return policy, {"steps": result["steps"], "last_train": result["last_train"], "seconds": result["seconds"]["steps"]}


def logps_rows(policy: Policy, encoded: list, references: list, pad: int, batch_size: int, **labels) -> pd.DataFrame:
    """One row per pair: the policy's and the reference's summed log-probs of the chosen and rejected answer."""
    got = response_logps(policy, encoded, pad, batch_size=batch_size, progress=False)
    return pd.DataFrame({**labels, "pair": range(len(encoded)), "chosen_policy": [g[0] for g in got],
                         "rejected_policy": [g[1] for g in got], "chosen_reference": [r[0] for r in references],
                         "rejected_reference": [r[1] for r in references]})


# ----------------------------------------------------------------------------- the run

def variants_generation(cfg) -> GenerationConfig:
    """The decoding settings of the answers: `generation`'s, with `dpo_variants.max_new_tokens` when set."""
    return dataclasses.replace(cfg.generation, max_new_tokens=cfg.dpo_variants.max_new_tokens or
                               cfg.generation.max_new_tokens)


def variants_data(cfg, train_split, test_split, val_fraction: float) -> dict:
    """The pairs and prompts of the run, from chapter 1's split files: 'train' (a seeded sample of the fit fold:
    `steps` x the dpo batch, or dpo.max_pairs when steps is None), 'validation' (a seeded sample of the
    validation fold, `eval_pairs`), 'test' (a seeded sample of the test split, `eval_pairs`), 'prompts' (a
    seeded sample of the test split's unique prompts, [(prompt_id, messages)])."""
    v, t = cfg.dpo_variants, cfg.dpo.train
    fit, val = split_by_prompt(load_pairs(str(train_split), "ALIGNKIT")[0], val_fraction, cfg.seed)
    test = load_pairs(str(test_split), "ALIGNKIT")[0]
    unique = {p.prompt_id: p.prompt for p in test}
    n_train = v.steps * t.batch_size * t.grad_accum if v.steps else cfg.dpo.max_pairs
    return {"train": seeded_sample(fit, n_train, cfg.seed), "validation": seeded_sample(val, v.eval_pairs, cfg.seed),
            "test": seeded_sample(test, v.eval_pairs, cfg.seed),
            "prompts": [(i, unique[i]) for i in seeded_sample(sorted(unique), v.prompts, cfg.seed)]}


def _answers(model: str, prompts: list, made: list[dict], kl) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "prompt_id": [i for i, _ in prompts], "kl": kl,
                         **pd.DataFrame(made).to_dict("list")})


def variants_experiment(cfg, train_split, test_split, rm_dir, *, val_fraction: float = 0.2,
                        label_smoothing: float = 0.1, n_resamples: int = 1000
                        ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Train, read and compare every method of `dpo_variants` (see the module docstring). Returns (the record:
    `summarize_variants` per method with its training run, the base model's answers, sizes, decoding and
    seconds; the per-pair table; the per-answer table)."""
    v = cfg.dpo_variants
    methods, scales = [m.strip() for m in v.methods.split(",")], [float(x) for x in v.beta_scales.split(",")]
    choosing = len(scales) > 1
    if cfg.dpo.train.threads:
        torch.set_num_threads(cfg.dpo.train.threads)
    started, seconds = time.perf_counter(), {}
    data = variants_data(cfg, train_split, test_split, val_fraction)
    tokenizer = load_tokenizer(cfg.model.name)
    pad, dtype, batch = tokenizer.pad_token_id, weights_dtype(cfg.model.dtype), cfg.dpo.train.eval_batch_size
    encoder = ChatEncoder(tokenizer, cfg.data.max_length, cfg.data.max_prompt_length)
    encoded = {part: encode_pairs(encoder, data[part], cfg.data.truncation)[0]
               for part in ("train", "test", *(("validation",) if choosing else ()))}
    gen, prompts = variants_generation(cfg), data["prompts"]
    kept = [data["train"][e.index] for e in encoded["train"]]  # the training pairs the truncation rule kept
    if "kto" in methods:  # their prompts with other prompts' answers, never dropped
        encoded["mismatched"] = encode_pairs(encoder, mismatched_pairs(kept), "cut")[0]
    base = Policy.from_pretrained(cfg.model.name, dtype=dtype)
    rm = scorer(cfg, rm_dir)
    rm_encoder = ChatEncoder(load_tokenizer(str(rm_dir)), *cfg.data.eval_lengths())
    if "online" in methods:  # the base policy's own answers to the training prompts, labelled by the RM
        t0 = time.perf_counter()
        onpolicy, labels = sample_onpolicy(base.lm, encoder, rm, rm_encoder, [p.prompt for p in kept],
                                           gen, seed=cfg.seed, batch_size=gen.score_batch_size)
        encoded["online"] = encode_pairs(encoder, onpolicy, cfg.data.truncation)[0]
        if not encoded["online"]:
            raise AlignkitError(f"the online round kept no on-policy pair ({int(labels.tie.sum())} of {len(labels)} "
                                f"prompts tied): raise dpo_variants.max_new_tokens or generation.temperature")
        seconds["online_samples"] = time.perf_counter() - t0
    caches = cfg.out / "cache"  # alignkit.train.dpo's reference cache: the same pairs are never read twice
    refs = {part: reference_logps(base, pairs, pad, batch_size=batch, desc=f"reference log-probs ({part})",
                                  cache=caches / f"ref-{reference_key(cfg.model.name, tokenizer, pairs, dtype)}.pt")
            for part, pairs in encoded.items()}
    items = {"dpo": [DPOItem(p, r) for p, r in zip(encoded["train"], refs["train"])]}
    if "online" in methods:
        items["online"] = [DPOItem(p, r) for p, r in zip(encoded["online"], refs["online"])]
    # every method takes offline DPO's number of optimiser steps, however many items it has
    steps = make_plan(len(items["dpo"]), method_config(cfg, "sigmoid", 1.0, 0.0).train).total_steps
    if "kto" in methods:
        items["kto"] = [KTOItem(p, m, r, mr) for p, m, r, mr in
                        zip(encoded["train"], encoded["mismatched"], refs["train"], refs["mismatched"])]
    texts = [p for _, p in prompts]
    kl_encoder = answer_encoder(tokenizer, cfg.data, gen.max_new_tokens)
    made = generate(base.lm, encoder, texts, gen, seed=cfg.seed, desc="generate base")
    answers = [_answers("base", prompts, made, 0.0)]
    seconds["shared"] = time.perf_counter() - started
    pair_tables, grids, runs = [], {}, {}
    for method in methods:
        t0, grid, validation, best = time.perf_counter(), [], [], None
        for k, scale in enumerate(scales):
            mcfg = method_config(cfg, method, scale, label_smoothing, steps)
            grid.append(strength(method, mcfg, scale))
            policy, run = train_method(cfg, method, mcfg, base, items.get(method, items["dpo"]), pad)
            if choosing:
                pair_tables.append(logps_rows(policy, encoded["validation"], refs["validation"], pad, batch,
                                              split="validation", method=method, scale=scale))
                validation.append(pair_summary(pair_tables[-1], n_resamples=1))
                if choose(validation) != k:  # an earlier grid point ranks the validation fold better
                    continue
            best, runs[method], kept_scale = policy, run, scale
        del policy
        pair_tables.append(logps_rows(best, encoded["test"], refs["test"], pad, batch, split="test", method=method,
                                      scale=kept_scale))
        lm = merged(best.lm)
        made = generate(lm, encoder, texts, gen, seed=cfg.seed, desc=f"generate {method}")
        kl = sequence_kl(lm, base.lm, kl_encoder, texts, [m["response"] for m in made], batch_size=batch,
                         progress=False)
        answers.append(_answers(method, prompts, made, kl))
        del best, lm
        grids[method] = grid
        runs[method]["seconds_total"] = time.perf_counter() - t0
    table = pd.concat(answers, ignore_index=True)
    prompt_of = dict(prompts)
    scored = score_texts(rm, rm_encoder, [prompt_of[i] for i in table.prompt_id], list(table.response),
                         batch_size=gen.score_batch_size)
    table["prompt"], table["score"] = scored.prompt, scored.score
    pairs = pd.concat(pair_tables, ignore_index=True)
    per_method = summarize_variants(pairs, table, grids, seed=cfg.seed, n_resamples=n_resamples)
    for method, run in runs.items():
        per_method[method]["training"] = run
    base_rows, t = table[table.model == "base"], cfg.dpo.train
    record = {
        "methods": per_method,
        "base": {"length": {**mean_ci(base_rows.response_tokens, seed=cfg.seed, n_resamples=n_resamples),
                            "hit_limit": float(base_rows.hit_limit.mean())},
                 "mean_score": float(base_rows.score.mean())},
        "sizes": {"train_pairs": len(items["dpo"]), "pairs_per_step": t.batch_size * t.grad_accum,
                  "steps": runs[methods[0]]["steps"], "beta_scales": scales, "validation_run": choosing,
                  "validation_pairs": len(encoded.get("validation", [])), "test_pairs": len(encoded["test"]),
                  "prompts": len(prompts), "trainable": cfg.dpo.trainable.mode, "label_smoothing": label_smoothing,
                  "val_fraction": val_fraction},
        "decoding": decoding_settings(gen, cfg.seed),
        "online": None if "online" not in methods else {
            **onpolicy_summary(labels, len(encoded["online"]), seed=cfg.seed, n_resamples=n_resamples),
            "vs_offline": online_vs_offline(table, seed=cfg.seed, n_resamples=n_resamples) if "sigmoid" in methods
            else None},
        "seconds": {**seconds, "total": time.perf_counter() - started}}
    return json.loads(json.dumps(record, default=float)), pairs, table
