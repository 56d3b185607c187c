"""DPO and its variants on preference pairs: the shared loop with a batch -> loss function.

Chosen and rejected go through the policy in one concatenated forward. Reference log-probs are computed
once before training (the policy with LoRA disabled, or the policy before its first update; under a launcher
each rank reads its share of the pairs) and cached on disk, keyed by model, tokenizer and token ids, so a
training step needs no reference forward;
`dpo.reference=forward` recomputes them every step instead.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from alignkit import losses
from alignkit.config import DPOConfig, RunConfig
from alignkit.data.sources import prepare_data
from alignkit.data.splits import seeded_sample, train_check_pairs
from alignkit.data.tokenize import (ENCODING, ChatEncoder, EncodedPair, causal_padding_mask, collate_pairs,
                                    encode_pairs)
from alignkit.errors import AlignkitError
from alignkit.infer import in_length_order, response_logps
from alignkit.io import atomic_path, dtype_name, file_fingerprint, fingerprint, main_process, reuse, stamped
from alignkit.models import (Policy, decoder_and_head, load_tokenizer, make_trainable, resolve_model,
                             response_positions, trainable_in_fp32, weights_dtype)
from alignkit.prefix import PrefixCache, prefix_cache_for
from alignkit.stats import accuracy_summary, correctness, mean_ci
from alignkit.train.launch import LAUNCH_FIELDS, launch, wants_launcher
from alignkit.train.loop import save_final, train
from alignkit.train.rm import dtype_identity, trainable_identity

LOSSES = ("sigmoid", "robust", "ipo", "rdpo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")


@dataclass(frozen=True)
class DPOItem:
    pair: EncodedPair
    reference: tuple[float, float] | None = None
    """Cached reference log-probs of (better, worse); None = compute them in the step."""


class DPOTask:
    """Plugs a DPO-family objective into the shared loop. Metrics follow TRL's names: rewards are the
    implicit rewards beta * (log pi - log pi_ref) (reference-free losses: beta * average log-prob).

    With a reference, `logratio_chosen`/`logratio_rejected` are the sequence log-ratios log pi(y|x) -
    log pi_ref(y|x) of the pair's responses, and `logratio` their mean: the sequence-level KL estimator
    evaluated on the dataset's responses. It equals KL(pi || pi_ref) in expectation only for responses drawn
    from pi; on fixed (off-policy) pairs it is how far the policy moved on them, and it can be negative
    (DPO often lowers both sides). `alignkit.infer.sequence_kl` measures the KL on the policy's samples."""

    def __init__(self, pad_id: int, cfg: DPOConfig, reference_model: Policy | None = None,
                 eval_batch_size: int = 8):
        if cfg.loss not in LOSSES:
            raise AlignkitError(f"dpo.loss must be one of {', '.join(LOSSES)}; got {cfg.loss!r}")
        if cfg.loss == "robust" and not 0 <= cfg.label_smoothing < 0.5:
            raise AlignkitError("dpo.label_smoothing (the flip rate) must be in [0, 0.5) for robust DPO")
        self.pad_id, self.cfg, self.reference_model = pad_id, cfg, reference_model
        self.eval_batch_size = eval_batch_size

    def collate(self, items: Sequence[DPOItem]) -> dict[str, torch.Tensor]:
        batch = collate_pairs([i.pair for i in items], self.pad_id)
        # built on the CPU, so the forward reads nothing back from the device (alignkit.models.Policy)
        batch["response_index"] = response_positions(batch["response_mask"])
        batch["attention_mask"] = causal_padding_mask(batch["attention_mask"])
        if all(i.reference is not None for i in items):
            batch["reference_logps"] = torch.tensor([i.reference[0] for i in items] +
                                                    [i.reference[1] for i in items])
        return batch

    def _reference(self, model, batch) -> torch.Tensor:
        if "reference_logps" in batch:
            return batch["reference_logps"]
        policy = getattr(model, "module", model)  # a DeepSpeed engine wraps the policy
        with torch.no_grad():
            if self.reference_model is not None:
                return self.reference_model(batch["input_ids"], batch["attention_mask"], batch["response_mask"])[0]
            with policy.reference():
                return policy(batch["input_ids"], batch["attention_mask"], batch["response_mask"])[0]

    def objective(self, logps: torch.Tensor, n_tokens: torch.Tensor, reference: torch.Tensor | None):
        """Concatenated (2B,) log-probs [better; worse] -> (per-pair losses, chosen rewards, rejected rewards)."""
        c = self.cfg
        half = logps.shape[0] // 2
        pw, pl = logps[:half], logps[half:]
        nw, nl = n_tokens[:half].clamp(min=1), n_tokens[half:].clamp(min=1)
        if c.loss in REFERENCE_FREE:
            aw, al = pw / nw, pl / nl
            per_pair = (losses.simpo_loss(aw, al, beta=c.beta, gamma=c.simpo_gamma) if c.loss == "simpo"
                        else losses.orpo_loss(aw, al, lam=c.orpo_lambda))
            return per_pair, c.beta * aw.detach(), c.beta * al.detach()
        rw, rl = reference[:half], reference[half:]
        if c.loss == "sigmoid":
            per_pair = losses.dpo_loss(pw, pl, rw, rl, beta=c.beta, label_smoothing=c.label_smoothing)
        elif c.loss == "robust":
            per_pair = losses.robust_dpo_loss(pw, pl, rw, rl, beta=c.beta, flip_rate=c.label_smoothing)
        elif c.loss == "ipo":  # length-averaged log-ratios, as in TRL
            per_pair = losses.ipo_loss(pw / nw, pl / nl, rw / nw, rl / nl, tau=c.beta)
        else:
            per_pair = losses.rdpo_loss(pw, pl, rw, rl, nw.float(), nl.float(), beta=c.beta, alpha=c.rdpo_alpha)
        return per_pair, c.beta * (pw - rw).detach(), c.beta * (pl - rl).detach()

    def _forward(self, model, batch):
        logps, n_tokens = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"],
                                batch.get("response_index"))
        reference = None if self.cfg.loss in REFERENCE_FREE else self._reference(model, batch).to(logps)
        per_pair, chosen, rejected = self.objective(logps, n_tokens, reference)
        half = logps.shape[0] // 2
        values = {"loss": per_pair.detach(), "reward_accuracy": losses.pairwise_accuracy(chosen, rejected),
                  "rewards_chosen": chosen, "rewards_rejected": rejected, "reward_margin": chosen - rejected,
                  "logps_chosen": logps[:half].detach(), "logps_rejected": logps[half:].detach()}
        if reference is not None:  # sequence log-ratios log pi(y|x) - log pi_ref(y|x)
            ratio = (logps - reference).detach()
            values.update(logratio_chosen=ratio[:half], logratio_rejected=ratio[half:],
                          logratio=(ratio[:half] + ratio[half:]) / 2)
        return per_pair, values

    def step(self, model, batch):
        per_pair, values = self._forward(model, batch)
        return per_pair.mean(), {k: v.mean() for k, v in values.items() if k != "loss"}

    def evaluate(self, model, items: Sequence[DPOItem]) -> dict:
        """Per-pair means over all items; reward accuracy (ties half) with its Wilson CI."""
        device = next(model.parameters()).device

        def run(chunk: list[DPOItem], _k: int) -> list[dict]:
            batch = {k: v.to(device) for k, v in self.collate(chunk).items()}
            _, values = self._forward(model, batch)
            per_pair = {k: v.float().cpu().tolist() for k, v in values.items() if k != "reward_accuracy"}
            return [{k: v[i] for k, v in per_pair.items()} for i in range(len(chunk))]

        rows = in_length_order(items, lambda i: i.pair.length, self.eval_batch_size, run)
        out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        for k in ("logratio", "logratio_chosen", "logratio_rejected"):  # over pairs: bootstrap 95% CI of the mean
            if k in out:
                out[f"{k}_ci95"] = mean_ci([r[k] for r in rows])["ci95"]
        summary = accuracy_summary(correctness([r["rewards_chosen"] for r in rows], [r["rewards_rejected"] for r in rows]))
        return {**out, "reward_accuracy": summary["accuracy"], "reward_accuracy_ci95": summary["ci95"], "n": len(rows)}


# ----------------------------------------------------------------------------- reference log-probs

def reference_key(model_name: str, tokenizer, pairs: Sequence[EncodedPair], dtype: torch.dtype,
                  prefix: PrefixCache | None = None) -> str:
    """Content address of a reference cache: the model's files (their bytes), the weights' dtype, the
    tokenizer, the exact token ids, and the precision of a cached `prefix` the reference pass runs through
    (when it is not float32)."""
    h = hashlib.sha256()
    resolved = Path(resolve_model(model_name))
    if resolved.is_dir():
        for f in sorted(resolved.glob("*.safetensors")) + [resolved / "config.json"]:
            if f.exists():
                h.update(f"{f.name}:{file_fingerprint(f)}".encode())
    h.update(f"{model_name}|{dtype_name(dtype)}|{len(tokenizer)}|{tokenizer.chat_template}".encode())
    if prefix is not None and prefix.compute_dtype != torch.float32:
        h.update(f"|prefix {dtype_name(prefix.compute_dtype)}".encode())
    for p in pairs:
        h.update(repr((p.better.input_ids, p.better.prompt_length, p.worse.input_ids, p.worse.prompt_length)).encode())
    return h.hexdigest()[:20]


def reference_logps(policy: Policy, pairs: Sequence[EncodedPair], pad_id: int, *, cache: Path | None,
                    batch_size: int = 8, desc: str = "reference log-probs") -> list[tuple[float, float]]:
    """(better, worse) reference log-probs per pair, from `cache` when it exists, else computed (the policy
    with adapters disabled, alignkit.infer's batched path) and written there atomically."""
    if cache is not None and cache.exists():
        saved = torch.load(cache)
        if saved.shape == (len(pairs), 2):
            return [tuple(row) for row in saved.tolist()]
    with policy.reference():
        out = torch.tensor(response_logps(policy, pairs, pad_id, batch_size=batch_size, desc=desc))
    if cache is not None and main_process():
        with atomic_path(cache) as tmp:
            torch.save(out, tmp)
    return [tuple(row) for row in out.tolist()]


def length_order_shard(pairs: Sequence[EncodedPair], batch_size: int, rank: int, world: int) -> list[int]:
    """Indices of the pairs rank `rank` of `world` reads: every world-th batch of the pairs in length order (the
    batches alignkit.infer.in_length_order forms in one process), in that order, so each pair is read in the same
    batch, padded alike, as in one process."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    return [i for batch in batches[rank::world] for i in batch]


def _launched_ranks(train_cfg) -> tuple[int, int]:
    """(rank, world size) of this process. Under a launcher with several ranks, the process group is started here
    as the training loop starts it (DeepSpeed's own; else gloo on the CPU, NCCL on GPUs), so that the reference
    pass before training can share its work."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        if train_cfg.deepspeed:
            import deepspeed
            deepspeed.init_distributed()
        else:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shared_reference_logps(policy: Policy, pairs: Sequence[EncodedPair], pad_id: int, *, cache: Path | None,
                           rank: int, world: int, batch_size: int = 8, desc: str = "reference log-probs"
                           ) -> list[tuple[float, float]]:
    """`reference_logps` with the pairs read once among `world` ranks rather than once by each: every rank reads
    its `length_order_shard`, and one all-reduce of the (pairs, 2) table (each row filled by one rank, zeros
    elsewhere) gives every rank all of them, bit for bit as one process computes them. The ranks agree whether
    the cache is complete first, so that all of them compute or none. Call on every rank."""
    if world == 1:
        return reference_logps(policy, pairs, pad_id, cache=cache, batch_size=batch_size, desc=desc)
    import torch.distributed as dist
    device = next(policy.parameters()).device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    saved = torch.load(cache) if cache is not None and cache.exists() else None
    found = torch.tensor([saved is not None and saved.shape == (len(pairs), 2)], dtype=torch.int32, device=device)
    dist.all_reduce(found, op=dist.ReduceOp.MIN)
    if found.item():
        return [tuple(row) for row in saved.tolist()]
    mine = length_order_shard(pairs, batch_size, rank, world)
    table = torch.zeros(len(pairs), 2, dtype=torch.float64, device=device)
    with policy.reference():
        got = response_logps(policy, [pairs[i] for i in mine], pad_id, batch_size=batch_size, desc=desc)
    if mine:
        table[mine] = torch.tensor(got, dtype=torch.float64, device=device)
    dist.all_reduce(table)
    out = table.cpu().float()  # float32 values, exactly as the one-process path keeps them
    if cache is not None and rank == 0:
        with atomic_path(cache) as tmp:
            torch.save(out, tmp)
    return [tuple(row) for row in out.tolist()]


# ----------------------------------------------------------------------------- the run

def dpo_training_pairs(cfg: RunConfig, train_pairs: list) -> list:
    """The pairs of the training split that DPO trains on: a seeded `dpo.max_pairs` sample (all when unset)."""
    return seeded_sample(train_pairs, cfg.dpo.max_pairs, cfg.seed)


def dpo_identity(cfg: RunConfig) -> dict:
    """Everything a DPO run's numbers depend on: encoding, seed, model, data and `dpo` settings (not how its
    training is launched)."""
    full = cfg.to_dict()
    full["dpo"]["train"] = {k: v for k, v in full["dpo"]["train"].items() if k not in LAUNCH_FIELDS}
    trainable_identity(full["dpo"]["trainable"])
    full["model"]["dtype"] = dtype_identity(cfg.model.dtype)
    if cfg.hub_mirror.enabled:  # the Hub ids then name the mirror's splits, which these settings size
        full["data"]["hub_mirror"] = full["hub_mirror"]
    return {"encoding": ENCODING, **{k: full[k] for k in ("seed", "model", "data", "dpo")}}


def run_dpo(cfg: RunConfig, *, resume: bool = False) -> dict:
    """Fine-tune the policy with the configured DPO-family loss on the profile's training split (the same
    split as the reward model's); writes outputs/<profile>/dpo/ (HF causal LM + metrics.json)."""
    d = cfg.dpo
    if wants_launcher(d.train, "dpo"):  # train in the launcher's processes (alignkit.train.launch)
        launch("dpo", cfg, d.train, resume=resume)
        path = cfg.out / "dpo" / "metrics.json"
        return {**json.loads(path.read_text()), "metrics_path": str(path)}
    t0 = time.time()
    if d.reference not in ("cache", "forward"):
        raise AlignkitError(f"dpo.reference must be 'cache' or 'forward', got {d.reference!r}")
    if d.train.threads:
        torch.set_num_threads(d.train.threads)
    train_pairs, eval_pairs, data_info = prepare_data(cfg)
    if not train_pairs:
        raise AlignkitError("DPO needs training pairs: set data.train.path (or --data)")
    train_pairs = dpo_training_pairs(cfg, train_pairs)
    data_info["n_dpo_train"] = len(train_pairs)
    tokenizer = load_tokenizer(cfg.model.name)
    encoder = ChatEncoder(tokenizer, cfg.data.max_length, cfg.data.max_prompt_length)
    train_encoded, train_cut = encode_pairs(encoder, train_pairs, cfg.data.truncation)
    eval_encoded, eval_cut = encode_pairs(encoder, eval_pairs, cfg.data.truncation)
    dtype = weights_dtype(cfg.model.dtype)
    policy = Policy.from_pretrained(cfg.model.name, dtype=dtype)
    # filled by the reference pass below (or the first epoch): later epochs and evaluations run the top blocks only
    policy.prefix = prefix_cache_for(d.trainable, decoder_and_head(policy.lm)[0], cfg.out / "cache",
                                     weights_dtype(d.trainable.prefix_dtype))
    pad = tokenizer.pad_token_id

    train_refs = eval_refs = None
    reference_model = None
    timings: dict[str, float] = {}
    if d.loss not in REFERENCE_FREE and d.reference == "cache":
        t = time.time()
        caches = cfg.out / "cache"
        rank, world = _launched_ranks(d.train)
        train_refs, eval_refs = (shared_reference_logps(
            policy, encoded, pad, rank=rank, world=world, batch_size=d.train.eval_batch_size,
            cache=caches / f"ref-{reference_key(cfg.model.name, tokenizer, encoded, dtype, policy.prefix)}.pt")
            for encoded in (train_encoded, eval_encoded))
        timings["reference_s"] = round(time.time() - t, 1)
    elif d.loss not in REFERENCE_FREE and d.trainable.mode != "lora":
        reference_model = copy.deepcopy(policy).requires_grad_(False).eval()
        reference_model.prefix = policy.prefix  # the same frozen blocks
    train_items = [DPOItem(p, train_refs[i] if train_refs else None) for i, p in enumerate(train_encoded)]
    eval_items = [DPOItem(p, eval_refs[i] if eval_refs else None) for i, p in enumerate(eval_encoded)]

    policy.lm = trainable_in_fp32(make_trainable(policy.lm, d.trainable, cfg.seed))
    task = DPOTask(pad, d, reference_model, d.train.eval_batch_size)
    result = train(policy, task, train_items, eval_items, [i.pair.length for i in train_items], d.train,
                   seed=cfg.seed, checkpoint_dir=cfg.out / "checkpoints" / "dpo",
                   tensorboard_dir=cfg.out / "tensorboard" / "dpo", resume=resume, desc="dpo train",
                   run_id=fingerprint(dpo_identity(cfg)))
    # train-side metrics on a seeded sample of the pairs trained on, as large as the test split
    sample = train_check_pairs(train_items, eval_items, cfg.seed)
    policy.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        train_eval = task.evaluate(result["engine"] or policy, sample)
    seconds = {"reference": timings.get("reference_s", 0.0), "train_steps": result["seconds"]["steps"],
               "evals": result["seconds"]["eval"], "train_check": round(time.perf_counter() - started, 1)}
    metrics = {"profile": cfg.profile, "model": cfg.model.name, "data": data_info,
               "truncation": {"train": train_cut.as_dict(), "eval": eval_cut.as_dict()},
               "steps": result["steps"], "train": train_eval, "eval": result["final_eval"],
               "eval_history": result["eval_history"], "last_train_step": result["last_train"],
               "train_history": result["train_history"],
               "world_size": result["world_size"],
               **timings, "seconds": seconds, "wall_time_s": round(time.time() - t0, 1)}
    if policy.prefix is not None:
        metrics["prefix_cache"] = policy.prefix.stats()
    out_dir = cfg.out / "dpo"
    if not save_final(out_dir, policy, tokenizer, stamped(metrics, dpo_identity(cfg)), result):
        return {}
    shutil.rmtree(cfg.out / "checkpoints" / "dpo", ignore_errors=True)
    metrics["metrics_path"] = str(out_dir / "metrics.json")
    return metrics


def dpo_metrics(cfg: RunConfig, *, force: bool = False) -> dict:
    """This exact config's DPO run: reused from outputs/<profile>/dpo/metrics.json when the saved run had
    the same settings, else trained now (resuming an interrupted run; `force=True` starts over)."""
    path = cfg.out / "dpo" / "metrics.json"
    saved = None if force else reuse(path, dpo_identity(cfg))
    if saved is not None:
        return {**saved, "metrics_path": str(path), "reused": True}
    return run_dpo(cfg, resume=not force)
