"""Property test: for random texts (including literal special-token strings), lengths and labels,
every encoded and collated sequence has exactly one start and one extract token, fits max_length,
and the LM labels never score padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import task_adapters as ta
from task_adapters import GPT1DataCollator

START, DELIM, EXTRACT, PAD = 40478, 40479, 40480, 40481

piece = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from(["_start_", "_classify_", "_delimiter_", "<pad>", "<unk>", " ", "\t", "don't", "é", "–"]),
)
texts = st.lists(piece, max_size=12).map("".join)
short_texts = st.lists(piece, max_size=2).map("".join).map(lambda s: s[:12])


@st.composite
def task_rows(draw):
    task = draw(st.sampled_from(["sst2", "rte", "mrpc", "stsb", "race", "swag"]))
    n = draw(st.integers(1, 4))
    if task == "sst2":
        rows = {
            "sentence": draw(st.lists(texts, min_size=n, max_size=n)),
            "label": draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)),
        }
    elif task in ("rte", "mrpc"):
        rows = {
            "sentence1": draw(st.lists(texts, min_size=n, max_size=n)),
            "sentence2": draw(st.lists(texts, min_size=n, max_size=n)),
            "label": draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)),
        }
    elif task == "stsb":
        rows = {
            "sentence1": draw(st.lists(texts, min_size=n, max_size=n)),
            "sentence2": draw(st.lists(texts, min_size=n, max_size=n)),
            "label": draw(st.lists(st.floats(0.0, 5.0), min_size=n, max_size=n)),
        }
    elif task == "race":
        rows = {
            "example_id": ["x"] * n,
            "article": draw(st.lists(texts, min_size=n, max_size=n)),
            "question": draw(st.lists(texts, min_size=n, max_size=n)),
            "options": draw(st.lists(st.lists(short_texts, min_size=4, max_size=4), min_size=n, max_size=n)),
            "answer": draw(st.lists(st.sampled_from("ABCD"), min_size=n, max_size=n)),
        }
    else:
        rows = {
            "sent1": draw(st.lists(texts, min_size=n, max_size=n)),
            "sent2": draw(st.lists(short_texts, min_size=n, max_size=n)),
            **{f"ending{k}": draw(st.lists(short_texts, min_size=n, max_size=n)) for k in range(4)},
            "label": draw(st.lists(st.sampled_from([0, 1, 2, 3]), min_size=n, max_size=n)),
        }
    max_length = draw(st.integers(8, 96))
    return task, rows, max_length


def check(ids, mask, lm, mc, max_length, pair):
    ids, mask, lm = (np.asarray(x).tolist() for x in (ids, mask, lm))
    n = sum(mask)
    assert len(ids) <= max_length
    assert mask == [1] * n + [0] * (len(ids) - n)
    real = ids[:n]
    assert real.count(START) == 1 and real[0] == START
    assert real.count(EXTRACT) == 1 and real[-1] == EXTRACT and int(mc) == n - 1
    assert real.count(DELIM) == (1 if pair else 0) and PAD not in real
    assert all(t == PAD for t in ids[n:])
    assert lm == real + [-100] * (len(ids) - n)  # padding is never scored, everything else is


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_rows())
def test_random_inputs_keep_the_framing(gpt1_tokenizer, case):
    task, rows, max_length = case
    adapter = ta.get_adapter(task)
    pair = task != "sst2"
    try:
        encoded = adapter.encode(rows, gpt1_tokenizer, max_length=max_length)
    except ValueError as err:  # only allowed failure: an answer that cannot fit on its own
        assert adapter.spec.family is ta.TaskFamily.MULTIPLE_CHOICE and "answers are never truncated" in str(err)
        room = max_length - 4  # 3 special tokens + at least one context token
        answers = rows["options"] if task == "race" else list(zip(*(rows[f"ending{k}"] for k in range(4))))
        longest = max(
            len(gpt1_tokenizer(a, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            for opts in answers
            for a in opts
        )
        assert longest > room
        return
    stats = adapter.last_truncation_stats["data"]
    truncated = 0
    for ex in encoded:
        nested = isinstance(ex["input_ids"][0], list)
        seqs = range(len(ex["input_ids"])) if nested else [None]
        for k in seqs:
            pick = (lambda col: ex[col][k]) if nested else (lambda col: ex[col])
            check(pick("input_ids"), pick("attention_mask"), pick("lm_labels"), pick("mc_token_ids"), max_length, pair)
            truncated += len(pick("input_ids")) == max_length
    assert stats.num_truncated_sequences <= truncated  # every truncated sequence is exactly max_length long
    batch = GPT1DataCollator(gpt1_tokenizer)(list(encoded))
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    for ids, mask, lm, mc in zip(
        flat(batch["input_ids"]),
        flat(batch["attention_mask"]),
        flat(batch["lm_labels"]),
        batch["mc_token_ids"].reshape(-1),
    ):
        check(ids, mask, lm, mc, max_length, pair)
    assert batch["labels"].shape == (len(encoded),)


@pytest.mark.parametrize("max_length", [4, 5, 6])
def test_tiny_max_length_pairs(gpt1_tokenizer, max_length):
    rows = {
        "sentence1": ["alpha beta gamma delta", ""],
        "sentence2": ["epsilon zeta eta", "theta iota"],
        "label": [0, 1],
    }
    for ex in ta.get_adapter("rte").encode(rows, gpt1_tokenizer, max_length=max_length):
        ids = ex["input_ids"]
        assert len(ids) <= max_length and ids[0] == START and ids[-1] == EXTRACT and ids.count(DELIM) == 1
