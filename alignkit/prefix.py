"""The frozen prefix of a `last_k` model: the bottom blocks' output, computed once per sequence and reused.

Under `trainable.mode: last_k` the embeddings and blocks [0, n - k) never change. Their output for a row
depends only on the row's real tokens and position ids (a packed row's mask is fixed by its position ids:
the worse response's positions restart after the better one's), so it is kept per row, keyed by a digest
of those two, and every later forward over the same row (the next epoch, an evaluation) runs only the top k
blocks, the final norm and the head from it. Rows are filled lazily, in whatever forward first meets them:
DPO's reference pass, an evaluation, a first-epoch training step. Under several processes each rank fills
its own cache from the batches it sees (its shard), so nothing is exchanged between ranks.

The split forward (`blocks_forward`) runs the blocks as Hugging Face's decoder forward runs them (its own
causal-mask builders and rotary embedding); tests check it equals the whole forward.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from alignkit.config import TrainableConfig
from alignkit.errors import AlignkitError
from alignkit.io import dtype_name


def decoder_parts(backbone: nn.Module) -> nn.ModuleList:
    """The decoder's blocks, after checking it has what a split forward needs (a Llama-style decoder:
    embed_tokens, layers, rotary_emb, norm; Qwen2, Mistral and SmolLM2 are)."""
    missing = [a for a in ("embed_tokens", "layers", "rotary_emb", "norm") if not hasattr(backbone, a)]
    if missing:
        raise AlignkitError(f"{type(backbone).__name__} has no {', '.join(missing)}: its frozen prefix cannot be "
                            "cached; set trainable.cache_prefix=false for this model")
    return backbone.layers


def blocks_forward(backbone: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor | None, start: int, stop: int, final_norm: bool) -> torch.Tensor:
    """Blocks [start, stop) of a Llama-style decoder on `hidden` (B, L, H), then its final norm when asked.
    `attention_mask`: (B, L) 0/1 or (B, 1, L, L) as the decoder's forward takes it; position ids (B, L) or
    None (0 .. L-1)."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    config = backbone.config
    if position_ids is None:
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    kinds = getattr(config, "layer_types", None)
    args = dict(config=config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
                position_ids=position_ids)
    masks = {"full_attention": create_causal_mask(**args)}
    if kinds and "sliding_attention" in kinds[start:stop]:
        masks["sliding_attention"] = create_sliding_window_causal_mask(**args)
    rotary = backbone.rotary_emb(hidden, position_ids)
    layers = decoder_parts(backbone)
    for i in range(start, stop):
        hidden = layers[i](hidden, attention_mask=masks[kinds[i] if kinds else "full_attention"],
                           position_embeddings=rotary, position_ids=position_ids)
    return backbone.norm(hidden) if final_norm else hidden


def row_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens per right-padded row: from a (B, L) 0/1 mask, or from a (B, 1, L, L) `causal_padding_mask`
    (its last query row sees every real key). Packed rows' masks do not say it: pass their lengths."""
    if attention_mask.dim() == 2:
        return attention_mask.sum(-1)
    return attention_mask[:, 0, -1, :].sum(-1)


class PrefixCache:
    """Hidden states after the first `frozen_blocks` blocks, one (n, H) tensor per distinct row.

    Kept on the device they were computed on until `max_bytes` are held; rows beyond that go to a file in
    `spill_dir` (read back per batch). `hits`/`misses` count rows served from the cache / computed."""

    def __init__(self, frozen_blocks: int, *, max_bytes: int = 8 << 30, spill_dir: str | Path | None = None,
                 compute_dtype: torch.dtype = torch.float32):
        if frozen_blocks < 1:
            raise AlignkitError(f"a cached prefix needs at least one frozen block, got {frozen_blocks}")
        if compute_dtype not in (torch.float32, torch.bfloat16):
            raise AlignkitError(f"a cached prefix is computed in float32 or bfloat16, got {compute_dtype}")
        self.frozen_blocks, self.max_bytes, self.compute_dtype = frozen_blocks, max_bytes, compute_dtype
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._rows: dict[bytes, torch.Tensor | tuple[int, tuple[int, ...], torch.dtype]] = {}
        self._file = None
        self.bytes_in_memory = self.bytes_on_disk = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def stats(self) -> dict:
        return {"rows": len(self), "frozen_blocks": self.frozen_blocks,
                "compute_dtype": dtype_name(self.compute_dtype), "hits": self.hits,
                "misses": self.misses, "mb_in_memory": round(self.bytes_in_memory / 2**20, 1),
                "mb_on_disk": round(self.bytes_on_disk / 2**20, 1)}

    @staticmethod
    def key(ids: torch.Tensor, positions: torch.Tensor | None) -> bytes:
        """Digest of a row's real tokens and their position ids (None: 0 .. n-1)."""
        h = hashlib.blake2b(ids.to(torch.int32).numpy().tobytes(), digest_size=16)
        if positions is not None:
            h.update(positions.to(torch.int32).numpy().tobytes())
        return h.digest()

    def _put(self, key: bytes, states: torch.Tensor) -> None:
        size = states.numel() * states.element_size()
        if self.bytes_in_memory + size <= self.max_bytes or self.spill_dir is None:
            self._rows[key] = states.clone()
            self.bytes_in_memory += size
            return
        if self._file is None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            path = self.spill_dir / f"prefix-rank{os.environ.get('RANK', '0')}-{os.getpid()}.bin"
            self._file = open(path, "w+b")
            path.unlink()  # the open handle keeps it; nothing is left behind when the process ends
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(states.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        self._rows[key] = (offset, tuple(states.shape), states.dtype)
        self.bytes_on_disk += size

    def _get(self, key: bytes, device: torch.device) -> torch.Tensor:
        row = self._rows[key]
        if isinstance(row, torch.Tensor):
            return row
        offset, shape, dtype = row
        n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        self._file.seek(offset)
        return torch.frombuffer(bytearray(self._file.read(n)), dtype=dtype).view(shape).to(device)

    def hidden(self, backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               position_ids: torch.Tensor | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, H) states after the frozen blocks for a right-padded batch: cached rows as they are, the
        others computed now (without gradients) and kept. Positions past a row's length are 0; its mask keeps
        every real token from reading them. With a bfloat16 `compute_dtype` the frozen blocks run under bf16
        autocast and their output is kept in the embeddings' dtype."""
        lengths = (row_lengths(attention_mask) if lengths is None else lengths).tolist()
        ids_cpu = input_ids.cpu()
        pos_cpu = position_ids.cpu() if position_ids is not None else None
        keys = [self.key(ids_cpu[r, :n], pos_cpu[r, :n] if pos_cpu is not None else None)
                for r, n in enumerate(lengths)]
        missing = [r for r, k in enumerate(keys) if k not in self._rows]
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            with torch.no_grad():
                embeds = backbone.embed_tokens(input_ids.index_select(0, rows))
                with torch.autocast(embeds.device.type, dtype=torch.bfloat16,
                                    enabled=self.compute_dtype == torch.bfloat16 and embeds.dtype != torch.bfloat16):
                    states = blocks_forward(backbone, embeds, attention_mask.index_select(0, rows),
                                            None if position_ids is None else position_ids.index_select(0, rows),
                                            0, self.frozen_blocks, final_norm=False)
                states = states.to(embeds.dtype)
            for j, r in enumerate(missing):
                if keys[r] not in self._rows:
                    self._put(keys[r], states[j, :lengths[r]])
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        rows = [self._get(k, input_ids.device) for k in keys]
        out = torch.zeros((len(rows), input_ids.shape[1], rows[0].shape[-1]), dtype=rows[0].dtype,
                          device=input_ids.device)
        for r, states in enumerate(rows):
            out[r, :lengths[r]] = states
        return out


def backbone_hidden(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                    position_ids: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                    prefix: PrefixCache | None = None) -> torch.Tensor:
    """The decoder's last hidden state (B, L, H): its own forward, or, with a `prefix` cache, the frozen
    blocks from the cache and the rest run here."""
    if prefix is None:
        kwargs = {"position_ids": position_ids} if position_ids is not None else {}
        return backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).last_hidden_state
    n = len(decoder_parts(backbone))
    if prefix.frozen_blocks >= n:
        raise AlignkitError(f"the cached prefix covers {prefix.frozen_blocks} blocks but the model has {n}")
    hidden = prefix.hidden(backbone, input_ids, attention_mask, position_ids, lengths)
    return blocks_forward(backbone, hidden, attention_mask, position_ids, prefix.frozen_blocks, n, final_norm=True)


def prefix_cache_for(trainable: TrainableConfig, backbone: nn.Module, spill_dir: str | Path,
                     compute_dtype: torch.dtype = torch.float32) -> PrefixCache | None:
    """The cache a run with these `trainable` options keeps for `backbone` (its decoder): one for `last_k` with
    `cache_prefix` on and at least one frozen block, else None. `compute_dtype`: `trainable.prefix_dtype` as
    the device resolves it (alignkit.models.weights_dtype)."""
    if trainable.mode != "last_k" or not trainable.cache_prefix:
        return None
    n = len(decoder_parts(backbone))
    if not 1 <= trainable.last_k <= n:
        raise AlignkitError(f"trainable.last_k must be in 1..{n}, got {trainable.last_k}")
    if trainable.last_k == n:
        return None
    return PrefixCache(n - trainable.last_k, max_bytes=int(trainable.prefix_cache_gb * 2**30), spill_dir=spill_dir,
                       compute_dtype=compute_dtype)
