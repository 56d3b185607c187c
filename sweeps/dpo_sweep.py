"""Does the cpu profile's DPO move the policy? Candidates judged on the reward-model sweep's validation fold.

The fold is sweeps/rm_sweep.py's: 20% of the profile's training prompts (`--val-fraction`, seeded by the
profile's seed) held out, the test split never read. Each candidate is the profile plus a few overrides, trained
by the library's own `run_dpo` on the rest of the training split, and read on the fold's pairs by:

  log-ratio           mean over held-out pairs of log π(y|x) − log π_ref(y|x), both responses (a sequence-level
                      KL estimate): has the policy moved? bootstrap CI, and its verdict against 0 with the nats
                      margin (alignkit.verdicts): shown / shown absent / undecided
  chosen, rejected    the same for the better and for the worse response alone
  reward accuracy     share of held-out pairs whose implicit reward ranks the better response higher, Wilson CI

Rows are appended to sweeps/results/dpo_sweep.jsonl (date, machine, CPU kind) as each candidate finishes; a
finished candidate is skipped unless `--again`, an unfinished one resumes from its checkpoint.

    .venv/bin/python sweeps/dpo_sweep.py --list
    .venv/bin/python sweeps/dpo_sweep.py --only cached-k8-lr1e-4-2ep --data-dir ../shared/data
    .venv/bin/python sweeps/dpo_sweep.py --table
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "sweeps"))

ALL_PAIRS = {"dpo.max_pairs": None}
LORA = {"dpo.trainable.mode": "lora", "dpo.train.epochs": 1}
GRID: dict[str, dict] = {
    # LoRA r16 on every linear layer, one pass over a seeded 320 pairs: the cheap recipe the others are judged by
    "lora-320-1ep": {**LORA, "dpo.max_pairs": 320},
    # cached last_k: the reference pass fills the frozen prefix, so each epoch runs only the top k blocks and the head
    "cached-k8-lr1e-4-2ep": {"dpo.trainable.mode": "last_k", "dpo.trainable.last_k": 8, "dpo.train.lr": 1.0e-4,
                             "dpo.train.epochs": 2, **ALL_PAIRS},
    "cached-k4-lr3e-4-2ep": {"dpo.trainable.mode": "last_k", "dpo.trainable.last_k": 4, "dpo.train.lr": 3.0e-4,
                             "dpo.train.epochs": 2, **ALL_PAIRS},
    "lora-lr5e-4-all": {**LORA, "dpo.train.lr": 5.0e-4, **ALL_PAIRS},
}
"""Candidates: name -> overrides of the profile, each stating its recipe whole (`cached-k8-lr1e-4-2ep` is the cpu
profile's own)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--profile", default="cpu", help="configs/<profile>.yaml the candidates start from (default cpu)")
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"candidates to run (default all): {', '.join(GRID)}")
    p.add_argument("--again", action="store_true", help="retrain named candidates that already have a row")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of training prompts held out (default 0.2)")
    p.add_argument("--data-dir", help="folder with the profile's local data file (sets ALIGNKIT_DATA_DIR)")
    p.add_argument("--work", default=str(ROOT / "outputs" / "sweeps-dpo"),
                   help="where candidates' runs are written (default outputs/sweeps-dpo)")
    p.add_argument("--results", default=str(ROOT / "sweeps" / "results" / "dpo_sweep.jsonl"),
                   help="JSONL file the rows are appended to (default sweeps/results/dpo_sweep.jsonl)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every candidate and the split, applied after the candidate's own, e.g. "
                        "--set model.name=PATH (repeatable)")
    p.add_argument("--list", action="store_true", help="print the candidates and their overrides, run nothing")
    p.add_argument("--table", action="store_true", help="print the results file as a table, run nothing")
    return p.parse_args(argv)


def judge(metrics: dict) -> dict:
    """The fold's numbers of a finished candidate (run_dpo's final evaluation, whose pairs are the fold)."""
    from alignkit.verdicts import decide, margin
    e = metrics["eval"]
    moved = {k: {"mean": e[k], "ci95": e[f"{k}_ci95"], "verdict": decide(e[f"{k}_ci95"], 0.0, margin("nats"))}
             for k in ("logratio", "logratio_chosen", "logratio_rejected") if f"{k}_ci95" in e}
    return {"n_val": e["n"], **moved,
            "reward_accuracy": {"accuracy": e["reward_accuracy"], "ci95": e["reward_accuracy_ci95"], "n": e["n"]},
            "train_reward_accuracy": metrics["train"]["reward_accuracy"], "steps": metrics["steps"],
            "n_dpo_train": metrics["data"].get("n_dpo_train"), "seconds": metrics.get("seconds"),
            "wall_time_s": metrics["wall_time_s"], "prefix_cache": metrics.get("prefix_cache")}


def run(args) -> None:
    from alignkit.train.dpo import dpo_metrics
    from rm_sweep import run_grid
    run_grid(args, GRID, dpo_metrics, lambda cfg, metrics: judge(metrics), table, set_last=True)


def table(rows: list[dict]) -> str:
    """Rows as a plain-text table: the held-out log-ratios with their CIs and verdicts, the reward accuracy."""
    def ci(d, key="mean", fmt="+.3f"):
        if not d:
            return "-"
        return f"{d[key]:{fmt}} [{d['ci95'][0]:{fmt}}, {d['ci95'][1]:{fmt}}]" + (f" {d['verdict']}" if "verdict" in d else "")
    lines = ["name | pairs trained/val | steps | log-ratio (nats) | chosen | rejected | reward accuracy | s | date, CPU"]
    for r in rows:
        lines.append(" | ".join([
            r["name"], f"{r['n_dpo_train']}/{r['n_val']}", str(r["steps"]), ci(r.get("logratio")),
            ci(r.get("logratio_chosen")), ci(r.get("logratio_rejected")), ci(r["reward_accuracy"], "accuracy", ".3f"),
            str(r["sweep_s"]), f"{r['date']}, {r['cpu_capability']}"]))
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.data_dir:
        os.environ["ALIGNKIT_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if args.list:
        for name, overrides in GRID.items():
            print(f"{name}: {overrides or '(the profile as is)'}")
        return
    if args.table:
        results = Path(args.results)
        if not results.exists():
            raise SystemExit(f"no results yet: {results}")
        print(table([json.loads(line) for line in results.read_text().splitlines() if line.strip()]))
        return
    run(args)


if __name__ == "__main__":
    main()
