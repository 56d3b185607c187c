"""Two training processes on the CPU (gloo), started the way a notebook starts them on a GPU host: the
library's own entry point (`reward_model_metrics`, `dpo_metrics`) with `train.launcher` set runs DeepSpeed's
launcher (or torchrun) as a subprocess. Each rank runs with a small `sitecustomize` on its PYTHONPATH that
records (without changing anything) the training items of every micro-batch it collates and every file it
writes, creates, renames or removes under the run's output folder (Python audit hooks), counts the pairs each
DPO reference pass reads, and can kill its own rank mid-run.

Checked: the ranks see disjoint shards whose union is a one-process step's batches; after N steps the
weights equal a one-process run with twice the gradient accumulation (DeepSpeed ZeRO-2 and ZeRO-3, and
plain torch DDP under torchrun); only rank 0 writes artifacts (each rank its own ZeRO checkpoint shard); a run whose rank 1 is killed mid-way fails with the
launcher's output and resumes to the same weights (ZeRO-2, ZeRO-3, DDP); DPO's reference log-probs are read once
among the ranks (each pair by one rank), equal to one process's bit for bit."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from alignkit.errors import AlignkitError
from conftest import REPO, tiny_config

SPY = r'''
import json, os, signal, sys

_dir = os.environ.get("ALIGNKIT_SPY_DIR")
if _dir and "LOCAL_RANK" in os.environ:  # a rank started by a launcher (not the launcher itself)
    _rank = os.environ.get("RANK", "0")
    _out = os.path.realpath(os.environ["ALIGNKIT_SPY_OUT"]) + os.sep
    _log = open(os.path.join(_dir, f"writes-rank{_rank}.txt"), "a", buffering=1)
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate",
               "os.link", "os.symlink", "os.chmod"}

    def _under_out(path):
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(_out)
        except TypeError:  # a file descriptor
            return False

    def _audit(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE)
            if writes and path is not None and _under_out(path):
                _log.write(f"{event} {os.fsdecode(path)}\n")
        elif event in _EVENTS and args and args[0] is not None and any(
                _under_out(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            _log.write(f"{event} {args[0]}\n")

    sys.addaudithook(_audit)

    from alignkit.train.rm import PackedRewardTask
    _collate = PackedRewardTask.collate
    _calls = [0]
    _crash = os.environ.get("ALIGNKIT_SPY_CRASH", "")  # "rank:call": kill that rank at that collate call

    def collate(self, items):
        batch = _collate(self, items)
        _calls[0] += 1
        with open(os.path.join(_dir, f"batches-rank{_rank}.jsonl"), "a") as f:
            f.write(json.dumps(batch["pair_index"].tolist()) + "\n")
        if _crash == f"{_rank}:{_calls[0]}":
            print(f"spy: killing rank {_rank} at micro-batch {_calls[0]}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    PackedRewardTask.collate = collate

    import alignkit.train.dpo as _dpo
    _logps = _dpo.response_logps

    def response_logps(policy, pairs, *args, **kwargs):  # DPO's reference pass: how many pairs this rank reads
        with open(os.path.join(_dir, f"reference-rank{_rank}.jsonl"), "a") as f:
            f.write(json.dumps(len(pairs)) + "\n")
        return _logps(policy, pairs, *args, **kwargs)

    _dpo.response_logps = response_logps
'''

STEPS = 4
LAUNCHED = {"deepspeed": {"rm.train.launcher": "deepspeed", "rm.train.num_gpus": 2,
                          "rm.train.deepspeed": str(REPO / "configs" / "ds_zero2.json")},
            "ddp": {"rm.train.launcher": "torchrun", "rm.train.num_gpus": 2},
            "zero3": {"rm.train.launcher": "deepspeed", "rm.train.num_gpus": 2,
                      "rm.train.deepspeed": str(REPO / "configs" / "ds_zero3.json")}}
# ZeRO-2 and DDP average the two ranks' gradients exactly as one process accumulates them (here: bit for
# bit). ZeRO-3 reduce-scatters partitioned gradients in another summation order, and Adam (an update of
# about lr * g / |g|) turns those rounding-level differences into visible ones on the few weights whose
# gradients are near zero: a handful of 1.5M weights, at most ~6e-5 against the 7.5e-3 that training moved.
TOLERANCE = {"deepspeed": 2e-5, "ddp": 2e-5, "zero3": 1e-4}
DEATH = {"deepspeed": "return code = -9", "zero3": "return code = -9", "ddp": "Signal 9 (SIGKILL)"}  # how each launcher reports it


@pytest.fixture(scope="module")
def spy_env(tmp_path_factory):
    """Puts the recording sitecustomize on the PYTHONPATH of every process started from here."""
    folder = tmp_path_factory.mktemp("spy-site")
    (folder / "sitecustomize.py").write_text(SPY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p))
        yield mp


def _config(tiny_model_dir, root: Path, data_dir, **overrides):
    values = {"rm.train.max_steps": STEPS, "rm.train.save_every": 1, "rm.train.lr": 3e-3, "rm.train.threads": 1,
              "rm.train.warmup_ratio": 0.0}
    values.update(overrides)
    return tiny_config(tiny_model_dir, root, data_dir, **values)


def _run(mp, cfg, root: Path, run, crash: str = ""):
    """`run(cfg)` with the spy recording into root/spy; returns (result, the spy folder)."""
    spy = root / "spy"
    spy.mkdir(parents=True, exist_ok=True)
    mp.setenv("ALIGNKIT_SPY_DIR", str(spy))
    mp.setenv("ALIGNKIT_SPY_OUT", str(cfg.out))
    mp.setenv("ALIGNKIT_SPY_CRASH", crash)
    return run(cfg), spy


def _batches(spy: Path, rank: int) -> list[list[int]]:
    path = spy / f"batches-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _counts(path: Path) -> list[int]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _writes(spy: Path, rank: int) -> list[str]:
    path = spy / f"writes-rank{rank}.txt"
    return path.read_text().splitlines() if path.exists() else []


def _weights(out: Path, name: str = "rm") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(out / name / "model.safetensors"))


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(spy_env, tiny_model_dir, data_dir, tmp_path_factory):
    """The reward model trained for STEPS steps four ways, each through `reward_model_metrics` and a
    launcher: one process with grad_accum 2 (torchrun), and with grad_accum 1 two DeepSpeed ZeRO-2 ranks,
    two plain-torch DDP ranks (torchrun), two DeepSpeed ZeRO-3 ranks (weights gathered for saving)."""
    from alignkit.train.rm import reward_model_metrics
    setups = {"single": {"rm.train.launcher": "torchrun", "rm.train.num_gpus": 1, "rm.train.grad_accum": 2}, **LAUNCHED}
    out = {}
    for name, overrides in setups.items():
        root = tmp_path_factory.mktemp(name)
        cfg = _config(tiny_model_dir, root, data_dir, **overrides)
        metrics, spy = _run(spy_env, cfg, root, reward_model_metrics)
        out[name] = {"cfg": cfg, "metrics": metrics, "spy": spy}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepspeed", "ddp", "zero3"])
def test_two_ranks_see_disjoint_shards_and_equal_one_process_with_double_accumulation(runs, name):
    single, two = runs["single"], runs[name]
    assert single["metrics"]["world_size"] == 1 and two["metrics"]["world_size"] == 2
    assert two["metrics"]["steps"] == single["metrics"]["steps"] == STEPS
    one = _batches(single["spy"], 0)
    rank0, rank1 = _batches(two["spy"], 0), _batches(two["spy"], 1)
    assert len(one) == 2 * STEPS and len(rank0) == len(rank1) == STEPS
    for step in range(STEPS):
        a, b = set(rank0[step]), set(rank1[step])
        assert a and b and not a & b, f"step {step + 1}: ranks share items {a & b}"
        assert a | b == set(one[2 * step]) | set(one[2 * step + 1]), f"step {step + 1}: not the one-process step"
    assert not set().union(*rank0) & set().union(*rank1)

    single_w, two_w = _weights(single["cfg"].out), _weights(two["cfg"].out)
    assert _max_difference(single_w, two_w) < TOLERANCE[name]
    off = sum(((single_w[k] - two_w[k]).abs() > 1e-6).sum().item() for k in two_w)
    assert off <= 1e-4 * sum(t.numel() for t in two_w.values()), f"{off} weights differ by more than 1e-6"
    # the tolerance means something: training moved the backbone's weights far more than that
    from safetensors.torch import load_file
    initial = load_file(str(Path(single["cfg"].model.name) / "model.safetensors"))
    shared = [k for k in two_w if k in initial]
    assert shared and max((two_w[k] - initial[k]).abs().max().item() for k in shared) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepspeed", "ddp", "zero3"])
def test_only_rank_zero_writes_artifacts(runs, name):
    run = runs[name]
    out = str(run["cfg"].out)
    rank0, rank1 = _writes(run["spy"], 0), _writes(run["spy"], 1)
    assert any("/rm" in w for w in rank0) and any("metrics.json" in w for w in rank0)  # the spy sees writes
    # DeepSpeed checkpoints hold one ZeRO optimizer shard per rank, written by that rank; nothing else
    allowed = os.path.join(out, "checkpoints", "rm") if name != "ddp" else None
    stray = [w for w in rank1 if not (allowed and w.split(" ", 1)[1].startswith(allowed))]
    assert stray == [], f"rank 1 wrote {stray[:5]}"
    assert (run["cfg"].out / "rm" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["single", "deepspeed", "ddp", "zero3"])
def test_the_ranks_ran_the_callers_exact_config(runs, name):
    from alignkit.config import load_config
    from alignkit.train.rm import reward_model_metrics
    cfg = runs[name]["cfg"]
    assert load_config(str(cfg.out / "launch" / "rm.yaml")).to_dict() == cfg.to_dict()
    assert reward_model_metrics(cfg)["reused"]  # the launched run is this config's run: nothing retrains


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepspeed", "ddp", "zero3"])
def test_two_rank_run_killed_midway_resumes_to_the_same_weights(runs, name, spy_env, tiny_model_dir, data_dir,
                                                                 tmp_path, capsys):
    from alignkit.train.rm import reward_model_metrics
    cfg = _config(tiny_model_dir, tmp_path, data_dir, **LAUNCHED[name])
    with pytest.raises(AlignkitError) as failed:
        _run(spy_env, cfg, tmp_path, reward_model_metrics, crash="1:3")  # rank 1 dies in step 3
    message = str(failed.value)
    assert f"rm training under {cfg.rm.train.launcher} failed" in message and DEATH[name] in message
    streamed = capsys.readouterr().out
    assert "spy: killing rank 1 at micro-batch 3" in streamed and "rm train" in streamed  # came through live
    assert not (cfg.out / "rm").exists()
    assert (cfg.out / "checkpoints" / "rm" / "step-000002" / "alignkit_state.json").exists()

    metrics, _ = _run(spy_env, cfg, tmp_path, reward_model_metrics)  # as a notebook's rerun: resume
    assert "rm train: resumed from" in capsys.readouterr().out and metrics["steps"] == STEPS
    assert _max_difference(_weights(cfg.out), _weights(runs[name]["cfg"].out)) < 1e-6
    assert _max_difference(_weights(cfg.out), _weights(runs["single"]["cfg"].out)) < TOLERANCE[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepspeed", "ddp"])
def test_dpo_trains_on_two_ranks_from_dpo_metrics(name, spy_env, tiny_model_dir, data_dir, tmp_path):
    from alignkit.train.dpo import dpo_metrics
    launch = {f"dpo.{k.removeprefix('rm.')}": v for k, v in LAUNCHED[name].items()}
    cfg = _config(tiny_model_dir, tmp_path, data_dir, **launch, **{"dpo.train.threads": 1, "dpo.train.max_steps": 2})
    metrics, spy = _run(spy_env, cfg, tmp_path, dpo_metrics)
    assert metrics["world_size"] == 2 and metrics["steps"] == 2 and metrics["eval"]["n"] > 0
    assert (cfg.out / "dpo" / "model.safetensors").exists()
    assert any("metrics.json" in w for w in _writes(spy, 0)) and _writes(spy, 1) == []
    assert dpo_metrics(cfg)["reused"]  # the launched run is this config's run
    # the reference pass: every pair (training and held-out) read by one rank, not by each
    read = {rank: sum(_counts(spy / f"reference-rank{rank}.jsonl")) for rank in (0, 1)}
    pairs = metrics["truncation"]["train"]["pairs"] + metrics["truncation"]["eval"]["pairs"]
    assert read[0] + read[1] == pairs and 0 < read[0] < pairs and 0 < read[1] < pairs, read
    # ... and the same numbers as one process reads
    one = _config(tiny_model_dir, tmp_path / "one", data_dir, **{"dpo.train.threads": 1, "dpo.train.max_steps": 2})
    assert dpo_metrics(one)["world_size"] == 1
    caches = sorted(p.name for p in (cfg.out / "cache").glob("ref-*.pt"))
    assert len(caches) == 2 and caches == sorted(p.name for p in (one.out / "cache").glob("ref-*.pt"))
    for name in caches:
        assert torch.equal(torch.load(cfg.out / "cache" / name), torch.load(one.out / "cache" / name)), name


@pytest.mark.slow
def test_cached_last_k_fills_each_ranks_cache_from_its_own_shard(spy_env, tiny_model_dir, data_dir, tmp_path):
    """trainable last_k with the cached prefix (alignkit.prefix) under two DDP ranks: each rank computes the
    frozen blocks only for the pairs of its own shard, and the weights equal one process's."""
    from alignkit.train.rm import reward_model_metrics
    last_k = {"rm.trainable.mode": "last_k", "rm.trainable.last_k": 1}
    single_cfg = _config(tiny_model_dir, tmp_path / "single", data_dir, **last_k, **{
        "rm.train.launcher": "torchrun", "rm.train.num_gpus": 1, "rm.train.grad_accum": 2})
    single, single_spy = _run(spy_env, single_cfg, tmp_path / "single", reward_model_metrics)
    two_cfg = _config(tiny_model_dir, tmp_path / "two", data_dir, **last_k, **LAUNCHED["ddp"])
    two, two_spy = _run(spy_env, two_cfg, tmp_path / "two", reward_model_metrics)
    assert two["world_size"] == 2 and _max_difference(_weights(single_cfg.out), _weights(two_cfg.out)) < 2e-5
    seen_single = set().union(*_batches(single_spy, 0))
    seen_rank0 = set().union(*_batches(two_spy, 0))
    assert seen_rank0 < seen_single
    # rank 0's cache (its metrics) missed exactly the training pairs it saw, plus the same evaluation rows
    assert single["prefix_cache"]["misses"] - two["prefix_cache"]["misses"] == len(seen_single) - len(seen_rank0)


def test_launcher_commands_and_their_errors(tmp_path):
    from alignkit.config import TrainConfig
    from alignkit.train.launch import launcher_command, wants_launcher
    args = ["rm", "train", "--profile", "x.yaml"]
    ds = launcher_command(TrainConfig(launcher="deepspeed"), args)
    assert ds[1:4] == ["-u", "-m", "deepspeed.launcher.runner"] and "--num_gpus" not in ds  # all visible GPUs
    assert ds[-6:] == ["--module", "alignkit", *args]
    hosts = tmp_path / "hostfile"
    hosts.write_text("node1 slots=8\nnode2 slots=8\n")
    ds = launcher_command(TrainConfig(launcher="deepspeed", num_gpus=4, hostfile=str(hosts)), args)
    assert ds[ds.index("--hostfile") + 1] == str(hosts) and ds[ds.index("--num_gpus") + 1] == "4"
    tr = launcher_command(TrainConfig(launcher="torchrun", num_gpus=2), args)
    assert "torch.distributed.run" in tr and "--nproc_per_node=2" in tr and tr[-5:] == ["alignkit", *args]
    with pytest.raises(AlignkitError, match="needs rm.train.launcher=deepspeed"):
        launcher_command(TrainConfig(launcher="torchrun", hostfile=str(hosts)), args)
    with pytest.raises(AlignkitError, match="does not exist"):
        launcher_command(TrainConfig(launcher="deepspeed", hostfile=str(tmp_path / "missing")), args)
    with pytest.raises(AlignkitError, match="rm.train.launcher must be one of"):
        wants_launcher(TrainConfig(launcher="mpirun"))
    assert not wants_launcher(TrainConfig())


@pytest.mark.slow
def test_a_notebook_cell_trains_on_two_ranks_and_shows_their_output(tiny_model_dir, data_dir, tmp_path):
    """The notebook path itself: a cell in a Jupyter kernel (the project's kernelspec, as JupyterLab and
    papermill run the chapters) calls `reward_model_metrics` on a profile that asks for torchrun with two
    processes; the ranks' progress arrives as the cell's stream output."""
    import nbformat
    from nbclient import NotebookClient
    overrides = {"model.name": str(tiny_model_dir), "output_dir": str(tmp_path / "out"),
                 "data.train.path": str(data_dir / "align_anything_t2t.json"), "data.train.local_name": None,
                 "data.train.max_pairs": 40, "data.max_length": 64, "data.max_prompt_length": 32,
                 "rm.train.max_steps": 2, "rm.train.threads": 1, "rm.train.launcher": "torchrun", "rm.train.num_gpus": 2}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from alignkit.config import load_config\n"
        "from alignkit.train.rm import reward_model_metrics\n"
        f"metrics = reward_model_metrics(load_config('tiny', {overrides!r}))\n"
        "print('world size', metrics['world_size'], 'steps', metrics['steps'])")])
    NotebookClient(nb, kernel_name="alignkit", timeout=600,
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.output_type == "stream")
    assert "alignkit: torchrun launch:" in text and "--nproc_per_node=2" in text
    assert "rm train: 100%" in text  # rank 0's progress bar, relayed from the launcher's pipe
    assert text.rstrip().endswith("world size 2 steps 2")


def test_reference_shards_split_the_pairs_into_one_process_batches():
    """Each rank's share of DPO's reference pass is a set of whole batches of the one-process pass: re-batched
    as alignkit.infer batches it, every pair meets the same neighbours (and padding) as in one process."""
    from types import SimpleNamespace
    from alignkit.infer import in_length_order
    from alignkit.train.dpo import length_order_shard
    pairs = [SimpleNamespace(index=i, length=n) for i, n in enumerate((5, 3, 9, 3, 7, 1, 4, 8, 2, 6, 3))]

    def batches(items):
        seen = []
        in_length_order(items, lambda p: p.length, 3, lambda batch, _k: seen.append([p.index for p in batch]) or batch)
        return seen
    one = batches(pairs)
    for world in (1, 2, 3):
        shards = [length_order_shard(pairs, 3, rank, world) for rank in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(len(pairs)))
        for rank, shard in enumerate(shards):
            assert batches([pairs[i] for i in shard]) == one[rank::world]
