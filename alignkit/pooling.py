"""Reading a per-token quantity at the last real token of each sequence."""
import torch


def last_attended_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) 0/1 mask -> (B,) index of the last 1 in each row (works for left or right padding)."""
    mask = attention_mask.bool()
    if not mask.any(dim=-1).all():
        raise ValueError("a sequence in the batch has no attended tokens")
    length = mask.shape[-1]
    return length - 1 - mask.flip(-1).int().argmax(dim=-1)


def gather_last_attended(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """values (B, L), attention_mask (B, L) -> (B,) values at the last attended position."""
    index = last_attended_index(attention_mask).to(values.device)
    return values.gather(-1, index.unsqueeze(-1)).squeeze(-1)
