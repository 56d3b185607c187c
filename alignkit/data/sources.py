"""Where preference rows come from: a local .json/.jsonl/.parquet file or folder, or a Hugging Face Hub id (read
from the Hub, or from a local mirror of it when $ALIGNKIT_HUB_DIR is set).

`load_pairs(spec)` reads the rows, maps each through its template, and returns the pairs with a report of
what was skipped. A row that cannot be mapped stops the load with an error naming file, row and field.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from alignkit.data.splits import seeded_sample, split_by_prompt
from alignkit.data.templates import PreferencePair, RowError, SkipRow, get_template, matching_templates
from alignkit.data.hub_mirror import HUB_DIR_ENV
from alignkit.errors import AlignkitError, DataError
from alignkit.io import atomic_write_json, atomic_write_text, main_process

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
DATA_DIR_ENV = "ALIGNKIT_DATA_DIR"


@dataclass
class LoadReport:
    source: str
    rows: int = 0
    pairs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def data_file(name: str) -> Path | None:
    """A file of the local data folder ($ALIGNKIT_DATA_DIR), or None."""
    folder = os.environ.get("ALIGNKIT_DATA_DIR")
    path = Path(folder) / name if folder else None
    return path if path is not None and path.exists() else None


def resolve_source(path: str, local_name: str | None = None) -> str:
    """A local copy wins: `$ALIGNKIT_DATA_DIR/<local_name>` if both are set and it exists, else `path`."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir and local_name:
        candidate = Path(data_dir) / local_name
        if candidate.exists():
            return str(candidate)
        raise AlignkitError(f"${DATA_DIR_ENV}={data_dir} is set but has no {local_name}; "
                            f"unset it to use the Hub ({path}) or put the file there")
    return path


def _decode(data: bytes, path: Path, line: int | None = None) -> str:
    """UTF-8 text (a leading byte-order mark dropped); anything else is named by file, line and encoding."""
    try:
        return data.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as e:
        at = line if line is not None else data[:e.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {at} cannot be decoded as UTF-8; "
                        f"re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)", source=str(path),
                        row=at if line is not None else None) from None


def _read_json_file(path: Path) -> Iterator[tuple[int, Mapping]]:
    """Rows with 1-based numbers: line numbers for JSON lines, element numbers for a JSON array. UTF-8 with
    or without a byte-order mark, LF or CRLF line ends."""
    if path.suffix == ".jsonl":
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                line = _decode(raw, path, number)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"malformed JSON ({e.msg} at column {e.colno})", source=str(path),
                                    row=number) from None
                yield number, row
        return
    try:
        data = json.loads(_decode(path.read_bytes(), path))
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                        source=str(path)) from None
    if isinstance(data, dict):  # {"train": [...]} or {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError("expected a JSON array of rows (or an object holding one)", source=str(path))
        data = lists[0]
    if not isinstance(data, list):
        raise DataError("expected a JSON array of rows", source=str(path))
    yield from enumerate(data, 1)


def _read_local(path: Path) -> Iterator[tuple[str, int, Mapping]]:
    files = sorted(p for p in path.iterdir() if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise DataError(f"folder has no {'/'.join(LOCAL_SUFFIXES)} files", source=str(path))
    for file in files:
        if file.suffix not in LOCAL_SUFFIXES:
            raise DataError(f"unsupported file type; use one of {', '.join(LOCAL_SUFFIXES)}", source=str(file))
        if file.suffix == ".parquet":
            import pandas as pd
            for number, row in enumerate(pd.read_parquet(file).to_dict("records"), 1):
                yield str(file), number, row
        else:
            for number, row in _read_json_file(file):
                yield str(file), number, row


def _read_hub(dataset_id: str, name: str | None, split: str) -> Iterator[tuple[str, int, Mapping]]:
    """A Hub dataset's rows, through datasets.load_dataset: from the Hub, or from the folder of the same id
    in $ALIGNKIT_HUB_DIR when that is set (a local mirror, alignkit.data.hub_mirror)."""
    import datasets
    mirror = os.environ.get(HUB_DIR_ENV)
    target = str(Path(mirror) / dataset_id) if mirror else dataset_id
    where = f"the local Hub mirror ${HUB_DIR_ENV}={mirror}" if mirror else "the Hugging Face Hub"
    if mirror and not Path(target).is_dir():
        raise AlignkitError(f"dataset {dataset_id!r} is not in {where} (no folder {target}); unset ${HUB_DIR_ENV} "
                            f"to read the Hub, or rebuild the mirror (alignkit.data.hub_mirror)")
    # a mirror keeps its own datasets cache: the shared one can hand back another folder's rows under the same name
    cache = {"cache_dir": str(Path(mirror) / ".cache")} if mirror else {}
    try:
        ds = datasets.load_dataset(target, name=name, split=split, **cache)
    except Exception as e:  # network, auth, or a wrong id: all need the same advice
        raise AlignkitError(
            f"could not load dataset {dataset_id!r} (subset {name!r}, split {split!r}) from {where}: "
            f"{type(e).__name__}: {str(e)[:300]}\nIf the Hub is unreachable, point alignkit at a local "
            f"copy: --data PATH (a .json/.jsonl/.parquet file or folder), or set ${DATA_DIR_ENV} to a folder "
            f"holding the profile's local file.") from None
    for number, row in enumerate(ds, 1):
        yield f"{dataset_id}:{split}", number, row


def read_rows(path: str, *, name: str | None = None, split: str = "train") -> Iterator[tuple[str, int, Mapping]]:
    """(source, row number, row) from a local path, or from the Hub when `path` is not a local path."""
    local = Path(path).expanduser()
    if local.exists():
        return _read_local(local)
    if local.suffix in LOCAL_SUFFIXES or path.startswith((".", "/", "~")):
        raise DataError("file not found (check the path, or set --data / $ALIGNKIT_DATA_DIR)", source=path)
    return _read_hub(path, name, split)


def load_pairs(path: str, template: str, *, name: str | None = None, split: str = "train",
               max_rows: int | None = None, seed: int = 0) -> tuple[list[PreferencePair], LoadReport]:
    """Read and map rows. `max_rows` takes a seeded random sample (after mapping, so skips don't count)."""
    mapper = get_template(template)
    report = LoadReport(source=path)
    pairs: list[PreferencePair] = []
    for source, number, row in read_rows(path, name=name, split=split):
        report.rows += 1
        if not isinstance(row, Mapping):
            raise DataError(f"expected an object, got {type(row).__name__}", source=source, row=number)
        try:
            pair = mapper(row)
        except RowError as e:
            fits = matching_templates(row, exclude=template)
            hint = f"the row fits template {' or '.join(fits)}" if fits else "the row fits no registered template"
            raise DataError(f"{e} (template {template}; {hint})", source=source, row=number, field=e.field) from None
        except SkipRow as e:
            report.skipped[str(e)] = report.skipped.get(str(e), 0) + 1
            continue
        pairs.append(PreferencePair(pair.prompt, pair.better, pair.worse,
                                    {**pair.meta, "source": Path(source).name, "row": number}))
    if not pairs:
        raise DataError(f"no usable preference pairs (rows read: {report.rows}, skipped: {report.skipped})",
                        source=path)
    pairs = seeded_sample(pairs, max_rows, seed)
    report.pairs = len(pairs)
    return pairs, report


def _write_pairs(path, pairs: list[PreferencePair]) -> None:
    atomic_write_text(path, "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs))


def prepare_data(cfg) -> tuple[list[PreferencePair], list[PreferencePair], dict]:
    """Load the train/eval pairs of `cfg.data` (a RunConfig's); split by prompt when there is no eval source;
    write the split to outputs/<profile>/data/ (train.jsonl, test.jsonl, split.json)."""
    d = cfg.data
    info: dict = {}
    train_pairs: list[PreferencePair] = []
    if d.train.path is not None:
        source = resolve_source(d.train.path, d.train.local_name)
        train_pairs, report = load_pairs(source, d.train.template, name=d.train.subset, split=d.train.split,
                                         max_rows=d.train.max_pairs, seed=cfg.seed)
        info["train_source"] = {"path": source, "rows": report.rows, "skipped": report.skipped}
    if d.eval.path is not None:
        source = resolve_source(d.eval.path, d.eval.local_name)
        eval_pairs, report = load_pairs(source, d.eval.template, name=d.eval.subset, split=d.eval.split,
                                        max_rows=d.eval.max_pairs, seed=cfg.seed)
        info["eval_source"] = {"path": source, "rows": report.rows, "skipped": report.skipped}
    elif train_pairs:
        train_pairs, eval_pairs = split_by_prompt(train_pairs, d.test_fraction, cfg.seed)
        info["split"] = {"by": "prompt", "test_fraction": d.test_fraction, "seed": cfg.seed}
    else:
        raise AlignkitError("nothing to evaluate: no training data (data.train.path is empty) and no "
                            "data.eval.path; pass --eval-data PATH (e.g. outputs/<profile>/data/test.jsonl "
                            "with --eval-template ALIGNKIT)")
    info.update(n_train=len(train_pairs), n_eval=len(eval_pairs))
    if train_pairs and main_process():  # an eval-only run leaves the training run's split alone
        data_dir = cfg.out / "data"
        info["prompt_overlap"] = len({p.prompt_id for p in train_pairs} & {p.prompt_id for p in eval_pairs})
        _write_pairs(data_dir / "train.jsonl", train_pairs)
        _write_pairs(data_dir / "test.jsonl", eval_pairs)
        atomic_write_json(data_dir / "split.json", {
            **info, "train_prompt_ids": sorted({p.prompt_id for p in train_pairs}),
            "test_prompt_ids": sorted({p.prompt_id for p in eval_pairs})})
    return train_pairs, eval_pairs, info
