"""Dynamic padding for encoded GPT-1 task data, for all three example shapes.

Why a custom collator: ``DataCollatorWithPadding`` handles ``(seq,)`` but neither nested
``(2, seq)`` / ``(choices, seq)`` examples nor the ``lm_labels`` column, which must be padded with
``-100`` (not the pad id) so the auxiliary LM loss never scores padding. This collator flattens
nested examples into sequences, pads them with the tokenizer's own ``pad`` (like
``transformers.DataCollatorForMultipleChoice``), pads ``lm_labels`` like
``DataCollatorForSeq2Seq`` pads labels, and reshapes back.

Padding is always on the right: ``mc_token_ids`` point at the extract token counted from the start
of the sequence, and GPT-1's learned positions start at 0 with the first token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.data.data_collator import pad_without_fast_tokenizer_warning

from .validation import TokenizerMismatchError

__all__ = ["GPT1DataCollator"]

LM_IGNORE_INDEX = -100
_SEQUENCE_KEYS = ("input_ids", "attention_mask", "lm_labels")


@dataclass
class GPT1DataCollator:
    """Pads a list of encoded examples into a batch of torch tensors.

    Output shapes: ``(batch, seq)`` for classification/entailment, ``(batch, 2, seq)`` for
    similarity, ``(batch, choices, seq)`` for multiple choice; ``mc_token_ids`` is ``(batch,)`` /
    ``(batch, k)``; ``labels`` is ``(batch,)``, float32 for regression (float labels) and int64
    otherwise. Pads: ``input_ids`` = tokenizer pad id, ``attention_mask`` = 0, ``lm_labels`` = -100.

    Batches in which every label is the unlabeled marker ``-1`` (GLUE test splits) get no
    ``labels`` key, so ``Trainer.predict`` runs without a loss; mixing labeled and unlabeled rows
    in one batch is an error (the loss would silently train on ``-1``).

    Args:
        tokenizer: The GPT-1 tokenizer (needs a pad token).
        pad_to_multiple_of: Round the padded length up (e.g. 8 for tensor cores).
        label_dtype: Force the ``labels`` dtype; by default float labels give float32, ints int64.
    """

    tokenizer: Any
    pad_to_multiple_of: int | None = None
    label_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise TokenizerMismatchError(
                "GPT1DataCollator needs a tokenizer with a pad token; use hf_gpt1.load_gpt1_tokenizer(path)"
            )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        nested = _is_nested(features[0]["input_ids"])
        group = len(features[0]["input_ids"]) if nested else 1
        for i, feat in enumerate(features):
            if _is_nested(feat["input_ids"]) != nested or (nested and len(feat["input_ids"]) != group):
                raise ValueError(
                    f"example {i} has a different shape than example 0 (sequences per example {group}); "
                    "batch examples of one task only"
                )

        flat = [self._sequences(feat, nested) for feat in features]
        flat_seqs = [seq for seqs in flat for seq in seqs]
        padded = pad_without_fast_tokenizer_warning(
            self.tokenizer,
            [{"input_ids": s["input_ids"], "attention_mask": s["attention_mask"]} for s in flat_seqs],
            padding="longest",
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side="right",
            return_tensors="pt",
        )
        input_ids = padded["input_ids"].long()
        attention_mask = padded["attention_mask"].long()
        width = input_ids.shape[-1]
        lm_labels = torch.full((len(flat_seqs), width), LM_IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(flat_seqs):
            lm = seq["lm_labels"]
            lm_labels[row, : len(lm)] = torch.as_tensor(lm, dtype=torch.long)
        # Positions padded here were attention 0; make sure lm_labels never score them either.
        lm_labels[attention_mask == 0] = LM_IGNORE_INDEX

        batch_size = len(features)
        shape = (batch_size, group, width) if nested else (batch_size, width)
        batch: dict[str, torch.Tensor] = {
            "input_ids": input_ids.view(shape),
            "attention_mask": attention_mask.view(shape),
            "lm_labels": lm_labels.view(shape),
        }
        if "mc_token_ids" in features[0]:
            mc = torch.as_tensor(np.asarray([_to_list(f["mc_token_ids"]) for f in features]), dtype=torch.long)
        else:  # last attended position of every sequence
            mc = (attention_mask.sum(-1) - 1).view(shape[:-1])
        batch["mc_token_ids"] = mc
        labels = self._labels(features)
        if labels is not None:
            batch["labels"] = labels
        for key in features[0]:
            if key in batch or key in _SEQUENCE_KEYS or key in ("labels", "label", "mc_token_ids"):
                continue
            try:
                batch[key] = torch.as_tensor([f[key] for f in features])
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(
                    f"cannot collate column {key!r} into a tensor; drop it (encode(keep_columns=...)) "
                    "or let the Trainer remove unused columns"
                ) from None
        return batch

    def _sequences(self, feat: Mapping[str, Any], nested: bool) -> list[dict[str, Any]]:
        """Split an example into its sequences. A missing ``attention_mask`` is derived from the pad
        id, a missing ``lm_labels`` from ``input_ids`` with -100 where the mask is 0."""
        pad_id = self.tokenizer.pad_token_id
        seqs = feat["input_ids"] if nested else [feat["input_ids"]]
        masks = feat.get("attention_mask")
        lms = feat.get("lm_labels")
        out = []
        for k, seq in enumerate(seqs):
            seq = _to_list(seq)
            if masks is not None:
                mask = _to_list(masks[k] if nested else masks)
            else:
                mask = [int(tok != pad_id) for tok in seq]
            if lms is not None:
                lm = _to_list(lms[k] if nested else lms)
            else:
                lm = [tok if m else LM_IGNORE_INDEX for tok, m in zip(seq, mask)]
            out.append({"input_ids": seq, "attention_mask": mask, "lm_labels": lm})
        return out

    def _labels(self, features: Sequence[Mapping[str, Any]]) -> torch.Tensor | None:
        key = "labels" if "labels" in features[0] else "label" if "label" in features[0] else None
        if key is None:
            return None
        values = [_to_list(f[key]) for f in features]  # numpy / torch scalars -> Python numbers
        if any(v is None for v in values):
            raise ValueError("some examples have labels=None; encode unlabeled rows with label -1")
        unlabeled = [float(v) == -1.0 for v in values]
        if all(unlabeled):
            return None
        if any(unlabeled):
            raise ValueError(
                "batch mixes labeled and unlabeled (-1) examples; keep unlabeled splits (e.g. GLUE test) separate"
            )
        dtype = self.label_dtype
        if dtype is None:
            is_float = any(isinstance(v, float) for v in values)
            dtype = torch.float32 if is_float else torch.long
        return torch.as_tensor(values, dtype=dtype)


def _to_list(values: Any) -> Any:
    """Plain Python values from lists, NumPy arrays or tensors (datasets formatted as numpy/torch)."""
    return values.tolist() if hasattr(values, "tolist") else list(values) if isinstance(values, tuple) else values


def _is_nested(ids: Any) -> bool:
    """True for ``(k, seq)`` examples (similarity, multiple choice), False for ``(seq,)``."""
    if hasattr(ids, "ndim"):
        return ids.ndim >= 2
    return len(ids) > 0 and hasattr(ids[0], "__len__")
