"""Each chapter as a person runs it in JupyterLab: the notebook as committed, only its parameters cell
changed (`profile = "tiny"`, and `overrides` naming the tiny random model and a scratch output folder), every
cell executed in order through a Jupyter kernel by nbclient, started in notebooks/ as JupyterLab starts it.
No papermill, so no injected-parameters cell: this checks the cells a person meets. Papermill's own run of
the chain is tests/test_report.py."""
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import REPO, tiny_chain_overrides

WIDGET = "application/vnd.jupyter.widget-view+json"


def set_parameters(nb, **values) -> None:
    """Edit the `parameters` cell as a person would: each `name = value` line gets the new value (its comment
    stays); nothing else in the notebook changes."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a report notebook has exactly one cell tagged `parameters`"
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = [^#\n]*?(\s*#.*)?$", lambda m: f"{name} = {value!r}{m.group(1) or ''}",
                            cells[0].source, flags=re.M)
        assert n == 1, f"the parameters cell has no `{name} = ...` line"
        cells[0].source = source


def run_in_kernel(path, **parameters):
    """The notebook at `path` with its parameters set, executed cell by cell in its own kernel (the notebook's
    kernelspec, as JupyterLab picks it). Returns the executed notebook; raises CellExecutionError."""
    nb = nbformat.read(path, as_version=4)
    set_parameters(nb, **parameters)
    NotebookClient(nb, kernel_name=nb.metadata.kernelspec.name, timeout=1200,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    return nb


def _outputs(nb, kind=None):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if kind is None or o.get("output_type") == kind]


@pytest.mark.slow
def test_every_chapter_runs_cell_by_cell_on_the_tiny_profile(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    from alignkit.report.build import report_notebooks
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))  # as `make lab` passes DATA on
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    overrides = tiny_chain_overrides(tiny_model_dir, tmp_path / "outputs")
    out = tmp_path / "outputs"
    models = {"reward model": out / "rm" / "model.safetensors", "DPO policy": out / "dpo" / "model.safetensors"}
    written, executed = {}, {}
    for path in report_notebooks():
        try:
            executed[path.stem] = run_in_kernel(path, profile="tiny", overrides=overrides)
        except CellExecutionError as e:
            pytest.fail(f"{path.name}, run cell by cell on the tiny profile, failed:\n{e}")
        print(f"{path.name}: {sum(c.cell_type == 'code' for c in executed[path.stem].cells)} code cells ran")
        for name, model in models.items():  # each model is written once, by its chapter; later ones reuse it
            if model.exists():
                stamp = model.stat().st_mtime_ns
                assert written.setdefault(name, (path.stem, stamp))[1] == stamp, \
                    f"{path.name} rewrote the {name} that {written[name][0]} wrote"
    assert {k: v[0] for k, v in written.items()} == {"reward model": "01_reward_model", "DPO policy": "04_dpo"}
    assert {"01_reward_model", "02_evaluation_pitfalls", "03_preference_visualization", "04_dpo",
            "05_dpo_inference", "06_experiments", "07_analysis_qa"} <= set(executed)
    for stem, nb in executed.items():
        assert not _outputs(nb, "error"), stem
    for artifact in ("rm/metrics.json", "scores/summary.json", "dpo/metrics.json", "generations/summary.json",
                     "experiments/length/summary.json", "experiments/calibration/summary.json"):
        assert (out / artifact).exists(), artifact
    # progress bars are widgets (JupyterLab draws them), not text lines on stderr
    training = executed["01_reward_model"]
    assert any(WIDGET in o.get("data", {}) for o in _outputs(training, "display_data"))
    assert not [o for o in _outputs(training, "stream") if o.get("name") == "stderr" and "it/s]" in o["text"]]


def test_a_chapter_run_before_its_input_names_the_chapter_to_run_first(tiny_model_dir, data_dir, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    overrides = tiny_chain_overrides(tiny_model_dir, tmp_path / "empty")
    with pytest.raises(CellExecutionError) as err:
        run_in_kernel(REPO / "notebooks" / "03_preference_visualization.ipynb", profile="tiny", overrides=overrides)
    assert err.value.ename == "AlignkitError"
    assert "chapter 1" in err.value.evalue and "notebooks/01_reward_model.ipynb" in err.value.evalue
    # what the person sees under the cell: the message, not a stack of library frames
    assert err.value.traceback.count("File ") == 0 and "site-packages" not in err.value.traceback
