"""What the GPT-1 fine-tuning heads return, as transformers' `ModelOutput`s (tuple- and dict-like, `None` fields
dropped). Ships next to `modeling_gpt1.py` as remote code (its relative import), so it imports only torch and
transformers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class GPT1ClassifierOutput(ModelOutput):
    """Output of the fine-tuning heads (sequence classification, similarity, multiple choice).

    loss: L3 = task_loss + lm_coef * lm_loss (the paper's fine-tuning objective), when `labels` are given.
    logits: (batch, num_labels) for classification/regression, (batch, num_choices) for multiple choice.
    task_loss / lm_loss: the two parts of `loss`, so training code can log them separately
        (`config.keys_to_ignore_at_inference` keeps them out of Trainer's gathered predictions).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    task_loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class GPT1DoubleHeadsModelOutput(ModelOutput):
    """Same fields as `transformers.OpenAIGPTDoubleHeadsModelOutput`: `loss` is the LM loss, `mc_loss` the choice loss."""

    loss: torch.Tensor | None = None
    mc_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mc_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
