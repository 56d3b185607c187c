"""The package's shape, checked from its source: layers that import only downward, no import circle, no
import hidden in a function, the report layer above the core, a config that loads without torch, and files
of a readable size."""
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "alignkit"
LAYERS = [
    ("errors", "io", "config", "experiment_config"),
    ("data",),
    ("stats", "verdicts", "pooling", "losses", "flops", "prefix"),
    ("models",),
    ("infer",),
    ("train",),
    ("study", "experiments"),
    ("report",),
    ("cli", "__main__"),
]
"""Bottom to top. A module may import its own layer's modules and those of layers below it, never above."""
ENTRY = {"alignkit.cli", "alignkit.__main__"}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it to LAYERS")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported alignkit module, inside a function?) for every import statement of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.startswith("alignkit"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("alignkit"):
                for alias in child.names:  # `from alignkit import losses` imports the module alignkit.losses
                    sub = f"{child.module}.{alias.name}"
                    found.append((sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists()
                                  or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else child.module, in_function))
            visit(child, nested)
    visit(tree, False)
    return found


def graph() -> dict[str, list[tuple[str, bool]]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_down_and_the_core_never_imports_the_report_layer():
    wrong = []
    for module, targets in graph().items():
        for target, _ in targets:
            if target == "alignkit":
                continue
            if layer(target) > layer(module):
                wrong.append(f"{module} imports {target} (layer {layer(target)} above its own {layer(module)})")
    assert not wrong, "\n".join(wrong)
    report = [m for m, ts in graph().items() if m not in ENTRY and not m.startswith("alignkit.report")
              and any(t.startswith("alignkit.report") for t, _ in ts)]
    assert not report, f"core modules importing the report layer: {report}"


def test_no_import_circle():
    edges = {m: {t for t, _ in ts if t != m and t != "alignkit"} for m, ts in graph().items()}
    state: dict[str, int] = {}

    def walk(node, path):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2
    for module in edges:
        if module not in state:
            walk(module, [module])


def test_no_alignkit_import_inside_a_function():
    hidden = [f"{m} imports {t} inside a function" for m, ts in graph().items() for t, inside in ts if inside]
    assert not hidden, "\n".join(hidden)


def test_files_are_of_a_readable_size():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_a_config_loads_without_torch():
    code = ("import sys; from alignkit.config import load_config; cfg = load_config('cpu'); "
            "print(cfg.rm.train.lr, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0.0002", "False"]


def test_the_checks_can_fail(tmp_path):
    """The helpers see an upward import, a hidden import and a circle when there is one."""
    (tmp_path / "a.py").write_text("from alignkit.report import tables\n\ndef f():\n    import alignkit.train\n")
    assert imports(tmp_path / "a.py") == [("alignkit.report.tables", False), ("alignkit.train", True)]
    assert layer("alignkit.report.tables") > layer("alignkit.data.tokenize")
