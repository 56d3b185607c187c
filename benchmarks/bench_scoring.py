"""Scoring throughput: alignkit's batched, length-sorted scorer vs a one-sample-at-a-time loop like the
seed's, on the same model, texts and max length, alternating in one process. Prints sequences/s and the
ratio (min/median/max over repeats) and writes outputs/bench/scoring.json.

    .venv/bin/python benchmarks/bench_scoring.py --n 96 --repeats 3            # SmolLM2-135M from the cache
    .venv/bin/python benchmarks/bench_scoring.py --model path/to/tiny --n 32    # quick mode
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from alignkit.data.sources import load_pairs, resolve_source
from alignkit.data.tokenize import ChatEncoder
from alignkit.io import atomic_write_json
from alignkit.models import RewardModel, load_tokenizer
from alignkit.scoring import score_texts


def one_at_a_time(model, tokenizer, prompts, responses, max_length):
    """The seed's pattern: render, tokenize and forward each text alone (no batching, no sorting)."""
    scores = []
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            text = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}],
                                                 tokenize=False).rstrip()
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
            scores.append(model(ids["input_ids"], ids["attention_mask"])[1].item())
    return scores


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=resolve_source("PKU-Alignment/align-anything", "align_anything_t2t.json")
                        if os.environ.get("ALIGNKIT_DATA_DIR") else None, help="HOMEWORK-format file")
    parser.add_argument("--n", type=int, default=96, help="texts scored per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--out", default="outputs/bench/scoring.json")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data is required (or set ALIGNKIT_DATA_DIR)")
    torch.manual_seed(0)
    pairs, _ = load_pairs(args.data, "HOMEWORK", max_rows=args.n // 2, seed=0)
    prompts = [p.prompt for p in pairs for _ in (0, 1)]
    responses = [r for p in pairs for r in (p.better, p.worse)]
    tokenizer = load_tokenizer(args.model)
    model = RewardModel.from_pretrained(args.model, seed=0).eval()
    encoder = ChatEncoder(tokenizer, args.max_length, args.max_length // 2)
    runs = {"alignkit": [], "one_at_a_time": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        score_texts(model, encoder, prompts, responses, batch_size=args.batch_size, progress=False)
        runs["alignkit"].append(len(responses) / (time.perf_counter() - start))
        start = time.perf_counter()
        one_at_a_time(model, tokenizer, prompts, responses, args.max_length)
        runs["one_at_a_time"].append(len(responses) / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(runs["alignkit"], runs["one_at_a_time"])]
    result = {"benchmark": "scoring", "model": args.model, "texts": len(responses), "max_length": args.max_length,
              "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "sequences_per_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
              "ratio": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    for name, values in runs.items():
        print(f"{name:>14}: {statistics.median(values):8.2f} sequences/s (median of {len(values)})")
    print(f"{'ratio':>14}: {result['ratio']['median']:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
