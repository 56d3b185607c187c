"""The book: the executed notebooks staged into book/chapters/ in their reader view (code collapsed, noise
and machine paths dropped), a placeholder page per chapter that has not run, the provenance page and the
findings section, MathJax, and `jupyter-book build` (html and the printable single page)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import nbformat
import yaml

from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_text
from alignkit.report import landing
from alignkit.report.tables import REPO, scrub_paths, tab_set

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
CHAPTERS = Path("book") / "chapters"
"""Generated (git-ignored): executed notebooks, placeholders and the provenance page, under the book root."""
MATHJAX = Path("book") / "_static" / "mathjax" / "tex-mml-chtml.js"
"""Local MathJax 3 (copied from the npm package by `make setup-report`); `_config.yml` points Sphinx at it."""


def toc_files(root: Path = REPO) -> list[str]:
    """Every `file:` entry of `_toc.yml` (root first)."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk({k: v for k, v in toc.items() if k != "root"})
    return files


NOISE = re.compile(r"real_accelerator\.py|Setting ds_accelerator|accelerator to CPU|[Dd]e-?quantiz|"
                   r"^\s*\S*:?\s*\d{1,3}%\|.*\|")
"""Output lines that are library noise, not narrative: DeepSpeed's accelerator warning, the de-quantizing
notice, progress bars."""
SHOWN_INPUT_TAGS = {"injected-parameters", "show-input"}
"""Code cells the book shows: the parameters the run used (papermill's injected cell; the defaults it
replaced are removed), and any cell tagged `show-input`. Every other code cell is collapsed (`hide-input`)."""


def _quiet(text: str) -> str:
    """`text` without noise lines, and with every absolute path shown relative to the project."""
    lines = [line for line in text.splitlines(keepends=True) if not NOISE.search(line.split("\r")[-1])]
    return scrub_paths("".join(lines))


def reader_view(nb) -> None:
    """An executed notebook (nbformat node, changed in place) as the book shows it: the default
    `parameters` cell removed, other code inputs collapsed behind a toggle (`hide-input`) except the
    injected parameters, stderr (progress bars, warnings) and noise lines dropped, machine paths made
    relative. Progress-bar widgets (and their saved state) are dropped too. The notebook under outputs/
    keeps everything."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if cell.cell_type != "code":
            continue
        if "parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if not SHOWN_INPUT_TAGS & set(tags) and "hide-input" not in tags:
            tags.append("hide-input")
        cell.metadata["tags"] = tags
        cell.source = _quiet(cell.source)
        outputs = []
        for output in cell.get("outputs", []):
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                continue
            if output.get("output_type") == "stream":
                if output.get("name") == "stderr":
                    continue
                output["text"] = _quiet(output.get("text", ""))
                if not output["text"].strip():
                    continue
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in output.get("data", {}):
                    value = output["data"][mime]
                    output["data"][mime] = _quiet(value if isinstance(value, str) else "".join(value))
            outputs.append(output)
        cell.outputs = outputs


def _copy_for_book(executed: Path, dest: Path) -> None:
    """The executed notebook in its reader view (see `reader_view`)."""
    nb = nbformat.read(executed, as_version=4)
    reader_view(nb)
    nbformat.write(nb, dest)


PLACEHOLDER = yaml.safe_load((Path(__file__).parent / "text" / "pages.yaml").read_text(encoding="utf-8"))["placeholder"]
"""Title overrides and the bilingual text of a chapter's page before its notebook has run."""


def placeholder_page(name: str, profile: str) -> str:
    """The page of chapter `name` (e.g. '04_dpo') when its notebook has not run on `profile`."""
    title = PLACEHOLDER["titles"].get(name, f"{int(name[:2])}. " + name.split("_", 1)[-1].replace("_", " ").capitalize())
    return tab_set(f"# {title}", PLACEHOLDER["en"].format(name=name, profile=profile),
                   PLACEHOLDER["zh"].format(name=name, profile=profile))


def stage_book(out: Path, profile: str, root: Path = REPO, provenance_md: str | None = None,
               log: Callable[[str], None] = print, findings_md: str | None = None) -> list[str]:
    """Copy the executed notebooks of `out`/notebooks into <root>/book/chapters/ (replacing what was
    there) in their reader view, write a placeholder page for each `_toc.yml` chapter that has no executed
    notebook, the provenance page, and the findings summary the landing page includes
    (book/chapters/findings.md; a placeholder when not given). Returns the names of the missing chapters."""
    root = Path(root)
    chapters = root / CHAPTERS
    shutil.rmtree(chapters, ignore_errors=True)
    chapters.mkdir(parents=True)
    executed = {p.stem: p for p in sorted((Path(out) / "notebooks").glob(NOTEBOOK_GLOB))}
    for stem, path in executed.items():
        _copy_for_book(path, chapters / path.name)
    wanted = [Path(f).name for f in toc_files(root) if Path(f).parent == CHAPTERS]
    missing = [name for name in wanted if name not in executed and name != "provenance"]
    for name in missing:
        (chapters / f"{name}.md").write_text(placeholder_page(name, profile), encoding="utf-8")
        log(f"report: chapter {name} has no executed notebook; the book shows a placeholder")
    for stem in executed:
        if stem not in wanted:
            log(f"report: notebooks/{stem}.ipynb ran but is not in _toc.yml; add `- file: {CHAPTERS}/{stem}`")
    if provenance_md is not None:
        (chapters / "provenance.md").write_text(scrub_paths(provenance_md), encoding="utf-8")
    (chapters / "findings.md").write_text(scrub_paths(findings_md or landing.PLACEHOLDER), encoding="utf-8")
    stage_mathjax(root, log=log)
    return missing


MATHJAX_SHIM = """// No local MathJax was installed (`make setup-report` copies it here from the npm package `mathjax`),
// so load it from a CDN: math renders only online.
(function () {
  var s = document.createElement("script");
  s.src = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js";
  s.async = true;
  document.head.appendChild(s);
})();
"""


def stage_mathjax(root: Path, log: Callable[[str], None] = print) -> bool:
    """Make <root>/book/_static/mathjax/tex-mml-chtml.js exist: the repository's local copy (copied into a
    book root elsewhere), or a CDN-loading shim. Returns True when math renders offline."""
    target = Path(root) / MATHJAX
    local = REPO / MATHJAX
    if Path(root).resolve() != REPO.resolve() and local.exists() and "cdn.jsdelivr" not in local.read_text()[:400]:
        shutil.rmtree(target.parent, ignore_errors=True)
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local.parent, target.parent)
    if target.exists() and "cdn.jsdelivr" not in target.read_text(encoding="utf-8", errors="replace")[:400]:
        return True
    log(f"report: no local MathJax in {target.parent}; math will load from a CDN (run `make setup-report`)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(MATHJAX_SHIM, encoding="utf-8")
    return False


PRINTABLE = Path("_build") / "singlehtml" / "index.html"
"""The printable report: the whole book on one HTML page (Sphinx's `singlehtml` builder), printed to PDF from
any browser. Chosen because it builds offline with jupyter-book 1 as it is installed: its `pdfhtml`
builder downloads a Chromium through pyppeteer at build time, and `pdflatex` needs a TeX installation
(with CJK fonts) that this project does not set up."""


def _jupyter_book(root: Path, path_output: Path | None, builder: str) -> None:
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root), "--builder", builder]
    if path_output is not None:
        cmd += ["--path-output", str(path_output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise AlignkitError(f"jupyter-book build {root} --builder {builder} failed:\n{tail}")


def build_book(root: Path = REPO, *, path_output: Path | None = None, printable: bool = True,
               log: Callable[[str], None] = print) -> Path:
    """`jupyter-book build <root>` (execution off, as `_config.yml` says) -> <path_output or root>/_build/
    html/index.html, and (`printable`) the single-page version <...>/_build/singlehtml/index.html. Raises
    with the builder's last lines if it fails."""
    root = Path(root)
    _jupyter_book(root, path_output, "html")
    index = Path(path_output or root) / "_build" / "html" / "index.html"
    if not index.exists():
        raise AlignkitError(f"jupyter-book build finished but {index} is missing")
    log(f"report: book at {index}")
    if printable:
        _jupyter_book(root, path_output, "singlehtml")
        single = Path(path_output or root) / PRINTABLE
        page = single.parent / f"{toc_files(root)[0]}.html"
        if not page.exists():
            raise AlignkitError(f"jupyter-book build --builder singlehtml finished but {page} is missing")
        # singlehtml writes the page under the root document's folder (book/) with links to _static/ as if it
        # were at the top, and an index.html that redirects to it: put the page itself at the top instead
        atomic_write_text(single, page.read_text(encoding="utf-8"))
        log(f"report: printable single page at {single} (print it to PDF from a browser)")
    return index
