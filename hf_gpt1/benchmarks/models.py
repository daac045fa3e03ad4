"""The two models the benchmark compares, and what it runs on them.

Both are the paper's 117M GPT-1 built from the same config and the *same weights* (the reference's random init,
converted to our layout), trained with the same loss and AdamW, with the same dropout.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
from torch import nn
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

from ..cpu_speed import enable_cpu_speedups
from ..modeling_gpt1 import GPT1ForCausalLM, config_from_openai_gpt, convert_openai_gpt_state_dict

PAPER_DROPOUT = dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
NO_ATTN_DROPOUT = dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.0)


def reference_config(dropout: dict) -> OpenAIGPTConfig:
    return OpenAIGPTConfig(**dropout)  # the defaults are the paper's 117M model


def our_model(dropout: dict) -> GPT1ForCausalLM:
    """A fresh GPT-1 of the reference's config with hf-gpt1's CPU speed paths, as the training code builds it."""
    model = GPT1ForCausalLM(config_from_openai_gpt(reference_config(dropout).to_dict()))
    return enable_cpu_speedups(model)  # gpt1_fused attention included


_PRISTINE_PAIRS: dict = {}  # (dropout, seed) -> the pair as built, never trained: copied for each section


def build_pair(dropout: dict, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, reference) with identical weights: the reference's init, converted (Conv1D -> Linear) into ours.
    Fresh copies of one pair built per (dropout, seed): initialising 117M parameters twice takes ~4.6 s here."""
    key = (tuple(sorted(dropout.items())), seed)
    if key not in _PRISTINE_PAIRS:
        torch.manual_seed(seed)
        reference = OpenAIGPTLMHeadModel(reference_config(dropout))
        config = config_from_openai_gpt(reference.config.to_dict())
        ours = GPT1ForCausalLM(config)
        state = convert_openai_gpt_state_dict(reference.state_dict(), GPT1ForCausalLM, config)
        result = ours.load_state_dict(state, strict=False)
        assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys, result
        _PRISTINE_PAIRS[key] = (ours, reference)
    ours, reference = (copy.deepcopy(model) for model in _PRISTINE_PAIRS[key])  # deepcopy keeps the tie
    enable_cpu_speedups(ours)  # hf-gpt1's CPU speed paths, as the training code applies them
    assert ours.lm_head.weight.data_ptr() == ours.transformer.tokens_embed.weight.data_ptr(), "lm_head must stay tied"
    return ours, reference


def check_parity(ours: nn.Module, reference: nn.Module) -> float:
    """Largest absolute logit difference of the pair on one batch (eval mode)."""
    ours.eval(), reference.eval()
    ids = torch.randint(0, reference.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(ids).logits - reference(ids).logits).abs().max().item()


def autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as `Trainer` builds it by default (`optim="adamw_torch_fused"`): the fused CPU kernel, ~4x cheaper than
    the per-tensor loop `torch.optim.AdamW` runs on CPU by default (0.08 vs 0.33 s per 117M step). Same for both sides."""
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)


def make_train_step(model: nn.Module, batch: int, seq: int, dtype: str, seed: int = 0):
    """A callable running one training step (forward with the LM loss, backward, AdamW) on a fixed random batch."""
    model.train()
    optimizer = make_optimizer(model)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))

    def step():
        with autocast(dtype):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step.optimizer = optimizer
    return step


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def decode_weight_bytes(model: nn.Module) -> int:
    """Bytes one decode step must read: every parameter (the tied token table once, as lm_head), one position row."""
    positions = model.transformer.positions_embed.weight
    return (
        param_bytes(model)
        - positions.numel() * positions.element_size()
        + positions.shape[1] * positions.element_size()
    )


def train_flops_per_token(config, seq: int) -> float:
    """6·N (N: all weights used as matmuls, the tied token table once as lm_head) + 12·L·T·d for attention
    (full, non-causal count: the usual MFU convention; both sides are credited the same FLOPs)."""
    d, layers = config.n_embd, config.n_layer
    per_layer = 12 * d * d + 13 * d  # qkv, proj, 2 MLP mats + biases and LN
    n = layers * per_layer + config.vocab_size * d
    return 6 * n + 12 * layers * seq * d
