"""The report: papermill runs `notebooks/NN_*.ipynb` in order on one profile, nbconvert exports each
executed notebook to a standalone HTML file, and jupyter-book (1.x, execution off) builds the bilingual
book from the executed notebooks plus `book/*.md` and a generated provenance page.

    outputs/<profile>/notebooks/NN_*.ipynb, NN_*.html     executed notebooks, standalone HTML
    outputs/<profile>/report_times.json                    wall time per notebook (written after each)
    outputs/<profile>/provenance.json                      what the provenance page shows
    book/chapters/                                         the executed notebooks where `_toc.yml` finds them
    _build/html/index.html                                 the book
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from alignkit.config import CONFIG_DIR, load_config
from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_json, atomic_write_text

REPO = CONFIG_DIR.parent
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
CHAPTERS = Path("book") / "chapters"
"""Generated (git-ignored): executed notebooks, placeholders and the provenance page, under the book root."""
MATHJAX = Path("book") / "_static" / "mathjax" / "tex-mml-chtml.js"
"""Local MathJax 3 (copied from the npm package by `make setup-report`); `_config.yml` points Sphinx at it."""


# The kernels papermill starts inherit these: progress bars and import-time notices are noise in a book.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "PYTHONWARNINGS": "ignore:IProgress not found"}


@contextlib.contextmanager
def _environ(values: Mapping[str, str]):
    """Set environment variables (unless already set by the user) for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class NotebookFailed(AlignkitError):
    """A report notebook raised; the message names the notebook, the cell and the error."""


def report_notebooks(folder: Path = REPO / "notebooks") -> list[Path]:
    """The numbered report notebooks, in order (a glob: chapters that do not exist yet are skipped)."""
    return sorted(Path(folder).glob(NOTEBOOK_GLOB))


def failure_message(notebook: Path, executed: Path, error) -> str:
    """A papermill failure -> which notebook, which cell (index in the executed notebook, which counts the
    injected-parameters cell), the first lines of its source, the error, and where to look."""
    source = "\n".join("    " + line for line in (error.source or "").splitlines()[:6])
    return (f"report notebook {notebook.name} failed in cell {error.cell_index} "
            f"(In [{error.exec_count}]):\n{source}\n{error.ename}: {error.evalue}\n"
            f"The partly executed notebook, with the traceback, is {executed}; after fixing, rerun "
            f"`alignkit report` (finished steps are reused).")


def run_notebooks(profile: str, overrides: Mapping | None = None, *, force: bool = False,
                  notebooks: Sequence[Path] | None = None, log: Callable[[str], None] = print) -> dict:
    """Execute each notebook with papermill (parameters `profile`, `overrides`, `force`) into
    <out>/notebooks/, in order; stop at the first failure with `NotebookFailed`. Returns
    {notebook name: wall seconds}, also written (after each notebook) to <out>/report_times.json."""
    import papermill
    from papermill.exceptions import PapermillExecutionError
    overrides = dict(overrides or {})
    cfg = load_config(profile, overrides)
    dest = cfg.out / "notebooks"
    dest.mkdir(parents=True, exist_ok=True)
    notebooks = report_notebooks() if notebooks is None else [Path(n) for n in notebooks]
    if not notebooks:
        raise AlignkitError(f"no report notebooks ({NOTEBOOK_GLOB}) in {REPO / 'notebooks'}")
    times: dict[str, float] = {}
    start = time.perf_counter()
    for notebook in notebooks:
        executed = dest / notebook.name
        log(f"report: {notebook.name} ...")
        t0 = time.perf_counter()
        try:
            with _environ(QUIET_ENV):
                papermill.execute_notebook(str(notebook), str(executed), cwd=str(REPO), kernel_name="python3",
                                           parameters={"profile": profile, "overrides": overrides, "force": force},
                                           progress_bar=False)
        except PapermillExecutionError as e:
            raise NotebookFailed(failure_message(notebook, executed, e)) from None
        times[notebook.name] = round(time.perf_counter() - t0, 1)
        log(f"report: {notebook.name} done in {times[notebook.name]:.1f} s")
        atomic_write_json(cfg.out / "report_times.json", {
            "profile": profile, "overrides": overrides, "force": force, "notebooks": times,
            "total_s": round(time.perf_counter() - start, 1), "cpu_count": os.cpu_count()})
    return times


# ----------------------------------------------------------------------------- standalone HTML

_TAB_LINES = re.compile(r"^\s*(:{3,}\s*(\{tab-set\}.*)?|:sync(-group)?:.*)\s*$")
_TAB_ITEM = re.compile(r"^\s*:{3,}\{tab-item\}\s*(.*)$")


def flatten_tabs(markdown: str) -> str:
    """MyST tab-sets (the book's language switch) -> plain Markdown with a bold heading per tab, for
    viewers that do not know MyST (Jupyter, nbconvert)."""
    out = []
    for line in markdown.splitlines():
        item = _TAB_ITEM.match(line)
        if item:
            out.append(f"**{item.group(1).strip()}**\n")
        elif not _TAB_LINES.match(line):
            out.append(line)
    return "\n".join(out).strip() + "\n"


def export_html(executed: Path) -> Path:
    """One executed notebook -> a standalone HTML file beside it (figures embedded)."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = flatten_tabs(cell.source)
    exporter = HTMLExporter()
    exporter.log.setLevel("ERROR")  # not "Alternative text is missing" for every figure
    body, _ = exporter.from_notebook_node(nb)
    html = Path(executed).with_suffix(".html")
    atomic_write_text(html, body)
    return html


# ----------------------------------------------------------------------------- the book

def toc_files(root: Path = REPO) -> list[str]:
    """Every `file:` entry of `_toc.yml` (root first)."""
    import yaml
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
    from alignkit.report.tables import scrub_paths
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
    import nbformat
    nb = nbformat.read(executed, as_version=4)
    reader_view(nb)
    nbformat.write(nb, dest)


TITLES = {"04_dpo": "4. DPO", "05_dpo_inference": "5. DPO inference / DPO 推理",
          "06_analysis_qa": "6. Analysis Q&A / 分析问答", "07_performance": "7. Performance / 性能"}
"""Titles of placeholder pages (chapters whose notebook has not run)."""

PLACEHOLDER = """# {title}

::::{{tab-set}}
:sync-group: lang

:::{{tab-item}} English
:sync: en
This chapter has not been run yet on profile `{profile}`: `notebooks/{name}.ipynb` was not found or not
executed. Run `make report PROFILE={profile}`.
:::

:::{{tab-item}} 中文
:sync: zh
本章尚未在 `{profile}` 配置下运行：未找到或未执行 `notebooks/{name}.ipynb`。请运行 `make report PROFILE={profile}`。
:::
::::
"""


def stage_book(out: Path, profile: str, root: Path = REPO, provenance_md: str | None = None,
               log: Callable[[str], None] = print, findings_md: str | None = None) -> list[str]:
    """Copy the executed notebooks of `out`/notebooks into <root>/book/chapters/ (replacing what was
    there) in their reader view, write a placeholder page for each `_toc.yml` chapter that has no executed
    notebook, the provenance page, and the findings summary the landing page includes
    (book/chapters/findings.md; a placeholder when not given). Returns the names of the missing chapters."""
    from alignkit.report import landing
    from alignkit.report.tables import scrub_paths
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
        title = TITLES.get(name, f"{int(name[:2])}. " + name.split("_", 1)[-1].replace("_", " ").capitalize())
        (chapters / f"{name}.md").write_text(PLACEHOLDER.format(title=title, name=name, profile=profile),
                                             encoding="utf-8")
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


def copy_book_sources(dest: Path) -> Path:
    """A separate book root (e.g. for tests): `_config.yml`, `_toc.yml` and the hand-written `book/*.md`;
    `stage_book` then adds the chapters and MathJax."""
    dest = Path(dest)
    (dest / "book").mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, dest / name)
    for page in (REPO / "book").glob("*.md"):
        shutil.copy2(page, dest / "book" / page.name)
    (dest / "book" / "_static").mkdir(exist_ok=True)
    for asset in (REPO / "book" / "_static").iterdir():
        if asset.is_file():  # lang.js, lang.css; MathJax is staged by stage_mathjax
            shutil.copy2(asset, dest / "book" / "_static" / asset.name)
    return dest


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


def run_report(profile: str, overrides: Mapping | None = None, *, force: bool = False, book: bool = True,
               root: Path = REPO, path_output: Path | None = None, notebooks: Sequence[Path] | None = None,
               log: Callable[[str], None] = print) -> dict:
    """The whole report: notebooks (papermill) -> standalone HTML (nbconvert) -> provenance -> book.
    Returns {"times": ..., "html": [...], "index": path or None}."""
    from alignkit.report import provenance
    overrides = dict(overrides or {})
    cfg = load_config(profile, overrides)
    drift = provenance.drift_warning(provenance.lock_state()["drift"])
    if drift:
        log(f"report: warning: {drift}")
    t0 = time.perf_counter()
    times = run_notebooks(profile, overrides, force=force, notebooks=notebooks, log=log)
    html = [export_html(cfg.out / "notebooks" / name) for name in times]
    facts = provenance.collect(cfg, overrides=overrides)
    atomic_write_json(cfg.out / "provenance.json", facts)
    result = {"times": times, "html": [str(h) for h in html], "index": None}
    if book:
        t1 = time.perf_counter()
        from alignkit.report import landing
        stage_book(cfg.out, profile, root, provenance.markdown(facts), log=log, findings_md=landing.markdown(cfg))
        result["index"] = str(build_book(root, path_output=path_output, log=log))
        log(f"report: book built in {time.perf_counter() - t1:.1f} s")
    log("report: wall time per notebook: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) +
        f"; total {time.perf_counter() - t0:.1f} s")
    return result
