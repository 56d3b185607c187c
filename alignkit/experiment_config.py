"""Typed configs of the experiments of chapter 6 (reward + cost, best-of-n sampling, DPO and its variants, gold
best-of-n, the safety pairs out of domain), the Hub mirror a rehearsal reads its data from, and their checks.
`alignkit.config` holds them in its `RunConfig` and re-exports every name here, so `from alignkit.config
import DPOVariantsConfig` keeps working. No torch, like the rest of the config layer."""
from __future__ import annotations

from dataclasses import dataclass

from alignkit.errors import AlignkitError


@dataclass
class SafetyConfig:
    """Reward + cost on PKU-SafeRLHF (chapter 6): two linear heads on the base model's frozen features."""

    max_pairs: int | None = 500
    """Pairs read: a seeded sample of the local file (500 rows) or of the Hub's train split (None = all)."""


@dataclass
class BestOfNConfig:
    """Best-of-n sampling against the reward model (chapter 6): k responses per held-out prompt from the base
    policy, decoded as `generation` says (temperature, top_p, repetition penalty, batch sizes, threads)."""

    prompts: int = 16
    """Held-out prompts: a seeded sample of the unique prompts of the profile's test split."""
    samples: int = 16
    """Responses sampled per prompt (k); best-of-n is read for n = 1, 2, 4, ... up to k."""
    max_new_tokens: int | None = None
    """Response budget of these samples (None = generation.max_new_tokens)."""


@dataclass
class GoldBestOfNConfig:
    """Best-of-n judged by a gold judge (chapter 6): the reward model scores the 11 answers of each prompt of
    `alpacaeval_bon11.json` (AlpacaEval prompts, Tulu-2-DPO-13B answers, GPT-4-turbo preferences)."""

    prompts: int | None = None
    """Prompts read: a seeded sample of the 403 (None = all)."""


@dataclass
class SafetyPairsConfig:
    """The reward model out of its domain on purpose (chapter 6): PKU-SafeRLHF pairs where exactly one answer
    is safe (`pku_saferlhf_safer_pairs.json`), the safer answer counted as the better one."""

    pairs: int | None = None
    """Pairs read: a seeded sample of the 3,107 (None = all)."""


VARIANT_METHODS = ("sigmoid", "cdpo", "robust", "ipo", "rdpo", "simpo", "orpo", "kto", "online")
"""What `dpo_variants.methods` may name: DPO ('sigmoid'), cDPO and the other `dpo.loss` objectives, KTO, and
'online' (DPO's loss on on-policy pairs: the base policy's own samples labelled by chapter 1's reward model)."""


@dataclass
class DPOVariantsConfig:
    """DPO and its variants head to head (chapter 6): the `dpo` section's training per method, same pairs and steps."""

    methods: str = "sigmoid,ipo,simpo,kto"
    """Comma-separated methods of VARIANT_METHODS, in the table's order; empty: the profile does not run the
    head-to-head (chapter 6 then says which profile does)."""
    steps: int | None = 6
    """Optimiser steps of dpo.train's batch x grad_accum pairs (None = dpo.train.epochs over dpo.max_pairs pairs)."""
    beta_scales: str = "1"
    """Grid of each method's strength (dpo.beta, IPO's tau; ORPO's dpo.orpo_lambda), comma-separated multiples: each
    method keeps the one that ranks the validation fold best (one value: nothing to choose, no validation run)."""
    eval_pairs: int | None = 64
    """Pairs read per evaluation: a seeded sample of the test split, and of the validation fold (None = all)."""
    prompts: int = 12
    """Held-out test prompts (a seeded sample) that every policy and the base model answer."""
    max_new_tokens: int | None = None
    """Their response budget (None = generation.max_new_tokens)."""


@dataclass
class HubMirrorConfig:
    """A local stand-in for the Hugging Face Hub, where the Hub cannot be reached (the gpu profile rehearsed on a CPU)."""

    enabled: bool = False
    """Read the Hub's datasets from outputs/<profile>/hub/ instead of the Hub: the local files of $ALIGNKIT_DATA_DIR
    laid out as the Hub's dataset repositories (alignkit.data.hub_mirror), read by datasets.load_dataset with the
    same ids, subsets and splits. `alignkit report` builds it and runs the notebooks (and so the training ranks
    they launch) with $ALIGNKIT_HUB_DIR pointing at it and $ALIGNKIT_DATA_DIR unset, as on a host whose data all
    comes from the Hub."""
    train_pairs: int = 64
    """Rows of the mirror's align-anything text-to-text train split (the Hub's: about 30,000): whole prompts of
    the local rows in a seeded order, until there are at least this many."""
    val_pairs: int = 16
    """Rows of its val split (the Hub's: about 1,000), chosen the same way first, so the two share no prompt."""



def check_experiment_configs(safety: SafetyConfig, bon: BestOfNConfig, v: DPOVariantsConfig,
                             gold: GoldBestOfNConfig | None = None, ood: SafetyPairsConfig | None = None,
                             mirror: HubMirrorConfig | None = None) -> None:
    """Refuse impossible experiment settings, naming the option and what it must be."""
    for name in ("train_pairs", "val_pairs") if mirror is not None else ():
        if getattr(mirror, name) < 1:
            raise AlignkitError(f"hub_mirror.{name} must be a positive number of rows, got {getattr(mirror, name)!r}")
    for name, value in (("gold_bon.prompts", getattr(gold, "prompts", None)),
                        ("safety_pairs.pairs", getattr(ood, "pairs", None))):
        if value is not None and value < 2:
            raise AlignkitError(f"{name} must be at least 2 (an interval needs two), or null for all; got {value!r}")
    if safety.max_pairs is not None and safety.max_pairs < 8:
        raise AlignkitError(f"safety.max_pairs must be at least 8 (a prompt-disjoint train, validation and test part), "
                            f"or null for all pairs; got {safety.max_pairs!r}")
    for name, value in (("prompts", bon.prompts), ("samples", bon.samples), ("max_new_tokens", bon.max_new_tokens)):
        if value is not None and value < 1:
            raise AlignkitError(f"best_of_n.{name} must be a positive number, got {value!r}")
    methods = [m.strip() for m in v.methods.split(",")] if v.methods.strip() else []
    if set(methods) - set(VARIANT_METHODS) or len(set(methods)) < len(methods):
        raise AlignkitError(f"dpo_variants.methods must name distinct methods of {', '.join(VARIANT_METHODS)}, "
                            f"comma-separated; got {v.methods!r}")
    try:
        bad = {"beta_scales": min(float(x) for x in v.beta_scales.split(",")) <= 0}
    except ValueError:
        bad = {"beta_scales": True}
    for k in ("steps", "eval_pairs", "prompts", "max_new_tokens"):
        bad[k] = getattr(v, k) is not None and getattr(v, k) < 1
    for name in (k for k, b in bad.items() if b):
        raise AlignkitError(f"dpo_variants.{name} must be positive (beta_scales: comma-separated numbers), "
                            f"got {getattr(v, name)!r}")
