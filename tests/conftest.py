"""Fixtures: the real shared data folder, SmolLM2's tokenizer, and a tiny random Llama that uses it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("ALIGNKIT_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "align_anything_t2t.json").exists():
        pytest.fail(f"real preference data not found in {path}; set ALIGNKIT_DATA_DIR to ../shared/data")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from alignkit.models import load_tokenizer
    return load_tokenizer("smollm2")


@pytest.fixture(scope="session")
def no_newline_tokenizer(tokenizer):
    """SmolLM2's tokenizer with a ChatML template that ends each turn at `<|im_end|>` (no newline after it),
    so a rendered conversation ends in SmolLM2's pad token."""
    import copy
    variant = copy.deepcopy(tokenizer)
    ending = "'<|im_end|>' + '\n'"
    assert ending in variant.chat_template
    variant.chat_template = variant.chat_template.replace(ending, "'<|im_end|>'")
    return variant


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A random 2-layer Llama with SmolLM2's vocabulary and chat template, saved as a causal LM."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def homework_pairs(data_dir):
    from alignkit.data.sources import load_pairs
    pairs, _ = load_pairs(str(data_dir / "align_anything_t2t.json"), "HOMEWORK")
    return pairs


EVERY_VARIANT = {"dpo_variants.methods": "sigmoid,cdpo,robust,ipo,rdpo,simpo,orpo,kto,online",
                 "dpo_variants.beta_scales": "1,2"}
"""Chapter 6's DPO variants in the tests: every method, each strength chosen on the validation fold from a
grid of two (the tiny profile itself runs three methods at one strength, to stay quick)."""


def tiny_config(tiny_model_dir, tmp_path, data_dir, **overrides):
    """A RunConfig on the tiny model and a few dozen real pairs."""
    from alignkit.config import load_config
    values = {"model.name": str(tiny_model_dir), "output_dir": str(tmp_path / "out"),
              "data.train.path": str(data_dir / "align_anything_t2t.json"), "data.train.local_name": None,
              "data.train.max_pairs": 40, "data.max_length": 64, "data.max_prompt_length": 32,
              "rm.train.threads": None, **EVERY_VARIANT}
    values.update(overrides)
    return load_config("tiny", values)


def copy_book_sources(dest: Path) -> Path:
    """A separate book root for a test: `_config.yml`, `_toc.yml`, the hand-written `book/*.md` and the
    files of `book/_static/`; `stage_book` then adds the chapters and MathJax."""
    import shutil
    (dest / "book" / "_static").mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, dest / name)
    for page in (REPO / "book").glob("*.md"):
        shutil.copy2(page, dest / "book" / page.name)
    for asset in (REPO / "book" / "_static").iterdir():
        if asset.is_file():  # lang.js, lang.css; MathJax is staged by stage_mathjax
            shutil.copy2(asset, dest / "book" / "_static" / asset.name)
    return dest


def tiny_chain_overrides(tiny_model_dir, output_dir) -> dict:
    """The tiny profile's overrides for a whole-chain run (every notebook): the tiny random model, artifacts
    under `output_dir`, 3 training steps for the reward model and for DPO, every DPO variant."""
    from alignkit.config import load_config
    overrides = {"model.name": str(tiny_model_dir), "output_dir": str(output_dir), "rm.train.max_steps": 3,
                 **EVERY_VARIANT}
    if hasattr(load_config("tiny"), "dpo"):
        overrides["dpo.train.max_steps"] = 3
    return overrides


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory, tiny_model_dir, data_dir) -> dict:
    """The whole report once per session: every notebooks/NN_*.ipynb under papermill on the tiny profile
    (random tiny model, a few dozen real rows), standalone HTML, and the book built in its own root.
    Returns {"out", "root", "index", "times", "overrides"}."""
    from alignkit.config import load_config
    from alignkit.report.build import run_report
    base = tmp_path_factory.mktemp("report")
    overrides = tiny_chain_overrides(tiny_model_dir, base / "outputs")
    root = copy_book_sources(base / "root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNKIT_DATA_DIR", str(data_dir))  # the kernels papermill starts inherit it
        result = run_report("tiny", overrides, root=root)
    return {"out": load_config("tiny", overrides).out, "root": root, "index": Path(result["index"]),
            "times": result["times"], "overrides": overrides}
