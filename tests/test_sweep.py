"""sweeps/rm_sweep.py on the tiny model: the validation fold comes from the training split only, rows carry
their CIs, the paired difference to the length rule, Spearman(score, length) and the per-pair verdicts that
compare two candidates pair by pair, and a finished candidate is not run again unless asked (`--again`)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep():
    return _load("sweeps/rm_sweep.py")


def test_sweep_judges_on_a_fold_of_the_training_split_and_resumes(tiny_model_dir, tmp_path, data_dir, capsys):
    sweep = _sweep()
    results = tmp_path / "rows.jsonl"
    argv = ["--profile", "tiny", "--only", "lora-profile", "lora-poe", "--work", str(tmp_path / "work"), "--results", str(results),
            "--data-dir", str(data_dir), "--set", f"model.name={tiny_model_dir}", "--set", "rm.train.max_steps=2",
            "--set", "data.train.max_pairs=40"]
    sweep.main(argv)
    row, poe = [json.loads(line) for line in results.read_text().splitlines()]
    split = json.loads((tmp_path / "work" / "split" / "data" / "split.json").read_text())
    fold = json.loads((tmp_path / "work" / "lora-profile" / "data" / "split.json").read_text())
    # the fold's prompts are all training prompts of the profile's split: its test prompts are never read
    assert set(fold["train_prompt_ids"]) | set(fold.get("test_prompt_ids", [])) <= set(split["train_prompt_ids"])
    assert row["n_train"] + row["n_val"] == split["n_train"]
    assert row["accuracy"]["n"] == row["length_rule"]["n"] == row["vs_length_rule"]["n"] == row["n_val"]
    rm, rule = row["accuracy"]["accuracy"], row["length_rule"]["accuracy"]
    assert row["vs_length_rule"]["difference"] == pytest.approx(rm - rule)
    # the per-pair verdicts are the accuracy's; Spearman has its CI; only the PoE candidate has a coefficient
    assert len(row["correct"]) == row["n_val"] and sum(row["correct"]) / row["n_val"] == pytest.approx(rm)
    assert set(row["correct"]) <= {0, 0.5, 1} and row["fold"] == poe["fold"]
    low, high = row["spearman_length"]["ci95"]
    assert -1 <= low <= row["spearman_length"]["spearman"] <= high <= 1
    assert row["length_coef"] is None and poe["length_coef"] != 0.0 and poe["overrides"] == {"rm.length_expert": True}
    sweep.main(argv)  # again: the finished candidates are skipped, no new row
    assert len(results.read_text().splitlines()) == 2
    assert "skipped" in capsys.readouterr().out
    metrics = tmp_path / "work" / "lora-profile" / "rm" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    sweep.main(argv[:2] + ["--only", "lora-profile", "--again"] + argv[5:])  # retrained (not reused), a newer row
    again = json.loads(results.read_text().splitlines()[-1])
    assert metrics.stat().st_mtime_ns != before and "skipped" not in capsys.readouterr().out
    assert again["name"] == "lora-profile" and again["correct"] == row["correct"]  # same seed, same numbers
    sweep.main(["--results", str(results), "--table"])
    assert "lora-poe" in capsys.readouterr().out
    sweep.main(["--results", str(results), "--compare", "lora-poe", "lora-profile"])
    expected = sweep.candidate_difference(poe, row, seed=row["seed"])["difference"]
    assert f"lora-poe - lora-profile on {row['n_val']} validation pairs: {expected:+.3f}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown candidate"):
        sweep.main(argv[:2] + ["--only", "nope"] + argv[4:])


def test_candidate_difference_by_hand_and_rows_without_verdicts():
    sweep = _sweep()
    a = {"name": "a", "fold": "f", "correct": [1, 1, 0.5, 0]}
    b = {"name": "b", "fold": "f", "correct": [0, 1, 1, 0]}
    d = sweep.candidate_difference(a, b, n_resamples=200)
    # per pair a - b: 1, 0, -0.5, 0 -> mean 0.125; two pairs changed verdict
    assert (d["new"], d["base"], d["n"], d["changed_pairs"]) == ("a", "b", 4, 2)
    assert d["difference"] == pytest.approx(0.125)
    assert d["ci95"][0] <= 0.125 <= d["ci95"][1]
    old = {"name": "old", "n_val": 4}  # a row written before rows kept their verdicts
    with pytest.raises(ValueError, match="'old' has no per-pair verdicts"):
        sweep.candidate_difference(a, old)
    with pytest.raises(ValueError, match="different validation folds"):
        sweep.candidate_difference(a, {**b, "fold": "g"})
    row = {"name": "old", "overrides": {}, "n_train": 8, "n_val": 4, "untrained_accuracy": 0.5, "steps": 1,
           "sweep_s": 1.0, **{k: {"accuracy": 0.5, "n": 4, "ci95": [0.2, 0.8]} for k in
                              ("accuracy", "length_matched", "length_rule")},
           "vs_length_rule": {"difference": 0.0, "n": 4, "ci95": [-0.1, 0.1]}}
    line = sweep.table([row]).splitlines()[1]
    assert line.split(" | ")[6] == "-"  # no Spearman in an old row: shown as missing, not as an error


def _dpo_sweep():
    return _load("sweeps/dpo_sweep.py")


def test_dpo_sweep_reads_the_fold_and_gives_each_log_ratio_its_verdict(tiny_model_dir, tmp_path, data_dir, capsys):
    from alignkit.verdicts import decide, margin
    sweep = _dpo_sweep()
    results = tmp_path / "rows.jsonl"
    argv = ["--profile", "tiny", "--only", "cached-k8-lr1e-4-2ep", "--work", str(tmp_path / "work"),
            "--results", str(results), "--data-dir", str(data_dir), "--set", f"model.name={tiny_model_dir}",
            "--set", "dpo.train.max_steps=2", "--set", "data.train.max_pairs=40", "--set", "dpo.trainable.last_k=1"]
    sweep.main(argv)
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    fold = tmp_path / "work" / "cached-k8-lr1e-4-2ep" / "data"
    n_fold = len((fold / "test.jsonl").read_text().splitlines())
    assert row["n_val"] == n_fold == row["reward_accuracy"]["n"] and row["steps"] == 2
    assert row["n_dpo_train"] == len((fold / "train.jsonl").read_text().splitlines())  # all pairs: max_pairs null
    assert row["logratio"]["mean"] == pytest.approx((row["logratio_chosen"]["mean"] + row["logratio_rejected"]["mean"]) / 2)
    for key in ("logratio", "logratio_chosen", "logratio_rejected"):
        assert row[key]["verdict"] == decide(row[key]["ci95"], 0.0, margin("nats"))
    assert row["prefix_cache"]["hits"] > 0  # the reference pass filled the prefix the epochs read
    sweep.main(argv)
    assert len(results.read_text().splitlines()) == 1 and "skipped" in capsys.readouterr().out
    sweep.main(["--results", str(results), "--table"])
    assert "cached-k8-lr1e-4-2ep | " in capsys.readouterr().out


def test_precision_check_scores_the_profiles_test_split_with_a_held_out_model(tiny_model_dir, tmp_path, data_dir):
    """benchmarks/precision_check.py on a sweep candidate: chapter 8's check on the profile's own test split, and
    a model trained on that split is refused."""
    check = _load("benchmarks/precision_check.py")
    common = ["--set", f"model.name={tiny_model_dir}", "--set", "data.train.max_pairs=40"]
    _sweep().main(["--profile", "tiny", "--only", "lora-profile", "--work", str(tmp_path / "sweep"),
                   "--results", str(tmp_path / "rows.jsonl"), "--data-dir", str(data_dir),
                   "--set", "rm.train.max_steps=1", *common])
    out = tmp_path / "precision.json"
    check.main(["--rm", str(tmp_path / "sweep" / "lora-profile" / "rm"), "--profile", "tiny", "--data-dir",
                str(data_dir), "--work", str(tmp_path / "check"), "--json", str(out), *common])
    result = json.loads(out.read_text())
    n_test = len((tmp_path / "check" / "data" / "test.jsonl").read_text().splitlines())
    assert result["test_pairs"] == n_test == result["int8"]["n"] > 0
    assert result["int8"]["speedup"] == pytest.approx(result["int8"]["float32_s"] / result["int8"]["int8_s"], rel=0.02)
    # a model whose training pairs hold the test split's prompts is refused
    (tmp_path / "sweep" / "lora-profile" / "data" / "train.jsonl").write_text(
        (tmp_path / "check" / "data" / "test.jsonl").read_text())
    with pytest.raises(SystemExit, match="test split"):
        check.main(["--rm", str(tmp_path / "sweep" / "lora-profile" / "rm"), "--profile", "tiny", "--data-dir",
                    str(data_dir), "--work", str(tmp_path / "check"), *common])
