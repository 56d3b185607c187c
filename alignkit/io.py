"""Artifacts on disk: atomic writes (a reader, or a crash, never sees a half-written file) and the one rule for
reusing a finished step: its JSON record carries the fingerprint of everything that determined it, and is
reused only while that fingerprint is unchanged."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence


def main_process() -> bool:
    """True on global rank 0 (or outside a distributed launch): the one process that writes artifacts."""
    return os.environ.get("RANK", "0") == "0"


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary file path; on success it replaces `path` in one rename, on error it is removed."""
    path = Path(path)
    tmp_dir = _tmp_sibling(path)
    tmp = tmp_dir / path.name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields a temporary folder; on success it replaces folder `path` (old content removed)."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dtype_name(dtype) -> str:
    """torch.bfloat16 -> 'bfloat16': a torch dtype as configs, identities and records spell it."""
    return str(dtype).removeprefix("torch.")


def fingerprint(identity) -> str:
    """Content hash of a JSON-able description of what determines a result (settings, inputs' fingerprints)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stamped(record: dict, identity) -> dict:
    """`record` with its identity: `config` (readable) and `identity` (its fingerprint), as `reuse` reads them."""
    return {**record, "config": json.loads(json.dumps(identity, default=str)), "identity": fingerprint(identity)}


def reuse(path: str | Path, identity, *, beside: Sequence[str] = ()) -> dict | None:
    """The JSON record at `path` when it was written (by `stamped`) for this exact `identity` and the files
    named in `beside` (written before it, in its folder) all exist; else None. Every step that can be reused
    (a trained model, scores, generations, an eval-only run, an experiment) goes through here."""
    path = Path(path)
    if not path.exists() or not all((path.parent / name).exists() for name in beside):
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if saved.get("identity") == fingerprint(identity) else None


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
