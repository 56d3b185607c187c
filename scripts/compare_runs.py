#!/usr/bin/env python3
"""Diff the key numbers of two report runs (two ``outputs/<profile>`` folders).

Why: a refactor of ``alignkit`` should leave the report's numbers unchanged.
Run the report before and after the change, then

    python scripts/compare_runs.py /work/before/outputs/tiny outputs/tiny [--tol 1e-9] [--json out.json]

prints one row per key number (key, run A, run B, status) and a last line
"N key numbers compared, K differ".  Exit status: 0 when every key number is
equal, 1 when any differs, 2 on bad usage (a run folder that does not exist or
holds no report artifacts).

What it compares (the ARTIFACTS table below; add a row to extend it):

  rm/metrics.json               RM accuracy, n, 95% CI, loss, length-matched and
                                'longer wins' accuracy, untrained-RM accuracy,
                                train accuracy and n, steps
  dpo/metrics.json              implicit-reward accuracy, loss, n, rewards of
                                chosen/rejected (held-out and train), steps
  generations/summary.json      per split (test, train): n, win rate and CI, mean
                                score and length of base/DPO, budget hits,
                                length-controlled DPO effect and CI
  scores/summary.json           per scored set (trained-test, ...): n, accuracy,
                                AUC, mean margin, Spearman(score, length)
  evals/*/rm_eval/*/metrics.json  eval-only runs: accuracy and n, keyed by the
                                eval folder's name
  notebooks/*_analysis_qa.ipynb  every cell of every HTML table that the Q&A
                                chapter's executed notebook shows (07_analysis_qa;
                                06_analysis_qa in runs made before chapter 6, the
                                experiments, existed; still keyed "ch6"), keyed
                                "ch6/<table number>/<row label>/<column name>"
                                (by label and name, so reordered columns still
                                match).  By default only the numbers in a cell are
                                compared (--numbers-only), so a reworded reading
                                that keeps its numbers is "same"; cells without
                                numbers are skipped.  Numbers are read from the
                                English text of bilingual cells.  Rows whose
                                label mentions "wall time" are timings, which
                                differ from run to run, and are left out unless
                                --include-timings.  "ch6:tables", the number
                                of tables, is a named key number.

Comparison: integers exactly; floats within --tol (absolute, default 0 =
exact); strings, booleans and nulls exactly; NaN equals NaN.  A list such as a
95% CI is compared element by element (key[0], key[1]).

Statuses: "same", "DIFFERENT", "only in A"/"only in B", "missing" (in neither
run).  A status in CAPITALS counts as a difference.  A key number this script
names for an artifact (e.g. rm:eval.accuracy) that one run lacks shows as
"ONLY IN A"/"ONLY IN B" and fails, as does a whole artifact that one run lacks
(its side reads "missing").  Keys that are discovered rather than named, i.e. the
chapter-6 table cells, an eval folder or a scores entry that only one run has,
show as "only in A"/"only in B" and do not fail unless --strict.

The script uses only the standard library and never imports alignkit, so it
works unchanged against any version of the package.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser

# --------------------------------------------------------------------------------------------
# What to compare.  One row per artifact:
#   name     key prefix; "{0}", "{1}" ... are the folder names matched by the glob's "*"s
#   pattern  glob relative to the run folder
#   paths    dotted JSON paths; "a|b" = try a, then b (the key always uses a)
#   kind     "json", or "html-tables" for an executed notebook's HTML table outputs
#   each     apply `paths` under every top-level entry of the JSON object; the names listed
#            are expected in every run, any other entry is a discovered (extra) one
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    name: str
    pattern: str
    paths: tuple[str, ...] = ()
    kind: str = "json"
    each: tuple[str, ...] | None = None


_GEN_FIELDS = (
    "n", "win_rate", "win_rate_ci95", "mean_score_base", "mean_score_dpo",
    "mean_length_base", "mean_length_dpo", "hit_limit_base", "hit_limit_dpo",
    "length_controlled.dpo_effect|length_controlled.effect",
    "length_controlled.dpo_effect_ci95|length_controlled.effect_ci95",
)

ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("rm", "rm/metrics.json", (
        "eval.accuracy", "eval.n", "eval.ci95", "eval.loss",
        "eval.length_matched_accuracy", "eval.longer_wins_accuracy", "eval.length.length_matched.n",
        "eval_untrained.accuracy", "eval_untrained.length_matched_accuracy",
        "train.accuracy", "train.n", "steps",
    )),
    Artifact("dpo", "dpo/metrics.json", (
        "eval.reward_accuracy", "eval.loss", "eval.n", "eval.rewards_chosen", "eval.rewards_rejected",
        "train.reward_accuracy", "train.n", "steps",
    )),
    Artifact("generations", "generations/summary.json",
             tuple("|".join(f"{split}.{alt}" for alt in field.split("|"))
                   for split in ("test", "train") for field in _GEN_FIELDS)),
    Artifact("scores", "scores/summary.json",
             ("n", "accuracy", "auc", "mean_margin", "score_vs_length.spearman"),
             each=("trained-test", "untrained-test", "trained-train", "untrained-train")),
    Artifact("evals/{0}", "evals/*/rm_eval/*/metrics.json", ("eval.accuracy", "eval.n")),
    Artifact("ch6", "notebooks/*_analysis_qa.ipynb", kind="html-tables"),  # the Q&A chapter, whatever its number
)

NEVER_EXPECTED = "\0discovered"
TIMING_ROWS = (r"wall time",)  # chapter-6 rows that hold timings (left out unless --include-timings)  # group of keys whose one-sided presence never fails (unless --strict)

# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    value: object
    group: str | None  # None: a named key number; else the discovered group it belongs to
    shown: str | None = None  # how to print the value, when not the value itself


@dataclass
class Run:
    root: str
    entries: dict  # key -> Entry
    groups: set  # discovered groups present
    found: dict  # artifact pattern -> labels of the files found for it
    problems: list  # unreadable files
    warnings: list  # e.g. an executed notebook whose cells raised


_MISSING = object()


def _get(obj, dotted: str):
    for part in dotted.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return _MISSING
    return obj


def _flatten(key: str, value, out: dict) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(f"{key}[{i}]", item, out)
    elif isinstance(value, dict):
        for k, item in value.items():
            _flatten(f"{key}.{k}", item, out)
    else:
        out[key] = value


def _json_entries(prefix: str, data, paths, group) -> dict:
    """{prefix + path: Entry} for each of `paths` found in `data` (lists and objects flattened)."""
    out: dict = {}
    for path in paths:
        alternatives = path.split("|")
        for alt in alternatives:
            value = _get(data, alt)
            if value is not _MISSING:
                flat: dict = {}
                _flatten(prefix + alternatives[0], value, flat)
                out.update({k: Entry(v, group) for k, v in flat.items()})
                break
    return out


def _matches(root: str, art: Artifact) -> list[tuple[str, tuple[str, ...]]]:
    """(file, the folder names the glob's '*'s matched), sorted."""
    regex = "^" + "/".join(
        "([^/]*)" if part == "*" else re.escape(part).replace(r"\*", "[^/]*")
        for part in art.pattern.split("/")) + "$"
    hits = []
    for path in sorted(glob.glob(os.path.join(root, art.pattern))):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        m = re.match(regex, rel)
        if os.path.isfile(path) and m:
            hits.append((path, m.groups()))
    return hits


def extract(root: str, numbers_only: bool, ignore_columns, ignore_rows) -> Run:
    run = Run(root, {}, set(), {}, [], [])
    for art in ARTIFACTS:
        hits = _matches(root, art)
        labels = [art.name.format(*wild) for _, wild in hits]
        labels = [label + "/" + "/".join(wild[art.name.count("{"):]) if labels.count(label) > 1 else label
                  for label, (_, wild) in zip(labels, hits)]  # e.g. two models under one eval folder
        if hits:
            run.found[art.pattern] = set(labels)
        for (path, wild), label in zip(hits, labels):
            rel = os.path.relpath(path, root)
            try:
                if art.kind == "html-tables":
                    entries, errors = notebook_table_entries(path, label, numbers_only, ignore_columns, ignore_rows)
                    if errors:
                        run.warnings.append(f"{rel}: {errors} cell(s) raised an error, so some tables may be "
                                            f"absent from this run")
                else:
                    with open(path, encoding="utf-8") as fh:
                        data = json.load(fh)
                    group = label if "*" in art.pattern else None
                    if group:
                        run.groups.add(group)
                    if art.each is None:
                        entries = _json_entries(label + ":", data, art.paths, group)
                    else:
                        entries = {}
                        for name, sub in (data.items() if isinstance(data, dict) else ()):
                            sub_group = None if name in art.each else f"{label}:{name}"
                            if sub_group:
                                run.groups.add(sub_group)
                            entries.update(_json_entries(f"{label}:{name}.", sub, art.paths, sub_group))
            except (OSError, ValueError) as exc:
                run.problems.append(f"{rel}: {exc}")
                entries = {f"{label}:(file)": Entry(f"unreadable: {exc}", None)}
            run.entries.update(entries)
    return run


# --- chapter 6: HTML tables in an executed notebook -------------------------------------------

_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
    r"|(?<![A-Za-z])(?:nan|inf)(?![A-Za-z])", re.IGNORECASE)


def numbers_in(text: str) -> list[str]:
    return _NUMBER.findall(text.replace("\u2212", "-"))  # U+2212 minus sign


def _squash(text: str) -> str:
    return " ".join(text.split())


class _TableParser(HTMLParser):
    """Collects every <table>: header rows and body rows; a cell is (tag, full text, English text).

    The English text leaves out the translation of a bilingual cell
    (<span class="ak-sep"> / </span><span class="ak-zh">...</span>); a plain cell's English
    text is its full text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._depth = 0
        self._section = None
        self._row = None
        self._cell = None
        self._spans: list[bool] = []  # per open <span>: is it translation-only?
        self._skip = 0  # inside <caption>, <style>, <script>

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script") or (tag == "caption" and self._depth == 1):
            self._skip += 1
        elif tag == "table":
            self._depth += 1
            if self._depth == 1:
                self.tables.append({"head": [], "body": []})
        elif self._depth != 1:
            return
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = "head" if tag == "thead" else "body"
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [tag, [], []]
        elif tag == "span":
            classes = (dict(attrs).get("class") or "").split()
            self._spans.append(bool({"ak-zh", "ak-sep"} & set(classes)))
        elif tag == "br" and self._cell is not None:
            self.handle_data(" ")

    def handle_endtag(self, tag):
        if tag in ("style", "script") or (tag == "caption" and self._depth == 1 and self._skip):
            self._skip = max(0, self._skip - 1)
        elif tag == "table":
            self._depth -= 1
        elif self._depth != 1:
            return
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            kind, full, english = self._cell
            self._row.append((kind, _squash("".join(full)), _squash("".join(english))))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            section = self._section or ("head" if all(c[0] == "th" for c in self._row) else "body")
            self.tables[-1][section].append(self._row)
            self._row = None
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = None
        elif tag == "span" and self._spans:
            self._spans.pop()

    def handle_data(self, data):
        if self._skip or self._depth != 1 or self._cell is None:
            return
        self._cell[1].append(data)
        if not any(self._spans):
            self._cell[2].append(data)


def _unique(names: list[str]) -> list[str]:
    seen: dict = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


def html_table_cells(html: str):
    """Yield (table number from 1, row label, column name, full text, English text) per body cell."""
    parser = _TableParser()
    parser.feed(html)
    parser.close()
    for number, table in enumerate(parser.tables, 1):
        width = max((len(r) for r in table["head"] + table["body"]), default=0)
        columns = []
        for i in range(width):
            parts = [row[i][2] for row in table["head"] if i < len(row) and row[i][2]]
            columns.append(" | ".join(parts) or f"col{i}")
        labels, bodies = [], []
        for r, row in enumerate(table["body"]):
            n_label = 0
            while n_label < len(row) and row[n_label][0] == "th":
                n_label += 1
            n_label = n_label or 1  # no index: the first column names the row
            labels.append(" | ".join(c[2] for c in row[:n_label]) or f"row{r}")
            bodies.append((n_label, row))
        for label, (n_label, row) in zip(_unique(labels), bodies):
            for i in range(n_label, len(row)):
                yield number, label, columns[i] if i < len(columns) else f"col{i}", row[i][1], row[i][2]


def notebook_table_entries(path: str, label: str, numbers_only: bool, ignore_columns, ignore_rows):
    """{"<label>/<table number>/<row label>/<column name>": Entry} for every HTML table the notebook's
    code cells output, numbered 1, 2, ... in notebook order.  With numbers_only an Entry holds the
    tuple of numeric tokens of the cell's English text; otherwise the cell's whole text.
    Also "<label>:tables", the number of tables, a named key number (so a run whose notebook
    is absent or lost tables fails, while single cells are discovered keys).
    Returns (entries, number of error outputs)."""
    with open(path, encoding="utf-8") as fh:
        nb = json.load(fh)
    out: dict = {}
    offset = errors = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            errors += output.get("output_type") == "error"
            html = output.get("data", {}).get("text/html")
            if html is None:
                continue
            html = "".join(html) if isinstance(html, list) else html
            if "<table" not in html:
                continue
            count = 0
            for number, row, column, full, english in html_table_cells(html):
                count = max(count, number)
                if any(re.search(p, column) for p in ignore_columns) or any(re.search(p, row) for p in ignore_rows):
                    continue
                key = f"{label}/{offset + number}/{row}/{column}"
                if numbers_only:
                    nums = numbers_in(english)
                    out[key] = Entry(tuple(nums), NEVER_EXPECTED, " ".join(nums) if nums else "(no number)")
                else:
                    out[key] = Entry(full.strip(), NEVER_EXPECTED)
            offset += count
    out[f"{label}:tables"] = Entry(offset, None)  # a named key number: a lost table (or notebook) fails
    return out, errors


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def same_value(a, b, tol: float) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):  # numbers of a table cell
        return len(a) == len(b) and all(_same_token(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if _is_int(a) and _is_int(b):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        if math.isinf(fa) or math.isinf(fb):
            return fa == fb
        return abs(fa - fb) <= tol
    return a == b


def _same_token(x: str, y: str, tol: float) -> bool:
    def parse(t):
        t = t.lstrip("+")
        return int(t) if re.fullmatch(r"-?\d+", t) else float(t)
    try:
        return same_value(parse(x), parse(y), tol)
    except ValueError:
        return x == y


def shown(entry: Entry | None) -> str:
    if entry is None:
        return "missing"
    if entry.shown is not None:
        return entry.shown
    v = entry.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _expected_stems(run_a: Run, run_b: Run) -> list[tuple[str, str]]:
    """(stem, artifact pattern) for every named key number of an artifact that either run has."""
    stems = []
    for art in ARTIFACTS:
        if art.kind != "json" or not (art.pattern in run_a.found or art.pattern in run_b.found):
            continue
        if art.each is not None:
            bases = [f"{art.name}:{name}." for name in art.each]
        else:
            bases = [label + ":" for label in sorted(run_a.found.get(art.pattern, set())
                                                     | run_b.found.get(art.pattern, set()))]
        for base in bases:
            stems += [(base + p.split("|")[0], art.pattern) for p in art.paths]
    return stems


def compare(run_a: Run, run_b: Run, tol: float, strict: bool) -> list[dict]:
    rows = []
    ordered = list(run_a.entries) + [k for k in run_b.entries if k not in run_a.entries]
    for key in sorted(ordered, key=_sort_key):  # artifact order, then the order found in the files
        ea, eb = run_a.entries.get(key), run_b.entries.get(key)
        if all(e is None or e.value == () for e in (ea, eb)):
            continue  # a table cell without numbers (numbers-only mode)
        if ea is not None and eb is not None:
            fails = not same_value(ea.value, eb.value, tol)
            status = "DIFFERENT" if fails else "same"
        else:
            entry, side = (ea, "A") if ea is not None else (eb, "B")
            group = entry.group
            named = group is None or (group != NEVER_EXPECTED and group in run_a.groups and group in run_b.groups)
            fails = named or strict
            status = f"ONLY IN {side}" if fails else f"only in {side}"
        rows.append({"key": key, "a": shown(ea), "b": shown(eb), "status": status, "fails": fails,
                     "value_a": None if ea is None else ea.value, "value_b": None if eb is None else eb.value})
    # named key numbers that neither run has (a whole artifact, or one field)
    keys = set(run_a.entries) | set(run_b.entries)
    for art in ARTIFACTS:
        if art.pattern not in run_a.found and art.pattern not in run_b.found:
            rows.append({"key": art.pattern, "a": "missing", "b": "missing", "status": "missing",
                         "fails": False, "value_a": None, "value_b": None})
    for stem, _ in _expected_stems(run_a, run_b):
        if not any(k == stem or k.startswith(stem + "[") or k.startswith(stem + ".") for k in keys):
            rows.append({"key": stem, "a": "missing", "b": "missing", "status": "missing",
                         "fails": False, "value_a": None, "value_b": None})
    return rows


def _sort_key(key: str) -> int:
    order = [a.name.split("{")[0] for a in ARTIFACTS]
    return next((i for i, p in enumerate(order) if key.startswith(p)), len(order))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(rows: list[dict], diff_only: bool, out=sys.stdout) -> None:
    rows = [r for r in rows if not diff_only or r["status"] != "same"]
    header = {"key": "key", "a": "run A", "b": "run B", "status": "status"}
    wk = min(90, max([len(r["key"]) for r in rows] + [3]))
    wv = 24
    for r in [header] + rows:
        print(f"{_fit(r['key'], wk):<{wk}}  {_fit(r['a'], wv):>{wv}}  {_fit(r['b'], wv):>{wv}}  {r['status']}", file=out)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(
        prog="compare_runs.py", description=doc[0],
        epilog=doc[1].split("The script uses only")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", help="artifact folder of run A, e.g. /work/before/outputs/tiny")
    p.add_argument("run_b", help="artifact folder of run B, e.g. outputs/tiny")
    p.add_argument("--tol", type=float, default=0.0,
                   help="absolute tolerance for floats (default 0: exact); integers are always exact")
    p.add_argument("--json", metavar="OUT", help="also write every row and the summary to this JSON file")
    p.add_argument("--numbers-only", action=argparse.BooleanOptionalAction, default=True,
                   help="chapter-6 tables: compare only the numbers in each cell and skip cells without "
                        "numbers (default); --no-numbers-only compares each cell's whole text")
    p.add_argument("--ignore-column", action="append", default=[], metavar="REGEX",
                   help="chapter-6 tables: leave out columns whose name matches REGEX (repeatable), "
                        "e.g. --ignore-column reading")
    p.add_argument("--ignore-row", action="append", default=[], metavar="REGEX",
                   help="chapter-6 tables: leave out rows whose label matches REGEX (repeatable)")
    p.add_argument("--include-timings", action="store_true",
                   help="chapter-6 tables: also compare the wall-time rows (left out by default: timings "
                        "differ from run to run)")
    p.add_argument("--strict", action="store_true",
                   help="also fail on discovered keys (table cells, eval folders, score sets) that only one run has")
    p.add_argument("--diff-only", action="store_true", help="print only the rows that are not 'same'")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    for label, path in (("A", args.run_a), ("B", args.run_b)):
        if not os.path.isdir(path):
            what = "is not a folder" if os.path.exists(path) else "does not exist"
            print(f"compare_runs: error: run {label} folder {path!r} {what}", file=sys.stderr)
            return 2
    if args.tol < 0 or math.isnan(args.tol):
        print(f"compare_runs: error: --tol must be >= 0, got {args.tol}", file=sys.stderr)
        return 2
    ignore_rows = args.ignore_row + ([] if args.include_timings else list(TIMING_ROWS))
    for pattern in args.ignore_column + args.ignore_row:
        try:
            re.compile(pattern)
        except re.error as exc:
            print(f"compare_runs: error: bad --ignore-column/--ignore-row regex {pattern!r}: {exc}", file=sys.stderr)
            return 2

    runs = []
    for label, path in (("A", args.run_a), ("B", args.run_b)):
        run = extract(path, args.numbers_only, args.ignore_column, ignore_rows)
        if not run.found:
            print(f"compare_runs: error: run {label} folder {path!r} holds none of the report artifacts "
                  f"({', '.join(a.pattern for a in ARTIFACTS)}); pass an outputs/<profile> folder",
                  file=sys.stderr)
            return 2
        for problem in run.problems:
            print(f"compare_runs: warning: run {label}: cannot read {problem}", file=sys.stderr)
        for warning in run.warnings:
            print(f"compare_runs: warning: run {label}: {warning}", file=sys.stderr)
        runs.append(run)

    rows = compare(runs[0], runs[1], args.tol, args.strict)
    print(f"run A: {args.run_a}\nrun B: {args.run_b}\n")
    print_table(rows, args.diff_only)
    counted = [r for r in rows if r["status"] != "missing"]
    failing = [r for r in counted if r["fails"]]
    extra = [r for r in counted if r["status"].startswith("only in")]  # lower case: not counted
    absent = [r for r in rows if r["status"] == "missing"]
    print()
    if extra:
        print(f"note: {len(extra)} discovered keys are in one run only (not counted; --strict counts them)")
    if absent:
        print(f"note: {len(absent)} key numbers or artifacts are missing from both runs")
    print(f"{len(counted)} key numbers compared, {len(failing)} differ")
    code = 1 if failing else 0
    if args.json:
        summary = {"run_a": args.run_a, "run_b": args.run_b, "tol": args.tol, "numbers_only": args.numbers_only,
                   "strict": args.strict, "compared": len(counted), "differ": len(failing),
                   "only_in_one_not_counted": len(extra), "missing_in_both": len(absent), "exit_code": code,
                   "rows": rows}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1, ensure_ascii=False, default=list)
    return code


if __name__ == "__main__":
    sys.exit(main())
