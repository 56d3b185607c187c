"""Benchmarks: the RM bench runs both sides on the tiny model and returns the common result shape; the
report module renders it; notebook 08 renders it (or says how to make it)."""
import importlib.util
import json
import math
import statistics

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
        assert len(result[side]["values"]) == 1 + repeats  # the warm-up repeat first
        assert all(v > 0 and math.isfinite(v) for v in result[side]["values"])
        assert result[side]["peak_mem_mb"] >= 0
    ratio, a, p = result["ratio"], result["alignkit"]["values"], result["peer"]["values"]
    assert len(ratio["values"]) == repeats and ratio["warmup_repeats"] == 1
    assert ratio["median"] == pytest.approx(statistics.median(a[1:]) / statistics.median(p[1:]))
    assert ratio["values"] == pytest.approx([x / y for x, y in zip(a[1:], p[1:])])
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
    per_repeat = s["tokens_per_repeat"][:1] + s["tokens_per_repeat"]  # the warm-up repeat runs repeat 0's rows
    assert rm_result["alignkit"]["amount"] == rm_result["peer"]["amount"] == per_repeat
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
    per_repeat = s["tokens_per_repeat"][:1] + s["tokens_per_repeat"]  # the warm-up repeat runs repeat 0's rows
    assert dpo_result["alignkit"]["amount"] == dpo_result["peer"]["amount"] == per_repeat
    refs = s["reference_precompute_s"]
    assert refs["alignkit"] > 0 and refs["peer"] > 0 and refs["rows"] == 8
    # both sides' reference log-probs agree to a few float32 ulps: each is a sum over ~100 response tokens of
    # ~-10.8 (|sum| ~ 1,000-2,000, where one ulp is 1.2e-4; measured: 1.2e-4); test_dpo_losses' 1e-4 is on
    # responses of a few tokens (|sum| ~ 100). A token counted on one side only would differ by ~10.
    assert refs["max_abs_difference"] < 5e-4


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
    frame = bench.summary_frame(results)
    r = rm_result["ratio"]
    assert list(frame.benchmark) == ["rm", "dpo"] and frame.loc[0, "aim"] == "≥1.5×"
    assert frame.loc[0, "alignkit"] == r["alignkit_median"] and frame.loc[0, "peer"] == r["peer_median"]
    assert frame.loc[0, "ratio [min–max]"] == f"{r['median']:.2f}× [{r['min']:.2f}–{r['max']:.2f}]"
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


def test_race_ratio_drops_the_warm_up_then_divides_the_medians():
    common = _bench("rm").common
    # repeats after the warm-up (5 vs 1): alignkit 10, 12, 8 (median 10), peer 5, 4, 4 (median 4)
    r = common.race_ratio([5.0, 10.0, 12.0, 8.0], [1.0, 5.0, 4.0, 4.0])
    assert (r["median"], r["alignkit_median"], r["peer_median"]) == (2.5, 10.0, 4.0)
    assert r["values"] == [2.0, 3.0, 2.0] and (r["min"], r["max"]) == (2.0, 3.0)
    with pytest.raises(ValueError, match="warm-up"):
        common.race_ratio([5.0], [1.0])


@pytest.mark.parametrize("path", ["gpu_h100.json", "generation_cpu.json"])
def test_committed_results_carry_the_one_ratio_of_their_rates(path):
    """Every committed ratio (and MFU) is race_ratio of the repeats it lists, so README, book and JSON agree."""
    common = _bench("rm").common
    results = json.loads((REPO / "benchmarks" / "results" / path).read_text())
    for b in results.get("benchmarks", [results]):
        assert b["ratio"] == common.race_ratio(b["alignkit"]["values"], b["peer"]["values"]), b["name"]
        cpu = [[x / c for x, c in zip(b[s]["amount"], b[s]["cpu_seconds"])] for s in ("alignkit", "peer")]
        assert b["cpu_ratio"] == common.race_ratio(*cpu), b["name"]
        if b.get("mfu"):
            m = b["mfu"]
            for side in ("alignkit", "peer"):
                rate = b["ratio"][f"{side}_median"]
                assert m[side] == round(m["flops_per_token"] * rate / (m["peak_bf16_tflops"] * 1e12), 4)


def test_gpu_results_render_with_mfu_and_deepspeed_runs():
    from alignkit.report import bench
    results = bench.load_results(REPO / bench.GPU_RESULTS)
    frame = bench.summary_frame(results).set_index("benchmark")
    assert list(frame.index) == ["rm", "dpo", "scoring"]
    # RM on the H100 after the warm-up repeat, by hand: (8840.7 + 11909.6) / 2 vs (8634.5 + 9046.6) / 2
    assert frame.loc["rm", "alignkit"] == pytest.approx((8840.726064980976 + 11909.57522885839) / 2)
    assert frame.loc["rm", "peer"] == pytest.approx((8634.500274214406 + 9046.58309933784) / 2)
    assert frame.loc["rm", "ratio [min–max]"] == "1.17× [1.02–1.32]" and frame.loc["rm", "repeats"] == 2
    assert frame.loc["scoring", "ratio [min–max]"] == "13.00× [12.34–13.70]"
    assert frame.loc["rm", "MFU"] == "2.2% / 1.9%" and frame.loc["scoring", "MFU"] != frame.loc["scoring", "MFU"]
    runs = bench.deepspeed_frame(results)
    assert list(runs.run) == ["rm", "dpo"] and (runs["optimizer steps"] == 40).all()
    assert "H100" in bench.machine_line(results["machine"])
    # the readings come from the repeats: level with the peer where the min-max range holds 1, with MFU
    said = dict(zip(["rm", "dpo", "scoring"], bench.verdicts(results)))
    assert said["dpo"].endswith("level (the repeats' range holds parity). MFU: alignkit 2.9%, peer 2.8%.")
    assert "faster in every repeat" in said["rm"] and "1.17×" in said["rm"]
    assert "meets the ≥10× aim: faster in every repeat" in said["scoring"]
    assert all("次重复" in line for line in bench.verdicts(results, "zh"))


def test_results_without_ratio_medians_are_refused_by_name(tmp_path):
    from alignkit.errors import AlignkitError
    from alignkit.report import bench
    results = json.loads((REPO / bench.GPU_RESULTS).read_text())
    del results["benchmarks"][1]["ratio"]["alignkit_median"]
    (tmp_path / "old.json").write_text(json.dumps(results))
    with pytest.raises(AlignkitError, match="'dpo' has no ratio medians"):
        bench.load_results(tmp_path / "old.json")


def test_by_epochs_command_line_reaches_the_race(monkeypatch):
    """The cached-prefix races' options (--epochs, --prefix-dtype, --bf16, --device) reach every race they
    start, one race per epoch count, and the result carries the ratio of each count."""
    common = _bench("rm").common
    seen = []

    def race(quick, repeats, **kwargs):
        seen.append(kwargs)
        ratio = {"median": float(kwargs["epochs"]), "min": 1.0, "max": 2.0}
        return {"ratio": ratio, "cpu_ratio": ratio, "wall_s": 1.0}
    printed = []
    monkeypatch.setattr(common, "finish", lambda result, path: printed.append(result))
    _run, main = common.by_epochs(race, "rm_last_k", "doc")
    monkeypatch.setattr("sys.argv", ["bench", "--epochs", "1", "2", "--prefix-dtype", "auto", "--bf16",
                                     "--repeats", "2"])
    main()
    assert [k["epochs"] for k in seen] == [1, 2]
    assert all(k["bf16"] is True and k["prefix_dtype"] == "auto" and k["device"] == "cpu" for k in seen)
    assert printed[0]["by_epochs"]["2"]["ratio"]["median"] == 2.0 and printed[0]["name"] == "rm_last_k"
