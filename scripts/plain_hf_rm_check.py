"""Score a saved alignkit reward model the way any Hugging Face user would, without alignkit.

    python scripts/plain_hf_rm_check.py outputs/cpu            # prints plain-transformers vs alignkit

For every held-out pair in <out>/data/test.jsonl: render prompt + response with the tokenizer's own
`apply_chat_template(..., tokenize=False)`, tokenize it with a plain `tokenizer(text)` call, run
`AutoModelForSequenceClassification` on that one unpadded text, and count the pairs whose better response
scores higher (a tie counts one half, as alignkit counts it). Compares with <out>/rm/metrics.json's test
accuracy and, where chapter 3 wrote them, alignkit's per-response scores (<out>/scores/trained-test.jsonl).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def plain_scores(rm_dir: Path, pairs: list[dict]) -> list[tuple[float, float]]:
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for pair in pairs:
            scores = []
            for response in (pair["better"], pair["worse"]):
                text = tokenizer.apply_chat_template(pair["prompt"] + [{"role": "assistant", "content": response}],
                                                     tokenize=False)
                scores.append(model(**tokenizer(text, return_tensors="pt")).logits.item())
            out.append((scores[0], scores[1]))
    return out


def check(out_dir: Path) -> dict:
    pairs = [json.loads(line) for line in (out_dir / "data" / "test.jsonl").read_text().splitlines() if line]
    scores = plain_scores(out_dir / "rm", pairs)
    correct = sum(1.0 if b > w else 0.5 if b == w else 0.0 for b, w in scores)
    alignkit = json.loads((out_dir / "rm" / "metrics.json").read_text())["eval"]
    result = {"n": len(pairs), "plain_correct": correct, "plain_accuracy": correct / len(pairs),
              "alignkit_n": alignkit["n"], "alignkit_correct": round(alignkit["accuracy"] * alignkit["n"], 6),
              "alignkit_accuracy": alignkit["accuracy"]}
    table = out_dir / "scores" / "trained-test.jsonl"
    if table.exists():
        rows = [json.loads(line) for line in table.read_text().splitlines() if line]
        theirs = {(r["pair_id"], r["side"]): r["score"] for r in rows}
        result["max_abs_score_difference"] = max(
            abs(theirs[(i, side)] - s) for i, pair in enumerate(scores) for side, s in zip(("better", "worse"), pair))
    result["same"] = result["n"] == result["alignkit_n"] and result["plain_correct"] == result["alignkit_correct"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="a profile's outputs folder, e.g. outputs/cpu")
    result = check(parser.parse_args().out)
    print(json.dumps(result, indent=2))
    return 0 if result["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
