"""Run every benchmarks/bench_*.py and merge them into outputs/bench/results.json + results.md.

Each benchmark runs in its own process (fresh memory baseline and torch state) through its `run(quick,
repeats)`, its output in outputs/bench/<name>.log; one that fails is recorded with its error (and the log's
tail is printed) and the others still run (exit status 1 at the end).

    .venv/bin/python benchmarks/run_all.py                 # SmolLM2-135M (make bench)
    .venv/bin/python benchmarks/run_all.py --quick         # tiny random model (make bench QUICK=1)
    .venv/bin/python benchmarks/run_all.py --only rm,scoring --repeats 2
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def discover() -> dict[str, Path]:
    """{'rm': benchmarks/bench_rm.py, ...} in name order."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def run_one(path: Path, quick: bool, repeats: int, out: Path) -> None:
    """Child process: import `path`, call its run(), write the result (or the error) to `out`."""
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.run(quick=quick, repeats=repeats)
    except BaseException as exc:  # noqa: BLE001 - recorded, and the runner goes on
        result = {"name": path.stem.removeprefix("bench_"), "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
    out.write_text(json.dumps(result, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model (seconds, not minutes)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated benchmark names (default: every bench_*.py)")
    parser.add_argument("--out", default="outputs/bench", help="folder for results.json and results.md")
    parser.add_argument("--report-times", default="outputs/cpu/report_times.json",
                        help="per-notebook wall times of `make report`, copied into results.json if present")
    parser.add_argument("--child", nargs=2, metavar=("BENCH_PY", "OUT_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(Path(args.child[0]), args.quick, args.repeats, Path(args.child[1]))
        return 0

    import common
    from alignkit.report.bench import machine_line, write_markdown
    found = discover()
    names = args.only.split(",") if args.only else list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        parser.error(f"no benchmarks/bench_{unknown[0]}.py; found: {', '.join(found)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    machine = common.machine()
    print(f"bench: {machine_line(machine)}; {'quick' if args.quick else 'full'} mode, "
          f"{args.repeats} repeats: {', '.join(names)}", flush=True)
    results, failed = [], []
    for name in names:
        partial = out / f"{name}.json"
        partial.unlink(missing_ok=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(found[name]), str(partial),
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
        log = out / f"{name}.log"  # the child's progress bars and warnings; its tail is shown on failure
        with log.open("w") as stream:
            code = subprocess.call(cmd, env=os.environ.copy(), stdout=stream, stderr=subprocess.STDOUT)
        result = json.loads(partial.read_text()) if partial.exists() else \
            {"name": name, "error": f"benchmark process exited with status {code} and wrote no result"}
        if "error" in result:
            failed.append(name)
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            print(f"bench {name}: FAILED after {time.perf_counter() - t0:.0f} s: {result['error']}\n"
                  f"--- last lines of {log}:\n{tail}", flush=True)
        else:
            print(f"bench {common.summary_line(result)} [{result['wall_s']:.0f} s]", flush=True)
        results.append(result)
    report_times = Path(args.report_times)
    merged = {"machine": machine, "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "mode": "quick" if args.quick else "full", "repeats": args.repeats, "benchmarks": results,
              "report_times": json.loads(report_times.read_text()) if report_times.exists() else None}
    (out / "results.json").write_text(json.dumps(merged, indent=2))
    write_markdown(merged, out / "results.md")
    print(f"bench: wrote {out / 'results.json'} and {out / 'results.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
