"""How much of a training batch is padding, per way of batching, on the real align-anything pairs.

    .venv/bin/python benchmarks/padding.py [--data-dir ../shared/data] [--max-pairs 200] [--out padding.json]

Strategies (each pair encoded by alignkit's ChatEncoder with SmolLM2's chat template, offline):
* padded, length-grouped: `collate_pairs` (better rows, then worse rows, right-padded to the longest) over
  the batches the training loop makes (`length_grouped_order`, grouped by the longer side of a pair);
* padded, random order: the same collate over seeded random batches;
* packed RM: `pack_pairs` (one row per pair, [prompt | better | worse]) over length-grouped batches by
  `packed_length`, the reward model's training path.
Per strategy: the token positions the model computes (rows × batch length, summed over batches) and the
fraction of them that are padding. Shapes: the cpu profile's lengths and batch size, and the gpu
profile's (1024 / 512, 8 pairs; the gpu profile's own Qwen tokenizer is not available offline, so SmolLM2's
stands in: lengths differ by a few percent).
"""
from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from alignkit.config import load_config
from alignkit.data.packing import pack_pairs, packed_length
from alignkit.data.sources import load_pairs
from alignkit.data.tokenize import ChatEncoder, collate_pairs, encode_pairs, length_grouped_order
from alignkit.models import load_tokenizer

REPO = Path(__file__).resolve().parent.parent
SEED = 42


def random_order(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def padded_fraction(items, batches, pad_id: int) -> tuple[int, float]:
    """(positions computed, fraction that are padding) of plain padded pair batches."""
    positions = real = 0
    for batch in batches:
        mask = collate_pairs([items[i] for i in batch], pad_id)["attention_mask"]
        positions += mask.numel()
        real += int(mask.sum())
    return positions, 1 - real / positions


def packed_fraction(items, batches, pad_id: int) -> tuple[int, float]:
    """(positions computed, fraction that are padding) of shared-prompt packed batches."""
    positions = real = 0
    for batch in batches:
        pairs = [items[i] for i in batch]
        rows, length = pack_pairs(pairs, pad_id)["input_ids"].shape
        positions += rows * length
        real += sum(packed_length(p) for p in pairs)
    return positions, 1 - real / positions


def measure(tokenizer, pairs, max_length: int, max_prompt_length: int, batch_size: int) -> list[dict]:
    items, cut = encode_pairs(ChatEncoder(tokenizer, max_length, max_prompt_length), pairs)
    pad = tokenizer.pad_token_id
    n = len(items)
    grouped = length_grouped_order([p.length for p in items], batch_size, SEED)
    grouped_packed = length_grouped_order([packed_length(p) for p in items], batch_size, SEED)
    rows = []
    for name, (positions, fraction) in (
            ("padded, length-grouped", padded_fraction(items, grouped, pad)),
            ("padded, random order", padded_fraction(items, random_order(n, batch_size, SEED), pad)),
            ("packed RM, length-grouped", packed_fraction(items, grouped_packed, pad))):
        rows.append({"max_length": max_length, "max_prompt_length": max_prompt_length, "batch_size": batch_size,
                     "n": n, "response_cut": cut.response_cut, "strategy": name, "positions": positions,
                     "pad_fraction": fraction})
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("ALIGNKIT_DATA_DIR", str(REPO.parent / "shared" / "data")),
                        help="folder with align_anything_t2t.json (default $ALIGNKIT_DATA_DIR, else ../shared/data)")
    parser.add_argument("--max-pairs", type=int, default=None, help="use the first N pairs (default: all)")
    parser.add_argument("--out", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    path = Path(args.data_dir) / "align_anything_t2t.json"
    if not path.exists():
        raise SystemExit(f"{path} not found; pass --data-dir or set ALIGNKIT_DATA_DIR to the folder holding it")
    pairs, _ = load_pairs(str(path), "HOMEWORK")
    pairs = pairs[:args.max_pairs] if args.max_pairs else pairs
    tokenizer = load_tokenizer("smollm2")
    cpu, gpu = load_config("cpu"), load_config("gpu")
    rows = []
    for cfg in (cpu, gpu):
        rows += measure(tokenizer, pairs, cfg.data.max_length, cfg.data.max_prompt_length, cfg.rm.train.batch_size)
    print(f"{path}: {len(pairs)} pairs (HOMEWORK template), SmolLM2 tokenizer, seed {SEED}")
    print("max length / prompt | batch (pairs) | n | strategy | positions | pad fraction")
    for r in rows:
        print(f"{r['max_length']} / {r['max_prompt_length']} | {r['batch_size']} | {r['n']} | {r['strategy']} | "
              f"{r['positions']} | {r['pad_fraction']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
