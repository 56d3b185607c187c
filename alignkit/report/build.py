"""The report run: papermill executes `notebooks/NN_*.ipynb` in order on one profile, nbconvert exports each
executed notebook to a standalone HTML file, then alignkit.report.book stages and builds the bilingual
jupyter-book (1.x, execution off) from them plus `book/*.md` and a generated provenance page.

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
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import nbformat

from alignkit.config import load_config
from alignkit.data.hub_mirror import build_hub_mirror, copy_given, hub_environment
from alignkit.experiments.run import GIVEN_DATA
from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_json, atomic_write_text
from alignkit.report import landing, provenance
from alignkit.report.book import NOTEBOOK_GLOB, build_book, stage_book
from alignkit.report.tables import REPO


# The kernels papermill starts inherit these: progress bars and import-time notices are noise in a book.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore:IProgress not found"}


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



def run_report(profile: str, overrides: Mapping | None = None, *, force: bool = False, book: bool = True,
               root: Path = REPO, path_output: Path | None = None, notebooks: Sequence[Path] | None = None,
               log: Callable[[str], None] = print) -> dict:
    """The whole report: notebooks (papermill) -> standalone HTML (nbconvert) -> provenance -> book.
    Returns {"times": ..., "html": [...], "index": path or None}."""
    overrides = dict(overrides or {})
    cfg = load_config(profile, overrides)
    drift = provenance.drift_warning(provenance.lock_state()["drift"])
    if drift:
        log(f"report: warning: {drift}")
    t0 = time.perf_counter()
    with _data_environment(cfg, log):
        times = run_notebooks(profile, overrides, force=force, notebooks=notebooks, log=log)
        html = [export_html(cfg.out / "notebooks" / name) for name in times]
        facts = provenance.collect(cfg, overrides=overrides)
    atomic_write_json(cfg.out / "provenance.json", facts)
    result = {"times": times, "html": [str(h) for h in html], "index": None}
    if book:
        t1 = time.perf_counter()
        stage_book(cfg.out, profile, root, provenance.markdown(facts), log=log, findings_md=landing.markdown(cfg))
        result["index"] = str(build_book(root, path_output=path_output, log=log))
        log(f"report: book built in {time.perf_counter() - t1:.1f} s")
    log("report: wall time per notebook: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) +
        f"; total {time.perf_counter() - t0:.1f} s")
    return result


def _data_environment(cfg, log: Callable[[str], None]):
    """Where the run's data comes from: as the environment says, or, for a profile with `hub_mirror.enabled`,
    the local Hub mirror in <out>/hub/ (built from $ALIGNKIT_DATA_DIR, alignkit.data.hub_mirror) with the
    local files hidden, for the notebooks and every process they start."""
    if not cfg.hub_mirror.enabled:
        return contextlib.nullcontext()
    record = build_hub_mirror(cfg.out / "hub", cfg.hub_mirror.train_pairs, cfg.hub_mirror.val_pairs)
    copy_given(cfg.out / "hub", [file for file, _ in GIVEN_DATA.values()])
    log(f"report: Hub datasets from the local mirror {cfg.out / 'hub'}: " +
        ", ".join(f"{repo} {split} {n}" for repo, splits in record["splits"].items() for split, n in splits.items()))
    return hub_environment(cfg.out / "hub")
