"""scripts/compare_runs.py, run as a real subprocess on two hand-written artifact folders."""
from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_runs.py"

RM = {
    "steps": 8,
    "eval": {"accuracy": 0.4, "n": 10, "ci95": [0.1681803285264069, 0.6873262320788047],
             "loss": 0.7093531489372253, "length_matched_accuracy": 1.0, "longer_wins_accuracy": 1.0,
             "length": {"length_matched": {"accuracy": 1.0, "n": 1}}},
    "eval_untrained": {"accuracy": 0.2, "length_matched_accuracy": 0.0},
    "train": {"accuracy": 0.4, "n": 10},
    "wall_time_s": 77.0,
}
DPO = {
    "steps": 3,
    "eval": {"reward_accuracy": 0.3, "loss": 1.2106962203979492, "n": 10,
             "rewards_chosen": -5.008246803283692, "rewards_rejected": -4.520895767211914},
    "train": {"reward_accuracy": 0.7, "n": 10},
}
_SPLIT = {"n": 6, "win_rate": 1.0, "win_rate_ci95": [1.0, 1.0], "mean_score_base": -0.68, "mean_score_dpo": -0.54,
          "mean_length_base": 8.0, "mean_length_dpo": 2.6666666666666665, "hit_limit_base": 1.0,
          "hit_limit_dpo": 0.3333333333333333,
          "length_controlled": {"dpo_effect": 0.12498201429843903, "dpo_effect_ci95": [0.0769, 0.1730]}}
GENERATIONS = {"test": _SPLIT, "train": dict(copy.deepcopy(_SPLIT), n=4, win_rate=0.75), "verdict": "words, not compared"}
_SCORES = {"n": 10, "accuracy": 0.4, "auc": 0.46, "mean_margin": -0.0265, "score_vs_length": {"spearman": -0.794}}
SCORES = {name: dict(_SCORES) for name in ("trained-test", "untrained-test", "trained-train", "untrained-train")}
EVAL = {"eval": {"accuracy": 0.55, "n": 80}}


def _bi(en: str, zh: str) -> str:
    """A bilingual cell as the report renders it."""
    return (f'<span class="ak-en" lang="en">{en}</span><span class="ak-sep"> / </span>'
            f'<span class="ak-zh" lang="zh">{zh}</span>')


def evidence_table(reading: str = "CI holds 0.5: not shown better than chance", value: str = "0.400 [0.168, 0.687]",
                   order=("measure", "value", "n", "reading")) -> str:
    """A chapter-6 style evidence table (no index: the first column names the row)."""
    head = {"measure": _bi("measure", "指标"), "value": _bi("value", "数值"), "n": "n",
            "reading": _bi("reading", "解读")}
    rows = [
        {"measure": _bi("RM accuracy, held-out test [95% CI]", "奖励模型准确率"), "value": value, "n": "10",
         "reading": _bi(reading, "未显著优于随机")},
        {"measure": _bi("reference log-probs", "参考"), "value": "cache", "n": "–",
         "reading": _bi("computed once and cached", "只算一次")},
    ]
    cells = lambda row, tag: "".join(f"<{tag} class=num>{row[c]}</{tag}>" for c in order)  # noqa: E731
    return ('<style>.ak-table td { padding: 1px; }</style><div class="ak-table"><table>'
            f'<caption>{_bi("<b>Table 6.1.</b> Evidence.", "<b>表 6.1</b> 证据。")}</caption>'
            f"<thead><tr>{cells(head, 'th')}</tr></thead><tbody>"
            + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows) + "</tbody></table></div>")


def slope_table(value: str = "-0.055") -> str:
    """A table with an index column (row labels in <th>), like table 6.9."""
    return ("<table><thead><tr><th>margin</th><th>DPO (β=0.1)</th><th>IPO (τ=0.1)</th></tr></thead><tbody>"
            f"<tr><th class=num>-2.00</th><td class=num>{value}</td><td class=num>-14.0</td></tr>"
            "<tr><th class=num>0</th><td class=num>-0.050</td><td class=num>-2.5e-04</td></tr>"
            "</tbody></table>")


def notebook(*htmls: str) -> dict:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# Chapter 6"}]
    for i, html in enumerate(htmls):
        cells.append({"cell_type": "code", "execution_count": i + 1, "metadata": {}, "source": "ch.table(...)",
                      "outputs": [{"output_type": "execute_result", "execution_count": i + 1, "metadata": {},
                                   "data": {"text/html": html, "text/plain": "a table"}}]})
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


def write_run(root: Path, rm=RM, dpo=DPO, generations=GENERATIONS, scores=SCORES, evals=None, nb=None) -> Path:
    files = {"rm/metrics.json": rm, "dpo/metrics.json": dpo, "generations/summary.json": generations,
             "scores/summary.json": scores,
             "notebooks/06_analysis_qa.ipynb": nb if nb is not None else notebook(evidence_table(), slope_table())}
    for name, data in (evals if evals is not None else {"trained-ood": EVAL}).items():
        files[f"evals/{name}/rm_eval/outputs-tiny-rm/metrics.json"] = data
    for rel, data in files.items():
        if data is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
    return root


def compare(a: Path, b: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), *args],
                          capture_output=True, text=True, timeout=60)


def line_of(out: str, key: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith(key + " ")]
    assert len(lines) == 1, f"{key!r} not printed once in:\n{out}"
    return lines[0]


def changed(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


@pytest.fixture
def run_a(tmp_path) -> Path:
    return write_run(tmp_path / "a")


def test_identical_runs_exit_0(run_a, tmp_path):
    res = compare(run_a, write_run(tmp_path / "b"))
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.endswith("key numbers compared, 0 differ") and int(last.split()[0]) > 60
    for key in ("rm:eval.accuracy", "rm:eval.ci95[1]", "dpo:eval.rewards_rejected",
                "generations:test.length_controlled.dpo_effect_ci95[0]", "scores:trained-train.score_vs_length.spearman",
                "evals/trained-ood:eval.n", "ch6:tables",
                "ch6/1/RM accuracy, held-out test [95% CI]/value", "ch6/2/-2.00/DPO (β=0.1)"):
        assert line_of(res.stdout, key).endswith("same")
    # numbers-only: a cell without numbers ("cache") is skipped; the label column is the key, not a value
    assert "ch6/1/reference log-probs/value" not in res.stdout
    assert "/measure" not in res.stdout
    assert "wall_time" not in res.stdout  # not a key number


def test_changed_accuracy_exit_1_and_named(run_a, tmp_path):
    res = compare(run_a, write_run(tmp_path / "b", rm=changed(RM, "eval.accuracy", 0.5)))
    assert res.returncode == 1, res.stdout + res.stderr
    row = line_of(res.stdout, "rm:eval.accuracy")
    assert "0.4" in row and "0.5" in row and row.endswith("DIFFERENT")
    assert res.stdout.strip().splitlines()[-1].endswith(", 1 differ")


def test_reworded_reading_same_number_exit_0_numbers_only(run_a, tmp_path):
    nb = notebook(evidence_table(reading="the CI includes 0.5, so it is not better than chance"), slope_table())
    run_b = write_run(tmp_path / "b", nb=nb)
    res = compare(run_a, run_b)
    assert res.returncode == 0, res.stdout + res.stderr
    assert line_of(res.stdout, "ch6/1/RM accuracy, held-out test [95% CI]/reading").endswith("same")
    # the same change compared as text is caught
    res = compare(run_a, run_b, "--no-numbers-only")
    assert res.returncode == 1, res.stdout
    assert line_of(res.stdout, "ch6/1/RM accuracy, held-out test [95% CI]/reading").endswith("DIFFERENT")


def test_reordered_columns_exit_0(run_a, tmp_path):
    nb = notebook(evidence_table(order=("measure", "reading", "n", "value")), slope_table())
    res = compare(run_a, write_run(tmp_path / "b", nb=nb), "--no-numbers-only")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("nb, key", [
    (notebook(evidence_table(value="0.500 [0.168, 0.687]"), slope_table()), "ch6/1/RM accuracy, held-out test [95% CI]/value"),
    (notebook(evidence_table(), slope_table(value="-0.056")), "ch6/2/-2.00/DPO (β=0.1)"),
])
def test_changed_table_number_exit_1(run_a, tmp_path, nb, key):
    res = compare(run_a, write_run(tmp_path / "b", nb=nb))
    assert res.returncode == 1, res.stdout + res.stderr
    assert line_of(res.stdout, key).endswith("DIFFERENT")


def test_lost_table_fails(run_a, tmp_path):
    res = compare(run_a, write_run(tmp_path / "b", nb=notebook(evidence_table())))
    assert res.returncode == 1, res.stdout
    assert line_of(res.stdout, "ch6:tables").endswith("DIFFERENT")
    assert line_of(res.stdout, "ch6/2/-2.00/DPO (β=0.1)").endswith("only in A")  # a cell alone does not fail


def test_missing_folder_exit_2(run_a, tmp_path):
    gone = tmp_path / "no-such-run"
    res = compare(run_a, gone)
    assert res.returncode == 2
    assert "run B" in res.stderr and str(gone) in res.stderr and "does not exist" in res.stderr
    assert res.stdout == ""
    res = compare(gone, run_a)
    assert res.returncode == 2 and "run A" in res.stderr


def test_folder_without_artifacts_exit_2(run_a, tmp_path):
    (tmp_path / "empty").mkdir()
    res = compare(run_a, tmp_path / "empty")
    assert res.returncode == 2 and "none of the report artifacts" in res.stderr


def test_tolerance_floats_but_not_ints(run_a, tmp_path):
    run_b = write_run(tmp_path / "b", rm=changed(RM, "eval.loss", RM["eval"]["loss"] + 1e-12))
    assert compare(run_a, run_b).returncode == 1
    assert compare(run_a, run_b, "--tol", "1e-9").returncode == 0
    run_c = write_run(tmp_path / "c", dpo=changed(DPO, "eval.n", 11))
    res = compare(run_a, run_c, "--tol", "100")
    assert res.returncode == 1 and line_of(res.stdout, "dpo:eval.n").endswith("DIFFERENT")


def test_effect_under_its_older_name_matches(run_a, tmp_path):
    gens = copy.deepcopy(GENERATIONS)
    for split in ("test", "train"):
        lc = gens[split]["length_controlled"]
        lc["effect"], lc["effect_ci95"] = lc.pop("dpo_effect"), lc.pop("dpo_effect_ci95")
    res = compare(run_a, write_run(tmp_path / "b", generations=gens))
    assert res.returncode == 0, res.stdout
    assert line_of(res.stdout, "generations:train.length_controlled.dpo_effect").endswith("same")


def test_missing_artifacts(run_a, tmp_path):
    # absent from one run: its key numbers fail
    res = compare(run_a, write_run(tmp_path / "b", dpo=None))
    assert res.returncode == 1
    row = line_of(res.stdout, "dpo:eval.loss")
    assert "missing" in row and row.endswith("ONLY IN A")
    # absent from both: reported, nothing to compare
    res = compare(write_run(tmp_path / "c", dpo=None), write_run(tmp_path / "d", dpo=None))
    assert res.returncode == 0, res.stdout
    assert line_of(res.stdout, "dpo/metrics.json").endswith("missing")
    # a named field absent from both
    rm = copy.deepcopy(RM)
    del rm["eval_untrained"]
    res = compare(write_run(tmp_path / "e", rm=rm), write_run(tmp_path / "f", rm=rm))
    assert res.returncode == 0 and line_of(res.stdout, "rm:eval_untrained.accuracy").endswith("missing")


def test_extra_keys_fail_only_when_strict(run_a, tmp_path):
    run_b = write_run(tmp_path / "b", evals={"trained-ood": EVAL, "another": EVAL})
    res = compare(run_a, run_b)
    assert res.returncode == 0, res.stdout
    assert line_of(res.stdout, "evals/another:eval.accuracy").endswith("only in B")
    res = compare(run_a, run_b, "--strict")
    assert res.returncode == 1 and line_of(res.stdout, "evals/another:eval.accuracy").endswith("ONLY IN B")


def test_json_report(run_a, tmp_path):
    out = tmp_path / "diff.json"
    res = compare(run_a, write_run(tmp_path / "b", rm=changed(RM, "eval.accuracy", 0.5)), "--json", str(out))
    assert res.returncode == 1
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["differ"] == 1 and report["exit_code"] == 1
    (row,) = [r for r in report["rows"] if r["status"] == "DIFFERENT"]
    assert row["key"] == "rm:eval.accuracy" and (row["value_a"], row["value_b"]) == (0.4, 0.5)


def test_standalone_no_alignkit_import():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "alignkit" for name in names), names
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "refactor" in res.stdout and "06_analysis_qa" in res.stdout
