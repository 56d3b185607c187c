"""What makes the cpu reward model learn more than length? A sweep chosen on a validation fold.

The profile's training split (its test split is never read) is split again by prompt: 80% to train each
candidate, 20% as the validation fold (`--val-fraction`, seeded by the profile's seed, the same fold for every
candidate). Each candidate is the profile plus a few overrides, trained by the library's own
`run_reward_model`; it is judged on the validation fold by:

  accuracy            share of pairs ranked right (ties half), 95% Wilson CI
  length-matched      the same on pairs whose responses differ by at most 10% in tokens (the rule below is
                      useless there), Wilson CI
  vs length rule      paired accuracy difference RM - "longer response wins" on the same pairs, bootstrap CI
                      over pairs: above 0 means the RM is shown better than length
  Spearman            Spearman(score, response tokens) over both responses of every pair, bootstrap CI

Each row also keeps its per-pair verdicts on the fold (`correct`: 1 / 0.5 / 0 in the fold's order) and the
fold's fingerprint (`fold`), so two candidates are compared pair by pair (`--compare NEW BASE`: the paired
accuracy difference with a bootstrap CI). Rows written before these fields existed lack them; the table
shows "-" and `--compare` says which row to re-run. `lora-poe` is the profile's RM trained with the
product-of-experts length expert (`rm.length_expert`); its row records the learned coefficient.

Rows are appended to a JSONL file as each candidate finishes (with the date and the machine), and a run that
is stopped resumes where it left off: candidates already in the file are skipped
(`--again` runs them anew and appends a newer row; `--compare` reads a name's latest row).

    .venv/bin/python sweeps/rm_sweep.py --list
    .venv/bin/python sweeps/rm_sweep.py --only lora-profile last_k8 --data-dir ../shared/data
    .venv/bin/python sweeps/rm_sweep.py --table                      # print the results file as a table
    .venv/bin/python sweeps/rm_sweep.py --compare lora-poe lora-profile   # paired difference on the fold
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

GRID: dict[str, dict] = {
    "lora-profile": {},
    "last_k8": {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 8, "rm.train.lr": 1.0e-4},
    "lora-len384": {"data.max_length": 384, "data.max_prompt_length": 128},
    "lora-center": {"rm.center_coef": 0.01},
    "lora-lr5e-4": {"rm.train.lr": 5.0e-4},
    "lora-3ep": {"rm.train.epochs": 3},
    "full-lr1e-5": {"rm.trainable.mode": "full", "rm.train.lr": 1.0e-5},
    "lora-poe": {"rm.length_expert": True},
    # cached last_k (alignkit.prefix): the frozen bottom runs once per pair, so more epochs and a training length
    # that keeps 91% of the training pairs whole (384 / prompt 128; 65% at the profile's 160 / 64) are cheap
    "cached-k8-lr1e-4-4ep-len384": {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 8, "rm.train.lr": 1.0e-4,
                                    "rm.train.epochs": 4, "data.max_length": 384, "data.max_prompt_length": 128},
    "cached-k4-lr1e-4-4ep-len384": {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 4, "rm.train.lr": 1.0e-4,
                                    "rm.train.epochs": 4, "data.max_length": 384, "data.max_prompt_length": 128},
    "cached-k12-lr3e-5-3ep-len384": {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 12, "rm.train.lr": 3.0e-5,
                                     "rm.train.epochs": 3, "data.max_length": 384, "data.max_prompt_length": 128},
    "cached-k4-lr3e-5-6ep-len384": {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 4, "rm.train.lr": 3.0e-5,
                                    "rm.train.epochs": 6, "data.max_length": 384, "data.max_prompt_length": 128},
}
"""Candidates: name -> overrides of the profile. The profile's own setting comes first."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--profile", default="cpu", help="configs/<profile>.yaml the candidates start from (default cpu)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"candidates to run (default all): {', '.join(GRID)}")
    p.add_argument("--again", action="store_true",
                   help="run the named candidates even when the results file has a row of theirs (retrained, not "
                        "reused): the new row is appended, and --compare reads a name's latest row")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of training prompts held out (default 0.2)")
    p.add_argument("--data-dir", help="folder with the profile's local data file (sets ALIGNKIT_DATA_DIR)")
    p.add_argument("--work", default=str(ROOT / "outputs" / "sweeps"),
                   help="where candidates' runs are written (default outputs/sweeps)")
    p.add_argument("--results", default=str(ROOT / "sweeps" / "results" / "rm_sweep.jsonl"),
                   help="JSONL file the rows are appended to (default sweeps/results/rm_sweep.jsonl)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every candidate and the split, e.g. --set model.name=PATH (repeatable)")
    p.add_argument("--list", action="store_true", help="print the candidates and their overrides, run nothing")
    p.add_argument("--table", action="store_true", help="print the results file as a table, run nothing")
    p.add_argument("--compare", nargs=2, metavar=("NEW", "BASE"),
                   help="print the paired accuracy difference NEW - BASE on the validation fold, run nothing")
    return p.parse_args(argv)


def fold_config(profile: str, work: Path, val_fraction: float, common_overrides: dict):
    """(the profile's config, the path of its training split as ALIGNKIT pairs): the split is written by the
    library's own `prepare_data`, exactly as the report's chapter 1 splits the data."""
    from alignkit.config import load_config
    from alignkit.data.sources import prepare_data
    base = load_config(profile, {**common_overrides, "output_dir": str(work / "split")})
    if not 0 < val_fraction < 1:
        raise SystemExit(f"--val-fraction must be in (0, 1), got {val_fraction}")
    prepare_data(base)
    return base, base.out / "data" / "train.jsonl"


def candidate_overrides(name: str, train_file: Path, work: Path, val_fraction: float, grid: dict | None = None) -> dict:
    """The candidate's overrides (from `grid`, default GRID), plus: train on the profile's training split, hold
    out `val_fraction` of it."""
    return {**(GRID if grid is None else grid)[name], "data.train.path": str(train_file), "data.train.template": "ALIGNKIT",
            "data.train.local_name": None, "data.train.subset": None, "data.train.split": None,
            "data.train.max_pairs": None, "data.test_fraction": val_fraction, "output_dir": str(work / name)}


def judge(cfg, metrics: dict) -> dict:
    """The validation-fold numbers of a finished candidate, from its saved per-pair scores."""
    from alignkit.data.sources import load_pairs
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.experiments.length import spearman_length
    from alignkit.io import file_fingerprint
    from alignkit.models import load_tokenizer
    from alignkit.stats import accuracy_summary, correctness, length_diagnostics, paired_difference
    from alignkit.train.rm import EVAL_SCORES
    scores = json.loads((cfg.out / "rm" / EVAL_SCORES).read_text())["trained-test"]
    fold = cfg.out / "data" / "test.jsonl"
    pairs, _ = load_pairs(str(fold), "ALIGNKIT")
    encoder = ChatEncoder(load_tokenizer(str(cfg.out / "rm")), *cfg.data.eval_lengths())
    lengths = [[len(e.input_ids) - e.prompt_length for e in (encoder.encode(p.prompt, p.better),
                                                                encoder.encode(p.prompt, p.worse))] for p in pairs]
    len_better, len_worse = [a for a, _ in lengths], [b for _, b in lengths]
    rm = correctness(scores["better"], scores["worse"])
    rule = correctness(len_better, len_worse)
    diagnostics = length_diagnostics(scores["better"], scores["worse"], len_better, len_worse)
    return {"n_val": len(pairs), "accuracy": accuracy_summary(rm), "length_matched": diagnostics["length_matched"],
            "length_rule": accuracy_summary(rule),
            "vs_length_rule": paired_difference(rm, rule, seed=cfg.seed),
            "spearman_length": spearman_length(scores["better"], scores["worse"], len_better, len_worse, seed=cfg.seed),
            "correct": rm, "fold": file_fingerprint(fold),
            "length_coef": metrics.get("length_expert", {}).get("coef_per_token"),
            "untrained_accuracy": metrics["eval_untrained"]["accuracy"],
            "train_sample_accuracy": metrics["train"]["accuracy"], "steps": metrics["steps"],
            "seconds": metrics.get("seconds"), "wall_time_s": metrics["wall_time_s"],
            "prefix_cache": metrics.get("prefix_cache")}


def run(args) -> None:
    from alignkit.train.rm import reward_model_metrics
    run_grid(args, GRID, reward_model_metrics, judge, table)


def run_grid(args, grid: dict, train, judge_row, table_of, *, set_last: bool = False) -> None:
    """Train and judge each named candidate of `grid` on the fold, appending a row per finished candidate to
    `args.results` (skipped when it has one, unless `args.again`). `train(cfg, force=...)` returns the run's
    metrics, resuming an interrupted run; `judge_row(cfg, metrics)` the fold's numbers. `--set` overrides come
    before the candidate's own, or after them with `set_last`."""
    import torch
    from alignkit.config import load_config, parse_assignments
    import common
    common_overrides = parse_assignments(args.set)
    work, results = Path(args.work), Path(args.results)
    done = {json.loads(line)["name"] for line in results.read_text().splitlines()} if results.exists() else set()
    names = args.only or list(grid)
    unknown = [n for n in names if n not in grid]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(grid)}")
    _, train_file = fold_config(args.profile, work, args.val_fraction, common_overrides)
    for name in names:
        if name in done and not args.again:
            print(f"sweep: {name} is in {results} already; skipped", flush=True)
            continue
        own = candidate_overrides(name, train_file, work, args.val_fraction, grid)
        cfg = load_config(args.profile, {**own, **common_overrides} if set_last else {**common_overrides, **own})
        print(f"sweep: {name} {grid[name] or '(the profile as is)'}", flush=True)
        started = time.time()
        metrics = train(cfg, force=args.again)  # else resumes an interrupted candidate
        row = {"name": name, "overrides": grid[name], "common_overrides": common_overrides,
               "profile": args.profile, "seed": cfg.seed,
               "val_fraction": args.val_fraction, "n_train": metrics["data"]["n_train"], **judge_row(cfg, metrics),
               "date": datetime.date.today().isoformat(), "machine": common.machine(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
               "sweep_s": round(time.time() - started, 1)}
        results.parent.mkdir(parents=True, exist_ok=True)
        with results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(table_of([row]), flush=True)


def candidate_difference(new: dict, base: dict, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Paired accuracy difference `new` - `base` of two sweep rows over the same validation pairs, from their
    per-pair verdicts (`correct`, ties 0.5), with a bootstrap CI over pairs (alignkit.stats.paired_difference)."""
    from alignkit.stats import paired_difference
    for row in (new, base):
        if "correct" not in row:
            raise ValueError(f"sweep row {row['name']!r} has no per-pair verdicts (`correct`): it was written "
                             "before rows kept them; delete its line from the results file and run it again")
    if new.get("fold") != base.get("fold") or len(new["correct"]) != len(base["correct"]):
        raise ValueError(f"rows {new['name']!r} and {base['name']!r} were judged on different validation folds "
                         "(`fold` or n differs: another --val-fraction, seed or --set?); compare rows of one fold")
    return {"new": new["name"], "base": base["name"],
            **paired_difference(new["correct"], base["correct"], n_resamples=n_resamples, seed=seed)}


def table(rows: list[dict]) -> str:
    """Rows as a plain-text table: accuracy, length-matched, length rule, RM - rule, each with its CI."""
    def ci(summary, key="accuracy"):
        if summary.get(key) is None:
            return "-"
        low, high = summary["ci95"]
        return f"{summary[key]:.3f} [{low:.3f}, {high:.3f}]"
    def spearman(row):
        s = row.get("spearman_length")  # absent in rows written before it was measured
        return "-" if s is None else f"{s['spearman']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"
    lines = ["name | n train/val | accuracy | length-matched (n) | length rule | RM - rule | Spearman(score, length) "
             "| untrained | steps | s | date, CPU"]
    for r in rows:
        lines.append(" | ".join([
            r["name"], f"{r['n_train']}/{r['n_val']}", ci(r["accuracy"]),
            f"{ci(r['length_matched'])} ({r['length_matched']['n']})", ci(r["length_rule"]),
            ci(r["vs_length_rule"], "difference"), spearman(r), f"{r['untrained_accuracy']:.3f}", str(r["steps"]),
            str(r["sweep_s"]), f"{r.get('date', '-')}, {r.get('cpu_capability', '-')}"]))
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.data_dir:
        os.environ["ALIGNKIT_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if args.list:
        for name, overrides in GRID.items():
            print(f"{name}: {overrides or '(the profile as is)'}")
        return
    if args.table or args.compare:
        results = Path(args.results)
        if not results.exists():
            raise SystemExit(f"no results yet: {results}")
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        if args.table:
            print(table(rows))
            return
        by_name = {r["name"]: r for r in rows}  # the latest row of a name
        missing = [n for n in args.compare if n not in by_name]
        if missing:
            raise SystemExit(f"no row named {', '.join(missing)} in {results}; rows: {', '.join(by_name)}")
        try:
            d = candidate_difference(*(by_name[n] for n in args.compare), seed=by_name[args.compare[1]]["seed"])
        except ValueError as e:
            raise SystemExit(str(e)) from None
        print(f"{d['new']} - {d['base']} on {d['n']} validation pairs: {d['difference']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] ({d['changed_pairs']} pairs changed verdict)")
        return
    run(args)


if __name__ == "__main__":
    main()
