"""Project files say what the project is, not how it came to be (git log keeps that): no "stop 22", "earlier
notes", "the CPU-budget issue", "issue 14" or "previously" in the README, the book, notebooks, configs, the
library, benchmarks, scripts, sweeps or tests."""
import re
import subprocess

from conftest import REPO

SCANNED = ["README.md", "book", "notebooks", "configs", "alignkit", "benchmarks", "scripts", "sweeps", "tests",
           "Makefile", "pyproject.toml", "environment.yml", "_config.yml", "_toc.yml"]
TEXT = {".md", ".py", ".ipynb", ".yaml", ".yml", ".json", ".toml", ".tsv", ".txt", ".sh", ".cfg", ""}
SKIPPED = ("benchmarks/results/", "sweeps/results/", "tests/test_history.py")
"""Measurement records (what a run printed, with its date and commit) and this file's own patterns."""
HISTORY = re.compile(r"\bstop \d+\b|\bearlier notes?\b|\bthe [\w-]+ issue\b|\bissues? \d+\b|\bpreviously\b"
                     r"|\bthe previous run\b|\bearlier layout\b|\bthe seed's\b|\bseed's (?:loop|code|pattern)\b"
                     r"|\bthis session\b|\(was \d", re.IGNORECASE)


def history_lines(root, paths: list[str]) -> list[str]:
    """'file:line: text' for every line of the tracked text files under `paths` that tells history."""
    listed = subprocess.run(["git", "ls-files", "--", *paths], capture_output=True, text=True, cwd=root)
    files = listed.stdout.split() if listed.returncode == 0 else []
    if not files:  # not a git checkout (an export): every file on disk
        files = [str(p.relative_to(root)) for name in paths for p in
                 ([root / name] if (root / name).is_file() else sorted((root / name).rglob("*"))) if p.is_file()]
    hits = []
    for name in files:
        path = root / name
        if name.startswith(SKIPPED) or path.suffix not in TEXT or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if HISTORY.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:160]}")
    return hits


def test_no_project_file_tells_its_history():
    assert history_lines(REPO, SCANNED) == []


def test_a_planted_stop_is_named_by_file_and_line(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text("seed: 0\n# measured after stop 22: 12 s\n")
    (tmp_path / "README.md").write_text("# x\nThe autocast stall of earlier notes.\n")
    assert history_lines(tmp_path, ["README.md", "configs"]) == [
        "README.md:2: The autocast stall of earlier notes.", "configs/x.yaml:2: # measured after stop 22: 12 s"]
