"""Input checks of the GPT-1 forwards: bad input gets an error that says what was wrong and what to do.

Without them a wrong id, position or label is an opaque index error deep inside an embedding or a cross-entropy (or
silently wrong numbers on some devices), and a misspelt keyword argument is ignored. The checks that read tensor
values are host syncs, so each one steps aside inside torch.compile / torch.export (`tracing()`): eager calls keep
their clear errors, compiled graphs stay whole. Ships next to `modeling_gpt1.py` as remote code (its relative import),
so it imports only torch and transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.utils import TransformersKwargs

# What `**kwargs` of a forward may carry: transformers' model-agnostic keyword arguments (outputs to record, attention
# arguments passed on to the attention function, Trainer's `num_items_in_batch`), as its own models type them.
ACCEPTED_MODEL_KWARGS = frozenset(TransformersKwargs.__optional_keys__) | frozenset(
    TransformersKwargs.__required_keys__
)


def tracing() -> bool:
    """Inside torch.compile or torch.export, where reading a tensor's values would break the graph."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.compiler.is_compiling() or (exporting is not None and exporting())


def check_model_kwargs(model: nn.Module, kwargs: dict) -> None:
    """A TypeError naming every keyword argument no GPT-1 forward uses (it would be accepted and silently ignored)."""
    unknown = sorted(set(kwargs) - ACCEPTED_MODEL_KWARGS)
    if unknown:
        raise TypeError(
            f"{type(model).__name__}.forward() got keyword argument(s) it does not use: {', '.join(unknown)}. It takes "
            f"its named arguments plus transformers' model kwargs ({', '.join(sorted(ACCEPTED_MODEL_KWARGS))}); "
            f"check the spelling, or drop arguments meant for another model."
        )


def check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    if tracing() or not input_ids.numel():
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"input_ids contain id {high if high >= vocab_size else low}, outside the embedding table [0, {vocab_size}). "
            f"If the tokenizer has added tokens (e.g. GPT-1's start/delimiter/extract/pad), call "
            f"hf_gpt1.add_special_tokens(model, tokenizer) so the embeddings are resized and the ids recorded in the "
            f"config."
        )


def check_positions(position_ids: torch.Tensor, past_seen: int, seq_len: int, n_positions: int) -> None:
    if tracing():
        return
    needed = max(past_seen + seq_len, int(position_ids.max()) + 1)
    if needed > n_positions:
        raise ValueError(
            f"GPT-1 has {n_positions} learned positions, but this call needs positions up to {needed} (cached "
            f"{past_seen} + {seq_len} new tokens). Truncate inputs to at most n_positions={n_positions} tokens "
            f"(tokenizer: truncation=True, max_length={n_positions})."
        )


def check_lm_labels(labels: torch.Tensor, vocab_size: int, ignore_index: int = -100) -> None:
    if tracing():
        return
    scored = labels[labels != ignore_index]
    if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= vocab_size):
        bad = int(scored.min()) if int(scored.min()) < 0 else int(scored.max())
        raise ValueError(
            f"LM labels contain {bad}, outside the vocabulary [0, {vocab_size}). Labels must be token ids "
            f"of this model's vocabulary, or {ignore_index} for positions that are not scored."
        )


def check_class_labels(labels: torch.Tensor, num_labels: int) -> None:
    if tracing() or not labels.numel():
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_labels:
        raise ValueError(
            f"labels must be class ids in [0, {num_labels}) for this {num_labels}-way classifier, got values in "
            f"[{low}, {high}]. Set num_labels (or id2label) to match the task's label set."
        )


def check_choice_labels(labels: torch.Tensor, num_choices: int) -> None:
    if not tracing() and labels.numel() and (int(labels.max()) >= num_choices or int(labels.min()) < 0):
        raise ValueError(f"labels must be choice indices in [0, {num_choices}), got {labels.tolist()}.")
