"""Reward-model training and evaluation: data -> split -> tokens -> the shared loop -> HF checkpoint.

Training batches are shared-prompt packed (alignkit.data.packing: the prompt computed once per pair);
evaluation and scoring take the plain batched path (alignkit.infer)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch

from alignkit.config import RunConfig
from alignkit.data.packing import pack_pairs, packed_length
from alignkit.data.preflight import preflight
from alignkit.data.sources import load_pairs, prepare_data, resolve_source
from alignkit.data.splits import train_check_pairs
from alignkit.data.tokenize import ENCODING, ChatEncoder, EncodedPair, collate_pairs, encode_pairs
from alignkit.errors import AlignkitError
from alignkit.infer import end_scores
from alignkit.io import atomic_write_json, dtype_name, file_fingerprint, fingerprint, reuse, stamped
from alignkit.losses import bradley_terry_loss, pairwise_accuracy, poe_length_loss
from alignkit.models import (RewardModel, attention_input, export_tokenizer, load_tokenizer, make_trainable,
                             trainable_in_fp32, weights_dtype)
from alignkit.prefix import backbone_hidden, prefix_cache_for
from alignkit.stats import accuracy_summary, correctness, length_diagnostics
from alignkit.train.launch import LAUNCH_FIELDS, launch, wants_launcher
from alignkit.train.loop import save_final, train

EVAL_SCORES = "eval_scores.json"
"""Per-pair scores of the training run's evaluations, saved beside the reward model:
{"untrained-test" | "trained-test" | "trained-train": {"better": [...], "worse": [...]}} in pair order."""


def response_tokens(items: Sequence[EncodedPair], whole: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """(B, 2) response tokens (better, worse) of each pair: `whole[pair.index]` when given (`whole_response_tokens`),
    else as encoded for training (after any cut)."""
    if whole is not None:
        return torch.tensor([whole[i.index] for i in items])
    return torch.tensor([[len(s.input_ids) - s.prompt_length for s in (i.better, i.worse)] for i in items])


def whole_response_tokens(encoder: ChatEncoder, pairs) -> list[tuple[int, int]]:
    """(better, worse) response tokens of every pair, in pair order, as `encoder` reads them (the evaluation
    encoder: whole responses). The length expert is given these, not the training encoding's: a response cut
    to `data.max_length` for training still counts its full length, so the expert sees the length the label
    saw (with both sides cut, the cut lengths would often be equal and tell it nothing)."""
    items, _ = encode_pairs(encoder, pairs, "cut")
    return [(len(i.better.input_ids) - i.better.prompt_length, len(i.worse.input_ids) - i.worse.prompt_length)
            for i in items]


class RewardTask:
    """Plugs the Bradley-Terry objective into the shared loop. With `length_expert`, the training loss is the
    product of experts `poe_length_loss` with the model's `length_coef` (`RewardModel.add_length_expert`), the
    expert reading each pair's `expert_tokens[pair.index]` (None: the training encoding's response tokens);
    evaluation reads the quality reward alone either way."""

    def __init__(self, pad_id: int, margin: float = 0.0, center_coef: float = 0.0, eval_batch_size: int = 8,
                 length_expert: bool = False, expert_tokens: Sequence[tuple[int, int]] | None = None):
        self.pad_id, self.margin, self.center_coef = pad_id, margin, center_coef
        self.eval_batch_size, self.length_expert, self.expert_tokens = eval_batch_size, length_expert, expert_tokens

    def collate(self, items: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        batch = collate_pairs(list(items), self.pad_id)
        return {**batch, "response_tokens": response_tokens(items, self.expert_tokens)}

    def end_scores(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        _, end = model(batch["input_ids"], batch["attention_mask"])
        half = end.shape[0] // 2
        return end[:half], end[half:]

    def step(self, model, batch):
        better, worse = self.end_scores(model, batch)
        metrics = {"accuracy": pairwise_accuracy(better, worse).detach(),
                   "reward_margin": (better - worse).mean().detach()}
        if not self.length_expert:
            return bradley_terry_loss(better, worse, margin=self.margin, center_coef=self.center_coef), metrics
        coef = getattr(getattr(model, "module", model), "length_coef", None)  # the RewardModel's (under a wrapper too)
        if coef is None:
            raise AlignkitError("rm.length_expert is on but the model has no length expert; call "
                                "model.add_length_expert() before training (run_reward_model does)")
        tokens = batch["response_tokens"]
        loss = poe_length_loss(better, worse, tokens[:, 0], tokens[:, 1], coef, margin=self.margin,
                               center_coef=self.center_coef)
        return loss, {**metrics, "length_coef": coef.detach()}

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


def packed_end_scores(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """RewardModel on a `pack_pairs` batch -> (better (B,), worse (B,)) rewards at each response's last token."""
    model = getattr(model, "module", model)  # under a wrapper (DeepSpeed engine), the RewardModel inside
    dtype = next(model.parameters()).dtype
    ends = batch["ends"]
    hidden = backbone_hidden(model.backbone, batch["input_ids"], attention_input(model, batch["attention_mask"], dtype),
                             position_ids=batch["position_ids"], lengths=ends[:, 1] + 1, prefix=model.prefix)
    at_ends = hidden.gather(1, ends.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, 2, H)
    scores = model.score_head(at_ends.to(model.score_head.weight.dtype)).squeeze(-1).float()
    return scores[:, 0], scores[:, 1]


class PackedRewardTask(RewardTask):
    """RewardTask whose training batches are shared-prompt packed (same loss and metrics; evaluation and
    scoring stay on the plain batched path)."""

    def collate(self, items: Sequence[EncodedPair]) -> dict[str, torch.Tensor]:
        return {**pack_pairs(list(items), self.pad_id), "response_tokens": response_tokens(items, self.expert_tokens)}

    def end_scores(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return packed_end_scores(model, batch)


def _slug(name: str) -> str:
    """'outputs/cpu/rm' -> 'outputs-cpu-rm', 'smollm2' -> 'smollm2' (one folder per evaluated model)."""
    return "".join(c if c.isalnum() or c in "._" else "-" for c in name.strip("/")).strip("-.") or "model"


def run_reward_model(cfg: RunConfig, *, resume: bool = False) -> dict:
    """Train (unless there is no train data) and evaluate a reward model; returns the metrics written.
    With `train.launcher` set, the training runs in the launcher's processes (alignkit.train.launch)."""
    if cfg.data.train.path is not None and wants_launcher(cfg.rm.train, "rm"):
        launch("rm", cfg, cfg.rm.train, resume=resume)
        path = cfg.out / "rm" / "metrics.json"
        return {**json.loads(path.read_text()), "metrics_path": str(path)}
    t0 = time.time()
    if cfg.rm.train.threads:
        torch.set_num_threads(cfg.rm.train.threads)
    train_pairs, eval_pairs, data_info = prepare_data(cfg)
    tokenizer = load_tokenizer(cfg.model.name)
    encoder = ChatEncoder(tokenizer, cfg.data.max_length, cfg.data.max_prompt_length)
    eval_encoder = ChatEncoder(tokenizer, *cfg.data.eval_lengths())
    train_items, train_cut = encode_pairs(encoder, train_pairs, cfg.data.truncation)
    eval_items, eval_cut = encode_pairs(eval_encoder, eval_pairs, cfg.data.truncation)
    model = RewardModel.from_pretrained(cfg.model.name, seed=cfg.seed, dtype=weights_dtype(cfg.model.dtype))
    model.prefix = prefix_cache_for(cfg.rm.trainable, model.backbone, cfg.out / "cache",
                                    weights_dtype(cfg.rm.trainable.prefix_dtype))
    task = PackedRewardTask(tokenizer.pad_token_id, cfg.rm.margin, cfg.rm.center_coef, cfg.rm.train.eval_batch_size,
                            length_expert=cfg.rm.length_expert, expert_tokens=whole_response_tokens(
                                eval_encoder, train_pairs) if cfg.rm.length_expert else None)
    rm_dir = cfg.out / "rm"
    metrics: dict = {"profile": cfg.profile, "model": cfg.model.name, "data": data_info,
                     "truncation": {"train": train_cut.as_dict(), "eval": eval_cut.as_dict()}}
    if train_items:
        model.eval()
        started = time.perf_counter()
        with torch.inference_mode():  # the baseline: same backbone, fresh seeded head, no training
            metrics["eval_untrained"] = task.evaluate(model, eval_items)
        seconds = {"untrained_eval": round(time.perf_counter() - started, 1)}
        scores = {"untrained-test": task.last_scores}
        model.backbone = make_trainable(model.backbone, cfg.rm.trainable, cfg.seed)
        trainable_in_fp32(model)
        if cfg.rm.length_expert:
            model.add_length_expert()
        result = train(model, task, train_items, eval_items, [packed_length(p) for p in train_items], cfg.rm.train,
                       seed=cfg.seed, checkpoint_dir=rm_dir.parent / "checkpoints" / "rm",
                       tensorboard_dir=cfg.out / "tensorboard" / "rm", resume=resume, desc="rm train",
                       run_id=fingerprint(rm_identity(cfg)))
        scores["trained-test"] = task.last_scores  # the loop's final evaluation
        train_check, _ = encode_pairs(eval_encoder, train_check_pairs(train_pairs, eval_pairs, cfg.seed),
                                      cfg.data.truncation)
        model.eval()
        started = time.perf_counter()
        with torch.inference_mode():  # every rank evaluates: under ZeRO-3 a forward needs them all
            metrics["train"] = task.evaluate(result["engine"] or model, train_check)
        seconds.update(train_steps=result["seconds"]["steps"], evals=result["seconds"]["eval"],
                       train_check=round(time.perf_counter() - started, 1))
        scores["trained-train"] = task.last_scores
        metrics.update(steps=result["steps"], eval=result["final_eval"], eval_history=result["eval_history"],
                       last_train_step=result["last_train"], train_history=result["train_history"],
                       world_size=result["world_size"])
        if cfg.rm.length_expert:  # trained beside the reward, never part of it: kept here, not in the export
            metrics["length_expert"] = {"coef_per_token": model.length_coef.item(),
                                        "unit": "score per response token (whole response, as evaluation reads it)"}
        if model.prefix is not None:
            metrics["prefix_cache"] = model.prefix.stats()
        metrics.update(seconds=seconds, wall_time_s=round(time.time() - t0, 1))  # seconds: per phase
        exported = export_tokenizer(tokenizer, encoder.ending)
        model.pad_token_id = exported.pad_token_id
        if not save_final(rm_dir, model, exported, stamped(metrics, rm_identity(cfg)), result, extra={EVAL_SCORES: {
                k: {"better": b, "worse": w} for k, (b, w) in scores.items()}}):
            return {}
        shutil.rmtree(rm_dir.parent / "checkpoints" / "rm", ignore_errors=True)
        out = rm_dir / "metrics.json"
    else:
        model.eval()
        with torch.inference_mode():
            metrics["eval"] = task.evaluate(model, eval_items)
        metrics["wall_time_s"] = round(time.time() - t0, 1)
        out = eval_only_path(cfg)
        metrics = stamped(metrics, eval_identity(cfg))
        atomic_write_json(out, metrics)
    metrics["metrics_path"] = str(out)
    return metrics


def rm_preflight(cfg: RunConfig, index: int | None = None):
    """The tokenization preflight (alignkit.data.preflight) on pair `index` of the profile's training data
    (its eval data when there is no training data; None = the first pair training does not truncate), with
    the tokenizer and pad token the export uses."""
    d = cfg.data
    source = d.train if d.train.path is not None else d.eval
    if source.path is None:
        raise AlignkitError("preflight needs data: set data.train.path (--data) or data.eval.path (--eval-data)")
    pairs, _ = load_pairs(resolve_source(source.path, source.local_name), source.template, name=source.subset,
                          split=source.split, max_rows=source.max_pairs, seed=cfg.seed)
    encoder = ChatEncoder(load_tokenizer(cfg.model.name), d.max_length, d.max_prompt_length)
    if index is None:
        uncut = (i for i, p in enumerate(pairs) if not any(
            s.response_cut or s.prompt_cut for s in (encoder.encode(p.prompt, p.better), encoder.encode(p.prompt, p.worse))))
        index = next(uncut, 0)
    if not 0 <= index < len(pairs):
        raise AlignkitError(f"pair index {index} is out of range: the data has {len(pairs)} pairs")
    return preflight(encoder, pairs[index], export_tokenizer(encoder.tokenizer, encoder.ending).pad_token_id)


def dtype_identity(setting: str) -> str:
    """A dtype setting as a run's identity records it: 'auto' as this machine resolves it ('auto: bfloat16'),
    so a run is never reused across precisions."""
    return f"auto: {dtype_name(weights_dtype('auto'))}" if setting == "auto" else setting


def trainable_identity(trainable: dict) -> dict:
    """A `trainable` section (as a dict) as a run's identity records it: `prefix_dtype` left out at float32 (runs
    from before the option keep their identity), otherwise resolved by `dtype_identity`. In place; returns it."""
    if (setting := trainable.pop("prefix_dtype", "float32")) != "float32":
        trainable["prefix_dtype"] = dtype_identity(setting)
    return trainable


def scorer(cfg: RunConfig, rm_dir: Path) -> RewardModel:
    """The trained reward model in `rm_dir`, frozen, in `rm.score_dtype` as this device resolves it: the scorer of
    chapters 5 and 6 (the training run's evaluations and chapter 3 score in the weights' dtype)."""
    return RewardModel.from_pretrained(str(rm_dir), dtype=weights_dtype(cfg.rm.score_dtype)).eval()


def scorer_identity(cfg: RunConfig) -> dict:
    """`rm.score_dtype` as a scoring step's identity records it: nothing at float32 (identities from before the
    option hold), else {'score_dtype': its resolution here}."""
    return {} if cfg.rm.score_dtype == "float32" else {"score_dtype": dtype_identity(cfg.rm.score_dtype)}


def rm_identity(cfg: RunConfig) -> dict:
    """Everything a reward model's numbers depend on: the encoding, seed, model, data and `rm` settings (not
    the DPO or generation sections, nor how training is launched)."""
    settings = cfg.to_dict()
    rm = settings["rm"]
    if not rm["length_expert"]:  # off, as before the option existed: earlier runs keep their identity
        del rm["length_expert"]
    rm["train"] = {k: v for k, v in rm["train"].items() if k not in LAUNCH_FIELDS}
    del rm["score_dtype"]  # how the trained model is read later, not what it is
    trainable_identity(rm["trainable"])
    settings["model"]["dtype"] = dtype_identity(cfg.model.dtype)
    if cfg.hub_mirror.enabled:  # the Hub ids then name the mirror's splits, which these settings size
        settings["data"]["hub_mirror"] = settings["hub_mirror"]
    return {"encoding": ENCODING, **{k: settings[k] for k in ("seed", "model", "data")}, "rm": rm}


def eval_only_path(cfg: RunConfig) -> Path:
    """Where an eval-only run (no training data) of `cfg.model.name` writes its metrics."""
    return cfg.out / "rm_eval" / _slug(cfg.model.name) / "metrics.json"


def eval_identity(cfg: RunConfig) -> dict:
    """An eval-only run's identity: its settings, plus the content of the model it loads (a saved reward
    model by its own identity, other weights by their files' hashes, a Hub id or
    'smollm2' (pinned by the lock) by name) and of the eval file."""
    folder = Path(cfg.model.name)
    if (folder / "metrics.json").exists():
        model = json.loads((folder / "metrics.json").read_text()).get("identity")
    elif folder.is_dir():
        model = fingerprint(sorted((f.name, file_fingerprint(f)) for f in folder.glob("*.safetensors")))
    else:
        model = cfg.model.name
    data = cfg.data.eval.path
    return {**rm_identity(cfg), "model_content": model,
            "data_content": file_fingerprint(data) if data and Path(data).is_file() else data}


def reward_model_metrics(cfg: RunConfig, *, force: bool = False) -> dict:
    """The metrics of this exact config's reward model: reused from outputs/<profile>/rm/metrics.json when
    that run had the same config, else trained now (`force=True` always retrains)."""
    path = cfg.out / "rm" / "metrics.json"
    saved = None if force else reuse(path, rm_identity(cfg))
    if saved is not None:
        return {**saved, "metrics_path": str(path), "reused": True}
    return run_reward_model(cfg, resume=not force)

