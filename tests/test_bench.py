"""Benchmarks: the RM bench runs both sides on the tiny model and returns the common result shape; the
report module renders it; notebook 08 renders it (or says how to make it)."""
import importlib.util
import json
import math

import pytest

from conftest import REPO


def _bench(name):
    import sys
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_shape(result, name, unit, repeats):
    assert set(result) >= {"name", "unit", "alignkit", "peer", "ratio", "settings", "wall_s"}
    assert result["name"] == name and result["unit"] == unit
    for side in ("alignkit", "peer"):
        assert isinstance(result[side]["label"], str) and result[side]["label"]
        assert len(result[side]["values"]) == repeats
        assert all(v > 0 and math.isfinite(v) for v in result[side]["values"])
        assert result[side]["peak_mem_mb"] >= 0
    ratio = result["ratio"]
    assert len(ratio["values"]) == repeats
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert ratio["values"][0] == pytest.approx(result["alignkit"]["values"][0] / result["peer"]["values"][0])
    for key in ("model", "n_rows", "batch_size", "max_length", "trainable", "threads"):
        assert key in result["settings"]
    json.dumps(result)  # JSON-serializable as run_all writes it


def _quick_result(name, tiny_model_dir, data_dir):
    """One repeat of a training bench on the tiny model: 8 real pairs, 4 per step."""
    import os
    os.environ.setdefault("ALIGNKIT_DATA_DIR", str(data_dir))
    return _bench(name).run(quick=True, repeats=1, model=str(tiny_model_dir), n_rows=8, batch_size=4)


@pytest.fixture(scope="module")
def rm_result(tiny_model_dir, data_dir):
    return _quick_result("rm", tiny_model_dir, data_dir)


def test_rm_bench_measures_both_sides_on_the_same_rows(rm_result):
    _check_shape(rm_result, "rm", "tokens/s", 1)
    s = rm_result["settings"]
    assert s["n_rows"] == 8 and s["batch_size"] == 4 and s["trainable"] == "lora"
    assert s["trainable_params"] > 0 and s["peer"]["pad_token"] == "<|endoftext|>"
    # both sides processed the same non-pad tokens (the bench also checks TRL's own counter)
    assert rm_result["alignkit"]["amount"] == rm_result["peer"]["amount"] == s["tokens_per_repeat"]
    assert len(rm_result["cpu_ratio"]["values"]) == 1 and rm_result["settings"]["alignkit_task"] == "packed"


@pytest.fixture(scope="module")
def dpo_result(tiny_model_dir, data_dir):
    return _quick_result("dpo", tiny_model_dir, data_dir)


def test_dpo_bench_measures_both_sides_on_the_same_tokens(dpo_result):
    _check_shape(dpo_result, "dpo", "tokens/s", 1)
    s = dpo_result["settings"]
    assert s["n_rows"] == 8 and s["batch_size"] == 4 and s["trainable"] == "lora" and s["trainable_params"] > 0
    assert s["loss"] == "sigmoid" and s["max_length"] == 160 and s["max_prompt_length"] == 64
    # identical token ids on both sides (checked inside the bench), so identical non-pad token counts
    assert dpo_result["alignkit"]["amount"] == dpo_result["peer"]["amount"] == s["tokens_per_repeat"]
    refs = s["reference_precompute_s"]
    assert refs["alignkit"] > 0 and refs["peer"] > 0 and refs["rows"] == 8
    assert refs["max_abs_difference"] < 1e-2  # both sides' reference log-probs agree


def test_generation_bench_answers_the_same_prompts_at_both_batch_sizes(tiny_model_dir, data_dir, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    result = _bench("generation").run(quick=True, repeats=2, model=str(tiny_model_dir), n_rows=6, batch_size=4,
                                      peer_batch_size=2, max_new_tokens=3)
    _check_shape(result, "generation", "tokens/s", 2)
    s = result["settings"]
    assert s["prompts"] == 6 and (s["batch_size"], s["peer_batch_size"]) == (4, 2) and s["max_new_tokens"] == 3
    for side in ("alignkit", "peer"):  # every prompt answered, at most the budget each, in every repeat
        assert all(0 < a <= 6 * 3 for a in result[side]["amount"])


def test_report_renders_results(rm_result, tmp_path):
    from alignkit.report import bench
    results = {"machine": {"cpu": "test cpu", "usable_cores": 2, "ram_gb": 1.0, "torch": "x", "torch_threads": 2,
                           "gpu": None, "load_avg_1m": 0.0},
               "mode": "quick", "repeats": 1, "started": "now",
               "benchmarks": [rm_result, {"name": "dpo", "error": "RuntimeError: boom"}],
               "report_times": {"profile": "cpu", "notebooks": {"01_reward_model.ipynb": 12.5}, "total_s": 12.5}}
    frame = bench.results_frame(results)
    assert list(frame.benchmark) == ["rm", "dpo"] and frame.loc[0, "aim"] == 1.5
    table = bench.markdown_table(results)
    assert "| rm | tokens/s |" in table and "failed: RuntimeError: boom" in table and "01_reward_model" in table
    assert "test cpu, 2 cores" in table
    assert bench.report_times_frame(results).seconds.tolist() == [12.5, 12.5]
    assert any("rm:" in line for line in bench.verdicts(results))
    fig = bench.ratio_figure(results)
    assert fig.axes and fig.axes[0].get_title().startswith("test cpu")
    assert bench.load_results(tmp_path / "absent.json") is None


@pytest.mark.slow
def test_performance_notebook_renders_results_or_says_how(rm_result, tmp_path):
    import papermill
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"machine": {"cpu": "c", "usable_cores": 2, "ram_gb": 1.0, "torch": "x",
                                            "torch_threads": 2, "gpu": None, "load_avg_1m": 0.0},
                                "mode": "quick", "repeats": 1, "started": "now", "benchmarks": [rm_result],
                                "report_times": None}))
    for results_path, expect in ((path, "image/png"), (tmp_path / "absent.json", "make bench")):
        out = tmp_path / "08.ipynb"
        papermill.execute_notebook(str(REPO / "notebooks" / "08_performance.ipynb"), str(out), cwd=str(REPO),
                                   parameters={"profile": "tiny", "overrides": {}, "force": False,
                                               "results_path": str(results_path)},
                                   kernel_name="python3", progress_bar=False)
        assert expect in out.read_text()


def test_random_model_shapes_and_matmul_parameter_count(tmp_path):
    common = _bench("rm").common  # benchmarks/common.py, as the benches import it
    path, label = common.pick_model("random:tiny", False, tmp_path)
    assert label == "tiny (random weights)"
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path)
    # by hand from SHAPES["tiny"]: hidden 32, MLP 64, 4 heads of 8, 2 key/value heads, 2 layers
    attention = 32 * 32 + 32 * 16 + 32 * 16 + 32 * 32  # q, k, v, o
    mlp = 3 * 32 * 64  # gate, up, down
    per_layer = attention + mlp + 2 * 32  # + two RMSNorm weights
    body = 2 * per_layer + 32  # + the final norm
    assert common.matmul_params(model, lm_head=False) == body
    assert common.matmul_params(model, lm_head=True) == body + model.config.vocab_size * 32
    assert common.model_flops_utilisation({}, body) is None  # no GPU here: no MFU claimed
    with pytest.raises(SystemExit, match="unknown model shape"):
        common.pick_model("random:gpt-17", False, tmp_path)


def test_gpu_results_render_with_mfu_and_deepspeed_runs():
    from alignkit.report import bench
    results = bench.load_results(REPO / bench.GPU_RESULTS)
    frame = bench.results_frame(results)
    assert list(frame.benchmark) == ["rm", "dpo", "scoring"]
    training = frame[frame.benchmark != "scoring"]  # MFU is reported for the training steps
    assert training["alignkit MFU"].between(0, 1).all() and training["peer MFU"].between(0, 1).all()
    runs = bench.deepspeed_frame(results)
    assert list(runs.run) == ["rm", "dpo"] and (runs["optimizer steps"] > 0).all()
    assert "H100" in bench.machine_line(results["machine"])
    # the readings come from the repeats: level with the peer where the min-max range holds 1, with MFU
    said = dict(zip(["rm", "dpo", "scoring"], bench.verdicts(results)))
    assert said["dpo"].endswith("level (the repeats' range holds parity). MFU: alignkit 2.8%, peer 2.5%.")
    assert "meets the ≥10× aim: faster in every repeat" in said["scoring"]
    assert all("次重复" in line for line in bench.verdicts(results, "zh"))
