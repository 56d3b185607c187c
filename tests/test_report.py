"""The report: the tiny chain (every notebook under papermill, HTML, provenance, the book), failure messages
that name the notebook and cell, and the small pieces (tab flattening, placeholders, CJK fallback)."""
import json
import math

import nbformat
import pandas as pd
import pytest

from alignkit.errors import AlignkitError
from conftest import EVERY_VARIANT, REPO


def _images(notebook_path) -> int:
    """Figures in an executed notebook: captioned ones (alignkit.report.tables.Figure, PNG inside HTML) or bare PNGs."""
    cells = json.loads(notebook_path.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) or '<figure class="ak-figure">' in "".join(o.get("data", {}).get("text/html", ""))
               for c in cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_tiny_chain_runs_every_notebook_and_builds_the_book(tiny_report):
    from alignkit.report.book import toc_files
    from alignkit.report.build import report_notebooks
    out, root = tiny_report["out"], tiny_report["root"]
    names = [p.name for p in report_notebooks()]
    assert {"01_reward_model.ipynb", "02_evaluation_pitfalls.ipynb", "03_preference_visualization.ipynb",
            "06_experiments.ipynb", "07_analysis_qa.ipynb", "08_performance.ipynb"} <= set(names)
    assert list(tiny_report["times"]) == names  # in order, each timed
    times = json.loads((out / "report_times.json").read_text())
    assert times["notebooks"] == tiny_report["times"] and times["profile"] == "tiny"
    for name in names:
        assert (out / "notebooks" / name).exists() and (out / "notebooks" / name).with_suffix(".html").exists()
    # chapter 1 trained 3 steps and drew its curves; 2 its accuracy figure; 3 its two score figures
    assert json.loads((out / "rm" / "metrics.json").read_text())["steps"] == 3
    assert _images(out / "notebooks" / "01_reward_model.ipynb") >= 1
    assert _images(out / "notebooks" / "02_evaluation_pitfalls.ipynb") >= 1
    assert _images(out / "notebooks" / "03_preference_visualization.ipynb") == 2
    # chapter 4 kept every step's metrics and the held-out log-ratios, and drew the drift figure beside its two
    # curve figures; chapter 5 measured KL(DPO || base) on its own answers
    dpo = json.loads((out / "dpo" / "metrics.json").read_text())
    assert [row["step"] for row in dpo["train_history"]] == list(range(1, dpo["steps"] + 1))
    assert "logratio" in dpo["train_history"][0] and len(dpo["eval"]["logratio_ci95"]) == 2
    assert _images(out / "notebooks" / "04_dpo.ipynb") == 3
    assert "KL(DPO ‖ base) per response" in (out / "notebooks" / "05_dpo_inference.ipynb").read_text()
    # chapter 5 answered under the tiny profile's two seeds and shows the spread between them
    gen = json.loads((out / "generations" / "summary.json").read_text())["test"]
    assert gen["seeds"] == 2 and len(gen["win_rate_per_seed"]) == 2
    assert "between-seed spread" in (out / "notebooks" / "05_dpo_inference.ipynb").read_text()
    # chapter 6 ran both experiments on chapter 3's scores, reward + cost, best-of-n, the gold best-of-n and the
    # safety pairs, drew its six figures; chapter 7 cites them
    for name in ("length", "calibration"):
        assert json.loads((out / "experiments" / name / "summary.json").read_text())["n"] > 0, name
    bon = json.loads((out / "experiments" / "bon" / "summary.json").read_text())
    assert bon["responses"] == bon["prompts"] * bon["samples"] > 0
    variants = json.loads((out / "experiments" / "dpo_variants" / "summary.json").read_text())
    assert ",".join(variants["methods"]) == EVERY_VARIANT["dpo_variants.methods"]  # the chain's overrides: all
    assert variants["online"]["pairs"] > 0 and variants["online"]["vs_offline"]["n"] == variants["sizes"]["prompts"]
    gold = json.loads((out / "experiments" / "gold_bon" / "summary.json").read_text())
    assert gold["k"] == 11 and gold["answers"] == 11 * gold["prompts"] > 0 and len(gold["curves"]) == 11
    assert json.loads((out / "experiments" / "safety_pairs" / "summary.json").read_text())["n"] > 0
    assert _images(out / "notebooks" / "06_experiments.ipynb") == 6
    qa = (out / "notebooks" / "07_analysis_qa.ipynb").read_text()
    assert "gold best-of-n (GPT-4-turbo), largest n: RM pick − random answer" in qa
    assert "Margins of no practical effect" in qa and "shown absent" in qa and "At this scale, over-fitting" in qa
    assert "length-corrected − plain RM accuracy, same pairs" in qa and "ECE change, after − before" in qa
    assert "best-of-n, largest n: independent judge (helpfulness head) gain" in qa
    assert "online − offline DPO win rate vs base, same held-out prompts" in qa and "online DPO: RM win rate vs base" in qa
    # the standalone HTML has no MyST tab syntax left in it, and embeds its figures
    html = (out / "notebooks" / "02_evaluation_pitfalls.html").read_text()
    assert "{tab-set}" not in html and "data:image/png;base64" in html
    # the book: every chapter of _toc.yml, the executed ones with figures, both languages, provenance
    site = root / "_build" / "html"
    assert tiny_report["index"] == site / "index.html"
    for page in toc_files(root):
        assert (site / f"{page}.html").exists(), page
    for name in names:
        page = (site / "book" / "chapters" / name).with_suffix(".html").read_text()
        assert 'data-sync-id="en"' in page and 'data-sync-id="zh"' in page, name
    assert "<img" in (site / "book" / "chapters" / "02_evaluation_pitfalls.html").read_text()
    provenance = (site / "book" / "chapters" / "provenance.html").read_text()
    for fact in ("CC-BY-NC-4.0", "MIT", "align_anything_t2t.json", "848", "torch", "Wall time"):
        assert fact in provenance, fact
    facts = json.loads((out / "provenance.json").read_text())
    assert len(facts["git"]["commit"]) == 40 and facts["seeds"]["seed"] == 0
    # math renders from the local MathJax copy when the set-up installed it
    intro = (site / "book" / "intro.html").read_text()
    assert "_static/mathjax/tex-mml-chtml.js" in intro


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook
    from alignkit.report.build import NotebookFailed, run_notebooks
    params = new_code_cell('profile = "cpu"\noverrides = {}\nforce = False')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("x = 1"), new_code_cell("y = undefined_name + 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "09_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookFailed) as err:
        run_notebooks("tiny", {"output_dir": str(tmp_path / "out")}, notebooks=[path], log=lambda _: None)
    message = str(err.value)
    assert "09_broken.ipynb" in message and "cell 3" in message  # 0 params, 1 injected params, 2, 3
    assert "undefined_name + 1" in message and "NameError" in message
    assert (tmp_path / "out" / "notebooks" / "09_broken.ipynb").exists()  # kept, with the traceback


def test_cli_report_reports_a_failure_with_exit_code_2(tmp_path, monkeypatch, capsys):
    from alignkit import cli
    from alignkit.report import build as report
    monkeypatch.setattr(report, "report_notebooks", lambda *a, **k: [])
    assert cli.main(["report", "--profile", "tiny", "--set", f"output_dir={tmp_path}", "--no-book"]) == 2
    assert "no report notebooks" in capsys.readouterr().err


def test_flatten_tabs_keeps_both_languages_as_plain_markdown():
    from alignkit.report.build import flatten_tabs
    text = "# T\n\n::::{tab-set}\n:sync-group: lang\n\n:::{tab-item} English\n:sync: en\nHello\n:::\n\n" \
           ":::{tab-item} 中文\n:sync: zh\n你好\n:::\n::::"
    flat = flatten_tabs(text)
    assert "**English**" in flat and "Hello" in flat and "**中文**" in flat and "你好" in flat
    assert ":::" not in flat and ":sync" not in flat


def test_stage_book_writes_placeholders_and_hides_default_parameters(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook
    from alignkit.report.book import stage_book, toc_files
    from conftest import copy_book_sources
    out = tmp_path / "out"
    (out / "notebooks").mkdir(parents=True)
    params = new_code_cell('profile = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[params]), out / "notebooks" / "01_reward_model.ipynb")
    root = copy_book_sources(tmp_path / "root")
    missing = stage_book(out, "tiny", root, "# Provenance\n", log=lambda _: None)
    chapters = [p for p in toc_files(root) if p.startswith("book/chapters/") and not p.endswith("provenance")]
    assert set(missing) == {p.rsplit("/", 1)[1] for p in chapters} - {"01_reward_model"}
    for name in missing:
        page = (root / "book" / "chapters" / f"{name}.md").read_text()
        assert "has not been run yet" in page and "尚未" in page
    staged = nbformat.read(root / "book" / "chapters" / "01_reward_model.ipynb", as_version=4)
    assert "remove-cell" in staged.cells[0].metadata["tags"]
    assert (root / "book" / "_static" / "mathjax" / "tex-mml-chtml.js").exists()
    assert "has not been run" not in (root / "book" / "chapters" / "findings.md").read_text()  # placeholder
    assert (root / "book" / "_static" / "lang.js").exists()


def test_reader_view_collapses_code_and_drops_noise_and_machine_paths():
    from nbformat.v4 import new_code_cell, new_notebook, new_output
    from alignkit.report.book import reader_view
    params = new_code_cell('profile = "cpu"')
    params.metadata["tags"] = ["parameters"]
    injected = new_code_cell(f'overrides = {{"output_dir": "{REPO}/outputs/x"}}')
    injected.metadata["tags"] = ["injected-parameters"]
    work = new_code_cell("metrics = train(cfg)")
    work.outputs = [new_output("stream", name="stderr", text="rm train:  67%|██████▋   | 2/3 [00:00<00:00]"),
                    new_output("stream", name="stdout", text="[2026-11-25 04:03:00,530] [WARNING] [real_accelerator.py:213:"
                               "get_accelerator] Setting accelerator to CPU.\nDe-quantizing the weights\nsaved\n"),
                    new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                     "text/plain": "score: 100%|██████████| 2/2"}),
                    new_output("execute_result", data={"text/plain": f"'{REPO}/outputs/cpu/rm/metrics.json'"})]
    nb = new_notebook(cells=[params, injected, work], metadata={"widgets": {"state": {}}})
    reader_view(nb)
    assert "remove-cell" in nb.cells[0].metadata["tags"] and "widgets" not in nb.metadata
    assert "hide-input" not in nb.cells[1].metadata["tags"] and "hide-input" in nb.cells[2].metadata["tags"]
    assert str(REPO) not in nb.cells[1].source and "outputs/x" in nb.cells[1].source
    outputs = nb.cells[2].outputs
    assert [o.get("name") for o in outputs] == ["stdout", None] and outputs[0]["text"] == "saved\n"
    assert outputs[1]["data"]["text/plain"] == "'outputs/cpu/rm/metrics.json'"


def test_formatter_rounds_for_reading():
    from alignkit.report.tables import Chapter, display_path, interval, number, scrub_paths
    assert interval(0.533951, [0.459877, 0.608102]) == "0.534 [0.460, 0.608]"
    assert interval(0.2551, [0.12, 0.38], signed=True) == "+0.255 [+0.120, +0.380]"
    assert number(0.5339, percent=True) == "53.4%" and number(152.34) == "152" and number(12.345) == "12.3"
    assert number(3) == "3" and number(None) == "–" and number(-0.0001) == "-1.0e-04"
    assert interval(0.0005, [-0.0001, 0.0015], signed=True) == "+0.001 [+0.000, +0.002]"  # no '-0.000'
    assert interval(-0.00004, [-0.00009, 0.00001]) == "-4.0e-05 [-9.0e-05, 1.0e-05]"
    assert display_path(REPO / "outputs" / "cpu") == "outputs/cpu"
    assert display_path(REPO.parent / "shared" / "data" / "x.json") == "../shared/data/x.json"
    assert scrub_paths(f"LoadReport(source='{REPO}/a/b.json') and https://x.org/a/b") == \
        "LoadReport(source='a/b.json') and https://x.org/a/b"
    ch = Chapter(3)
    frame = pd.DataFrame({"accuracy": [0.533951], "n": [169], "reading": ["above chance / 高于随机"]}, index=["trained"])
    table = ch.table(frame, "What it shows, on which data.", "内容与数据。")
    html = table._repr_html_()
    assert "Table 3.1" in html and "表 3.1" in html and "0.534" in html and "0.533951" not in html
    assert '<span class="ak-zh" lang="zh">高于随机</span>' in html and '<span class="ak-zh" lang="zh">准确率</span>' in html
    assert ch.table(frame, "What it shows, on which data.", "内容与数据。").label == table.label  # a re-run keeps it
    assert ch.table(frame, "Another.", "另一个。").label.startswith("Table 3.2")
    config = ch.config({"train_path": str(REPO / "data.json"), "lr": 0.0001, "steps": None}, "Settings.", "设置。")
    assert config.rows() == [["train_path", "data.json"], ["lr", "0.0001"], ["steps", "–"]]


def test_seed_claims_are_read_from_the_intervals():
    from alignkit.report.landing import claims
    n = {"gen.win_rate": 0.3, "gen.win_rate_ci95": [0.2, 0.4], "gen.n": 100, "rm.longer_wins_acc": 0.6,
         "rm.test_acc": 0.7, "rm.test_ci": [0.65, 0.75], "rm.length_matched_acc": 0.6, "rm.length_matched_ci": [0.45, 0.7],
         "gen.dpo_outside": 0.01, "rm.length_matched_n": 40, "rm.test_n": 169}
    assert [c["status"] for c in claims(n)] == ["held", "failed", "failed"]
    assert "undecided" not in claims(n)[0]["evidence"]  # a decided claim carries no "would decide" note
    n.update({"gen.win_rate": 0.52, "gen.win_rate_ci95": [0.45, 0.6], "rm.test_ci": [0.5, 0.59], "gen.dpo_outside": 0.3})
    assert [c["status"] for c in claims(n)] == ["undecided", "held", "held"]
    # the undecided claim says what would decide it: [0.45, 0.6] at n = 100, MDE 2.801585 * 0.15 / 3.919928 =
    # 0.10721; 0.52 lies inside the margin, so at the margin: 100 * (0.10721 / 0.03)^2 = 1277.001 -> 1,278
    assert claims(n)[0]["evidence"].endswith("[undecided: the smallest effect detectable at n = 100 is 0.107; "
                                             "n ≈ 1,278 would decide it (at the margin)]")
    n.update({"gen.win_rate_ci95": None, "rm.test_ci": None, "gen.dpo_outside": None})
    assert [c["status"] for c in claims(n)] == [None, None, None]


def test_provenance_names_data_licences_and_commit(tmp_path, data_dir, monkeypatch):
    from alignkit.report import provenance
    from alignkit.config import load_config
    monkeypatch.setenv("ALIGNKIT_DATA_DIR", str(data_dir))
    cfg = load_config("tiny", {"output_dir": str(tmp_path)})
    facts = provenance.collect(cfg)
    rows = {d["file"]: d for d in facts["data"]}
    assert rows["align_anything_t2t.json"]["rows"] == 848 and rows["align_anything_t2t.json"]["used"]
    assert rows["align_anything_t2t.json"]["licence"] == "CC-BY-NC-4.0"
    assert rows["hh_rlhf_helpful_500.jsonl"]["licence"] == "MIT" and rows["pku_saferlhf_500.jsonl"]["rows"] == 500
    page = provenance.markdown(facts)
    assert facts["git"]["commit"] in page and ":sync: zh" in page and "| 848 |" in page


def test_blank_training_sets_mean_eval_only():
    from alignkit.report.chapters import blank_spellings
    table = blank_spellings("tiny")
    assert (table["read as"] == "None").sum() == 5 and table["read as"].iloc[-1] != "None"


def test_difference_ci_matches_a_hand_computed_newcombe_interval():
    from alignkit.stats import difference_ci
    # Newcombe (1998), example: 56/70 vs 48/80 -> difference 0.2, 95% CI 0.0524 to 0.3339
    low, high = difference_ci(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=1e-3) and high == pytest.approx(0.3339, abs=1e-3)


def test_figure_labels_fall_back_to_english_without_a_cjk_font(monkeypatch):
    from alignkit.report import figures as plots
    monkeypatch.setattr(plots, "_cjk_family", [None])
    assert plots.bilingual("accuracy", "准确率") == "accuracy"
    monkeypatch.setattr(plots, "_cjk_family", ["Noto Sans CJK SC"])
    assert plots.bilingual("accuracy", "准确率") == "accuracy / 准确率"


def test_cjk_labels_render_without_missing_glyphs():
    import warnings
    import matplotlib
    matplotlib.use("Agg")
    from alignkit.report import figures as plots
    if plots.cjk_font() is None:
        pytest.skip("no CJK font installed (Debian fonts-noto-cjk; `make setup-report` installs it)")
    plots.set_theme()
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.set_title(plots.bilingual("accuracy", "准确率"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for tofu
        fig.canvas.draw()
    plt.close(fig)


def test_qa_evidence_says_not_run_yet_for_missing_steps(tmp_path):
    from alignkit.report import evidence
    from alignkit.report import qa_numbers
    from alignkit.config import load_config
    from alignkit.report.readings import NOT_RUN
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "empty")})
    numbers = qa_numbers.key_numbers(cfg)
    assert numbers["rm.test_acc"] is None and numbers["gen.win_rate"] is None
    for question in evidence.QUESTIONS:
        table = evidence.evidence(cfg, question, numbers)
        assert list(table.columns) == ["measure", "value", "n", "source", "reading", "verdict"] and len(table)
        assert (table[table.value == NOT_RUN].verdict == "").all()  # a step that has not run has no verdict
    # only the data's own row (PKU-SafeRLHF's two labels) is read without a run
    assert evidence.verdicts_by_question(numbers).loc["total"].sum() == 1
    assert (evidence.evidence(cfg, "dpo_limits", numbers)["value"] == NOT_RUN).all()
    assert (qa_numbers.sources(cfg)["status"] == NOT_RUN).all()


def test_loss_shapes_back_the_variants_answer():
    """Chapter 7 states: DPO always pushes (negative slope), IPO stops at 1/(2 tau), cDPO at log((1-e)/e)/beta.
    The slopes d loss / d h by hand: DPO -beta sigmoid(-beta h); cDPO -(1-e) beta sigmoid(-beta h) + e beta
    sigmoid(beta h); IPO 2 (h - 1/(2 tau)); SimPO -b sigmoid(-(b h - g))."""
    from alignkit.report.evidence import loss_shapes
    beta, tau, eps, b, g = 0.1, 0.1, 0.1, 2.0, 1.0
    margins = (0.0, 5.0, 21.97, 30.0)
    shapes = loss_shapes(margins=margins, beta=beta, tau=tau, smoothing=eps, simpo_beta=b, simpo_gamma=g)
    slope = shapes.pivot(index="margin", columns="loss", values="slope")
    sig = lambda x: 1 / (1 + math.exp(-x))
    by_hand = {f"DPO (β={beta})": lambda h: -beta * sig(-beta * h),
               f"cDPO (β={beta}, ε={eps})": lambda h: -(1 - eps) * beta * sig(-beta * h) + eps * beta * sig(beta * h),
               f"IPO (τ={tau})": lambda h: 2 * (h - 1 / (2 * tau)),
               f"SimPO (β={b}, γ={g})": lambda h: -b * sig(-(b * h - g))}
    assert sorted(slope.columns) == sorted(by_hand)
    for name, expected in by_hand.items():
        assert slope[name].tolist() == pytest.approx([expected(h) for h in margins], rel=1e-5, abs=1e-7), name
    cdpo = f"cDPO (β={beta}, ε={eps})"  # where it stops: log((1 - e) / e) / beta = 21.97
    assert abs(slope.loc[21.97, cdpo]) < 1e-4 and slope.loc[5.0, f"IPO (τ={tau})"] == pytest.approx(0.0, abs=1e-6)


def test_loss_shapes_names_a_loss_alignkit_losses_lacks(monkeypatch):
    from alignkit import losses
    from alignkit.report.evidence import loss_shapes
    monkeypatch.delattr(losses, "ipo_loss")  # as if the loss were renamed
    with pytest.raises(AlignkitError, match="ipo_loss"):
        loss_shapes()


def _readings(table):
    return dict(zip(table.measure, table.reading))


def test_dpo_readings_use_intervals_not_point_estimates(tmp_path):
    """Numbers of a cpu-profile run: DPO held-out implicit-reward accuracy 0.544 (n=169), train sample 0.799
    (n=169); DPO answers 93.6 vs base 92.1 tokens with 91% at the token cap. 0.544 is not shown above chance;
    the train gap is real; +1.5 tokens is within noise."""
    from alignkit.report import evidence
    from alignkit.report import qa_numbers
    from alignkit.config import load_config
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "empty")})
    numbers = qa_numbers.key_numbers(cfg)
    numbers.update({"dpo.eval.reward_accuracy": 0.544, "dpo.eval.n": 169, "dpo.train.reward_accuracy": 0.799,
                    "dpo.train.n": 169, "gen.mean_length_base": 92.1, "gen.mean_length_dpo": 93.6,
                    "gen.mean_length_difference_ci95": [-0.4, 3.3]})
    held_out = "implicit-reward accuracy on held-out pairs [95% CI]"
    assert _readings(evidence.evidence(cfg, "dpo_vs_rlhf", numbers))[held_out].startswith("CI holds 0.5")
    gap = _readings(evidence.evidence(cfg, "dpo_limits", numbers))["implicit-reward accuracy: train → held-out"]
    assert gap.startswith("gap +0.255 [") and "fits train pairs better / 差距 +0.255 [" in gap and gap.endswith("训练集拟合更好")
    lengths = _readings(evidence.evidence(cfg, "length_bias", numbers))["mean response tokens: base → DPO"]
    assert lengths.startswith("length change within noise")
    numbers.update({"dpo.eval.reward_accuracy": 0.62, "dpo.train.reward_accuracy": 0.64,
                    "gen.mean_length_difference_ci95": [0.5, 3.3]})
    assert _readings(evidence.evidence(cfg, "dpo_vs_rlhf", numbers))[held_out].startswith("the policy ranks")
    gap = _readings(evidence.evidence(cfg, "dpo_limits", numbers))["implicit-reward accuracy: train → held-out"]
    assert gap.endswith("gap within noise / 差距 +0.020 [-0.082, +0.122]：差距在噪声内"), gap
    assert _readings(evidence.evidence(cfg, "length_bias", numbers))["mean response tokens: base → DPO"].startswith(
        "DPO answers longer")


def test_length_bias_readings_respect_the_intervals_and_the_untrained_baseline(tmp_path):
    """Numbers of a cpu-profile run: RM 0.621 [0.546, 0.691] vs the length rule's 0.577; on 39 length-matched
    pairs 0.615 [0.459, 0.751], the same as the untrained model. None of that shows signal beyond length."""
    from alignkit.report import evidence
    from alignkit.report import qa_numbers
    from alignkit.config import load_config
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "empty")})
    numbers = qa_numbers.key_numbers(cfg)
    numbers.update({"rm.test_acc": 0.621, "rm.test_ci": [0.546, 0.691], "rm.longer_wins_acc": 0.577,
                    "rm.length_matched_acc": 0.615, "rm.length_matched_n": 39,
                    "rm.length_matched_ci": [0.459, 0.751], "rm.untrained_length_matched_acc": 0.615})
    readings = _readings(evidence.evidence(cfg, "length_bias", numbers))
    assert readings["RM accuracy, test [95% CI]"].startswith("CI holds the length rule")
    assert readings["RM accuracy on length-matched pairs (±10%) [95% CI]"].startswith("CI holds 0.5")
    gain = "trained − untrained accuracy on the same length-matched pairs [95% CI]"
    assert readings[gain].startswith("no gain from training shown")  # 0.615 vs 0.615 on the same 39 pairs
    numbers.update({"rm.test_ci": [0.60, 0.70], "rm.length_matched_ci": [0.55, 0.70],
                    "rm.length_matched_acc": 0.64})
    readings = _readings(evidence.evidence(cfg, "length_bias", numbers))
    assert readings["RM accuracy, test [95% CI]"].startswith("above the length rule")
    assert readings["RM accuracy on length-matched pairs (±10%) [95% CI]"].startswith("signal beyond length")
    assert readings[gain].startswith("no gain from training shown")  # 0.64 vs 0.615 on 39 pairs: within noise
    numbers.update({"rm.length_matched_acc": 0.9, "rm.untrained_length_matched_acc": 0.4})
    readings = _readings(evidence.evidence(cfg, "length_bias", numbers))
    assert readings[gain].startswith("training raised it")  # a point estimate above is not enough: the interval is


def test_qa_cites_the_experiments_as_extra_rows_read_by_category(tmp_path):
    """Chapter 7's length-bias answer cites chapter 6's length correction, and its robustness answer the ECE
    before and after temperature scaling; the rows before them are unchanged, each new row has its n."""
    from alignkit.config import load_config
    from alignkit.report import evidence
    from alignkit.report import qa_numbers
    from alignkit.report.readings import NOT_RUN
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "empty")})
    numbers = qa_numbers.key_numbers(cfg)
    before = {q: evidence.evidence(cfg, q, numbers) for q in ("length_bias", "robustness")}
    assert (before["length_bias"]["value"].tail(3) == NOT_RUN).all()  # chapter 6 has not run
    numbers.update({"exp.length_n": 169, "exp.corrected_acc": 0.60, "exp.corrected_ci": [0.52, 0.67],
                    "exp.debias_diff": -0.012, "exp.debias_diff_ci": [-0.05, 0.03], "exp.length_matched_n": 39,
                    "exp.corrected_matched_acc": 0.64, "exp.corrected_matched_ci": [0.48, 0.77],
                    "exp.calibration_n": 169, "exp.ece_before": 0.12, "exp.ece_before_ci": [0.08, 0.18],
                    "exp.ece_after": 0.05, "exp.ece_after_ci": [0.03, 0.1], "exp.ece_diff": -0.07,
                    "exp.ece_diff_ci": [-0.12, -0.02]})
    for question, rows in before.items():
        after = evidence.evidence(cfg, question, numbers)
        pd.testing.assert_frame_equal(after.head(len(rows) - 3), rows.head(len(rows) - 3))
    table = evidence.evidence(cfg, "length_bias", numbers).set_index("measure")
    diff = table.loc["length-corrected − plain RM accuracy, same pairs [95% CI]"]
    assert diff["value"] == "-0.012 [-0.050, 0.030]" and diff["n"] == 169
    assert diff["reading"].startswith("no change beyond noise")
    matched = table.loc["length-corrected RM accuracy on length-matched pairs (±10%) [95% CI]"]
    assert matched["n"] == 39 and matched["reading"].startswith("CI holds 0.5")
    robust = evidence.evidence(cfg, "robustness", numbers).set_index("measure")
    change = robust.loc["ECE change, after − before [95% CI]"]
    assert change["n"] == 169 and change["reading"].startswith("temperature scaling lowers the ECE")
    assert list(qa_numbers.sources(cfg)["step"])[-2:] == ["length debiasing (ch. 6)", "calibration (ch. 6)"]


def test_every_notebook_is_valid_with_unique_cell_ids():
    """nbformat repairs a missing or repeated cell id with a warning on every read and papermill then writes a
    notebook whose ids differ from the source's; the sources carry valid, unique ids instead."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        ids = [cell.get("id") for cell in raw["cells"]]
        assert None not in ids, f"{path.name}: a cell has no id"
        assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"
        nbformat.validate(nbformat.from_dict(raw))


def test_study_questions_take_one_headline_row_each_and_count_its_verdict(tmp_path):
    """Each of the study's questions (evidence.STUDY) reads one row of chapter 7's evidence: before any run only
    the data's own row has a verdict; an interval put in its place moves that question's verdict and count; a
    headline naming no row is an error that names the question's rows."""
    from alignkit.config import load_config
    from alignkit.report import evidence, qa_numbers
    from alignkit.report.readings import NOT_RUN
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "empty")})
    numbers = qa_numbers.key_numbers(cfg)
    table = evidence.study_questions(numbers)
    assert len(table) == len(evidence.STUDY) and table.question.is_unique
    assert evidence.study_count(numbers) == {"shown": 1, "shown_absent": 0, "undecided": 0}  # PKU's two labels
    assert (table.value == NOT_RUN).sum() == len(evidence.STUDY) - 1
    numbers.update({"rm.test_acc": 0.62, "rm.test_ci": [0.55, 0.69], "rm.test_n": 169, "rm.longer_wins_acc": 0.60,
                    "exp.safety_pairs_rm": 0.49, "exp.safety_pairs_rm_ci": [0.48, 0.51], "exp.safety_pairs_n": 1800})
    table = evidence.study_questions(numbers).set_index(
        pd.Index([key for key, *_ in evidence.STUDY]))
    assert table.loc["rm_learns", "verdict"].startswith("shown /") and table.loc["rm_learns", "n"] == 169
    assert table.loc["rm_vs_length", "verdict"].startswith("undecided: the smallest effect detectable at n = 169")
    assert table.loc["rm_vs_length", "null ± margin"] == "0.600 ± 0.03"
    assert table.loc["safety_pairs", "verdict"].startswith("shown absent") and table.loc["safety_pairs", "n"] == 1800
    assert evidence.study_count(numbers) == {"shown": 2, "shown_absent": 1, "undecided": 1}
    assert "shown 2, shown absent 1, undecided 1" in evidence.verdicts_sentence(numbers)
    broken = tuple((k, q, "no such measure" if k == "ood" else m) for k, q, m in evidence.STUDY)
    with pytest.raises(KeyError, match="no such measure.*robustness.*train − test accuracy"):
        evidence._headline(evidence._rows(numbers, "robustness"), "robustness", broken[6][2])


def test_the_cpu_profile_leaves_online_dpo_and_the_variants_to_the_gpu_profile_without_a_verdict(tmp_path):
    from alignkit.config import load_config
    from alignkit.report import evidence, qa_numbers
    cfg = load_config("tiny", {"output_dir": str(tmp_path / "empty")})
    numbers = {**qa_numbers.key_numbers(cfg), "exp.variants_not_run": "gpu"}
    rows = dict(evidence.study_rows(numbers))
    for key in ("online", "variants"):
        assert rows[key][4] is None and "gpu" in rows[key][1], rows[key]
    sentence = evidence.verdicts_sentence(numbers)
    assert "2 more are left to another profile (Does online DPO beat offline DPO? Do the DPO variants differ?)" in sentence
