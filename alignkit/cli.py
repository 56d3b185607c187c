"""Command line: `alignkit rm|dpo|score|generate|report`. Every option is also reachable as
`--set section.field=value`. The entry point sits above both layers: it calls the core's steps and, for
`report`, the report layer."""
from __future__ import annotations

import argparse
import json
import sys

from alignkit.config import load_config, parse_assignments
from alignkit.errors import AlignkitError
from alignkit.report.build import run_report
from alignkit.study.generations import compare_profile
from alignkit.study.scores import score_file, score_profile
from alignkit.train.dpo import dpo_metrics, run_dpo
from alignkit.train.rm import reward_model_metrics, rm_preflight, run_reward_model

EPILOG = """examples:
  ALIGNKIT_DATA_DIR=../shared/data alignkit rm train --profile cpu
  alignkit rm train --profile cpu --data ../shared/data/align_anything_t2t.json --set rm.train.lr=1e-4
  alignkit rm eval --model outputs/cpu/rm --eval-data outputs/cpu/data/test.jsonl --eval-template ALIGNKIT
  alignkit rm preflight --profile cpu --pair 3     (how pair 3 is tokenized; where the reward is read)
  alignkit rm train --profile gpu      (GPU hosts: starts DeepSpeed's launcher on every visible GPU;
                                       rm.train.launcher / rm.train.num_gpus / rm.train.hostfile)
  deepspeed --module alignkit rm train --profile gpu        (the same, launched by hand)
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="cpu", help="profile in configs/ (cpu, gpu, tiny) or a YAML path")
    parser.add_argument("--model", help="Hub id, local folder or 'smollm2' (model.name)")
    parser.add_argument("--eval-data", help="held-out pairs: file, folder or Hub id (data.eval.path)")
    parser.add_argument("--eval-template", help="template of --eval-data (data.eval.template)")
    parser.add_argument("--output-dir", help="artifacts root (default outputs/<profile>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. rm.train.lr=1e-4 (repeatable)")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS)


def _data(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument("--data", help=f"training pairs: file, folder or Hub id (data.train.path){note}")
    parser.add_argument("--template", help="template of --data (data.train.template)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignkit", description="Reward modelling and DPO, reproducibly.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # `deepspeed --module alignkit ...` puts --local_rank before the sub-command
    parser.add_argument("--local-rank", "--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    rm = commands.add_parser("rm", help="reward model").add_subparsers(dest="action", required=True)
    rm_train = rm.add_parser("train", help="train a reward model, then evaluate it on held-out pairs",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(rm_train)
    _data(rm_train, "; '' or None = evaluate only")
    rm_train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    rm_train.add_argument("--reuse", action="store_true",
                          help="if this exact config was trained before, print its metrics instead of retraining")
    rm_eval = rm.add_parser("eval", help="evaluate a reward model (or an untrained base) without training",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(rm_eval)
    rm_pre = rm.add_parser("preflight", help="show how one pair is tokenized, where the reward is read, and "
                           "check it against Hugging Face / TRL conventions (exit 1 if a check fails)",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(rm_pre)
    _data(rm_pre)
    rm_pre.add_argument("--pair", type=int, help="which pair of the data to show (default: the first one "
                                                  "training does not truncate)")
    score = commands.add_parser("score", help="score every pair of a preference file with a reward model",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SCORE_EPILOG)
    score.add_argument("--profile", default="cpu", help="profile whose settings score (evaluation lengths, batch "
                       "size, seed); alone: score its untrained and trained RM on its test and train splits "
                       "(writes outputs/<profile>/scores/)")
    score.add_argument("--model", help="saved reward model folder, or a base model (fresh head)")
    score.add_argument("--data", help="preference file or folder")
    score.add_argument("--template", default="ALIGNKIT", help="template of --data (default: ALIGNKIT)")
    score.add_argument("--out", help="output path without suffix: writes .parquet, .jsonl, "
                                                    ".summary.json")
    score.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. data.eval_max_length=512 or seed=1 (the seed of a "
                            "fresh head) (repeatable)")
    dpo = commands.add_parser("dpo", help="DPO fine-tuning of the policy").add_subparsers(dest="action", required=True)
    dpo_train = dpo.add_parser("train", help="fine-tune with DPO (or dpo.loss=ipo|robust|rdpo|simpo|orpo) on the "
                               "profile's training split; writes outputs/<profile>/dpo/",
                               epilog=DPO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(dpo_train)
    _data(dpo_train)
    dpo_train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    dpo_train.add_argument("--reuse", action="store_true",
                           help="if this exact config was trained before, print its metrics instead of retraining")
    generate = commands.add_parser("generate", help="generate with the base and DPO models on test and train "
                                   "prompts, score with the trained RM, compare (outputs/<profile>/generations/)",
                                   epilog=DPO_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    generate.add_argument("--profile", default="cpu", help="profile in configs/ (cpu, gpu, tiny) or a YAML path")
    generate.add_argument("--output-dir", help="artifacts root (default outputs/<profile>)")
    generate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override any config field, e.g. generation.train_prompts=16 (repeatable)")
    generate.add_argument("--force", action="store_true", help="regenerate even if this config's outputs exist")
    # --- report (alignkit.report.build): papermill notebooks -> HTML -> jupyter-book
    report = commands.add_parser("report", help="run the report notebooks with papermill and build the book")
    report.add_argument("--profile", default="cpu", help="profile every notebook runs on (cpu, gpu, tiny)")
    report.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to every notebook (papermill `overrides`; repeatable)")
    report.add_argument("--force", action="store_true", help="rerun finished steps instead of reusing them")
    report.add_argument("--no-book", action="store_true", help="notebooks and their HTML only")
    return parser


DPO_EPILOG = """examples:
  alignkit dpo train --profile cpu --reuse
  alignkit dpo train --profile cpu --set dpo.beta=0.2 --set dpo.loss=ipo
  alignkit generate --profile cpu --set generation.train_prompts=16
  deepspeed --module alignkit dpo train --profile gpu
"""

SCORE_EPILOG = """examples:
  alignkit score --profile cpu
  alignkit score --profile cpu --model outputs/cpu/rm --data outputs/cpu/data/test.jsonl --out /tmp/trained-test
"""


def config_from_args(args):
    overrides = parse_assignments(args.set)
    sugar = {"model.name": args.model, "data.eval.path": args.eval_data,
             "data.eval.template": args.eval_template, "output_dir": args.output_dir,
             "data.train.path": getattr(args, "data", None), "data.train.template": getattr(args, "template", None)}
    overrides.update({k: v for k, v in sugar.items() if v is not None})
    if getattr(args, "data", None) is not None:
        overrides["data.train.local_name"] = None  # an explicit --data wins over $ALIGNKIT_DATA_DIR
    if args.action == "eval":
        overrides["data.train.path"] = None
    cfg = load_config(args.profile, overrides)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            run_report(args.profile, parse_assignments(args.set), force=args.force, book=not args.no_book)
            return 0
        if args.command == "score" and not (args.model or args.data or args.out):
            summaries = score_profile(load_config(args.profile, parse_assignments(args.set)))
            keys = ("n", "accuracy", "accuracy_ci95", "auc", "auc_ci95")
            print(json.dumps({name: {k: s[k] for k in keys} for name, s in summaries.items()}, indent=2))
            return 0
        if args.command == "score":
            if not (args.model and args.data and args.out):
                raise AlignkitError("score needs --model, --data and --out together (or none of them: the "
                                    "profile's own 2 x 2)")
            summary = score_file(load_config(args.profile, parse_assignments(args.set)), args.model, args.data,
                                 args.template, args.out)
            print(json.dumps({k: summary[k] for k in ("n", "accuracy", "accuracy_ci95", "auc", "auc_ci95")},
                             indent=2))
            return 0
        if args.command == "dpo":
            cfg = config_from_args(args)
            metrics = dpo_metrics(cfg) if args.reuse else run_dpo(cfg, resume=args.resume)
            if metrics:
                keys = ("train", "eval", "steps", "reference_s", "wall_time_s", "metrics_path")
                print(json.dumps({k: metrics[k] for k in keys if k in metrics}, indent=2))
            return 0
        if args.command == "generate":
            overrides = parse_assignments(args.set)
            if args.output_dir:
                overrides["output_dir"] = args.output_dir
            summary = compare_profile(load_config(args.profile, overrides), force=args.force)
            print(json.dumps({k: summary[k] for k in ("test", "train") if k in summary}, indent=2,
                             ensure_ascii=False))
            return 0
        if args.command == "rm" and args.action == "preflight":
            report = rm_preflight(config_from_args(args), args.pair)
            print("tokens ([special] tokens, ⏎ newlines; the reward is read at the last one):")
            for part, text in report.text_by_part().items():
                print(f"{part}: {text}")
            print()
            for c in report.checks:
                print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.value}")
            return 0 if report.ok else 1
        if args.command == "rm":
            cfg = config_from_args(args)
            if getattr(args, "reuse", False):
                metrics = reward_model_metrics(cfg, force=False)
            else:
                metrics = run_reward_model(cfg, resume=getattr(args, "resume", False))
            if metrics:
                keys = ("eval_untrained", "eval", "train", "wall_time_s", "metrics_path")
                print(json.dumps({k: metrics[k] for k in keys if k in metrics}, indent=2))
    except AlignkitError as e:
        print(f"alignkit: error: {e}", file=sys.stderr)
        return 2
    return 0
