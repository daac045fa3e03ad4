"""Zero-shot heuristics of the paper's §5 ("Zero-shot Behaviors", Figure 2 right).

The paper asks whether generative pre-training alone already teaches task-relevant behaviour, by
scoring tasks with the *language model* only, no fine-tuning:

- SST-2: append the token "very" to each example and compare the LM's probability of "positive" vs
  "negative" as the next word.
- Story Cloze (and RACE-style multiple choice): pick the ending with the higher average token
  log-probability given the story.
- CoLA: the average token log-probability of the sentence, thresholded (we fit the threshold on
  training sentences, then report Matthews correlation on held-out ones).

All scoring uses plain BPE (`add_special_tokens=False`) of standardized text (`standardize_text`: ASCII quotes,
dashes and ellipses), the form the LM saw during pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .tokenization_gpt1 import standardize_text


@torch.no_grad()
def continuation_logprobs(
    model,
    tokenizer,
    contexts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """(sum of log P(continuation tokens | context), number of continuation tokens) for each pair.

    An empty context scores the continuation from its second token on (the first has nothing to
    condition on). Over-long inputs keep their right end (the continuation) within n_positions.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations; they must pair up.")
    model.eval()
    limit = model.config.n_positions
    device = next(model.parameters()).device
    encoded = []
    for context, continuation in zip(contexts, continuations):
        ctx = tokenizer(standardize_text(context), add_special_tokens=False)["input_ids"] if context else []
        cont = tokenizer(standardize_text(continuation), add_special_tokens=False)["input_ids"]
        ids = (ctx + cont)[-limit:]
        n_cont = min(len(cont), len(ids) - 1)  # the first token of a sequence is never predicted
        encoded.append((ids, n_cont))

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Batches of similar lengths: padding is wasted compute, and a whole evaluation set in its own order pads most
    # sequences to several times their length. Each result goes back to its input's position.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        chunk = [encoded[i] for i in positions]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, (ids, _) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        logits = model(input_ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None].to(device)).squeeze(-1)
        for row, (position, (ids, n_cont)) in enumerate(zip(positions, chunk)):
            if n_cont > 0:
                end = len(ids) - 1  # logprobs[t] scores token t+1
                results[position] = (float(logprobs[row, end - n_cont : end].sum()), n_cont)
    return results


def sst2_zero_shot(model, tokenizer, sentences: Sequence[str], labels: Sequence[int], batch_size: int = 16) -> dict:
    """Accuracy of "<sentence> very" → P(positive) vs P(negative) (label 1 = positive)."""
    contexts = [f"{s.strip()} very" for s in sentences]
    positive = continuation_logprobs(model, tokenizer, contexts, ["positive"] * len(contexts), batch_size)
    negative = continuation_logprobs(model, tokenizer, contexts, ["negative"] * len(contexts), batch_size)
    predictions = np.array([int(p[0] > n[0]) for p, n in zip(positive, negative)])
    correct = predictions == np.asarray(labels)
    return {
        "accuracy": float(correct.mean()),
        "ci95": wilson_interval(correct),
        "positive_rate": float(predictions.mean()),
    }


def story_cloze_zero_shot(
    model,
    tokenizer,
    stories: Sequence[str],
    endings: Sequence[Sequence[str]],
    labels: Sequence[int],
    batch_size: int = 16,
) -> dict:
    """Accuracy of choosing the ending with the higher average token log-probability given the story."""
    n_choices = len(endings[0])
    contexts = [story for story in stories for _ in range(n_choices)]
    flat = [ending for choice in endings for ending in choice]
    scores = continuation_logprobs(model, tokenizer, contexts, flat, batch_size)
    average = np.array([total / max(count, 1) for total, count in scores]).reshape(-1, n_choices)
    correct = average.argmax(1) == np.asarray(labels)
    return {"accuracy": float(correct.mean()), "ci95": wilson_interval(correct)}


def cola_zero_shot(
    model,
    tokenizer,
    fit_sentences: Sequence[str],
    fit_labels: Sequence[int],
    sentences: Sequence[str],
    labels: Sequence[int],
    batch_size: int = 16,
) -> dict:
    """Matthews correlation of thresholded average log-probability; threshold fitted on `fit_*` only."""
    from sklearn.metrics import matthews_corrcoef

    def average_logprob(texts):
        scores = continuation_logprobs(model, tokenizer, [""] * len(texts), list(texts), batch_size)
        return np.array([total / max(count, 1) for total, count in scores])

    fit_scores, fit_labels = average_logprob(fit_sentences), np.asarray(fit_labels)
    candidates = np.unique(np.quantile(fit_scores, np.linspace(0.02, 0.98, 49)))
    threshold = max(candidates, key=lambda t: matthews_corrcoef(fit_labels, (fit_scores > t).astype(int)))
    predictions = (average_logprob(sentences) > threshold).astype(int)
    labels = np.asarray(labels)
    return {
        "mcc": float(matthews_corrcoef(labels, predictions)),
        "ci95": bootstrap_interval(labels, predictions, matthews_corrcoef),
        "threshold": float(threshold),
    }


def wilson_interval(correct: Sequence[bool] | np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on `len(correct)` independent examples.

    It says how far a score can move by the luck of the sample alone: on SST-2's 872 dev sentences an accuracy near
    0.5 has an interval of about ±0.033, on 300 sentences about ±0.056."""
    n = len(correct)
    if n == 0:
        raise ValueError("no examples: an accuracy needs at least one")
    p = float(np.mean(correct))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))


def bootstrap_interval(
    labels: np.ndarray, predictions: np.ndarray, metric, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of `metric(labels, predictions)` over the examples (seeded: reproducible)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = rng.integers(0, n, size=(resamples, n))
    values = np.array([metric(labels[rows], predictions[rows]) for rows in draws])
    low, high = np.quantile(values, [0.025, 0.975])
    return (float(low), float(high))


__all__ = [
    "bootstrap_interval",
    "cola_zero_shot",
    "continuation_logprobs",
    "sst2_zero_shot",
    "story_cloze_zero_shot",
    "wilson_interval",
]
