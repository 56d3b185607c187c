"""Chapter 8's precision check on a trained reward model, without running the report.

`alignkit.study.scores.precision_check` scores the profile's test split with the reward model in float32, with
bfloat16 weights and with int8 dynamic quantization of the backbone's linear layers (each timed on the same
sequences), and measures their agreement with float32: Spearman, order flips and the accuracy difference with
its CI. The report runs it on chapter 1's model; this runs it on any trained reward model folder (a sweep
candidate's `rm/`, say) on the profile's real test split, so the speed-up and agreement can be measured on
one CPU kind in minutes. The test split is rebuilt from the profile's data (the same seed, the same split).

    .venv/bin/python benchmarks/precision_check.py --rm outputs/sweeps/lora-profile/rm --data-dir ../shared/data \\
        --json benchmarks/results/precision_cpu.json

The model must not have seen the profile's test split (a sweep candidate trains on a part of the profile's
training split, so it has not); the check says so when the folder's metrics name other data.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rm", required=True, help="a trained reward model folder (config.json, weights, metrics.json)")
    p.add_argument("--profile", default="cpu", help="configs/<profile>.yaml whose test split is scored (default cpu)")
    p.add_argument("--data-dir", help="folder with the profile's local data file (sets ALIGNKIT_DATA_DIR)")
    p.add_argument("--work", default=str(ROOT / "outputs" / "precision-check"),
                   help="scratch folder for the split and the copied model (default outputs/precision-check)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override, as the run that trained the model had them (repeatable)")
    p.add_argument("--json", help="also write the result here, with the machine it ran on")
    args = p.parse_args(argv)
    if args.data_dir:
        os.environ["ALIGNKIT_DATA_DIR"] = str(Path(args.data_dir).resolve())
    source = Path(args.rm)
    if not (source / "config.json").exists() or not (source / "metrics.json").exists():
        raise SystemExit(f"--rm {source}: not a trained reward model folder (it needs config.json and metrics.json)")

    import torch
    import common
    from alignkit.config import load_config, parse_assignments
    from alignkit.data.sources import prepare_data
    from alignkit.study.scores import precision_check
    cfg = load_config(args.profile, {**parse_assignments(args.set), "output_dir": args.work})
    _, test, _ = prepare_data(cfg)  # writes <work>/data/test.jsonl, the profile's own held-out split
    trained_on = json.loads((source / "metrics.json").read_text()).get("data", {})
    seen = {_key(p.prompt) for p in test} & {_key(p.prompt) for p in _trained_pairs(source)}
    if seen:
        raise SystemExit(f"--rm {source} was trained on {len(seen)} prompt(s) of the {args.profile} profile's test "
                         "split: its scores there are not held out")
    rm_dir = cfg.out / "rm"
    shutil.rmtree(rm_dir, ignore_errors=True)
    shutil.copytree(source, rm_dir)
    result = precision_check(cfg, force=True)
    result = {"rm": str(source), "profile": args.profile, "test_pairs": len(test), "trained_on": trained_on,
              "machine": common.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), **result}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    for name, row in (("bfloat16", result), ("int8", result.get("int8"))):
        if row is None:
            continue
        low, high = row["accuracy_difference_ci95"]
        print(f"{name}: speed-up {row['speedup']}x over float32 ({row.get('timed_pairs', row['n'])} pairs timed), "
              f"agreement on {row['n']} pairs: Spearman {row['spearman']:.4f}, order flips {row['flips']}, "
              f"Δaccuracy {row['accuracy_difference']:+.4f} [{low:+.4f}, {high:+.4f}], holds: {row['holds']}")


def _trained_pairs(rm_dir: Path) -> list:
    """The training pairs of the run that saved `rm_dir` (its data/train.jsonl beside it), or none."""
    from alignkit.data.sources import load_pairs
    train = rm_dir.parent / "data" / "train.jsonl"
    return load_pairs(str(train), "ALIGNKIT")[0] if train.exists() else []


def _key(prompt) -> str:
    return json.dumps(prompt, sort_keys=True, default=str)


if __name__ == "__main__":
    main()
