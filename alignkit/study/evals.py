"""Chapter 2's measurements: eval-only runs of a saved (or untrained) reward model on any preference file,
seeded samples of other datasets, and how often two labels of the same pairs disagree."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from alignkit.config import load_config
from alignkit.data.sources import load_pairs
from alignkit.io import atomic_write_text, reuse
from alignkit.stats import wilson_interval
from alignkit.train.rm import eval_identity, eval_only_path, run_reward_model


def eval_only(profile: str, overrides: Mapping | None, model: str, data: str | Path, template: str, *,
              name: str, force: bool = False) -> dict:
    """Evaluate `model` (a saved RM folder, or a base model with a fresh seeded head) on `data` without
    training, exactly as `alignkit rm eval` does: the config sets `data.train.path=""`. Artifacts go to
    <out>/evals/<name>/; a previous result is reused while its settings, the model and the data file are the
    same (alignkit.io.reuse; `force=True` re-evaluates)."""
    out = load_config(profile, overrides).out / "evals" / name
    cfg = load_config(profile, {**dict(overrides or {}), "model.name": model, "data.train.path": "",
                                "data.eval.path": str(data), "data.eval.template": template, "output_dir": str(out)})
    path = eval_only_path(cfg)
    saved = None if force else reuse(path, eval_identity(cfg))
    if saved is not None:
        return {**saved, "metrics_path": str(path), "reused": True}
    return run_reward_model(cfg)


def sample_pairs(source: str | Path, template: str, n: int, dest: Path, *, seed: int = 0) -> Path:
    """A seeded sample of `n` pairs of a preference file, written in alignkit's own format (template
    ALIGNKIT) to `dest`; kept if it already holds the same sample."""
    pairs, _ = load_pairs(str(source), template, max_rows=n, seed=seed)
    text = "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs)
    dest = Path(dest)
    if not dest.exists() or dest.read_text(encoding="utf-8") != text:
        atomic_write_text(dest, text)
    return dest


def label_disagreement(path: str | Path) -> dict:
    """PKU-SafeRLHF labels each pair twice: which response is more helpful (`better_response_id`) and which
    is safer (`safer_response_id`). The share of pairs where the two disagree, with a 95% Wilson CI."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("better_response_id") is not None and r.get("safer_response_id") is not None]
    if not rows:
        return {"n": 0, "disagree": None, "ci95": None}
    k = sum(int(r["better_response_id"]) != int(r["safer_response_id"]) for r in rows)
    return {"n": len(rows), "disagree": k / len(rows), "ci95": list(wilson_interval(k, len(rows)))}
