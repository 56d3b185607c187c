"""DeepSpeed's path through the shared loop, single process on CPU with gloo (what GPU hosts run, minus
the GPUs). Slow-ish: DeepSpeed builds its shared-memory comm op on first use."""
import json

import pytest

from alignkit.train.rm import run_reward_model
from conftest import REPO, tiny_config

pytest.importorskip("deepspeed")


@pytest.mark.slow
def test_reward_model_trains_under_deepspeed_zero2(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29561"}.items():
        monkeypatch.setenv(key, value)
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{
        "rm.train.deepspeed": str(REPO / "configs" / "ds_zero2.json"), "rm.train.max_steps": 3,
        "rm.train.save_every": 2, "rm.train.lr": 3e-3})
    metrics = run_reward_model(cfg)
    saved = json.loads((cfg.out / "rm" / "metrics.json").read_text())
    assert saved["steps"] == 3 and saved["eval"]["n"] == metrics["eval"]["n"] > 0
    assert (cfg.out / "rm" / "model.safetensors").exists()
