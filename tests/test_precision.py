"""Weights dtype: 'auto' resolves by what the device computes natively, and a bf16 run keeps its trainable
weights and optimizer state in float32 (bf16 frozen base, fp32 LoRA / score head)."""
import json

import pytest
import torch

from alignkit.config import load_config
from alignkit.errors import AlignkitError
from alignkit.models import native_bf16, trainable_in_fp32, weights_dtype
from alignkit.train.dpo import run_dpo
from alignkit.train.rm import rm_identity, run_reward_model
from conftest import tiny_config


def test_dtype_names_resolve_and_a_wrong_one_is_named():
    assert weights_dtype("float32") is torch.float32 and weights_dtype("bfloat16") is torch.bfloat16
    cpu = torch.device("cpu")
    assert weights_dtype("auto", cpu) is (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    with pytest.raises(AlignkitError, match="model.dtype"):
        load_config("tiny", {"model.dtype": "fp16"})
    with pytest.raises(AlignkitError, match="model.dtype"):
        weights_dtype("half")


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import alignkit.models as models
    real = models.Path

    def cpuinfo_with(flags):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
        return lambda p: real(tmp_path / "cpuinfo") if str(p) == "/proc/cpuinfo" else real(p)

    monkeypatch.setattr(models, "Path", cpuinfo_with(""))
    assert not native_bf16(torch.device("cpu"))
    monkeypatch.setattr(models, "Path", cpuinfo_with("avx512f avx512_bf16"))
    assert native_bf16(torch.device("cpu"))
    monkeypatch.setattr(models, "Path", cpuinfo_with("amx_tile amx_bf16"))
    assert native_bf16(torch.device("cpu")) and weights_dtype("auto", torch.device("cpu")) is torch.bfloat16


def test_trainable_in_fp32_casts_only_what_trains():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1, bias=False)).to(torch.bfloat16)
    net[0].requires_grad_(False)
    trainable_in_fp32(net)
    assert net[0].weight.dtype is torch.bfloat16 and net[1].weight.dtype is torch.float32


def test_bf16_reward_model_trains_with_fp32_masters(tiny_model_dir, tmp_path, data_dir):
    """A LoRA RM on a bf16 base trains to a finite loss and exports one dtype, the base's (its float32 head
    cast on save), as its config says."""
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"model.dtype": "bfloat16", "rm.train.max_steps": 2,
                                                             "rm.trainable.mode": "lora", "rm.trainable.lora_r": 4})
    metrics = run_reward_model(cfg)
    assert metrics["steps"] == 2 and metrics["eval"]["n"] > 0
    assert torch.isfinite(torch.tensor(metrics["last_train_step"]["loss"]))
    assert rm_identity(cfg)["model"]["dtype"] == "bfloat16"
    saved = json.loads((cfg.out / "rm" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"
    from safetensors import safe_open
    with safe_open(str(cfg.out / "rm" / "model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}


def test_bf16_masters_are_float32_in_the_step(tiny_model_dir, tokenizer, homework_pairs):
    from alignkit.config import TrainableConfig
    from alignkit.data.packing import pack_pairs
    from alignkit.data.tokenize import ChatEncoder, encode_pairs
    from alignkit.models import RewardModel, make_trainable
    from alignkit.train.rm import PackedRewardTask
    rm = RewardModel.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode="lora", lora_r=4))
    trainable_in_fp32(rm)
    trained = [p for p in rm.parameters() if p.requires_grad]
    frozen = [p for p in rm.parameters() if not p.requires_grad]
    assert trained and frozen and {p.dtype for p in trained} == {torch.float32}
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:4])
    task = PackedRewardTask(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    loss, _ = task.step(rm, pack_pairs(items, tokenizer.pad_token_id))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(p.grad.dtype is torch.float32 for p in trained)
    assert {s["exp_avg"].dtype for s in optimizer.state.values()} == {torch.float32}


def test_bf16_dpo_runs_and_keys_its_reference_cache_by_dtype(tiny_model_dir, tmp_path, data_dir):
    overrides = {"model.dtype": "bfloat16", "dpo.train.max_steps": 2, "dpo.max_pairs": 16,
                 "dpo.trainable.mode": "lora", "dpo.trainable.lora_r": 4}
    bf16 = run_dpo(tiny_config(tiny_model_dir, tmp_path, data_dir, **overrides))
    fp32 = run_dpo(tiny_config(tiny_model_dir, tmp_path / "fp32", data_dir, **{**overrides, "model.dtype": "float32"}))
    assert bf16["steps"] == fp32["steps"] == 2
    assert torch.isfinite(torch.tensor(bf16["eval"]["loss"]))
    caches = sorted(p.name for p in (tmp_path / "out" / "cache").glob("ref-*.pt"))
    other = sorted(p.name for p in (tmp_path / "fp32" / "out" / "cache").glob("ref-*.pt"))
    assert caches and other and not set(caches) & set(other)
