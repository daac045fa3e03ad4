"""Zero-shot LM scoring (paper §5): log-probabilities are exact and batching/padding does not change them."""

from __future__ import annotations

import csv

import numpy as np
import torch
from torch.nn import functional as F

from hf_gpt1 import GPT1ForCausalLM
from hf_gpt1.tokenization_gpt1 import add_special_tokens, load_gpt1_tokenizer
from hf_gpt1.zero_shot import (
    bootstrap_interval,
    continuation_logprobs,
    sst2_zero_shot,
    story_cloze_zero_shot,
    wilson_interval,
)
from testing_utils import tiny_gpt1_config


def _model_and_tokenizer(tokenizer_dir):
    tokenizer = load_gpt1_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_gpt1_config(vocab_size=len(tokenizer), n_positions=128))
    add_special_tokens(model, tokenizer)
    return model.eval(), tokenizer


def _sst2_dev(glue_dir, n):
    with open(glue_dir / "SST-2" / "dev.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1 : n + 1]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


def test_continuation_logprobs_are_exact_and_batch_invariant(tokenizer_dir, glue_dir):
    model, tokenizer = _model_and_tokenizer(tokenizer_dir)
    sentences, _ = _sst2_dev(glue_dir, 7)
    # mixed lengths and continuations: batches are formed by length, and every result must return to its own input
    contexts = [s + " very" for s in sentences]
    continuations = ["positive", "negative"] * 3 + ["utterly and completely negative"]
    assert len({len(tokenizer(c)["input_ids"]) for c in contexts}) > 3
    batched = continuation_logprobs(model, tokenizer, contexts, continuations, batch_size=3)
    single = continuation_logprobs(model, tokenizer, contexts, continuations, batch_size=1)
    for (a, n), (b, m), continuation in zip(batched, single, continuations):
        assert n == m == len(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        assert abs(a - b) < 1e-4
    # by hand for the first pair
    ctx = tokenizer(contexts[0], add_special_tokens=False)["input_ids"]
    cont = tokenizer("positive", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = F.log_softmax(model(ids).logits[0, :-1], -1)
    expected = sum(float(logprobs[len(ctx) - 1 + i, tok]) for i, tok in enumerate(cont))
    assert abs(batched[0][0] - expected) < 1e-4


def test_sst2_and_story_cloze_scoring_follow_the_logprobs(tokenizer_dir, glue_dir):
    model, tokenizer = _model_and_tokenizer(tokenizer_dir)
    sentences, labels = _sst2_dev(glue_dir, 12)
    result = sst2_zero_shot(model, tokenizer, sentences, labels)
    pos = continuation_logprobs(model, tokenizer, [s + " very" for s in sentences], ["positive"] * 12)
    neg = continuation_logprobs(model, tokenizer, [s + " very" for s in sentences], ["negative"] * 12)
    expected = sum(int(p[0] > n[0]) == y for p, n, y in zip(pos, neg, labels)) / 12
    assert result["accuracy"] == expected

    stories = ["tom went to the store . he bought milk ."] * 2
    endings = [["he went home .", "the moon is purple ."], ["the moon is purple .", "he went home ."]]
    scores = story_cloze_zero_shot(model, tokenizer, stories, endings, [0, 1])
    # the two examples are mirror images, so a consistent scorer gets both right or both wrong
    assert scores["accuracy"] in (0.0, 1.0)


def test_texts_are_scored_as_the_lm_saw_them_in_pretraining(tokenizer_dir):
    """Pretraining standardizes curly quotes and dashes (the GPT-1 BPE has none): the zero-shot scores do too, so
    typographic and ASCII spellings of a text get the same score and no `<unk>` is scored."""
    model, tokenizer = _model_and_tokenizer(tokenizer_dir)
    typographic = continuation_logprobs(
        model, tokenizer, ["she said \u201cit\u2019s late\u201d \u2013 and"], ["left\u2026"]
    )
    ascii_ = continuation_logprobs(model, tokenizer, ['she said "it\'s late" - and'], ["left..."])
    assert typographic == ascii_ and ascii_[0][1] == len(tokenizer("left...", add_special_tokens=False)["input_ids"])


def test_wilson_interval_matches_the_textbook_values_and_shrinks_with_n():
    # 436 of 872 right (50%): the Wilson interval is 0.5 +- 0.0332 (z = 1.96)
    low, high = wilson_interval([True] * 436 + [False] * 436)
    assert abs(low - (0.5 - 0.03317)) < 1e-4 and abs(high - (0.5 + 0.03317)) < 1e-4
    # 9 of 10: asymmetric, inside [0, 1], and the textbook (0.5958, 0.9821)
    low, high = wilson_interval([True] * 9 + [False])
    assert abs(low - 0.5958) < 1e-3 and abs(high - 0.9821) < 1e-3
    assert wilson_interval([True] * 150 + [False] * 150)[1] - 0.5 > 0.05  # 300 examples: a 3-point move is noise


def test_bootstrap_interval_brackets_the_metric_and_is_reproducible():
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 1000)
    predictions = np.where(rng.random(1000) < 0.7, labels, 1 - labels)  # 70% agreement: MCC about 0.4
    value = matthews_corrcoef(labels, predictions)
    low, high = bootstrap_interval(labels, predictions, matthews_corrcoef)
    assert low < value < high and 0.05 < high - low < 0.2
    assert (low, high) == bootstrap_interval(labels, predictions, matthews_corrcoef)


def test_zero_shot_results_carry_their_interval(tokenizer_dir, glue_dir):
    model, tokenizer = _model_and_tokenizer(tokenizer_dir)
    sentences, labels = _sst2_dev(glue_dir, 40)
    result = sst2_zero_shot(model, tokenizer, sentences, labels)
    low, high = result["ci95"]
    assert low <= result["accuracy"] <= high
    right = round(result["accuracy"] * 40)
    assert (low, high) == wilson_interval([True] * right + [False] * (40 - right))
