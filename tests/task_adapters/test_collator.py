"""GPT1DataCollator: dynamic padding of (seq,), (2, seq) and (choices, seq) examples, and a forward
pass of the plugin's GPT-1 heads on collated batches of every family."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import task_adapters as ta
from task_adapters import GPT1DataCollator, TokenizerMismatchError

PAD = 40481


@pytest.fixture(scope="module")
def encoded(glue_dir, rocstories_dir, gpt1_tokenizer):
    tok = gpt1_tokenizer
    sst2 = ta.load_task("sst2", glue_dir)["validation"].select(range(8))
    mrpc = ta.load_task("mrpc", glue_dir)["validation"].select(range(6))
    story = ta.load_task("story_cloze", rocstories_dir)["validation"].select(range(6))
    stsb = {
        "sentence1": ["A plane is taking off.", "A man is playing a flute.", "A cat."],
        "sentence2": [
            "An air plane is taking off.",
            "A man is playing a large flute.",
            "Three men are playing chess on a big board.",
        ],
        "label": [5.0, 3.8, 0.0],
    }
    return {
        "sst2": ta.get_adapter("sst2").encode(sst2, tok),
        "mrpc": ta.get_adapter("mrpc").encode(mrpc, tok),
        "story_cloze": ta.get_adapter("story_cloze").encode(story, tok),
        "stsb": ta.get_adapter("stsb").encode(stsb, tok),
        "race": ta.get_adapter("race").encode(
            {
                "example_id": ["x"],
                "article": ["Tom met Amy at school."],
                "answer": ["B"],
                "question": ["Where?"],
                "options": [["in a park", "at school", "at home", "in a big old shop downtown"]],
            },
            tok,
        ),
    }


def check_padding(batch):
    ids, mask, lm = batch["input_ids"], batch["attention_mask"], batch["lm_labels"]
    assert ids.dtype == mask.dtype == lm.dtype == batch["mc_token_ids"].dtype == torch.long
    assert ids.shape == mask.shape == lm.shape
    assert torch.all(ids[mask == 0] == PAD)
    assert torch.all(lm[mask == 0] == -100)
    assert torch.equal(lm[mask == 1], ids[mask == 1])
    # the extract token sits at mc_token_ids, the last attended position
    extract = torch.gather(ids, -1, batch["mc_token_ids"].unsqueeze(-1)).squeeze(-1)
    assert torch.all(extract == 40480)
    assert torch.equal(batch["mc_token_ids"], mask.sum(-1) - 1)


def test_single_sequence_batch(encoded, gpt1_tokenizer):
    features = list(encoded["sst2"])
    batch = GPT1DataCollator(gpt1_tokenizer)(features)
    lengths = [len(f["input_ids"]) for f in features]
    assert batch["input_ids"].shape == (8, max(lengths))
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [f["labels"] for f in features]
    assert batch["attention_mask"].sum(-1).tolist() == lengths
    check_padding(batch)


def test_similarity_batch_shape(encoded, gpt1_tokenizer):
    features = list(encoded["mrpc"])
    batch = GPT1DataCollator(gpt1_tokenizer)(features)
    width = max(len(f["input_ids"][0]) for f in features)
    assert batch["input_ids"].shape == (6, 2, width)
    assert batch["mc_token_ids"].shape == (6, 2)
    check_padding(batch)
    for i, f in enumerate(features):  # content preserved in both orderings
        for k in range(2):
            n = len(f["input_ids"][k])
            assert batch["input_ids"][i, k, :n].tolist() == f["input_ids"][k]


def test_regression_labels_are_float(encoded, gpt1_tokenizer):
    batch = GPT1DataCollator(gpt1_tokenizer)(list(encoded["stsb"]))
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx([5.0, 3.8, 0.0])


def test_multiple_choice_batch_shape(encoded, gpt1_tokenizer):
    features = list(encoded["story_cloze"])
    batch = GPT1DataCollator(gpt1_tokenizer, pad_to_multiple_of=8)(features)
    longest = max(len(seq) for f in features for seq in f["input_ids"])
    width = -(-longest // 8) * 8
    assert batch["input_ids"].shape == (6, 2, width)
    check_padding(batch)
    race = GPT1DataCollator(gpt1_tokenizer)(list(encoded["race"]))
    assert race["input_ids"].shape[:2] == (1, 4) and race["labels"].tolist() == [1]
    check_padding(race)


def test_unlabeled_batches_have_no_labels_and_mixing_is_an_error(gpt1_tokenizer):
    tok = gpt1_tokenizer
    test = ta.get_adapter("sst2").encode({"sentence": ["a film", "another film"], "label": [-1, -1]}, tok)
    batch = GPT1DataCollator(tok)(list(test))
    assert "labels" not in batch and batch["input_ids"].shape[0] == 2
    mixed = ta.get_adapter("sst2").encode({"sentence": ["a film", "another film"], "label": [-1, 1]}, tok)
    with pytest.raises(ValueError, match="mixes labeled and unlabeled"):
        GPT1DataCollator(tok)(list(mixed))


def test_missing_lm_labels_and_mc_token_ids_are_derived(encoded, gpt1_tokenizer):
    features = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in encoded["story_cloze"]]
    batch = GPT1DataCollator(gpt1_tokenizer)(features)
    check_padding(batch)


def test_shape_mismatch_and_bad_tokenizer(encoded, gpt1_tokenizer, tokenizer_dir):
    with pytest.raises(ValueError, match="different shape"):
        GPT1DataCollator(gpt1_tokenizer)([encoded["sst2"][0], encoded["mrpc"][0]])
    with pytest.raises(ValueError, match="different shape"):
        GPT1DataCollator(gpt1_tokenizer)([encoded["mrpc"][0], encoded["race"][0]])
    from transformers import OpenAIGPTTokenizer

    with pytest.raises(TokenizerMismatchError, match="pad token"):
        GPT1DataCollator(OpenAIGPTTokenizer.from_pretrained(str(tokenizer_dir)))


def test_dataloader_over_encoded_dataset(encoded, gpt1_tokenizer):
    loader = DataLoader(encoded["mrpc"], batch_size=4, collate_fn=GPT1DataCollator(gpt1_tokenizer))
    shapes = [tuple(b["input_ids"].shape[:2]) for b in loader]
    assert shapes == [(4, 2), (2, 2)]


def test_gpt1_heads_accept_collated_batches(encoded, gpt1_tokenizer):
    """The collated tensors are exactly what the plugin's fine-tuning heads take (L3 = L2 + λ·L1)."""
    from hf_gpt1 import GPT1Config, GPT1ForMultipleChoice, GPT1ForSequenceClassification

    torch.manual_seed(0)
    small = dict(
        vocab_size=len(gpt1_tokenizer),
        n_positions=512,
        n_embd=32,
        n_layer=1,
        n_head=2,
        extract_token_id=40480,
        pad_token_id=PAD,
    )
    collate = GPT1DataCollator(gpt1_tokenizer)
    cases = [
        (GPT1ForSequenceClassification(GPT1Config(num_labels=2, **small)), "sst2"),
        (GPT1ForSequenceClassification(GPT1Config(num_labels=2, **small)), "mrpc"),
        (GPT1ForSequenceClassification(GPT1Config(num_labels=1, **small)), "stsb"),
        (GPT1ForMultipleChoice(GPT1Config(**small)), "story_cloze"),
    ]
    for model, task in cases:
        batch = collate(list(encoded[task]))
        out = model(**batch)
        assert torch.isfinite(out.loss) and out.lm_loss is not None and torch.isfinite(out.lm_loss)
        assert out.logits.shape[0] == batch["input_ids"].shape[0]


@pytest.mark.parametrize("fmt", ["numpy", "torch"])
def test_formatted_datasets_collate_the_same(encoded, gpt1_tokenizer, fmt):
    collate = GPT1DataCollator(gpt1_tokenizer)
    for task in ("sst2", "mrpc", "stsb", "story_cloze"):
        plain = collate(list(encoded[task]))
        formatted = collate(list(encoded[task].with_format(fmt)))
        assert plain.keys() == formatted.keys()
        for key in plain:
            assert torch.equal(plain[key], formatted[key]), (task, key)
