"""The experiments as steps on a profile's artifacts. Each writes outputs/<profile>/experiments/<name>/
summary.json, which is reused (alignkit.io.reuse) while what it depends on and its own settings are the same.

On chapter 3's reward-model scores (outputs/<profile>/scores/trained-{train,test}.parquet; nothing is
retrained), reused while the scores (the `identity` fingerprint of scores/summary.json) are the same:
  length       post-hoc length correction fitted on the train sample, judged on the held-out pairs
  calibration  ECE and reliability of sigmoid(margin) on the held-out pairs, before and after temperature
               scaling (cross-fitted on the held-out pairs, and fitted in-sample on the train sample)
On the profile's base model and PKU-SafeRLHF, reused while the model's weights (or its name), the data file,
`safety.max_pairs`, the seed and the evaluation encoding are the same:
  safety       a reward head (helpfulness) and a cost head (harm) on the base model's frozen features; also
               writes experiments/safety/responses.parquet (one row per response: split, r, c, is_safe, tokens)
               and the two heads, experiments/safety/heads.safetensors
On samples of the base policy, reused while the policy, chapter 1's reward model and test split, the safety
heads, the seed, the `best_of_n` sizes and the decoding settings are the same:
  bon          best-of-n against the reward model (the proxy), judged by the safety heads; also writes
               experiments/bon/samples.parquet (one row per prompt x sample)
On DPO-family fine-tunes of the base policy, reused while the policy, chapter 1's reward model and splits, the
`dpo` section (but how it is launched), the `dpo_variants` sizes, the seed and the decoding settings are the same:
  dpo_variants DPO, cDPO, robust DPO, IPO, R-DPO, SimPO, ORPO, KTO and online DPO (one round on the base
               policy's own samples labelled by the reward model) trained head to head (the profile's
               `dpo_variants.methods`), each read on held-out pairs and answering held-out prompts; also writes
               experiments/dpo_variants/pairs.parquet (one row per split x method x strength x pair) and
               answers.parquet (one row per model x prompt)
On chapter 1's reward model and a given data set, reused while the reward model's weights, the data file, the
evaluation encoding, the seed and the experiment's section are the same (each also writes scores.parquet):
  gold_bon     best-of-n judged by GPT-4-turbo's preferences (alpacaeval_bon11.json): the RM scores 11 answers
               per prompt; the RM's pick, the longest, the oracle and a random answer for n = 1..11
  safety_pairs the RM out of its domain: PKU-SafeRLHF pairs where exactly one answer is safe, the RM against
               the length rule
Each profile's sizes are in its YAML (the `safety`, `best_of_n`, `dpo_variants`, `gold_bon` and `safety_pairs`
sections, each commented); chapter 6 shows them for the run it reads.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

from alignkit.data.sources import data_file
from alignkit.data.tokenize import ENCODING
from alignkit.errors import AlignkitError
from alignkit.experiments.bon import bon_experiment, bon_generation, bon_prompts
from alignkit.experiments.calibration import calibration_summary
from alignkit.experiments.gold_bon import GOLD_FILE, gold_bon_experiment, load_gold, pick_prompts, sizing
from alignkit.experiments.length import length_debiasing
from alignkit.experiments.safety import load_heads, safety_experiment, save_heads
from alignkit.experiments.safety_pairs import SAFER_FILE, safety_pairs_experiment
from alignkit.experiments.variants import variants_experiment, variants_generation
from alignkit.infer import decoding_settings
from alignkit.io import atomic_path, atomic_write_json, file_fingerprint, reuse, stamped
from alignkit.study.scores import paired
from alignkit.train.launch import LAUNCH_FIELDS
from alignkit.train.rm import scorer, scorer_identity

SCORE_TABLES = ("trained-train", "trained-test")
"""The score tables the experiments read: the trained RM on the train sample and on the held-out split."""

SETTINGS = {
    "length": {"tolerance": 0.1, "n_resamples": 1000},
    "calibration": {"n_bins": 10, "n_resamples": 1000},
    "safety": {"val_fraction": 0.25, "l2_grid": [1e-4, 1e-3, 1e-2, 1e-1, 1.0],
               "lambdas": [0, 0.25, 0.5, 1, 2, 4, 8], "n_resamples": 1000},
    "bon": {"n_resamples": 1000},
    "dpo_variants": {"val_fraction": 0.2, "label_smoothing": 0.1, "n_resamples": 1000},
    "gold_bon": {"n_resamples": 1000},
    "safety_pairs": {"n_resamples": 1000},
}
"""Each experiment's own settings. They are part of its identity, so changing one recomputes it."""

ON_SCORES = ("length", "calibration")
"""The experiments that read chapter 3's scores (`run_experiments`' default)."""

SAFETY_DATA = {"path": "PKU-Alignment/PKU-SafeRLHF", "split": "train", "local_name": "pku_saferlhf_500.jsonl"}
"""Where `safety` reads PKU-SafeRLHF: the local file in $ALIGNKIT_DATA_DIR (a 500-row sample of the Hub's train
split) when there is one, else the Hub's train split; `safety.max_pairs` of them, a seeded sample."""


def _require_scores(cfg) -> tuple[dict, dict[str, Path]]:
    """(scores/summary.json, {table name: parquet path}); a clear error naming chapter 3 when any is missing."""
    scores_dir = cfg.out / "scores"
    summary_path = scores_dir / "summary.json"
    tables = {name: scores_dir / f"{name}.parquet" for name in SCORE_TABLES}
    missing = [str(p) for p in (summary_path, *tables.values()) if not p.exists()]
    if missing:
        raise AlignkitError(f"no reward-model scores for the experiments ({', '.join(missing)} missing): run chapter 3 "
                            f"(notebooks/03_preference_visualization.ipynb) first, or `alignkit score --profile "
                            f"{cfg.profile}`")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if "identity" not in summary:
        raise AlignkitError(f"{summary_path} has no 'identity' field (written by an older alignkit): re-run "
                            f"chapter 3, or `alignkit score --profile {cfg.profile}`")
    return summary, tables


def experiment_identity(cfg, name: str, scores_summary: dict) -> dict:
    """What experiment `name` depends on: the scores' fingerprint (the `identity` of scores/summary.json),
    the seed and the experiment's own settings."""
    return {"experiment": name, "scores": scores_summary["identity"], "seed": cfg.seed, **SETTINGS[name]}


def model_identity(name: str):
    """A model as an identity: a local folder by the fingerprints of its *.safetensors files (so a retrained
    model at the same path is new), anything else ('smollm2', a Hub id) by its name."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return {"safetensors": [file_fingerprint(f) for f in sorted(folder.glob("*.safetensors"))]}
    return name


def _safety_source() -> tuple[str, str]:
    """(what to load, its fingerprint): the local PKU-SafeRLHF file and its bytes' hash, or the Hub id."""
    local = data_file(SAFETY_DATA["local_name"])
    if local is not None:
        return str(local), file_fingerprint(local)
    return SAFETY_DATA["path"], f"{SAFETY_DATA['path']}:{SAFETY_DATA['split']}"


def safety_identity(cfg, data: str) -> dict:
    """What `safety` depends on: the base model, the data's fingerprint, the encoding and evaluation lengths,
    the weights' dtype, the seed, the test fraction and the experiment's own settings (not chapter 3)."""
    return {"experiment": "safety", "model": model_identity(cfg.model.name), "dtype": cfg.model.dtype,
            "data": data, "encoding": ENCODING, "eval_lengths": list(cfg.data.eval_lengths()), "seed": cfg.seed,
            "test_fraction": cfg.data.test_fraction, "max_pairs": cfg.safety.max_pairs, **SETTINGS["safety"]}


SAFETY_FILES = ("responses.parquet", "heads.safetensors")
"""What the safety step writes beside its summary.json (which is written last); reuse needs all of them."""


def _safety_folder(cfg) -> Path:
    return cfg.out / "experiments" / "safety"


def run_safety(cfg, *, force: bool = False) -> dict:
    """The `safety` experiment on the profile's base model: reused from experiments/safety/summary.json (with
    SAFETY_FILES beside it) while `safety_identity` is unchanged; `force=True` recomputes it."""
    source, data = _safety_source()
    identity = safety_identity(cfg, data)
    folder = _safety_folder(cfg)
    saved = None if force else reuse(folder / "summary.json", identity, beside=SAFETY_FILES)
    if saved is not None:
        return saved
    record, table, heads = safety_experiment(cfg, source, split=SAFETY_DATA["split"], max_pairs=cfg.safety.max_pairs,
                                             **SETTINGS["safety"])
    with atomic_path(folder / "responses.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    save_heads(heads, folder / "heads.safetensors")
    record = stamped({**record, "heads_file": file_fingerprint(folder / "heads.safetensors")}, identity)
    atomic_write_json(folder / "summary.json", record)
    return record


def safety_heads(cfg) -> Path:
    """experiments/safety/heads.safetensors of this profile's safety run: a clear error naming chapter 6's
    reward + cost section when it is missing or was fitted for another base model, data or seed."""
    folder = _safety_folder(cfg)
    _, data = _safety_source()
    if reuse(folder / "summary.json", safety_identity(cfg, data), beside=SAFETY_FILES) is None:
        raise AlignkitError(f"no safety heads for this configuration in {folder} (best-of-n's judges): run chapter "
                            f"6's reward + cost section (notebooks/06_experiments.ipynb) first, i.e. "
                            f"alignkit.experiments.run.run_experiment(cfg, 'safety') for profile {cfg.profile}")
    return folder / "heads.safetensors"


def _require_rm_and_split(cfg, roles=("best-of-n's proxy", "best-of-n's prompts")) -> tuple[Path, Path]:
    """(chapter 1's reward model folder, its test split file); a clear error naming chapter 1 when missing."""
    rm_dir, test = cfg.out / "rm", cfg.out / "data" / "test.jsonl"
    for path, what in ((rm_dir / "model.safetensors", f"trained reward model ({roles[0]})"),
                       (test, f"test split ({roles[1]})"), (test.with_name("train.jsonl"), "training split")):
        if not path.exists():
            raise AlignkitError(f"no {what}: {path} is missing. Run chapter 1 (notebooks/01_reward_model.ipynb) "
                                f"first, or `alignkit rm train --profile {cfg.profile}`")
    return rm_dir, test


def bon_identity(cfg, rm_dir: Path, test: Path, heads: Path) -> dict:
    """What `bon` depends on: the base policy (weights or name) and dtype, the reward model's weights, the test
    split's bytes, the safety heads' bytes, the encodings, the seed, the `best_of_n` sizes, the decoding
    settings and the experiment's own settings."""
    return {"experiment": "bon", "policy": model_identity(cfg.model.name), "dtype": cfg.model.dtype,
            "rm": model_identity(str(rm_dir)), "test_split": file_fingerprint(test),
            "safety_heads": file_fingerprint(heads), "encoding": ENCODING,
            "lengths": [cfg.data.max_length, cfg.data.max_prompt_length],
            "eval_lengths": list(cfg.data.eval_lengths()), "seed": cfg.seed,
            "best_of_n": dataclasses.asdict(cfg.best_of_n),
            "decoding": decoding_settings(bon_generation(cfg), cfg.seed), **SETTINGS["bon"], **scorer_identity(cfg)}


def run_bon(cfg, *, force: bool = False) -> dict:
    """The `bon` experiment: reused from experiments/bon/summary.json (with samples.parquet beside it) while
    `bon_identity` is unchanged; `force=True` samples and scores again."""
    rm_dir, test = _require_rm_and_split(cfg)
    heads = safety_heads(cfg)
    identity = bon_identity(cfg, rm_dir, test, heads)
    folder = cfg.out / "experiments" / "bon"
    saved = None if force else reuse(folder / "summary.json", identity, beside=("samples.parquet",))
    if saved is not None:
        return saved
    record, table = bon_experiment(cfg, bon_prompts(cfg, test), load_heads(heads), **SETTINGS["bon"])
    with atomic_path(folder / "samples.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    record = stamped(record, identity)
    atomic_write_json(folder / "summary.json", record)
    return record


VARIANTS_FILES = ("pairs.parquet", "answers.parquet")
"""What the dpo_variants step writes beside its summary.json (which is written last)."""


def variants_identity(cfg, rm_dir: Path, test: Path) -> dict:
    """What `dpo_variants` depends on: the base policy and dtype, the reward model's weights, both split files'
    bytes, the encodings and truncation, the seed, the `dpo` section (not how it would be launched), the
    `dpo_variants` sizes, the decoding settings and the experiment's own settings. Left out: what the step sets
    itself (each method's loss and flip rate, the cached reference, no DeepSpeed, no mid-run eval or checkpoint)."""
    dpo = {k: v for k, v in dataclasses.asdict(cfg.dpo).items() if k not in ("loss", "label_smoothing", "reference")}
    unused = (*LAUNCH_FIELDS, "deepspeed", "eval_every", "save_every", "log_every")
    dpo["train"] = {k: v for k, v in dpo["train"].items() if k not in unused}
    del dpo["trainable"]["prefix_dtype"]  # the methods' fresh policies keep no cached prefix
    return {"experiment": "dpo_variants", "policy": model_identity(cfg.model.name), "dtype": cfg.model.dtype,
            "rm": model_identity(str(rm_dir)), "train_split": file_fingerprint(test.with_name("train.jsonl")),
            "test_split": file_fingerprint(test), "encoding": ENCODING, "truncation": cfg.data.truncation,
            "lengths": [cfg.data.max_length, cfg.data.max_prompt_length],
            "eval_lengths": list(cfg.data.eval_lengths()), "seed": cfg.seed, "dpo": dpo,
            "dpo_variants": dataclasses.asdict(cfg.dpo_variants),
            "decoding": decoding_settings(variants_generation(cfg), cfg.seed), **SETTINGS["dpo_variants"],
            **scorer_identity(cfg)}


def run_variants(cfg, *, force: bool = False) -> dict:
    """The `dpo_variants` experiment: reused from experiments/dpo_variants/summary.json (with VARIANTS_FILES
    beside it) while `variants_identity` is unchanged; `force=True` trains every method again. A profile whose
    `dpo_variants.methods` is empty gets a record that says so ({'not_run': profile, 'methods': {}}), written
    over any earlier summary so that no later step reads an older run's numbers."""
    if not cfg.dpo_variants.methods.strip():
        record = {"not_run": cfg.profile, "methods": {}}
        atomic_write_json(cfg.out / "experiments" / "dpo_variants" / "summary.json", record)
        return record
    rm_dir, test = _require_rm_and_split(cfg, ("the DPO variants' judge", "the DPO variants' held-out pairs"))
    identity = variants_identity(cfg, rm_dir, test)
    folder = cfg.out / "experiments" / "dpo_variants"
    saved = None if force else reuse(folder / "summary.json", identity, beside=VARIANTS_FILES)
    if saved is not None:
        return saved
    record, pairs, answers = variants_experiment(cfg, test.with_name("train.jsonl"), test, rm_dir,
                                                 **SETTINGS["dpo_variants"])
    for name, table in zip(VARIANTS_FILES, (pairs, answers)):
        with atomic_path(folder / name) as tmp:
            table.to_parquet(tmp, index=False)
    record = stamped(record, identity)
    atomic_write_json(folder / "summary.json", record)
    return record


GIVEN_DATA = {"gold_bon": (GOLD_FILE, "the gold best-of-n set (RewardBench's bon_eval/alpaca_eval_n=16: 403 "
                                      "prompts x 11 answers with AlpacaEval 2's GPT-4-turbo preferences)"),
              "safety_pairs": (SAFER_FILE, "PKU-SafeRLHF's safety pairs ({prompt, response: [safer, less safe]})")}
"""The file each reward-model-only experiment reads from $ALIGNKIT_DATA_DIR, and what it holds."""


def _given_data(cfg, name: str) -> Path:
    """$ALIGNKIT_DATA_DIR/<the file of `name`>; a clear error naming the file and the fix when it is absent."""
    file, what = GIVEN_DATA[name]
    path = data_file(file)
    if path is None:
        raise AlignkitError(f"{file} not found: the {name} experiment reads {what} from $ALIGNKIT_DATA_DIR. Put the "
                            f"file there (the shared data folder has it) and set ALIGNKIT_DATA_DIR, or leave "
                            f"'{name}' out of profile {cfg.profile}'s chapter 6")
    return path


def rm_only_identity(cfg, name: str, rm_dir: Path, data: Path) -> dict:
    """What `gold_bon` and `safety_pairs` depend on: the reward model's weights, the data file's bytes, the
    encoding and evaluation lengths, the seed, the experiment's config section and its own settings."""
    return {"experiment": name, "rm": model_identity(str(rm_dir)), "data": file_fingerprint(data),
            "encoding": ENCODING, "eval_lengths": list(cfg.data.eval_lengths()), "seed": cfg.seed,
            name: dataclasses.asdict(getattr(cfg, name)), **SETTINGS[name], **scorer_identity(cfg)}


def run_rm_only(cfg, name: str, *, force: bool = False) -> dict:
    """`gold_bon` or `safety_pairs`: chapter 1's reward model scores a given data set. Reused from
    experiments/<name>/summary.json (with scores.parquet beside it) while `rm_only_identity` is unchanged."""
    rm_dir, _ = _require_rm_and_split(cfg, (f"{name}'s scorer", f"{name}'s run"))
    data = _given_data(cfg, name)
    identity = rm_only_identity(cfg, name, rm_dir, data)
    folder = cfg.out / "experiments" / name
    saved = None if force else reuse(folder / "summary.json", identity, beside=("scores.parquet",))
    if saved is not None:
        return saved
    batch, lengths = cfg.generation.score_batch_size, cfg.data.eval_lengths()
    if name == "gold_bon":
        every = load_gold(data)
        record, table = gold_bon_experiment(scorer(cfg, rm_dir), rm_dir, pick_prompts(every, cfg.gold_bon.prompts,
                                            cfg.seed), lengths, batch_size=batch, seed=cfg.seed, **SETTINGS[name])
        record["sizing"] = sizing(every)
    else:
        record, table = safety_pairs_experiment(scorer(cfg, rm_dir), rm_dir, data, lengths,
                                                pairs=cfg.safety_pairs.pairs, seed=cfg.seed, batch_size=batch,
                                                **SETTINGS[name])
    with atomic_path(folder / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    record = stamped(record, identity)
    atomic_write_json(folder / "summary.json", record)
    return record


def _compute(name: str, tables: dict[str, pd.DataFrame], seed: int) -> dict:
    train, test = tables["trained-train"], tables["trained-test"]
    if name == "length":
        return length_debiasing(train, test, seed=seed, **SETTINGS[name])
    return calibration_summary(paired(test).margin.to_numpy(float), paired(train).margin.to_numpy(float),
                               seed=seed, **SETTINGS[name])


def run_experiment(cfg, name: str, *, force: bool = False) -> dict:
    """Experiment `name` ('length', 'calibration', 'safety', 'bon', 'dpo_variants', 'gold_bon' or 'safety_pairs')
    on a profile. It is reused from
    outputs/<profile>/experiments/<name>/summary.json while its identity is unchanged; `force=True` recomputes
    it. Returns the record, including its `config` and `identity`."""
    if name not in SETTINGS:
        raise AlignkitError(f"no experiment {name!r}; known: {', '.join(SETTINGS)}")
    if name == "safety":
        return run_safety(cfg, force=force)
    if name == "bon":
        return run_bon(cfg, force=force)
    if name == "dpo_variants":
        return run_variants(cfg, force=force)
    if name in GIVEN_DATA:
        return run_rm_only(cfg, name, force=force)
    scores_summary, paths = _require_scores(cfg)
    identity = experiment_identity(cfg, name, scores_summary)
    path = cfg.out / "experiments" / name / "summary.json"
    saved = None if force else reuse(path, identity)
    if saved is not None:
        return saved
    record = stamped(_compute(name, {k: pd.read_parquet(p) for k, p in paths.items()}, cfg.seed), identity)
    atomic_write_json(path, record)
    return record


def run_experiments(cfg, names=ON_SCORES, *, force: bool = False) -> dict[str, dict]:
    """Experiments `names` (default: those on chapter 3's scores) on a profile -> {name: record}."""
    return {name: run_experiment(cfg, name, force=force) for name in names}
