"""The benchmark harness every `bench_<name>.py` shares: alternating, repeated timing of two sides; the
per-repeat ratio and its spread; peak memory; a description of the machine; the result dict.

Result shape (one per benchmark; `run_all.py` merges them into outputs/bench/results.json):

    {"name": str, "unit": "tokens/s" | "sequences/s",
     "alignkit": {"label": str, "values": [rate per repeat], "peak_mem_mb": float},
     "peer":     {"label": str, "values": [...], "peak_mem_mb": float},
     "ratio": {"min", "median", "max", "values": [alignkit / peer, per repeat]},
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

import ctypes
import gc
import importlib.metadata
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def alternate(sides: dict[str, Callable[[int], Work]], repeats: int, *,
              warmup: dict[str, Callable[[], object]] | None = None) -> dict[str, dict]:
    """Call each side once per repeat with the repeat's index r (a side may pick that repeat's rows by it;
    both sides get the same r), in alternating order (A B, B A, A B, ...) so drift in machine load hits
    both alike; short repeats alternate more finely. `warmup` callables run once each, untimed, first
    (lazy initialisation, kernel selection).

    Returns {side: {"values": [rate per repeat], "seconds", "cpu_seconds", "amount", "load_avg_1m" (at each
    start), "peak_mem_mb_values": [...], "peak_mem_mb": max over repeats}}. CPU seconds are this process's CPU time in the window:
    when other work competes for the cores, wall time stretches but CPU time much less, so the ratio of
    CPU-time rates (`cpu_ratio` in the result) is a cross-check of the wall-time ratio."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in (warmup or {}).values():
        fn()
    names = list(sides)
    out = {name: {"values": [], "seconds": [], "cpu_seconds": [], "amount": [], "load_avg_1m": [],
                  "peak_mem_mb_values": [], "peak_mem_mb": 0.0} for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
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


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio(alignkit: list[float], peer: list[float]) -> dict:
    """Per-repeat ratios alignkit / peer (repeat i of one side against repeat i of the other), with spread."""
    values = [a / b for a, b in zip(alignkit, peer)]
    return {**spread(values), "values": values}


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
            "ratio": ratio(measured["alignkit"]["values"], measured["peer"]["values"]),
            "cpu_ratio": ratio(cpu_rates["alignkit"], cpu_rates["peer"]),
            "settings": {"threads": torch.get_num_threads(), **settings}, "wall_s": round(wall_s, 1), **extra}


def summary_line(result: dict) -> str:
    """'rm: alignkit 512.3 tokens/s, trl RewardTrainer 301.2 tokens/s, ratio 1.70x (min 1.61, max 1.80)'."""
    a, p, r = result["alignkit"], result["peer"], result["ratio"]
    return (f"{result['name']}: {a['label']} {statistics.median(a['values']):.1f} {result['unit']}, "
            f"{p['label']} {statistics.median(p['values']):.1f} {result['unit']}, ratio {r['median']:.2f}x "
            f"(min {r['min']:.2f}, max {r['max']:.2f}; {len(r['values'])} repeats; peak memory "
            f"{a['peak_mem_mb']:.0f} / {p['peak_mem_mb']:.0f} MB)")


# ----------------------------------------------------------------------------- shared inputs

QUICK_MODEL = "tiny-random"
"""settings.model in quick mode: a random 2-layer Llama with SmolLM2's tokenizer (built by `tiny_model`)."""


def tiny_model(path: str | Path) -> Path:
    """Save a random 2-layer Llama with SmolLM2's vocabulary and chat template in `path` (the tests'
    fixture, for quick mode). Needs SmolLM2's tokenizer (alignkit's `smollm2`, offline)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from alignkit.models import load_tokenizer
    path = Path(path)
    if (path / "config.json").exists():
        return path
    tokenizer = load_tokenizer("smollm2")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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


def check_same_trainable(ours, peer_model) -> int:
    """Both sides must train the same number of parameters; returns it."""
    n_ours = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    n_peer = sum(p.numel() for p in peer_model.parameters() if p.requires_grad)
    if n_ours != n_peer:
        raise SystemExit(f"trainable parameters differ: alignkit {n_ours}, TRL {n_peer}")
    return n_ours
