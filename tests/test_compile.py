"""The training forwards compile to one graph: torch.compile can take a whole RM or DPO forward
without falling back to Python midway. Checked with torch._dynamo.explain on the tiny model (no compiler
needed: dynamo traces, nothing is built)."""
import torch

from alignkit.data.tokenize import ChatEncoder, encode_pairs


def _explain(fn, *args):
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args)


def test_packed_rm_forward_is_one_graph(tiny_model_dir, tokenizer, homework_pairs):
    from alignkit.data.packing import pack_pairs
    from alignkit.models import RewardModel
    from alignkit.train.rm import packed_end_scores
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:4])
    explained = _explain(packed_end_scores, RewardModel.from_pretrained(str(tiny_model_dir)),
                         pack_pairs(items, tokenizer.pad_token_id))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_dpo_forward_is_one_graph_with_collates_indices_and_breaks_without(tiny_model_dir, tokenizer, homework_pairs):
    from alignkit.config import DPOConfig
    from alignkit.models import Policy
    from alignkit.train.dpo import DPOItem, DPOTask
    items, _ = encode_pairs(ChatEncoder(tokenizer, 64, 32), homework_pairs[:4])
    batch = DPOTask(tokenizer.pad_token_id, DPOConfig()).collate([DPOItem(p, (0.0, 0.0)) for p in items])
    policy = Policy.from_pretrained(str(tiny_model_dir))
    args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    explained = _explain(policy.forward, *args, batch["response_index"])
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    # without collate's indices the forward finds them with nonzero: a data-dependent shape, a graph break
    assert _explain(policy.forward, *args).graph_break_count > 0
