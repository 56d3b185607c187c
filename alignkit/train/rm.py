"""Reward-model training and evaluation: data -> split -> tokens -> the shared loop -> HF checkpoint."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from typing import Sequence

import torch

from alignkit.config import RunConfig
from alignkit.data.sources import load_pairs, resolve_source, seeded_sample, split_by_prompt
from alignkit.data.templates import PreferencePair
from alignkit.data.tokenize import ENCODING, ChatEncoder, EncodedPair, collate_pairs, encode_pairs
from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_json, atomic_write_text
from alignkit.losses import bradley_terry_loss, pairwise_accuracy
from alignkit.models import RewardModel, export_tokenizer, load_tokenizer, make_trainable
from alignkit.stats import accuracy_summary, correctness, length_diagnostics
from alignkit.scoring import EVAL_SCORES, end_scores
from alignkit.train.launch import LAUNCH_FIELDS, launch, main_process, wants_launcher
from alignkit.train.loop import save_final, train


class RewardTask:
    """Plugs the Bradley-Terry objective into the shared loop."""

    def __init__(self, pad_id: int, margin: float = 0.0, center_coef: float = 0.0, eval_batch_size: int = 8):
        self.pad_id, self.margin, self.center_coef = pad_id, margin, center_coef
        self.eval_batch_size = eval_batch_size

    def collate(self, items: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        return collate_pairs(list(items), self.pad_id)

    def end_scores(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        _, end = model(batch["input_ids"], batch["attention_mask"])
        half = end.shape[0] // 2
        return end[:half], end[half:]

    def step(self, model, batch):
        better, worse = self.end_scores(model, batch)
        loss = bradley_terry_loss(better, worse, margin=self.margin, center_coef=self.center_coef)
        return loss, {"accuracy": pairwise_accuracy(better, worse).detach(),
                      "reward_margin": (better - worse).mean().detach()}

    def pair_scores(self, model, items: Sequence[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """(better, worse) end scores, each (N,), in the order of `items`."""
        sequences = [i.better for i in items] + [i.worse for i in items]
        scores = end_scores(model, sequences, self.pad_id, batch_size=2 * self.eval_batch_size)
        return scores[:len(items)], scores[len(items):]

    last_scores: tuple[list[float], list[float]] | None = None
    """(better, worse) per pair of the latest `evaluate` call, for the score tables of chapter 3."""

    def evaluate(self, model, items: Sequence[EncodedPair]) -> dict:
        better, worse = self.pair_scores(model, items)
        self.last_scores = (better.tolist(), worse.tolist())
        rewards = torch.cat([better, worse])
        summary = accuracy_summary(correctness(better.tolist(), worse.tolist()))
        lengths = [[len(s.input_ids) - s.prompt_length for s in (i.better, i.worse)] for i in items]
        diagnostics = length_diagnostics(better.tolist(), worse.tolist(), *zip(*lengths))
        return {"accuracy": summary["accuracy"], "n": summary["n"], "ci95": summary["ci95"],
                "loss": bradley_terry_loss(better, worse).item(),
                "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item(),
                "length_matched_accuracy": diagnostics["length_matched"]["accuracy"],
                "longer_wins_accuracy": diagnostics["longer_wins"]["accuracy"], "length": diagnostics}


def _slug(name: str) -> str:
    """'outputs/cpu/rm' -> 'outputs-cpu-rm', 'smollm2' -> 'smollm2' (one folder per evaluated model)."""
    return "".join(c if c.isalnum() or c in "._" else "-" for c in name.strip("/")).strip("-.") or "model"


def _write_pairs(path, pairs: list[PreferencePair]) -> None:
    atomic_write_text(path, "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs))


def prepare_data(cfg: RunConfig) -> tuple[list[PreferencePair], list[PreferencePair], dict]:
    """Load train/eval pairs as configured; write the split to outputs/<profile>/data/."""
    d = cfg.data
    info: dict = {}
    train_pairs: list[PreferencePair] = []
    if d.train_path is not None:
        source = resolve_source(d.train_path, d.local_name)
        train_pairs, report = load_pairs(source, d.train_template, name=d.train_subset, split=d.train_split,
                                         max_rows=d.max_pairs, seed=cfg.seed)
        info["train_source"] = {"path": source, "rows": report.rows, "skipped": report.skipped}
    if d.eval_path is not None:
        eval_pairs, report = load_pairs(d.eval_path, d.eval_template, name=d.eval_subset, split=d.eval_split)
        info["eval_source"] = {"path": d.eval_path, "rows": report.rows, "skipped": report.skipped}
    elif train_pairs:
        train_pairs, eval_pairs = split_by_prompt(train_pairs, d.test_fraction, cfg.seed)
        info["split"] = {"by": "prompt", "test_fraction": d.test_fraction, "seed": cfg.seed}
    else:
        raise AlignkitError("nothing to evaluate: no training data (data.train_path is empty) and no "
                            "data.eval_path; pass --eval-data PATH (e.g. outputs/<profile>/data/test.jsonl "
                            "with --eval-template ALIGNKIT)")
    info.update(n_train=len(train_pairs), n_eval=len(eval_pairs))
    if train_pairs and main_process():  # an eval-only run leaves the training run's split alone
        data_dir = cfg.out / "data"
        info["prompt_overlap"] = len({p.prompt_id for p in train_pairs} & {p.prompt_id for p in eval_pairs})
        _write_pairs(data_dir / "train.jsonl", train_pairs)
        _write_pairs(data_dir / "test.jsonl", eval_pairs)
        atomic_write_json(data_dir / "split.json", {
            **info, "train_prompt_ids": sorted({p.prompt_id for p in train_pairs}),
            "test_prompt_ids": sorted({p.prompt_id for p in eval_pairs})})
    return train_pairs, eval_pairs, info


def run_reward_model(cfg: RunConfig, *, resume: bool = False) -> dict:
    """Train (unless there is no train data) and evaluate a reward model; returns the metrics written.
    With `train.launcher` set, the training runs in the launcher's processes (alignkit.train.launch)."""
    if cfg.data.train_path is not None and wants_launcher(cfg.train):
        launch("rm", cfg, cfg.train, resume=resume)
        path = cfg.out / "rm" / "metrics.json"
        return {**json.loads(path.read_text()), "metrics_path": str(path)}
    t0 = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    train_pairs, eval_pairs, data_info = prepare_data(cfg)
    tokenizer = load_tokenizer(cfg.model.name)
    encoder = ChatEncoder(tokenizer, cfg.data.max_length, cfg.data.max_prompt_length)
    eval_encoder = ChatEncoder(tokenizer, *cfg.data.eval_lengths())
    train_items, train_cut = encode_pairs(encoder, train_pairs, cfg.data.truncation)
    eval_items, eval_cut = encode_pairs(eval_encoder, eval_pairs, cfg.data.truncation)
    model = RewardModel.from_pretrained(cfg.model.name, seed=cfg.seed, dtype=getattr(torch, cfg.model.dtype))
    from alignkit.packing import PackedRewardTask, packed_length  # packing imports RewardTask from here
    # training batches are shared-prompt packed (the prompt computed once per pair); evaluation and
    # scoring stay on RewardTask's plain batched path
    task = PackedRewardTask(tokenizer.pad_token_id, cfg.reward.margin, cfg.reward.center_coef,
                            cfg.train.eval_batch_size)
    rm_dir = cfg.out / "rm"
    metrics: dict = {"profile": cfg.profile, "model": cfg.model.name, "config": rm_config(cfg), "data": data_info,
                     "truncation": {"train": train_cut.as_dict(), "eval": eval_cut.as_dict()}}
    if train_items:
        model.eval()
        with torch.inference_mode():  # the baseline: same backbone, fresh seeded head, no training
            metrics["eval_untrained"] = task.evaluate(model, eval_items)
        scores = {"untrained-test": task.last_scores}
        model.backbone = make_trainable(model.backbone, cfg.trainable, cfg.seed)
        result = train(model, task, train_items, eval_items, [packed_length(p) for p in train_items], cfg.train,
                       seed=cfg.seed, checkpoint_dir=rm_dir.parent / "checkpoints" / "rm",
                       tensorboard_dir=cfg.out / "tensorboard" / "rm", resume=resume, desc="rm train",
                       run_id=config_hash(rm_config(cfg)))
        scores["trained-test"] = task.last_scores  # the loop's final evaluation
        train_check, _ = encode_pairs(eval_encoder, train_check_pairs(train_pairs, eval_pairs, cfg.seed),
                                      cfg.data.truncation)
        model.eval()
        with torch.inference_mode():  # every rank evaluates: under ZeRO-3 a forward needs them all
            metrics["train"] = task.evaluate(result["engine"] or model, train_check)
        scores["trained-train"] = task.last_scores
        metrics.update(steps=result["steps"], eval=result["final_eval"], eval_history=result["eval_history"],
                       last_train_step=result["last_train"], world_size=result["world_size"])
        metrics["wall_time_s"] = round(time.time() - t0, 1)
        exported = export_tokenizer(tokenizer, encoder.ending)
        model.pad_token_id = exported.pad_token_id
        if not save_final(rm_dir, model, exported, metrics, result, extra={EVAL_SCORES: {
                k: {"better": b, "worse": w} for k, (b, w) in scores.items()}}):
            return {}
        shutil.rmtree(rm_dir.parent / "checkpoints" / "rm", ignore_errors=True)
        out = rm_dir / "metrics.json"
    else:
        model.eval()
        with torch.inference_mode():
            metrics["eval"] = task.evaluate(model, eval_items)
        metrics["wall_time_s"] = round(time.time() - t0, 1)
        out = cfg.out / "rm_eval" / _slug(cfg.model.name) / "metrics.json"
        atomic_write_json(out, metrics)
    metrics["metrics_path"] = str(out)
    return metrics


def rm_preflight(cfg: RunConfig, index: int | None = None):
    """The tokenization preflight (alignkit.data.preflight) on pair `index` of the profile's training data
    (its eval data when there is no training data; None = the first pair training does not truncate), with
    the tokenizer and pad token the export uses."""
    from alignkit.data.preflight import preflight
    d = cfg.data
    path, template = ((resolve_source(d.train_path, d.local_name), d.train_template) if d.train_path is not None
                      else (d.eval_path, d.eval_template))
    if path is None:
        raise AlignkitError("preflight needs data: set data.train_path (--data) or data.eval_path (--eval-data)")
    pairs, _ = load_pairs(path, template, max_rows=d.max_pairs, seed=cfg.seed)
    encoder = ChatEncoder(load_tokenizer(cfg.model.name), d.max_length, d.max_prompt_length)
    if index is None:
        uncut = (i for i, p in enumerate(pairs) if not any(
            s.response_cut or s.prompt_cut for s in (encoder.encode(p.prompt, p.better), encoder.encode(p.prompt, p.worse))))
        index = next(uncut, 0)
    if not 0 <= index < len(pairs):
        raise AlignkitError(f"pair index {index} is out of range: the data has {len(pairs)} pairs")
    return preflight(encoder, pairs[index], export_tokenizer(encoder.tokenizer, encoder.ending).pad_token_id)


def train_check_pairs(train_pairs: list, eval_pairs: list, seed: int) -> list:
    """The training pairs a model is measured on after training: a seeded sample as large as the test split,
    so train and test accuracy carry confidence intervals of the same width (and cost the same to score)."""
    return seeded_sample(train_pairs, max(len(eval_pairs), 1), seed)


def rm_config(cfg: RunConfig) -> dict:
    """The settings a reward model depends on (the DPO and generation sections and how training is
    launched are not among them)."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("dpo", "generation")}
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in LAUNCH_FIELDS}
    return {"encoding": ENCODING, **settings}


def config_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def reward_model_metrics(cfg: RunConfig, *, force: bool = False) -> dict:
    """The metrics of this exact config's reward model: reused from outputs/<profile>/rm/metrics.json when
    that run had the same config, else trained now (`force=True` always retrains)."""
    path = cfg.out / "rm" / "metrics.json"
    if not force and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("config") == json.loads(json.dumps(rm_config(cfg))):
            saved["metrics_path"] = str(path)
            saved["reused"] = True
            return saved
    return run_reward_model(cfg, resume=not force)

