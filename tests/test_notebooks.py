"""The report's notebooks execute under papermill on the tiny profile (a random tiny model, real rows)."""
import json

import pytest

from conftest import REPO


@pytest.mark.slow
def test_report_notebooks_run_under_papermill(tiny_model_dir, tmp_path, data_dir, monkeypatch):
    import papermill
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    out = tmp_path / "01.ipynb"
    overrides = {"model.name": str(tiny_model_dir), "output_dir": str(tmp_path / "outputs"), "train.max_steps": 3}
    papermill.execute_notebook(str(REPO / "notebooks" / "01_reward_model.ipynb"), str(out), cwd=str(REPO),
                               parameters={"profile": "tiny", "overrides": overrides}, kernel_name="python3",
                               progress_bar=False)
    executed = json.loads(out.read_text())
    images = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the training-curve figure was not drawn"
    metrics = json.loads((tmp_path / "outputs" / "rm" / "metrics.json").read_text())
    assert metrics["steps"] == 3
    # notebook 3 scores the run above (untrained/trained x test/train) and draws its figures
    out3 = tmp_path / "03.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "03_preference_visualization.ipynb"), str(out3),
                               cwd=str(REPO), parameters={"profile": "tiny", "overrides": overrides},
                               kernel_name="python3", progress_bar=False)
    cells = json.loads(out3.read_text())["cells"]
    assert sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", [])) == 2
    assert (tmp_path / "outputs" / "scores" / "summary.json").exists()
