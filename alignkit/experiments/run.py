"""The experiments as steps on a profile's artifacts. They read chapter 3's reward-model scores
(outputs/<profile>/scores/trained-{train,test}.parquet) and retrain nothing. Each writes
outputs/<profile>/experiments/<name>/summary.json, which is reused (alignkit.io.reuse) while the scores
(the `identity` fingerprint of scores/summary.json) and the experiment's own settings are the same.

  length       post-hoc length correction fitted on the train sample, judged on the held-out pairs
  calibration  ECE and reliability of sigmoid(margin) on the held-out pairs, before and after temperature
               scaling (cross-fitted on the held-out pairs, and fitted in-sample on the train sample)
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from alignkit.errors import AlignkitError
from alignkit.experiments.calibration import calibration_summary
from alignkit.experiments.length import length_debiasing
from alignkit.io import atomic_write_json, reuse, stamped
from alignkit.study.scores import paired

SCORE_TABLES = ("trained-train", "trained-test")
"""The score tables the experiments read: the trained RM on the train sample and on the held-out split."""

SETTINGS = {
    "length": {"tolerance": 0.1, "n_resamples": 1000},
    "calibration": {"n_bins": 10, "n_resamples": 1000},
}
"""Each experiment's own settings. They are part of its identity, so changing one recomputes it."""


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


def _compute(name: str, tables: dict[str, pd.DataFrame], seed: int) -> dict:
    train, test = tables["trained-train"], tables["trained-test"]
    if name == "length":
        return length_debiasing(train, test, seed=seed, **SETTINGS[name])
    return calibration_summary(paired(test).margin.to_numpy(float), paired(train).margin.to_numpy(float),
                               seed=seed, **SETTINGS[name])


def run_experiment(cfg, name: str, *, force: bool = False) -> dict:
    """Experiment `name` ('length' or 'calibration') on a profile's scores. It is reused from
    outputs/<profile>/experiments/<name>/summary.json while its identity is unchanged; `force=True` recomputes
    it. Returns the record, including its `config` and `identity`."""
    if name not in SETTINGS:
        raise AlignkitError(f"no experiment {name!r}; known: {', '.join(SETTINGS)}")
    scores_summary, paths = _require_scores(cfg)
    identity = experiment_identity(cfg, name, scores_summary)
    path = cfg.out / "experiments" / name / "summary.json"
    saved = None if force else reuse(path, identity)
    if saved is not None:
        return saved
    record = stamped(_compute(name, {k: pd.read_parquet(p) for k, p in paths.items()}, cfg.seed), identity)
    atomic_write_json(path, record)
    return record


def run_experiments(cfg, *, force: bool = False) -> dict[str, dict]:
    """Every experiment of `SETTINGS` on a profile's scores -> {name: record}."""
    return {name: run_experiment(cfg, name, force=force) for name in SETTINGS}
