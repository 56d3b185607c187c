"""Generation throughput by batch size: `alignkit.infer.generate` (sampled, the profile's decoding settings) on
the same prompts at two batch sizes, alternating in one process. The cpu profile's `generation.batch_size`
was chosen with it. Both sides generate the same number of prompts with the same model, budget and
settings; only the prompts per `generate` call differ, so they draw different random streams, and the unit
is generated tokens (each answer's `response_tokens`) per second of wall time.

    .venv/bin/python benchmarks/bench_generation.py                       # SmolLM2-135M, 128 vs 32
    .venv/bin/python benchmarks/bench_generation.py --batch-size 64 --peer-batch-size 32
    .venv/bin/python benchmarks/bench_generation.py --quick               # tiny random model
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def run(quick: bool = False, repeats: int = 3, *, model: str | None = None, n_rows: int | None = None,
        batch_size: int = 128, peer_batch_size: int = 32, max_new_tokens: int | None = None, seed: int = 0,
        device: str = "cpu", tokenizer: str = "smollm2") -> dict:
    """Answer the prompts of `n_rows` pairs with each batch size per repeat (both sides the same prompts)."""
    common.quiet()
    from transformers import AutoModelForCausalLM
    from alignkit.config import load_config
    from alignkit.data.tokenize import ChatEncoder
    from alignkit.infer import generate
    from alignkit.models import load_tokenizer, resolve_model
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench-generation-")
    device = common.pick_device(device)
    model, model_label = common.pick_model(model, quick, Path(tmp.name), tokenizer)
    n_rows = n_rows or (16 if quick else 128)
    cfg = load_config("cpu")
    gen = dataclasses.replace(cfg.generation, max_new_tokens=max_new_tokens or (8 if quick else 64))
    pairs, source = common.preference_pairs(n_rows, seed)
    prompts = [p.prompt for p in pairs]
    lm = AutoModelForCausalLM.from_pretrained(resolve_model(model)).to(device)
    encoder = ChatEncoder(load_tokenizer(model), cfg.data.max_length, cfg.data.max_prompt_length)

    def side(size: int):
        def call(r: int) -> common.Work:
            made = generate(lm, encoder, prompts, dataclasses.replace(gen, batch_size=size), seed=seed + r,
                            desc=f"batch {size}")
            return common.Work(sum(m["response_tokens"] for m in made))
        return call

    few = dataclasses.replace(gen, max_new_tokens=2, batch_size=4)
    measured = common.alternate(
        {"alignkit": side(batch_size), "peer": side(peer_batch_size)}, repeats,
        warmup={"alignkit": lambda: generate(lm, encoder, prompts[:4], few, seed=seed, desc="warm-up")})
    settings = {"model": model_label, "device": str(device), "data": Path(source).name, "n_rows": n_rows,
                "prompts": len(prompts), "batch_size": batch_size, "peer_batch_size": peer_batch_size,
                "max_length": cfg.data.max_length, "max_new_tokens": gen.max_new_tokens,
                "decoding": {k: getattr(gen, k) for k in ("do_sample", "temperature", "top_p", "repetition_penalty")},
                "trainable": "none (inference)", "dtype": "float32",
                "timing": "wall time of generating every prompt's answer, batching and decoding included",
                "memory": common.memory_note(device)}
    tmp.cleanup()
    return common.make_result("generation", "tokens/s", f"generate, {batch_size} prompts per call",
                              f"generate, {peer_batch_size} prompts per call", measured, settings,
                              time.perf_counter() - t0)


def main() -> None:
    parser = common.bench_parser(__doc__, "tiny random model, 8 new tokens")
    parser.add_argument("--n-rows", type=int, help="prompts answered per repeat (default 128; 16 quick)")
    parser.add_argument("--batch-size", type=int, default=128, help="prompts per generate call (default 128)")
    parser.add_argument("--peer-batch-size", type=int, default=32, help="the side compared with (default 32)")
    parser.add_argument("--max-new-tokens", type=int, help="answer budget (default 64; 8 quick)")
    common.add_device_options(parser)
    args = parser.parse_args()
    result = run(args.quick, args.repeats, model=args.model, n_rows=args.n_rows, batch_size=args.batch_size,
                 peer_batch_size=args.peer_batch_size, max_new_tokens=args.max_new_tokens, device=args.device,
                 tokenizer=args.tokenizer)
    common.finish(result, args.json)


if __name__ == "__main__":
    main()
