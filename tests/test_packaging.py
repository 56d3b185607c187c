"""What a user installing alignkit gets: every package alignkit imports is declared in pyproject.toml (or
pulled in by a declared one), `alignkit --help` runs from the console script, and the Makefile's install
line passes PyTorch's CPU wheel index (the lock's torch is the `+cpu` build, which PyPI does not serve)."""
import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from alignkit.report import provenance
from alignkit.report.provenance import canonical_name
from conftest import REPO


def _declared(extras: tuple[str, ...] = ()) -> set[str]:
    """pyproject.toml's dependencies (and those of `extras`) with everything they require, as installed here
    (a requirement's own extras, as `jsonschema[format-nongpl]`, included)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    seen: set[tuple[str, str]] = set()
    while todo:
        req = todo.pop()
        name = canonical_name(req.name)
        wanted = {""} | set(req.extras)
        if {(name, e) for e in wanted} <= seen:
            continue
        seen |= {(name, e) for e in wanted}
        for spec in metadata.requires(name) or []:
            sub = Requirement(spec)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(sub)
    return {name for name, _ in seen}


def _undeclared(modules: dict[str, str], declared: set[str]) -> list[str]:
    """'module (distribution) in where' for each imported top-level module no declared package provides."""
    providers = metadata.packages_distributions()
    missing = []
    for module, where in sorted(modules.items()):
        if module in sys.stdlib_module_names or module == "alignkit" or module.startswith("_"):
            continue
        dists = {canonical_name(d) for d in providers.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} ({', '.join(sorted(dists))}) in {where}")
    return missing


def test_every_package_alignkit_imports_is_declared():
    modules: dict[str, str] = {}
    for path in sorted((REPO / "alignkit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.split(".")[0], f"{path.relative_to(REPO)}:{node.lineno}")
    assert "deepspeed" in modules  # the scan sees imports inside functions too
    assert _undeclared(modules, _declared(("gpu",))) == []


BARE_HELP = """
import json, sys
blocked = set(json.loads(sys.argv[1]))

class Absent:  # as if the package were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
from alignkit.cli import main
main(["--help"])
"""


def test_alignkit_help_runs_with_only_the_declared_packages():
    """`alignkit --help` from the console script; then again in a process where every installed package that
    pyproject.toml's dependencies do not pull in is hidden, as in a fresh `pip install .`."""
    script = Path(sys.executable).with_name("alignkit")  # the console script pyproject.toml declares
    run = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "{rm,score,dpo,generate,report}" in run.stdout, run.stderr[-2000:]
    declared = _declared()
    blocked = sorted(m for m, dists in metadata.packages_distributions().items()
                     if m != "alignkit" and not {canonical_name(d) for d in dists} & declared)
    assert "trl" in blocked  # a test-only peer, not a dependency: hidden
    bare = subprocess.run([sys.executable, "-c", BARE_HELP, json.dumps(blocked)], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert bare.returncode == 0 and "{rm,score,dpo,generate,report}" in bare.stdout, bare.stderr[-2000:]


def _install_commands(*args: str) -> list[str]:
    """The commands `make .venv/bin/.installed` runs (make -n: printed, not run), continuation lines joined."""
    run = subprocess.run(["make", "-n", "-B", ".venv/bin/.installed", *args], capture_output=True, text=True,
                         cwd=REPO, check=True)
    return [" ".join(line.split()) for line in run.stdout.replace("\\\n", " ").splitlines()]


def test_the_install_passes_the_torch_index_for_torch_and_installs_the_whole_lock(tmp_path):
    torch_line = "pip install --quiet --no-deps --require-hashes --extra-index-url {} -r .venv/torch.lock"
    commands = _install_commands()
    assert any(c.endswith(torch_line.format("https://download.pytorch.org/whl/cpu")) for c in commands), commands
    mirror = _install_commands("TORCH_INDEX=https://mirror.example/whl/cpu")
    assert any(c.endswith(torch_line.format("https://mirror.example/whl/cpu")) for c in mirror)
    off = _install_commands("TORCH_INDEX=")
    assert not any("--extra-index-url" in c for c in off)
    assert any(c.endswith("--require-hashes -r .venv/torch.lock") for c in off)
    # the lock files those commands write, written here: torch alone, and everything else; together the lock
    (tmp_path / ".venv").mkdir()
    for command in commands:
        if command.startswith("sed "):
            subprocess.run(command.replace("requirements.lock", str(REPO / "requirements.lock")), shell=True,
                           check=True, cwd=tmp_path)
    read = provenance.read_lock
    full = read((REPO / "requirements.lock").read_text())
    torch_only, rest = (read((tmp_path / ".venv" / name).read_text()) for name in ("torch.lock", "no-torch.lock"))
    assert torch_only == {"torch": full["torch"]} and full["torch"].endswith("+cpu")
    assert {**rest, **torch_only} == full and "torch" not in rest
    installs = [c for c in commands if " install " in c and "-r .venv/" in c]
    assert any("-r .venv/no-torch.lock -r requirements-nodeps.lock" in c for c in installs)


def test_conda_environment_passes_the_same_torch_index():
    import yaml
    default = re.search(r"^TORCH_INDEX \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == [f"--extra-index-url {default}", "-r requirements.lock"]
