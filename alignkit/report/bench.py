"""Chapter 8's tables, figure and readings: benchmark results (`make bench` -> outputs/bench/results.json, the
GPU half committed) and the float32 / bfloat16 check; also the runner's markdown table. Reads only; the
benchmarks live in benchmarks/, and every ratio read here is the one `benchmarks/common.py` `race_ratio`
stored: a warm-up repeat dropped on both sides, the ratio of the median rates, the min–max of the
per-repeat ratios."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from alignkit.errors import AlignkitError
from alignkit.report import readings
from alignkit.report.readings import words
from alignkit.report.tables import interval, number

RESULTS = Path("outputs") / "bench" / "results.json"
GPU_RESULTS = Path("benchmarks") / "results" / "gpu_h100.json"
"""The GPU half (benchmarks/run_gpu.sh on a lent H100), committed: CI machines have no GPU to redo it."""
AIMS = {"rm": 1.5, "dpo": 1.5, "scoring": 10.0, "rm_last_k": 3.0, "dpo_last_k": 3.0}
"""The speed targets (alignkit / peer), used when a result carries no `aim` of its own."""
HOW_TO = ("No benchmark results at {path}. Produce them with `make bench` (SmolLM2-135M, minutes to an hour "
          "on 2 CPU cores) or `make bench QUICK=1` (a tiny random model, about a minute), then re-run this chapter.")


def load_results(path: str | Path = RESULTS) -> dict | None:
    """The merged results, or None (after printing how to produce them) when the file is absent. A benchmark
    whose ratio lacks the medians `race_ratio` stores is refused, naming it."""
    path = Path(path)
    if not path.exists():
        print(HOW_TO.format(path=path))
        return None
    results = json.loads(path.read_text())
    for b in _ok(results):
        if "alignkit_median" not in b["ratio"]:
            raise AlignkitError(f"{path}: benchmark {b['name']!r} has no ratio medians (benchmarks/common.py "
                                f"race_ratio); run `make bench` again to write them")
    return results


def machine_line(machine: dict) -> str:
    """'AMD EPYC, 2 cores, 23.4 GB RAM, torch 2.13.0+cpu (2 threads)'."""
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    threads = f" ({machine['torch_threads']} threads)" if machine.get("torch_threads") else ""
    return (f"{machine['cpu']}, {machine['usable_cores']} cores, {machine['ram_gb']} GB RAM{gpu}, "
            f"torch {machine['torch']}{threads}")


def _ok(results: dict) -> list[dict]:
    return [b for b in results["benchmarks"] if "error" not in b]


def markdown_table(results: dict) -> str:
    """The results as a markdown table (benchmark, unit, medians, ratio median [min–max], aim, memory),
    headed by the machine and mode."""
    lines = [f"Machine: {machine_line(results['machine'])}; {results.get('mode', 'full')} mode, "
             f"{results.get('repeats', '?')} repeats, alternating in one process; started {results.get('started', '?')}, "
             f"load average {results['machine'].get('load_avg_1m')}.",
             "Rates are medians over the repeats after a warm-up repeat; the ratio is the ratio of those medians, "
             "[min–max] of the per-repeat ratios. Peak memory: peak RSS during a repeat minus RSS just before it.",
             "",
             "| benchmark | unit | alignkit (median) | peer (median) | ratio median [min–max] | aim | "
             "peak memory alignkit / peer (MB) |",
             "|---|---|---|---|---|---|---|"]
    for b in results["benchmarks"]:
        if "error" in b:
            lines.append(f"| {b['name']} | | failed: {b['error'][:120]} | | | | |")
            continue
        r = b["ratio"]
        aim = b.get("aim", AIMS.get(b["name"]))
        verdict = "" if aim is None else (" ✓" if r["median"] >= aim else " ✗")
        lines.append(
            f"| {b['name']} | {b['unit']} | {r['alignkit_median']:.1f} ({b['alignkit']['label']}) "
            f"| {r['peer_median']:.1f} ({b['peer']['label']}) "
            f"| {r['median']:.2f}× [{r['min']:.2f}–{r['max']:.2f}] | {'' if aim is None else f'≥{aim:g}×'}{verdict} "
            f"| {b['alignkit']['peak_mem_mb']:.0f} / {b['peer']['peak_mem_mb']:.0f} |")
    for b in _ok(results):
        if b.get("by_epochs"):  # a race run at several epoch counts: the table's row is its last count
            ratios = " · ".join(f"{e} epoch{'s' * (e != '1')}: {v['ratio']['median']:.2f}× "
                                f"[{v['ratio']['min']:.2f}–{v['ratio']['max']:.2f}]" for e, v in b["by_epochs"].items())
            lines += ["", f"{b['name']} by epochs trained (each count its own race): {ratios}."]
    times = report_times_frame(results)
    if times is not None:
        lines += ["", "`make report` wall time per notebook "
                  f"(profile {results['report_times'].get('profile', '?')}):", "",
                  "| notebook | wall time (s) |", "|---|---|"]
        lines += [f"| {row.notebook} | {row.seconds:.1f} |" for row in times.itertuples()]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict, path: str | Path) -> None:
    Path(path).write_text(markdown_table(results))


def report_times_frame(results: dict) -> pd.DataFrame | None:
    """`make report`'s per-notebook wall times (outputs/<profile>/report_times.json, copied into the
    results by the runner) as DataFrame(notebook, seconds) with a total row; None when absent."""
    times = (results.get("report_times") or {}).get("notebooks")
    if not times:
        return None
    frame = pd.DataFrame({"notebook": list(times), "seconds": [float(s) for s in times.values()]})
    total = results["report_times"].get("total_s", frame.seconds.sum())
    return pd.concat([frame, pd.DataFrame({"notebook": ["total"], "seconds": [float(total)]})], ignore_index=True)


def ratio_figure(results: dict):
    """Bar chart: the ratio (alignkit / peer, of the median rates) per benchmark, error bars from the min to the
    max of the per-repeat ratios, a dashed line at 1 (parity) and a marker at each aim; the machine in the title."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(style="whitegrid")
    benches = _ok(results)
    names = [b["name"] for b in benches]
    medians = [b["ratio"]["median"] for b in benches]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * max(1, len(names)), 3.6))
    if not benches:
        ax.text(0.5, 0.5, "no benchmark finished", ha="center", va="center", transform=ax.transAxes)
        return fig
    sns.barplot(x=names, y=medians, hue=names, palette="crest", legend=False, ax=ax)
    errors = [[m - b["ratio"]["min"] for m, b in zip(medians, benches)],
              [b["ratio"]["max"] - m for m, b in zip(medians, benches)]]
    ax.errorbar(range(len(names)), medians, yerr=errors, fmt="none", ecolor="black", capsize=5, lw=1.2)
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="parity (1×)")
    aims = [b.get("aim", AIMS.get(b["name"])) for b in benches]
    ax.scatter([i for i, a in enumerate(aims) if a], [a for a in aims if a], marker="_", s=900, color="crimson",
               zorder=3, label="aim")
    for i, m in enumerate(medians):
        ax.annotate(f"{m:.2f}×", (i, m), textcoords="offset points", xytext=(10, 4), fontsize=9)
    if max(aims + medians, key=lambda v: v or 0) / max(min(medians), 1e-9) > 8:
        ax.set_yscale("log")
    ax.set_ylabel("alignkit / peer (ratio of medians, min–max)")
    ax.set_xlabel("")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(machine_line(results["machine"]), fontsize=8)
    fig.tight_layout()
    return fig


def settings_frame(results: dict) -> pd.DataFrame:
    """Each benchmark's settings (model, rows, batch size, max length, trainable set, threads, peer options)
    side by side, one column per benchmark; nested settings stay mappings, which the formatter prints as
    rounded `key=value` pairs."""
    columns = {}
    for b in _ok(results):
        columns[b["name"]] = dict(b["settings"])
        columns[b["name"]]["wall time (s)"] = b.get("wall_s")
    return pd.DataFrame(columns)


def verdicts(results: dict, lang: str = "en") -> list[str]:
    """One sentence per benchmark: the median ratio with its spread, against the aim
    (alignkit.report.readings.meets_aim) and against parity (the repeats' min-max range vs 1), with both rates
    and, where measured, both sides' MFU (`lang` 'en' or 'zh'; words in text/readings.yaml)."""
    out = []
    for b in results["benchmarks"]:
        if "error" in b:
            out.append(words("bench_failed", lang=lang, name=b["name"], error=b["error"]))
            continue
        r, aim = b["ratio"], b.get("aim", AIMS.get(b["name"]))
        met = readings.meets_aim(r["median"], aim)
        mfu = b.get("mfu")
        out.append(words("bench_result", lang=lang, name=b["name"], label=b["alignkit"]["label"],
                         peer=b["peer"]["label"], ratio=f"{r['median']:.2f}", min=f"{r['min']:.2f}",
                         max=f"{r['max']:.2f}", repeats=len(r["values"]),
                         a=f"{r['alignkit_median']:.1f}", p=f"{r['peer_median']:.1f}", unit=b["unit"],
                         goal="" if met is None else words("aim", met, lang, aim=f"{aim:g}"),
                         parity=words("parity", readings.ci_vs([r["min"], r["max"]], 1.0), lang),
                         mfu="" if not mfu else words("bench_mfu", lang=lang, a=number(mfu["alignkit"], percent=True),
                                                      p=number(mfu["peer"], percent=True))))
    return out


def precision_frame(precision: dict) -> pd.DataFrame:
    """`alignkit.study.scores.precision_check`'s result, one row per lower precision (bfloat16 weights; int8
    dynamic quantization where it ran): agreement with float32, both accuracies, the difference with its 95%
    CI, and the times of the same sequences in float32 and in that precision."""
    arms = [("bfloat16", precision, precision["bfloat16_s"], precision["float32_s"])]
    if "int8" in precision:
        arms.append(("int8", precision["int8"], precision["int8"]["int8_s"], precision["int8"]["float32_s"]))
    return pd.DataFrame([{
        "precision": name, "n": arm["n"], "Spearman": arm["spearman"], "max |Δ score|": arm["max_abs_difference"],
        "order flips": arm["flips"], "accuracy float32": arm["accuracy_reference"], "accuracy": arm["accuracy_other"],
        "difference [95% CI]": interval(arm["accuracy_difference"], arm["accuracy_difference_ci95"], signed=True),
        "float32 (s)": base_s, "this precision (s)": seconds, "speed-up": arm["speedup"]} for name, arm, seconds, base_s in arms])


def precision_reading(precision: dict) -> tuple[str, str]:
    """Whether bfloat16 (and, where it ran, int8) scoring holds by the adoption rule
    (alignkit.stats.precision_agreement), in English and Chinese."""
    values = {"flips": precision["flips"], "n": precision["n"], "spearman": f"{precision['spearman']:.4f}",
              "speedup": precision["speedup"]}
    category = readings.adopted(precision["holds"])
    en, zh = words("bfloat16", category, "en", **values), words("bfloat16", category, "zh", **values)
    if precision.get("native_bf16") is False:
        en, zh = en + " " + words("bfloat16", "emulated", "en", **values), zh + words("bfloat16", "emulated", "zh", **values)
    if "score_dtype" in precision:  # what chapters 5 and 6 scored in on this machine
        used = precision["score_dtype"]
        key = "unchecked" if used["here"] == "bfloat16" and not precision["holds"] else "scoring"
        en, zh = (en + " " + words("bfloat16", key, "en", **used), zh + words("bfloat16", key, "zh", **used))
    if "int8" in precision:
        arm = precision["int8"]
        values = {"flips": arm["flips"], "n": arm["n"], "spearman": f"{arm['spearman']:.4f}", "speedup": arm["speedup"]}
        category = readings.adopted(arm["holds"])
        en, zh = en + " " + words("int8", category, "en", **values), zh + words("int8", category, "zh", **values)
    return en, zh


def deepspeed_frame(results: dict) -> pd.DataFrame | None:
    """The GPU results' DeepSpeed runs of the gpu profile (RM, DPO): steps, wall time and final eval metrics."""
    runs = results.get("deepspeed") or {}
    rows = []
    for kind in ("rm", "dpo"):
        if kind not in runs:
            continue
        run, final = runs[kind], runs[kind].get("final_eval") or {}
        accuracy = final.get("accuracy", final.get("reward_accuracy"))
        rows.append({"run": kind, "optimizer steps": run.get("steps"), "wall time (s)": run.get("wall_time_s"),
                     "reference pass (s)": run.get("reference_s"), "eval accuracy": accuracy,
                     "eval loss": final.get("loss"), "eval pairs": final.get("n")})
    return pd.DataFrame(rows) if rows else None


def run_facts(results: dict) -> dict:
    """The machine and the run of a results file, as a small key/value mapping for the report."""
    facts = {"machine": machine_line(results["machine"]), "mode": results.get("mode"),
             "repeats": results.get("repeats"), "started": results.get("started"),
             "load average at start (1 min)": results["machine"].get("load_avg_1m")}
    if results.get("how"):
        facts["how"] = results["how"]
    return {k: v for k, v in facts.items() if v is not None}


def summary_frame(results: dict) -> pd.DataFrame:
    """The results for reading: benchmark, unit, both sides' median rate, the ratio 'median [min–max]' with its
    number of repeats, the aim and whether the ratio meets it, peak memory of both sides (MB), and where
    measured (GPU) both sides' MFU."""
    rows = []
    for b in results["benchmarks"]:
        if "error" in b:
            rows.append({"benchmark": b["name"], "unit": "", "alignkit": f"failed: {b['error'][:120]}"})
            continue
        r, aim = b["ratio"], b.get("aim", AIMS.get(b["name"]))
        rows.append({"benchmark": b["name"], "unit": b["unit"],
                     "alignkit": r["alignkit_median"], "peer": r["peer_median"],
                     "ratio [min–max]": f"{r['median']:.2f}× [{r['min']:.2f}–{r['max']:.2f}]",
                     "repeats": len(r["values"]),
                     "aim": None if aim is None else f"≥{aim:g}×",
                     "meets aim": None if aim is None else bool(r["median"] >= aim),
                     "peak memory (MB)": f"{b['alignkit']['peak_mem_mb']:.0f} / {b['peer']['peak_mem_mb']:.0f}",
                     **({"MFU": f"{number(b['mfu']['alignkit'], percent=True)} / "
                                f"{number(b['mfu']['peer'], percent=True)}"} if b.get("mfu") else {})})
    return pd.DataFrame(rows)
