"""The loop reads a step's metrics from the device once, after its micro-batches: the same numbers (and the
same trained weights) as reading each micro-batch's metrics as it comes."""
import importlib.util
import subprocess
import sys

import torch

from alignkit.config import TrainConfig, TrainableConfig
from alignkit.data.packing import packed_length
from alignkit.data.tokenize import ChatEncoder, encode_pairs
from alignkit.models import RewardModel, make_trainable
from alignkit.train import loop
from alignkit.train.rm import PackedRewardTask


def _first_version_of_loop(tmp_path):
    """alignkit/train/loop.py as it was before the loop read a step's metrics at once (the git history's
    version before the commit that added `_require_finite`), loaded as a separate module."""
    source = subprocess.run(["git", "log", "--format=%H", "-S", "_require_finite", "--", "alignkit/train/loop.py"],
                            capture_output=True, text=True, check=True).stdout.split()
    before = f"{source[-1]}~1" if source else "HEAD"
    text = subprocess.run(["git", "show", f"{before}:alignkit/train/loop.py"], capture_output=True, text=True,
                          check=True).stdout
    path = tmp_path / "old_loop.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_loop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_loop"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(train_fn, tiny_model_dir, tokenizer, pairs, tmp_path, name):
    encoder = ChatEncoder(tokenizer, 64, 32)
    items, _ = encode_pairs(encoder, pairs[:16])
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=0)
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode="lora", lora_r=4), 0)
    task = PackedRewardTask(tokenizer.pad_token_id)
    cfg = TrainConfig(max_steps=3, batch_size=2, grad_accum=3, lr=1e-3, warmup_ratio=0.0)
    result = train_fn(rm, task, items, items[:4], [packed_length(p) for p in items], cfg, seed=0,
                      checkpoint_dir=tmp_path / name, tensorboard_dir=None)
    return result["last_train"], {n: p.detach().clone() for n, p in rm.named_parameters() if p.requires_grad}


def test_one_read_per_step_gives_the_same_metrics_and_weights(tiny_model_dir, tokenizer, homework_pairs, tmp_path):
    old = _first_version_of_loop(tmp_path)
    assert not hasattr(old, "_require_finite")
    new_last, new_weights = _run(loop.train, tiny_model_dir, tokenizer, homework_pairs, tmp_path, "new")
    old_last, old_weights = _run(old.train, tiny_model_dir, tokenizer, homework_pairs, tmp_path, "old")
    assert new_last == old_last  # exactly: the same float64 sums in the same order
    assert all(torch.equal(new_weights[n], old_weights[n]) for n in new_weights)
