"""The one training loop (reward model and DPO share it): AdamW + warm-up/cosine schedule, gradient
accumulation, bf16 autocast, periodic eval, TensorBoard scalars, atomic checkpoints and exact resume.
Plain torch by default (DistributedDataParallel when a launcher starts several processes); DeepSpeed
(ZeRO JSON config) when `train.deepspeed` is set. Under several processes each rank trains on its own
shard of every epoch's batches (rank r takes batches r, r + world, ...), so a step of `world` processes
with `grad_accum` micro-batches each sees exactly the batches of a one-process step with
`world * grad_accum`; only rank 0 writes checkpoints (DeepSpeed: each rank its ZeRO shard), TensorBoard
scalars and artifacts.

A step weighs its items alike (an epoch's last batch may be short): each micro-batch's mean loss is
multiplied by its share of the step's items (`item_weights`), so a step equals one batch of all its items;
DeepSpeed does not divide by `grad_accum` itself (`scale_wrt_gas=False`); logged metrics are weighed alike.

A task plugs in three things: `collate(items) -> batch`, `step(model, batch) -> (loss, metrics)` and
`evaluate(model, items) -> metrics`. Batches are drawn in a seeded, length-grouped order that depends only
on (seed, epoch), so a resumed run replays exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from alignkit.config import TrainConfig
from alignkit.data.tokenize import length_grouped_order
from alignkit.errors import AlignkitError
from alignkit.io import atomic_dir, atomic_write_json


class Task(Protocol):
    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]: ...
    def step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def evaluate(self, model: nn.Module, items: Sequence[Any]) -> dict[str, float]: ...


class TrainingError(AlignkitError):
    pass


def cosine_lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier at `step` (0-based): linear warm-up to 1, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast(bf16: bool, device: torch.device):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass
class Plan:
    """How many optimizer steps, and which micro-batch of which epoch each step consumes."""

    batches_per_epoch: int
    grad_accum: int
    total_steps: int

    def micro_batches(self, step: int, orders: Callable[[int], list[list[int]]], world: int = 1
                      ) -> list[list[list[int]]]:
        """Step `step`'s micro-batches of every rank: [j][r] = the item indices of rank r's j-th micro-batch.
        `orders(epoch)` lists the epoch's batches; rank r's i-th is batch i * world + r."""
        out = []
        for k in range(step * self.grad_accum, (step + 1) * self.grad_accum):
            epoch, index = divmod(k, self.batches_per_epoch)
            out.append(orders(epoch)[index * world:(index + 1) * world])
        return out


def item_weights(step_batches: list[list[list[int]]], rank: int = 0) -> list[float]:
    """The factor for each of rank `rank`'s micro-batch mean losses ([j][r] as `Plan.micro_batches`): its
    share of the step's items over all ranks, times the ranks (DDP and DeepSpeed average the ranks'
    gradients). Full micro-batches get 1/grad_accum, a short last batch its smaller share."""
    world = len(step_batches[0])
    total = sum(len(indices) for ranks in step_batches for indices in ranks)
    return [len(ranks[rank]) * world / total for ranks in step_batches]


def make_plan(n_items: int, cfg: TrainConfig, world_size: int = 1) -> Plan:
    batches = math.ceil(n_items / cfg.batch_size) // world_size
    if batches < 1:
        raise AlignkitError(f"{n_items} training items are fewer than one batch per process")
    per_epoch = batches // cfg.grad_accum
    total = cfg.max_steps or max(1, math.floor(cfg.epochs * batches / cfg.grad_accum))
    if cfg.max_steps is None and per_epoch < 1:
        raise AlignkitError(f"one optimizer step needs {cfg.grad_accum} batches but an epoch has {batches}")
    return Plan(batches, cfg.grad_accum, total)


# ----------------------------------------------------------------------------- checkpoints

def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(ckpt_root: Path, step: int, model, optimizer, scheduler, engine=None, keep: int = 2,
                    run_id: str = "", history: dict | None = None) -> Path:
    """Call on every rank. DeepSpeed: each rank saves its shard; plain torch: rank 0 saves (DDP keeps the
    replicas equal). `history` (the run's metrics so far) is kept with it, so a resumed run reports all steps."""
    target = ckpt_root / f"step-{step:06d}"
    # written last: a checkpoint without it is incomplete
    state = {"step": step, "run_id": run_id, "history": history or {}}
    rank, world = _rank_world()
    if engine is not None:  # DeepSpeed owns its (possibly sharded) states
        engine.save_checkpoint(str(ckpt_root), tag=target.name)
    if world > 1:  # every shard is on disk before rank 0 marks the checkpoint complete
        import torch.distributed as dist
        dist.barrier()
    if rank == 0:
        if engine is not None:
            atomic_write_json(target / "alignkit_state.json", state)
        else:
            with atomic_dir(target) as tmp:
                torch.save(_trainable_state(model), tmp / "trainable.pt")
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "rng": _rng_state()}, tmp / "optimizer.pt")
                atomic_write_json(tmp / "alignkit_state.json", state)
        for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if world > 1:  # no rank moves on (or resumes) before the checkpoint is complete
        import torch.distributed as dist
        dist.barrier()
    return target


def _rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    done = [p for p in sorted(ckpt_root.glob("step-*")) if (p / "alignkit_state.json").exists()]
    return done[-1] if done else None


def checkpoint_history(path: Path) -> dict:
    """The metrics history saved with a checkpoint: {'train': [...], 'eval': [...]} (empty when none)."""
    return json.loads((path / "alignkit_state.json").read_text()).get("history", {})


def load_checkpoint(path: Path, model, optimizer, scheduler, engine=None, run_id: str = "") -> int:
    saved = json.loads((path / "alignkit_state.json").read_text())
    if saved.get("run_id", "") != run_id:
        raise AlignkitError(f"checkpoint {path} belongs to a run with a different config; resume with the "
                            f"same config, or delete {path.parent} (make report FORCE=1) to start over")
    step = saved["step"]
    if engine is not None:
        engine.load_checkpoint(str(path.parent), tag=path.name)
        return step
    state = torch.load(path / "trainable.pt", map_location="cpu")
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing or set(state) - set(params):
        raise AlignkitError(f"checkpoint {path} does not match this run's trainable parameters "
                            f"(e.g. {(missing or sorted(set(state) - set(params)))[:3]}); was the config changed?")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    rest = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(rest["optimizer"])
    scheduler.load_state_dict(rest["scheduler"])
    torch.set_rng_state(rest["rng"]["torch"])
    random.setstate(rest["rng"]["python"])
    return step


# ----------------------------------------------------------------------------- the loop

def _deepspeed_engine(model, params, optimizer, scheduler, cfg: TrainConfig):
    import deepspeed
    ds_config = json.loads(Path(cfg.deepspeed).read_text())
    ds_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds_config["gradient_accumulation_steps"] = cfg.grad_accum
    ds_config.pop("train_batch_size", None)
    ds_config["gradient_clipping"] = cfg.max_grad_norm
    if cfg.bf16:
        ds_config["bf16"] = {"enabled": True}
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=params, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine, optimizer, scheduler


class _Step(nn.Module):
    """One micro-batch's task step as a module, so that DistributedDataParallel's forward covers the whole
    step (tasks reach into the model: the packed reward model calls its backbone directly)."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch):
        return self.task.step(self.model, batch)


def _ddp(model: nn.Module, task: Task):
    """Initialise torch.distributed from the launcher's environment (gloo on the CPU, NCCL on GPUs) and
    wrap the task step in DistributedDataParallel."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    device = next(model.parameters()).device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ddp = DistributedDataParallel(_Step(model, task), device_ids=[device.index] if device.type == "cuda" else None,
                                  broadcast_buffers=False)
    return ddp, dist.get_rank(), dist.get_world_size()


def train(model: nn.Module, task: Task, train_items: Sequence[Any], eval_items: Sequence[Any],
          lengths: list[int], cfg: TrainConfig, *, seed: int, checkpoint_dir: Path,
          tensorboard_dir: Path | None, resume: bool = False, desc: str = "train",
          run_id: str = "") -> dict[str, Any]:
    """Train `model` in place. Returns {'steps', 'last_train', 'train_history', 'eval_history', 'final_eval',
    'seconds'}: `train_history` has each optimizer step's training metrics ({'step', ...}, measured before that
    step's update, so in a run's first epoch on pairs not yet trained on); `eval_history` the evaluations every
    `eval_every` steps; `seconds` = {'steps': optimizer steps (this process's share, after any resume),
    'eval': evaluations}."""
    torch.manual_seed(seed)
    random.seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise AlignkitError("no trainable parameters; check the run's `trainable` options (rm.trainable or dpo.trainable)")
    engine = ddp = None
    rank, world = 0, 1
    if cfg.deepspeed:
        import torch.distributed as dist
        import deepspeed
        deepspeed.init_distributed()
        rank, world = dist.get_rank(), dist.get_world_size()
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        ddp, rank, world = _ddp(model, task)
    plan = make_plan(len(train_items), cfg, world)
    warmup = math.floor(cfg.warmup_ratio * plan.total_steps)
    # on a GPU the fused kernel (one launch for all parameters; what transformers' Trainer uses there);
    # on the CPU, torch's default implementation
    fused = all(p.is_cuda for p in params) or None
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr_factor(s, warmup, plan.total_steps))
    if cfg.deepspeed:
        engine, optimizer, scheduler = _deepspeed_engine(model, params, optimizer, scheduler, cfg)
    device = next(model.parameters()).device if engine is None else engine.device

    orders_cache: dict[int, list[list[int]]] = {}

    def orders(epoch: int) -> list[list[int]]:
        if epoch not in orders_cache:
            batches = length_grouped_order(lengths, cfg.batch_size, seed * 1000 + epoch)
            orders_cache[epoch] = batches[:plan.batches_per_epoch * world]
        return orders_cache[epoch]

    start = 0
    saved_history: dict = {}
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        found = latest_checkpoint(checkpoint_dir)
        if found is not None:
            start = load_checkpoint(found, model, optimizer, scheduler, engine, run_id)
            saved_history = checkpoint_history(found)
            print(f"{desc}: resumed from {found} (step {start}/{plan.total_steps})", flush=True)
    writer = None
    if tensorboard_dir is not None and rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(tensorboard_dir), purge_step=start if start else None)

    seconds = {"steps": 0.0, "eval": 0.0}

    def run_eval(step: int) -> dict[str, float]:
        started = time.perf_counter()
        model.eval()
        with torch.inference_mode(), autocast(cfg.bf16, device):
            metrics = task.evaluate(engine or model, eval_items)
        model.train()
        if writer:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"eval/{key}", value, step)
            writer.flush()
        seconds["eval"] += time.perf_counter() - started
        return metrics

    history: list[dict] = list(saved_history.get("eval", []))
    train_history: list[dict] = list(saved_history.get("train", []))
    last: dict[str, float] = {}
    model.train()
    bar = tqdm(range(start, plan.total_steps), initial=start, total=plan.total_steps, desc=desc,
               disable=rank != 0, dynamic_ncols=True)
    for step in bar:
        step_started = time.perf_counter()
        values: dict[str, list[torch.Tensor]] = {}
        step_batches = plan.micro_batches(step, orders, world)
        micro_batches = [ranks[rank] for ranks in step_batches]
        weights = item_weights(step_batches, rank)
        for j, indices in enumerate(micro_batches):
            batch = {k: v.to(device) for k, v in task.collate([train_items[i] for i in indices]).items()}
            # DDP averages the gradients over the ranks at the step's last micro-batch only
            sync = contextlib.nullcontext() if ddp is None or j == len(micro_batches) - 1 else ddp.no_sync()
            with sync:
                with autocast(cfg.bf16, device):
                    loss, metrics = ddp(batch) if ddp is not None else task.step(engine or model, batch)
                if engine is not None:  # DeepSpeed may update at any micro-batch: check each before its step
                    _require_finite([float(loss)], micro_batches[j:j + 1], step, checkpoint_dir)
                    engine.backward(loss * weights[j], scale_wrt_gas=False)
                    engine.step()
                else:
                    (loss * weights[j]).backward()
            for key, value in {"loss": loss, **metrics}.items():
                values.setdefault(key, []).append(value.detach().float().reshape(()))
        # the step's one device-to-host read: every micro-batch's metrics at once
        read = torch.stack([torch.stack(v) for v in values.values()]).double().tolist()
        # each micro-batch by its share of this rank's items, summed in micro-batch order
        shares = [len(indices) / sum(map(len, micro_batches)) for indices in micro_batches]
        sums = {key: sum(v * w for v, w in zip(row, shares)) for key, row in zip(values, read)}
        if engine is None:
            _require_finite(read[0], micro_batches, step, checkpoint_dir)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        last = sums
        done = step + 1
        train_history.append({"step": done, **sums})
        seconds["steps"] += time.perf_counter() - step_started
        bar.set_postfix({k: f"{v:.3f}" for k, v in sums.items() if k in ("loss", "accuracy", "reward_accuracy")})
        if writer and (done % cfg.log_every == 0 or done == plan.total_steps):
            for key, value in sums.items():
                writer.add_scalar(f"train/{key}", value, done)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], done)
        if cfg.eval_every and done % cfg.eval_every == 0 and done < plan.total_steps and eval_items:
            history.append({"step": done, **run_eval(done)})
        if cfg.save_every and done % cfg.save_every == 0 and done < plan.total_steps:
            save_checkpoint(checkpoint_dir, done, model, optimizer, scheduler, engine, run_id=run_id,
                            history={"train": train_history, "eval": history})
    bar.close()
    final = run_eval(plan.total_steps) if eval_items else {}
    if writer:
        writer.close()
    return {"steps": plan.total_steps, "last_train": last, "train_history": train_history,
            "eval_history": history, "final_eval": final,
            "rank": rank, "world_size": world, "engine": engine,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def _require_finite(losses: list[float], micro_batches: list[list[int]], step: int, checkpoint_dir: Path) -> None:
    """Raise before the optimizer step (no weight changed) when a micro-batch's loss is NaN or infinite."""
    for loss, indices in zip(losses, micro_batches):
        if not math.isfinite(loss):
            last_ckpt = latest_checkpoint(checkpoint_dir)
            raise TrainingError(
                f"non-finite loss ({loss}) at step {step + 1}, micro-batch of items {indices}. "
                f"Nothing was saved for this step; last checkpoint: {last_ckpt or 'none'}. Lower the run's "
                f"train.lr (rm.train.lr or dpo.train.lr), turn off its train.bf16, or check those rows.")


def full_parameters(model: nn.Module, engine=None):
    """Context in which every rank holds the full weights (ZeRO-3 partitions them); call on all ranks."""
    if engine is not None and engine.zero_optimization_stage() == 3:
        import deepspeed
        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


def save_final(out_dir: Path, model: nn.Module, tokenizer, metrics: dict, result: dict,
               extra: dict[str, object] | None = None) -> bool:
    """Write the trained model, tokenizer, metrics.json and the `extra` JSON files ({name: content}) to
    `out_dir` in one atomic rename (all or none), from rank 0 with the full weights gathered. Call on every
    rank; returns True on rank 0."""
    with full_parameters(model, result["engine"]):
        if result["rank"] == 0:
            with atomic_dir(out_dir) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                atomic_write_json(tmp / "metrics.json", metrics)
                for name, content in (extra or {}).items():
                    atomic_write_json(tmp / name, content)
    return result["rank"] == 0
