"""The gpu profile rehearsed on the CPU (configs/gpu-rehearsal.yaml): what the rehearsal may change, the local
Hub mirror it reads, and (slow) every chapter under papermill with the RM and DPO trained by DeepSpeed's launcher
on two CPU ranks, then the book."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from alignkit.config import load_config
from alignkit.errors import AlignkitError
from conftest import REPO

FACTOR = 1 / 32
"""The one factor every size of configs/gpu.yaml is scaled by in configs/gpu-rehearsal.yaml."""
MODEL = {"model.name"}
DEVICE = {"model.dtype": "float32", "rm.train.bf16": False, "dpo.train.bf16": False, "rm.train.num_gpus": 2,
          "dpo.train.num_gpus": 2}
SIZES = {"data.max_length", "data.max_prompt_length", "data.eval_max_length", "rm.train.epochs", "rm.train.eval_every",
         "rm.train.save_every", "dpo.train.epochs", "dpo.train.eval_every", "dpo.train.save_every",
         "generation.test_prompts", "generation.train_prompts", "generation.max_new_tokens", "safety.max_pairs",
         "best_of_n.prompts", "dpo_variants.eval_pairs", "dpo_variants.prompts"}
"""Every count, token budget, epoch count and step interval of configs/gpu.yaml."""


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_the_rehearsal_changes_only_the_model_the_data_the_device_and_the_sizes_by_one_factor():
    gpu, rehearsal = _flat(load_config("gpu").to_dict()), _flat(load_config("gpu-rehearsal").to_dict())
    assert not gpu["hub_mirror.enabled"] and rehearsal["hub_mirror.enabled"]  # the data: the Hub's, from a local mirror
    changed = {k for k in gpu if gpu[k] != rehearsal[k]} - {"profile", "hub_mirror.enabled"}
    assert changed == MODEL | set(DEVICE) | SIZES
    assert rehearsal["model.name"] == "random:qwen2-tiny"
    assert {k: rehearsal[k] for k in DEVICE} == DEVICE
    for key in SIZES:
        expected = gpu[key] * FACTOR if isinstance(gpu[key], float) else int(gpu[key] * FACTOR)
        assert rehearsal[key] == expected, f"{key}: {rehearsal[key]} is not {gpu[key]} x {FACTOR}"
    # what must stay: the launcher, ZeRO-2, the separate eval source (another split than training's)
    assert rehearsal["rm.train.launcher"] == rehearsal["dpo.train.launcher"] == "deepspeed"
    assert rehearsal["rm.train.deepspeed"] == rehearsal["dpo.train.deepspeed"] == "configs/ds_zero2.json"
    assert rehearsal["data.eval.path"] == rehearsal["data.train.path"] and rehearsal["data.eval.split"] != rehearsal["data.train.split"]


def test_the_mirrors_sizes_are_part_of_the_runs_identity_and_the_hubs_runs_keep_theirs():
    from alignkit.train.dpo import dpo_identity
    from alignkit.train.rm import rm_identity
    for identity in (rm_identity, dpo_identity):
        rehearsal = identity(load_config("gpu-rehearsal"))
        assert identity(load_config("gpu-rehearsal", {"hub_mirror.train_pairs": 96})) != rehearsal  # retrained
        assert "hub_mirror" not in identity(load_config("gpu"))["data"]  # runs on the Hub itself: as they were


def test_a_profile_extends_another_and_its_keys_are_checked(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: tiny\nseed: 7\nrm:\n  train:\n    lr: 0.5\n")
    cfg, tiny = load_config(str(child)), load_config("tiny")
    assert cfg.profile == "child" and cfg.seed == 7 and cfg.rm.train.lr == 0.5
    assert cfg.rm.train.batch_size == tiny.rm.train.batch_size and cfg.data.train.max_pairs == tiny.data.train.max_pairs
    child.write_text("extends: tiny\nrm:\n  train:\n    learning_rate: 0.5\n")
    with pytest.raises(AlignkitError, match=r"child.yaml: unknown option 'rm.train.learning_rate'"):
        load_config(str(child))
    child.write_text(f"extends: {child}\n")
    with pytest.raises(AlignkitError, match="comes back to itself"):
        load_config(str(child))
    child.write_text("extends: nonesuch\n")
    with pytest.raises(AlignkitError, match="no profile 'nonesuch'.*known profiles"):
        load_config(str(child))


def test_the_hub_mirror_serves_the_profiles_hub_ids_through_load_dataset(tmp_path, data_dir, monkeypatch):
    from alignkit.data.hub_mirror import HUB_DIR_ENV, build_hub_mirror, hub_environment
    from alignkit.data.sources import load_pairs
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    record = build_hub_mirror(tmp_path / "hub", 160, 62)
    sizes = record["splits"]["PKU-Alignment/align-anything"]
    assert 160 <= sizes["text-to-text/train"] < 170 and 62 <= sizes["text-to-text/val"] < 70
    assert build_hub_mirror(tmp_path / "hub", 160, 62) == record  # reused while the files and the sizes are the same
    gpu = load_config("gpu").data
    with hub_environment(tmp_path / "hub"):
        assert os.environ[HUB_DIR_ENV] == str((tmp_path / "hub").resolve()) and "ALIGNKIT_DATA_DIR" not in os.environ
        read = {}
        for source in (gpu.train, gpu.eval):  # the gpu profile's own ids, subsets and splits
            pairs, report = load_pairs(source.path, source.template, name=source.subset, split=source.split)
            read[source.split] = pairs
            assert report.rows == sizes[f"{source.subset}/{source.split}"]
        safety, _ = load_pairs("PKU-Alignment/PKU-SafeRLHF", "PKUSafeRLHF", split="train")
        with pytest.raises(AlignkitError, match="not in the local Hub mirror"):
            load_pairs("Anthropic/hh-rlhf", "HOMEWORK", split="train")
    assert os.environ["ALIGNKIT_DATA_DIR"] == str(data_dir) and HUB_DIR_ENV not in os.environ  # restored
    assert not {p.prompt_id for p in read["train"]} & {p.prompt_id for p in read["val"]}  # prompt-disjoint
    assert len(safety) == 500 and all("better_is_safe" in p.meta for p in safety)
    # the rows are the local file's, labels included (the Hub's parquet holds the label as text)
    local, _ = load_pairs(str(data_dir / "align_anything_t2t.json"), "HOMEWORK")
    key = lambda p: (p.prompt_text, p.better, p.worse)  # noqa: E731
    assert set(map(key, read["train"] + read["val"])) <= set(map(key, local))
    mirrored = {p.prompt_text for p in read["train"] + read["val"]}
    assert sorted(map(key, read["train"] + read["val"])) == sorted(key(p) for p in local if p.prompt_text in mirrored)


# ----------------------------------------------------------------------------- the rehearsal itself

@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, data_dir) -> dict:
    """`alignkit report --profile gpu-rehearsal` (every notebook under papermill, the book) with its artifacts
    under a temporary folder, the book in its own root."""
    from conftest import copy_book_sources
    from alignkit.report.build import run_report
    base = tmp_path_factory.mktemp("rehearsal")
    overrides = {"output_dir": str(base / "outputs")}
    root = copy_book_sources(base / "root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNKIT_DATA_DIR", str(data_dir))  # the mirror is built from it; the notebooks never see it
        result = run_report("gpu-rehearsal", overrides, root=root)
    return {**result, "out": load_config("gpu-rehearsal", overrides).out}


def _shown(notebook: Path, caption: str) -> dict[str, str]:
    """{setting: value} of the key-value table whose caption starts with `caption` in an executed notebook."""
    import re
    import nbformat
    for cell in nbformat.read(notebook, as_version=4).cells:
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            if f"</b> {caption}" in html:
                body = html.split("<tbody>", 1)[1]
                rows = re.findall(r'<th><span class="ak-en" lang="en">([^<]*)</span>.*?</th><td[^>]*>(.*?)</td>', body)
                return dict(rows)
    raise AssertionError(f"{notebook.name} shows no table '{caption}'")


def _prompts(path: Path) -> set[str]:
    from alignkit.data.sources import load_pairs
    return {p.prompt_id for p in load_pairs(str(path), "ALIGNKIT")[0]}


@pytest.mark.slow
def test_the_gpu_profile_runs_every_chapter_with_deepspeed_on_two_cpu_ranks(rehearsal):
    from alignkit.report.build import report_notebooks
    out = rehearsal["out"]
    assert list(rehearsal["times"]) == [n.name for n in report_notebooks()]
    assert Path(rehearsal["index"]).exists()
    for step in ("rm", "dpo"):  # trained by DeepSpeed's launcher, ZeRO-2, two ranks, on the mirror's splits
        metrics = json.loads((out / step / "metrics.json").read_text())
        launched = load_config(str(out / "launch" / f"{step}.yaml"))
        train = getattr(launched, step).train
        assert metrics["world_size"] == 2 and train.launcher == "deepspeed" and train.deepspeed == "configs/ds_zero2.json"
        assert launched.model.name == "random:qwen2-tiny" and metrics["data"]["prompt_overlap"] == 0
        assert metrics["data"]["train_source"]["path"] == metrics["data"]["eval_source"]["path"] == "PKU-Alignment/align-anything"
    mirror = json.loads((out / "hub" / "mirror.json").read_text())["splits"]["PKU-Alignment/align-anything"]
    rm = json.loads((out / "rm" / "metrics.json").read_text())
    assert rm["data"]["train_source"]["rows"] == mirror["text-to-text/train"]
    assert rm["data"]["eval_source"]["rows"] == rm["eval"]["n"] == mirror["text-to-text/val"]
    safety = json.loads((out / "experiments" / "safety" / "summary.json").read_text())
    assert safety["config"]["data"] == "PKU-Alignment/PKU-SafeRLHF:train"  # the Hub id, read from the mirror


@pytest.mark.slow
def test_every_held_out_number_of_the_rehearsal_reads_the_eval_source(rehearsal):
    """The gpu profile holds out a split of its own (align-anything's val): no chapter may read held-out
    prompts from the training split, as a chapter written for the cpu profile's one split would."""
    out = rehearsal["out"]
    val, train = _prompts(out / "data" / "test.jsonl"), _prompts(out / "data" / "train.jsonl")
    assert val and train and not val & train
    mirror = json.loads((out / "hub" / "mirror.json").read_text())["splits"]["PKU-Alignment/align-anything"]
    shown = _shown(out / "notebooks" / "01_reward_model.ipynb", "Loading the training file")
    assert shown["source"] == "PKU-Alignment/align-anything" and shown["rows"] == str(mirror["text-to-text/train"])
    from alignkit.data.templates import PreferencePair
    scored = pd.read_parquet(out / "scores" / "trained-test.parquet").prompt
    assert {PreferencePair(tuple(json.loads(p)), "", "").prompt_id for p in scored} <= val
    generations = pd.read_parquet(out / "generations" / "generations.parquet")
    assert set(generations[generations.split == "test"].prompt_id) <= val
    assert set(pd.read_parquet(out / "experiments" / "bon" / "samples.parquet").prompt_id) <= val
    assert set(pd.read_parquet(out / "experiments" / "dpo_variants" / "answers.parquet").prompt_id) <= val


def test_the_gpu_script_sets_only_options_the_gpu_profile_has():
    """benchmarks/run_gpu.sh runs where no test does (a lent GPU): its config overrides must still be this
    config's keys, with the ${VAR:-default} values it uses by default."""
    import re
    from alignkit.config import parse_assignments
    script = (REPO / "benchmarks" / "run_gpu.sh").read_text()
    sets = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", s) for s in re.findall(r"--set (\S+)", script)]
    assert {s.split("=")[0] for s in sets} >= {"data.eval.path", "rm.train.max_steps", "dpo.train.max_steps"}
    for item in sets:
        load_config("gpu", parse_assignments([item]))
