"""A local stand-in for the Hugging Face Hub: the preference files of $ALIGNKIT_DATA_DIR laid out as the Hub's
dataset repositories, so that a profile's Hub ids, subsets and splits go through `datasets.load_dataset` as on
a host that reaches the Hub (alignkit.data.sources reads Hub ids from the folder $ALIGNKIT_HUB_DIR names). It
lets the gpu profile run where the Hub cannot be reached (`hub_mirror`, configs/gpu-rehearsal.yaml).

    <hub>/PKU-Alignment/align-anything/README.md                   dataset card: subset text-to-text, splits train, val
    <hub>/PKU-Alignment/align-anything/text-to-text/{train,val}.parquet
    <hub>/PKU-Alignment/PKU-SafeRLHF/README.md                     dataset card: the default subset, split train
    <hub>/PKU-Alignment/PKU-SafeRLHF/data/train.jsonl
    <hub>/mirror.json                                              what it was built from and the size of each split
    <hub>/.cache/                                                  datasets' cache of this mirror (alignkit.data.sources)

align-anything's local rows are 848 of the Hub's text-to-text val split (about 1,000 rows; train: about 30,000).
The mirror's val split and then its train split are whole prompts of them in a seeded order, each until it holds
the rows asked for (so a few more), sharing no prompt. `overall_response` is written as text, '1' or '2', as the
Hub's parquet holds it. PKU-SafeRLHF's train split is the 500 local rows, as they are.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Iterator

from alignkit.errors import AlignkitError
from alignkit.io import atomic_dir, atomic_write_json, atomic_write_text, file_fingerprint, reuse, stamped

HUB_DIR_ENV = "ALIGNKIT_HUB_DIR"
"""The folder Hub ids are read from instead of the Hub (alignkit.data.sources); unset: the Hub."""
ALIGN_ANYTHING, PKU_SAFERLHF = "PKU-Alignment/align-anything", "PKU-Alignment/PKU-SafeRLHF"
LOCAL_FILES = {ALIGN_ANYTHING: "align_anything_t2t.json", PKU_SAFERLHF: "pku_saferlhf_500.jsonl"}
SEED = 0
"""Seed of the prompt-disjoint train/val split of the local align-anything rows."""
LAYOUT = 1
"""Version of the layout above: part of the mirror's identity, so a changed layout is rebuilt."""


def _card(subset: str, files: dict[str, str]) -> str:
    """A dataset card whose YAML header names the subset's splits and their files, as the Hub's cards do."""
    lines = ["---", "configs:", f"- config_name: {subset}", "  data_files:"]
    for split, path in files.items():
        lines += [f"  - split: {split}", f"    path: {path}"]
    return "\n".join(lines + ["---", "", "Local mirror built by alignkit.data.hub_mirror from $ALIGNKIT_DATA_DIR.", ""])


def split_by_question(rows: list[dict], n_train: int, n_val: int, seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """(train, val): whole questions in a seeded order go to val until it holds at least `n_val` rows, then to
    train until it holds at least `n_train`; no question is in both."""
    questions = sorted({r["question"] for r in rows})
    random.Random(seed).shuffle(questions)
    count: dict[str, int] = {}
    for r in rows:
        count[r["question"]] = count.get(r["question"], 0) + 1
    parts: list[set[str]] = [set(), set()]  # val, train
    held = [0, 0]
    for q in questions:
        part = 0 if held[0] < n_val else 1
        if part == 1 and held[1] >= n_train:
            break
        parts[part].add(q)
        held[part] += count[q]
    if held[0] < n_val or held[1] < n_train:
        raise AlignkitError(f"the local align-anything file has {len(rows)} rows: too few for hub_mirror.val_pairs "
                            f"({n_val}) and hub_mirror.train_pairs ({n_train}) without a shared prompt; lower them")
    return [r for r in rows if r["question"] in parts[1]], [r for r in rows if r["question"] in parts[0]]


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _build(data_dir: Path, dest: Path, n_train: int, n_val: int) -> dict:
    """Write the mirror into the empty folder `dest`; returns {repository: {split: rows}}."""
    rows = json.loads((data_dir / LOCAL_FILES[ALIGN_ANYTHING]).read_text(encoding="utf-8"))
    rows = [{**r, "overall_response": str(r["overall_response"])} for r in rows]
    train, val = split_by_question(rows, n_train, n_val)
    repo = dest / ALIGN_ANYTHING
    for split, part in (("train", train), ("val", val)):
        _write_parquet(repo / "text-to-text" / f"{split}.parquet", part)
    atomic_write_text(repo / "README.md", _card("text-to-text", {s: f"text-to-text/{s}.parquet" for s in ("train", "val")}))
    repo = dest / PKU_SAFERLHF
    (repo / "data").mkdir(parents=True)
    shutil.copyfile(data_dir / LOCAL_FILES[PKU_SAFERLHF], repo / "data" / "train.jsonl")
    with open(repo / "data" / "train.jsonl", encoding="utf-8") as f:
        pku_rows = sum(1 for line in f if line.strip())
    atomic_write_text(repo / "README.md", _card("default", {"train": "data/train.jsonl"}))
    return {ALIGN_ANYTHING: {"text-to-text/train": len(train), "text-to-text/val": len(val)},
            PKU_SAFERLHF: {"default/train": pku_rows}}


def build_hub_mirror(dest: str | Path, train_pairs: int, val_pairs: int, data_dir: str | Path | None = None) -> dict:
    """The mirror in `dest` (see the module docstring) with about `train_pairs` and `val_pairs` rows in
    align-anything's splits, built from `data_dir` (default $ALIGNKIT_DATA_DIR), or reused while its files and
    sizes are the same. Built in a sibling folder and renamed into place (alignkit.io.atomic_dir), so a failed
    build leaves no partial mirror. Returns mirror.json: {'splits': {repository: {'subset/split': rows}}, ...}."""
    data_dir = data_dir or os.environ.get("ALIGNKIT_DATA_DIR")
    if not data_dir:
        raise AlignkitError("the Hub mirror is built from the local data files: set $ALIGNKIT_DATA_DIR (e.g. "
                            "ALIGNKIT_DATA_DIR=../shared/data, or make report DATA=../shared/data)")
    data_dir, dest = Path(data_dir), Path(dest)
    missing = [name for name in LOCAL_FILES.values() if not (data_dir / name).exists()]
    if missing:
        raise AlignkitError(f"$ALIGNKIT_DATA_DIR={data_dir} has no {', '.join(missing)}: the Hub mirror needs them")
    identity = {"layout": LAYOUT, "train_pairs": train_pairs, "val_pairs": val_pairs, "seed": SEED,
                "files": {name: file_fingerprint(data_dir / name) for name in sorted(LOCAL_FILES.values())}}
    saved = reuse(dest / "mirror.json", identity)
    if saved is not None:
        return saved
    with atomic_dir(dest) as tmp:
        record = stamped({"splits": _build(data_dir, tmp, train_pairs, val_pairs), "source": str(data_dir)}, identity)
        atomic_write_json(tmp / "mirror.json", record)
    return record


def copy_given(hub: str | Path, names, data_dir: str | Path | None = None) -> list[str]:
    """Copy the files `names` of `data_dir` (default $ALIGNKIT_DATA_DIR) that exist into `hub`/given/: data
    that no Hub dataset id serves here (the gold best-of-n set, the safety pairs), which the rehearsal reads as
    a GPU host does, from $ALIGNKIT_DATA_DIR. Returns the names copied."""
    source = Path(data_dir or os.environ.get("ALIGNKIT_DATA_DIR") or ".")
    target = Path(hub) / "given"
    target.mkdir(parents=True, exist_ok=True)
    copied = [n for n in names if (source / n).exists()]
    for name in copied:
        if not (target / name).exists():
            shutil.copyfile(source / name, target / name)
    return copied


def _set_environ(values: dict[str, str | None]) -> None:
    """Set each variable (None: unset it)."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def hub_environment(hub: str | Path) -> Iterator[None]:
    """For the block (and every process started in it): Hub ids read from `hub`, the local files hidden
    ($ALIGNKIT_DATA_DIR unset, or, when `hub/given/` exists, that folder: the files no Hub id serves, which a
    GPU host's $ALIGNKIT_DATA_DIR holds too; see `copy_given`), and the Hub itself off (HF_HUB_OFFLINE,
    HF_DATASETS_OFFLINE), so a read that would reach the Hub fails at once. The environment is restored afterwards."""
    given = Path(hub) / "given"
    values = {HUB_DIR_ENV: str(Path(hub).resolve()), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "ALIGNKIT_DATA_DIR": str(given.resolve()) if given.is_dir() else None}
    before = {k: os.environ.get(k) for k in values}
    _set_environ(values)
    try:
        yield
    finally:
        _set_environ(before)
