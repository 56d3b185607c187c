import pytest
import torch

from alignkit.data.tokenize import ChatEncoder, collate_pairs, encode_pairs
from alignkit.models import RewardModel, TrainableConfig, make_trainable


def test_sequence_ending_in_pad_equal_eos_is_pooled_at_its_end(tiny_model_dir, no_newline_tokenizer):
    """SmolLM2's pad id is its eos <|im_end|>; with a template that ends a turn there, every encoded response
    ends in it. Pad-id pooling would read the token before it; attention-mask pooling must read it."""
    tokenizer = no_newline_tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    encoder = ChatEncoder(tokenizer, 64, 32)
    short = encoder.encode([{"role": "user", "content": "hi"}], "Hello!")
    long = encoder.encode([{"role": "user", "content": "hi"}], "Hello there, how can I help you today?")
    assert short.input_ids[-1] == tokenizer.eos_token_id
    rm = RewardModel.from_pretrained(str(tiny_model_dir)).eval()
    batch = {"better": [short, long]}
    from alignkit.data.tokenize import pad_sequences
    padded = pad_sequences(batch["better"], tokenizer.pad_token_id)
    with torch.no_grad():
        scores, end = rm(padded["input_ids"], padded["attention_mask"])
        alone, end_alone = rm(torch.tensor([short.input_ids]), torch.ones(1, len(short.input_ids), dtype=torch.long))
    n = len(short.input_ids)
    assert end[0].item() == pytest.approx(scores[0, n - 1].item())
    assert end[0].item() == pytest.approx(end_alone[0].item(), abs=1e-5)
    # the pad-id rule would have picked another position for the short (padded) row
    assert end[0].item() != pytest.approx(scores[0, n - 2].item(), abs=1e-6)


def test_saved_reward_model_loads_in_transformers_with_the_same_score(tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification
    rm = RewardModel.from_pretrained(str(tiny_model_dir), seed=3).eval()
    rm.backbone = make_trainable(rm.backbone, TrainableConfig(mode="lora", lora_r=4))
    with torch.no_grad():  # make the LoRA update non-zero so merging matters
        for name, p in rm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = torch.tensor([ChatEncoder(tokenizer, 64, 32).encode([{"role": "user", "content": "2+2?"}], "4").input_ids])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        _, ours = rm(ids, mask)
    rm.save_pretrained(tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits.squeeze()
    assert theirs.item() == pytest.approx(ours.item(), abs=1e-4)
    again = RewardModel.from_pretrained(str(tmp_path / "rm")).eval()
    with torch.no_grad():
        assert again(ids, mask)[1].item() == pytest.approx(ours.item(), abs=1e-4)


def test_untrained_head_is_seeded(tiny_model_dir):
    a = RewardModel.from_pretrained(str(tiny_model_dir), seed=1).score_head.weight
    b = RewardModel.from_pretrained(str(tiny_model_dir), seed=1).score_head.weight
    c = RewardModel.from_pretrained(str(tiny_model_dir), seed=2).score_head.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_truncation_keeps_the_turn_ending_and_counts_cuts(tokenizer, homework_pairs):
    encoder = ChatEncoder(tokenizer, 48, 24)
    items, report = encode_pairs(encoder, homework_pairs[:30])
    assert report.response_cut > 0 and len(items) == 30
    for item in items:
        for seq in (item.better, item.worse):
            assert len(seq.input_ids) <= 48 and seq.prompt_length <= 24
            assert seq.input_ids[-2:] == encoder.ending == (tokenizer.eos_token_id, tokenizer.encode("\n")[0])
    dropped, drop_report = encode_pairs(encoder, homework_pairs[:30], truncation="drop")
    assert len(dropped) == 30 - report.response_cut == 30 - drop_report.dropped
    batch = collate_pairs(items[:3], tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 6
    assert batch["response_mask"].sum() > 0


def test_models_load_onto_the_chosen_device(monkeypatch, tiny_model_dir):
    import torch
    from alignkit.models import RewardModel, compute_device
    monkeypatch.delenv("ALIGNKIT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")  # DeepSpeed's launcher numbers a host's processes so
    assert compute_device() == torch.device("cuda", 3)
    monkeypatch.setenv("ALIGNKIT_DEVICE", "cpu")  # an explicit choice wins
    assert compute_device() == torch.device("cpu")
    model = RewardModel.from_pretrained(str(tiny_model_dir))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
