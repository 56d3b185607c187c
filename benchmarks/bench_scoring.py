"""Scoring throughput: alignkit's batched, length-sorted scorer (`alignkit.infer.score_texts`, inference
mode) vs the plain one-sample-at-a-time loop (render, tokenize and forward each text alone under
`no_grad`), on the same model, texts and max length, alternating in one process. Both sides include
rendering and tokenization. Unit: sequences (texts) scored per second.

    .venv/bin/python benchmarks/bench_scoring.py                # SmolLM2-135M from the cache
    .venv/bin/python benchmarks/bench_scoring.py --quick        # tiny random model
    python benchmarks/bench_scoring.py --device cuda --bf16 --model random:qwen2.5-0.5b --n-rows 64 \
        --batch-size 32 --max-length 1024                           # the gpu profile's shape on a GPU
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def one_at_a_time(model, tokenizer, prompts, responses, max_length: int) -> list[float]:
    """The plain pattern: render, tokenize and forward each text alone (no batching, no sorting)."""
    scores = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            text = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}],
                                                 tokenize=False)
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length).to(device)
            scores.append(model(ids["input_ids"], ids["attention_mask"])[1].item())
    return scores


def run(quick: bool = False, repeats: int = 3, *, model: str | None = None, n_rows: int | None = None,
        batch_size: int = 16, max_length: int | None = None, seed: int = 0, device: str = "cpu",
        bf16: bool = False, tokenizer: str = "smollm2") -> dict:
    """Score the same 2 * `n_rows` texts (both responses of `n_rows` pairs) with each side per repeat."""
    common.quiet()
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.models import RewardModel, load_tokenizer
    from alignkit.infer import score_texts
    from alignkit.train.loop import autocast
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-scoring-")
    device = common.pick_device(device)
    model, model_label = common.pick_model(model, quick, Path(tmp.name), tokenizer)
    n_rows = n_rows or (32 if quick else 24)
    max_length = max_length or (64 if quick else 192)
    pairs, source = common.preference_pairs(n_rows, seed)
    prompts = [p.prompt for p in pairs for _ in (0, 1)]
    responses = [r for p in pairs for r in (p.better, p.worse)]
    tok = load_tokenizer(model)
    scorer = RewardModel.from_pretrained(model, seed=seed).to(device).eval()
    encoder = ChatEncoder(tok, max_length, max_length // 2)

    def alignkit_side(r: int) -> common.Work:
        with autocast(bf16, device):
            score_texts(scorer, encoder, prompts, responses, batch_size=batch_size, progress=False)
        return common.Work(len(responses))

    def peer_side(r: int) -> common.Work:
        with autocast(bf16, device):
            one_at_a_time(scorer, tok, prompts, responses, max_length)
        return common.Work(len(responses))

    few = slice(0, min(4, len(responses)))
    measured = common.alternate(
        {"alignkit": alignkit_side, "peer": peer_side}, repeats,
        warmup={"alignkit": lambda: score_texts(scorer, encoder, prompts[few], responses[few], progress=False),
                "peer": lambda: one_at_a_time(scorer, tok, prompts[few], responses[few], max_length)})
    settings = {"model": model_label, "device": str(device),
                "data": Path(source).name, "n_rows": n_rows, "sequences": len(responses),
                "batch_size": batch_size, "max_length": max_length, "trainable": "none (inference)",
                "dtype": "float32 weights, bf16 autocast" if bf16 else "float32", "peer_batch_size": 1,
                "timing": "wall time of scoring all texts, rendering and tokenization included",
                "memory": common.memory_note(device)}
    tmp.cleanup()
    return common.make_result("scoring", "sequences/s", "alignkit score_texts (batched, length-sorted)",
                              "one text at a time", measured, settings, time.perf_counter() - t0, aim=10.0)


def main() -> None:
    parser = common.bench_parser(__doc__, "tiny random model, short sequences")
    parser.add_argument("--n-rows", type=int, help="pairs scored per repeat, 2 texts each (default 24; 32 quick)")
    parser.add_argument("--batch-size", type=int, default=16, help="alignkit's texts per forward")
    parser.add_argument("--max-length", type=int, help="default 192 (64 with --quick)")
    common.add_device_options(parser)
    args = parser.parse_args()
    result = run(args.quick, args.repeats, model=args.model, n_rows=args.n_rows, batch_size=args.batch_size,
                 max_length=args.max_length, device=args.device, bf16=args.bf16, tokenizer=args.tokenizer)
    common.finish(result, args.json)


if __name__ == "__main__":
    main()
