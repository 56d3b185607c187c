import json

import pytest
import torch

from alignkit.cli import main
from alignkit.config import load_config, none_if_blank
from alignkit.data.tokenize import ChatEncoder, encode_pairs
from alignkit.errors import AlignkitError
from alignkit.models import RewardModel, TrainableConfig, make_trainable
from alignkit.train.loop import TrainingError, cosine_lr_factor, train
from alignkit.train.rm import RewardTask, run_reward_model
from conftest import tiny_config


def _setup(tiny_model_dir, tokenizer, pairs, cfg, mode="full"):
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=cfg.seed)
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode=mode, lora_r=4))
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), pairs)
    return rm, items, RewardTask(tokenizer.pad_token_id)


def _train(rm, task, items, cfg, tmp_path, name, resume=False):
    return train(rm, task, items, items[:8], [i.length for i in items], cfg.rm.train, seed=cfg.seed,
                 checkpoint_dir=tmp_path / name / "ckpt", tensorboard_dir=None, resume=resume)


def test_training_lowers_the_loss_and_changes_trainable_parameters(tiny_model_dir, tokenizer, homework_pairs,
                                                                   tmp_path, data_dir):
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 12, "rm.train.lr": 3e-3})
    rm, items, task = _setup(tiny_model_dir, tokenizer, homework_pairs[:8], cfg)
    before = {n: p.detach().clone() for n, p in rm.named_parameters()}
    with torch.no_grad():
        first = task.evaluate(rm, items)["loss"]
    _train(rm, task, items, cfg, tmp_path, "a")
    with torch.no_grad():
        last = task.evaluate(rm, items)["loss"]
    assert last < first - 0.05
    changed = [n for n, p in rm.named_parameters() if not torch.equal(p, before[n])]
    assert "score_head.weight" in changed and any("layers.1" in n for n in changed)


def test_lora_trains_only_adapters_and_head(tiny_model_dir, tokenizer, homework_pairs, tmp_path, data_dir):
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2})
    rm, items, task = _setup(tiny_model_dir, tokenizer, homework_pairs[:8], cfg, mode="lora")
    before = {n: p.detach().clone() for n, p in rm.named_parameters()}
    _train(rm, task, items, cfg, tmp_path, "lora")
    changed = {n for n, p in rm.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n or n == "score_head.weight" for n in changed)


def test_resume_continues_to_the_same_result(tiny_model_dir, tokenizer, homework_pairs, tmp_path, data_dir):
    over = {"rm.train.max_steps": 6, "rm.train.save_every": 3, "rm.train.grad_accum": 2, "rm.train.batch_size": 2}
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **over)
    rm, items, task = _setup(tiny_model_dir, tokenizer, homework_pairs[:10], cfg)
    straight_result = _train(rm, task, items, cfg, tmp_path, "straight")
    straight = {n: p.detach().clone() for n, p in rm.named_parameters()}

    interrupted = tiny_config(tiny_model_dir, tmp_path, data_dir, **{**over, "rm.train.max_steps": 6})
    rm2, _, _ = _setup(tiny_model_dir, tokenizer, homework_pairs[:10], cfg)

    class Interrupt(Exception):
        pass

    calls = {"n": 0}
    original = task.step

    def crash_at_step_5(model, batch):  # 2 micro-batches per step: call 9 belongs to step 5
        calls["n"] += 1
        if calls["n"] == 9:
            raise Interrupt
        return original(model, batch)

    task.step = crash_at_step_5
    with pytest.raises(Interrupt):
        _train(rm2, task, items, interrupted, tmp_path, "resumed")
    task.step = original
    rm3, _, _ = _setup(tiny_model_dir, tokenizer, homework_pairs[:10], cfg)  # a fresh process, in effect
    resumed = _train(rm3, task, items, interrupted, tmp_path, "resumed", resume=True)
    for name, value in rm3.named_parameters():
        assert torch.allclose(value, straight[name], atol=1e-6), name
    # the per-step history survives the interruption: steps 1-3 come from the checkpoint, 4-6 from the resumed run
    assert [row["step"] for row in resumed["train_history"]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(resumed["train_history"], straight_result["train_history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)


def test_nan_loss_stops_with_a_clear_error(tiny_model_dir, tokenizer, homework_pairs, tmp_path, data_dir):
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2})
    rm, items, task = _setup(tiny_model_dir, tokenizer, homework_pairs[:8], cfg)
    with torch.no_grad():
        rm.score_head.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="non-finite loss .* at step 1"):
        _train(rm, task, items, cfg, tmp_path, "nan")


@pytest.mark.parametrize("blank", [None, "", "None"])
def test_eval_only_when_train_data_is_none_or_empty(tiny_model_dir, tmp_path, data_dir, blank):
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{
        "data.train.path": blank, "data.eval.path": str(data_dir / "pku_saferlhf_32.json"),
        "data.eval.template": "PKUSafeRLHF"})
    assert cfg.data.train.path is None
    metrics = run_reward_model(cfg)
    assert metrics["eval"]["n"] == 32 and "train" not in metrics
    assert not (cfg.out / "rm").exists()  # nothing trained, nothing saved as a model
    assert json.loads(open(metrics["metrics_path"]).read())["eval"]["n"] == 32


def test_eval_only_without_eval_data_says_what_to_pass(tiny_model_dir, tmp_path, data_dir):
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"data.train.path": ""})
    with pytest.raises(AlignkitError, match="--eval-data"):
        run_reward_model(cfg)


def test_cli_train_then_eval_the_checkpoint(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "cli"
    common = ["--profile", "tiny", "--model", str(tiny_model_dir), "--output-dir", str(out)]
    assert main(["rm", "train", *common, "--data", str(data_dir / "align_anything_t2t.json"),
                 "--set", "rm.train.max_steps=2"]) == 0
    metrics = json.loads((out / "rm" / "metrics.json").read_text())
    assert {"accuracy", "n", "ci95"} <= set(metrics["eval"]) and metrics["data"]["prompt_overlap"] == 0
    assert list((out / "tensorboard" / "rm").glob("events.out.tfevents.*"))
    assert main(["rm", "eval", *common[:2], "--model", str(out / "rm"), "--output-dir", str(out),
                 "--eval-data", str(out / "data" / "test.jsonl"), "--eval-template", "ALIGNKIT"]) == 0
    again = json.loads(next((out / "rm_eval").glob("*/metrics.json")).read_text())
    assert again["eval"]["accuracy"] == pytest.approx(metrics["eval"]["accuracy"])
    assert main(["rm", "train", *common, "--data", "", "--template", "NOPE"]) == 2  # eval-only, no eval data
    assert "--eval-data" in capsys.readouterr().err


def test_config_overrides_are_typed_and_named():
    cfg = load_config("cpu", {"rm.train.lr": "3e-4", "rm.train.max_steps": "5", "data.eval.path": ""})
    assert cfg.rm.train.lr == 3e-4 and cfg.rm.train.max_steps == 5 and cfg.data.eval.path is None
    with pytest.raises(AlignkitError, match="unknown option 'rm.train.learning_rate'"):
        load_config("cpu", {"rm.train.learning_rate": 1})
    with pytest.raises(AlignkitError, match="rm.train.batch_size expects int"):
        load_config("cpu", {"rm.train.batch_size": "four"})
    with pytest.raises(AlignkitError, match="no profile 'laptop'"):
        load_config("laptop")
    assert none_if_blank("") is None and none_if_blank(" None ") is None and none_if_blank("x") == "x"


def test_cosine_schedule_shape():
    factors = [cosine_lr_factor(s, 2, 10) for s in range(10)]
    assert factors[0] < factors[1] < factors[2] == 1.0
    assert all(a >= b for a, b in zip(factors[2:], factors[3:])) and factors[-1] > 0


def test_same_config_is_reused_and_a_changed_config_retrains(tiny_model_dir, tmp_path, data_dir):
    from alignkit.train.rm import reward_model_metrics
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 1})
    first = reward_model_metrics(cfg)
    assert not first.get("reused") and reward_model_metrics(cfg)["reused"]
    cfg.rm.train.max_steps = 2
    assert reward_model_metrics(cfg)["steps"] == 2


def test_resume_refuses_a_checkpoint_of_another_config(tiny_model_dir, tokenizer, homework_pairs, tmp_path,
                                                       data_dir):
    cfg = tiny_config(tiny_model_dir, tmp_path, data_dir, **{"rm.train.max_steps": 2, "rm.train.save_every": 1})
    rm, items, task = _setup(tiny_model_dir, tokenizer, homework_pairs[:8], cfg)
    ckpt = tmp_path / "other"
    train(rm, task, items, [], [i.length for i in items], cfg.rm.train, seed=0, checkpoint_dir=ckpt,
          tensorboard_dir=None, run_id="config-a")
    with pytest.raises(AlignkitError, match="different config"):
        train(rm, task, items, [], [i.length for i in items], cfg.rm.train, seed=0, checkpoint_dir=ckpt,
              tensorboard_dir=None, run_id="config-b", resume=True)
