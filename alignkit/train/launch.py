"""Training on every GPU from a notebook: when `rm.train.launcher` (or `dpo.train.launcher`) asks for it, the training entry points
(`run_reward_model`, `run_dpo`, and the notebooks' `reward_model_metrics` / `dpo_metrics`) start DeepSpeed's
own launcher (or torchrun) as a subprocess running `python -m alignkit rm|dpo train` on the same config,
copy its output into the caller as it arrives (a notebook cell shows the progress live), and return the
metrics the run wrote. One process per GPU (`<rm|dpo>.train.num_gpus`, default all visible), several hosts
through DeepSpeed's hostfile (`<rm|dpo>.train.hostfile`). The processes a launcher starts have LOCAL_RANK set and train
themselves; nothing here is a distributed layer of its own.
"""
from __future__ import annotations

import codecs
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from alignkit.config import RunConfig, TrainConfig
from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_text

LAUNCHERS = ("none", "deepspeed", "torchrun")
LAUNCH_FIELDS = ("launcher", "num_gpus", "hostfile")
"""TrainConfig fields that say how training is launched, not what it computes: left out of the settings a
finished run is recognised by (a run from a shell's `deepspeed` reads as one from a notebook's launch)."""
TAIL_CHARS = 8000


def launched() -> bool:
    """True in a process that a launcher (deepspeed, torchrun) started: it is one rank and trains."""
    return "LOCAL_RANK" in os.environ


def wants_launcher(train: TrainConfig, section: str = "rm") -> bool:
    """Whether `<section>.train` asks for a launcher and this process is not already one of its ranks."""
    if train.launcher not in LAUNCHERS:
        raise AlignkitError(f"{section}.train.launcher must be one of {', '.join(LAUNCHERS)}; got {train.launcher!r}")
    return train.launcher != "none" and not launched()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(train: TrainConfig, args: list[str], section: str = "rm") -> list[str]:
    """The launcher's command line for `python -m alignkit <args>` under `<section>.train`'s launcher settings."""
    if train.hostfile and train.launcher != "deepspeed":
        raise AlignkitError(f"{section}.train.hostfile (several hosts) needs {section}.train.launcher=deepspeed")
    if train.num_gpus is not None and train.num_gpus < 1:
        raise AlignkitError(f"{section}.train.num_gpus must be at least 1, or null (= all visible GPUs); got {train.num_gpus}")
    if train.launcher == "deepspeed":
        cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
        if train.hostfile:
            if not Path(train.hostfile).exists():
                raise AlignkitError(f"{section}.train.hostfile {train.hostfile} does not exist (DeepSpeed's format: one "
                                    f"'hostname slots=N' line per host)")
            cmd += ["--hostfile", train.hostfile]
        else:  # one host: a port of our own, so two runs on a machine never collide
            cmd += ["--master_port", str(_free_port())]
        if train.num_gpus is not None:  # else DeepSpeed takes every visible GPU
            cmd += ["--num_gpus", str(train.num_gpus)]
        return cmd + ["--module", "alignkit", *args]
    if train.num_gpus is not None:
        n = train.num_gpus
    else:
        import torch
        n = torch.cuda.device_count() or 1
    return [sys.executable, "-u", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "-m", "alignkit", *args]


def stream(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `cmd`, copying its stdout and stderr into this process's sys.stdout as they arrive (in a
    notebook: the cell's output). Returns (exit code, the last TAIL_CHARS characters)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-TAIL_CHARS:]
    finally:  # an interrupted cell stops the launcher, which stops its ranks
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
        proc.stdout.close()
    return proc.returncode, tail


def launch(command: str, cfg: RunConfig, train: TrainConfig, *, resume: bool) -> None:
    """Train `command` ('rm' or 'dpo') under `train.launcher` with exactly this config: it is written to
    outputs/<profile>/launch/<command>.yaml, which every rank loads as its profile. Raises AlignkitError with
    the launcher's last output if a rank fails."""
    settings = cfg.out / "launch" / f"{command}.yaml"
    atomic_write_text(settings, yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False))
    args = [command, "train", "--profile", str(settings)] + (["--resume"] if resume else [])
    cmd = launcher_command(train, args, command)
    print(f"alignkit: {train.launcher} launch: {' '.join(cmd)}", flush=True)
    code, tail = stream(cmd)
    if code != 0:
        raise AlignkitError(f"{command} training under {train.launcher} failed (exit code {code}); its last "
                            f"output:\n{tail}\nThe run resumes from its last checkpoint when started again "
                            f"({command}.train.save_every sets how often one is written).")
