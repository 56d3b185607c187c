"""sweeps/rm_sweep.py on the tiny model: the validation fold comes from the training split only, rows carry
their CIs and the paired difference to the length rule, and a finished candidate is not run again."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _sweep():
    spec = importlib.util.spec_from_file_location("rm_sweep", ROOT / "sweeps" / "rm_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_judges_on_a_fold_of_the_training_split_and_resumes(tiny_model_dir, tmp_path, data_dir, capsys):
    sweep = _sweep()
    results = tmp_path / "rows.jsonl"
    argv = ["--profile", "tiny", "--only", "lora-profile", "--work", str(tmp_path / "work"), "--results", str(results),
            "--data-dir", str(data_dir), "--set", f"model.name={tiny_model_dir}", "--set", "rm.train.max_steps=2",
            "--set", "data.train.max_pairs=40"]
    sweep.main(argv)
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    split = json.loads((tmp_path / "work" / "split" / "data" / "split.json").read_text())
    fold = json.loads((tmp_path / "work" / "lora-profile" / "data" / "split.json").read_text())
    # the fold's prompts are all training prompts of the profile's split: its test prompts are never read
    assert set(fold["train_prompt_ids"]) | set(fold.get("test_prompt_ids", [])) <= set(split["train_prompt_ids"])
    assert row["n_train"] + row["n_val"] == split["n_train"]
    assert row["accuracy"]["n"] == row["length_rule"]["n"] == row["vs_length_rule"]["n"] == row["n_val"]
    rm, rule = row["accuracy"]["accuracy"], row["length_rule"]["accuracy"]
    assert row["vs_length_rule"]["difference"] == pytest.approx(rm - rule)
    sweep.main(argv)  # again: the finished candidate is skipped, no second row
    assert len(results.read_text().splitlines()) == 1
    assert "skipped" in capsys.readouterr().out
    sweep.main(["--results", str(results), "--table"])
    assert "lora-profile" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown candidate"):
        sweep.main(argv[:2] + ["--only", "nope"] + argv[4:])
