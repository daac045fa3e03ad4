"""The one switch: `enable_cpu_speedups(model)` / `disable_cpu_speedups(model)`.

In the spirit of transformers' `kernelize` and gpt-fast's quantisation swap: the model stays the model of
`modeling_gpt1` (same parameters, same state_dict keys, same class), only some of its modules become their fast
subclasses (`modules.py`), its causal-LM loss becomes the chunked one (`loss.py`, through transformers'
`PreTrainedModel.loss_function` setter), the fine-tuning heads' per-token L1 loss likewise, and (with
`attention=True`) its attention implementation becomes `gpt1_fused` (`attention.py`).

The training entry points (pretraining.build_model, finetuning.load_model_for_task, zero_shot, scripts/reproduce.py,
scripts/benchmark.py) call it by default; `HF_GPT1_CPU_SPEEDUPS=0` in the environment makes it a no-op there (and
everywhere), so the plain modules of `modeling_gpt1` run. `HF_GPT1_CPU_KERNELS=0` separately keeps only the compiled
kernels off (torch's operators inside the fast modules).
"""

from __future__ import annotations

import os

from torch import nn
from transformers.activations import GELUTanh

from ..modeling_gpt1 import GPT1MLP, GPT1Attention, GPT1Block, GPT1Model, GPT1PreTrainedModel
from .attention import GPT1_ATTENTION
from .loss import causal_lm_loss, lm_cross_entropy
from .modules import GPT1DecodeBlock, GPT1Dropout, GPT1GELUTanh, GPT1Linear, GPT1TiedLMHead, GPT1TokenEmbedding

ENV_VAR = "HF_GPT1_CPU_SPEEDUPS"

# plain class -> fast subclass; each swap only where the module is exactly the plain class (a PEFT wrapper or a
# user's own module stays as it is)
_FAST = {nn.Dropout: GPT1Dropout, nn.Linear: GPT1Linear, GELUTanh: GPT1GELUTanh, GPT1Block: GPT1DecodeBlock,
         nn.Embedding: GPT1TokenEmbedding}  # fmt: skip
_PLAIN = {fast: plain for plain, fast in _FAST.items()} | {GPT1TiedLMHead: nn.Linear}


def cpu_speedups_requested() -> bool:
    """False when `HF_GPT1_CPU_SPEEDUPS=0`: the switch that turns every default `enable_cpu_speedups` call off."""
    value = os.environ.get(ENV_VAR, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{ENV_VAR} must be 1 (CPU speedups, the default) or 0 (the plain modules); got {value!r}.")
    return value == "1"


def _swap(module: nn.Module, plain: type, fast: type) -> None:
    if type(module) is plain:
        module.__class__ = fast


def _set_dropout(module: nn.Module, fast: bool) -> None:
    if fast:
        _swap(module, nn.Dropout, GPT1Dropout)
    else:
        _swap(module, GPT1Dropout, nn.Dropout)


def _rename_no_split(model: nn.Module, old: str, new: str) -> None:
    """FSDP and `device_map` find the blocks by class name (`_no_split_modules`): name the swapped class."""
    names = list(getattr(model, "_no_split_modules", None) or [])
    if old in names:
        model._no_split_modules = [new if name == old else name for name in names]


def enable_cpu_speedups(model: nn.Module, *, attention: bool = True, dropout: bool = True) -> nn.Module:
    """Turn on hf-gpt1's CPU speed paths in `model` (a GPT-1 model, in place; returned for chaining). Numerics are
    those of the plain modules (dropout: the same keep probability from another random stream). `attention=True`
    selects the `gpt1_fused` attention implementation; `dropout=False` keeps (or puts back) `nn.Dropout`. Calling it
    again is harmless. A no-op with `HF_GPT1_CPU_SPEEDUPS=0`. Undo with `disable_cpu_speedups`. Calling it after
    anything that replaces modules (e.g. a resize of the embeddings that builds a new table) covers the new ones."""
    if not cpu_speedups_requested():
        return model
    for module in list(model.modules()):
        if isinstance(module, GPT1Model):
            _set_dropout(module.drop, dropout)
            _swap(module.tokens_embed, nn.Embedding, GPT1TokenEmbedding)
            _rename_no_split(module, "GPT1Block", "GPT1DecodeBlock")
        elif isinstance(module, GPT1Block):
            _swap(module, GPT1Block, GPT1DecodeBlock)
        elif isinstance(module, GPT1Attention):
            _swap(module.c_attn, nn.Linear, GPT1Linear)
            _swap(module.c_proj, nn.Linear, GPT1Linear)
            _set_dropout(module.resid_dropout, dropout)
        elif isinstance(module, GPT1MLP):
            _swap(module.c_fc, nn.Linear, GPT1Linear)
            _swap(module.c_proj, nn.Linear, GPT1Linear)
            _swap(module.act, GELUTanh, GPT1GELUTanh)
            _set_dropout(module.dropout, dropout)
        elif isinstance(module, GPT1PreTrainedModel) and not isinstance(module, GPT1Model):  # a head model
            head, transformer = getattr(module, "lm_head", None), getattr(module, "transformer", None)
            if head is not None:
                _swap(head, nn.Linear, GPT1TiedLMHead)
                if type(head) is GPT1TiedLMHead and isinstance(transformer, GPT1Model):
                    head.__dict__["tied_embedding"] = transformer.tokens_embed  # not a submodule: same state dict
            module.loss_function = causal_lm_loss
            _rename_no_split(module, "GPT1Block", "GPT1DecodeBlock")
            if hasattr(module, "token_lm_losses"):
                module.token_lm_losses = lm_cross_entropy
            if attention:
                module.set_attn_implementation(GPT1_ATTENTION)
    if attention and isinstance(model, GPT1Model):
        model.set_attn_implementation(GPT1_ATTENTION)
    return model


def disable_cpu_speedups(model: nn.Module) -> nn.Module:
    """Undo `enable_cpu_speedups`: the plain modules again (same parameters), transformers' loss, and `sdpa` where
    `gpt1_fused` was selected."""
    for module in list(model.modules()):
        plain = _PLAIN.get(type(module))
        if plain is not None:
            module.__dict__.pop("tied_embedding", None)
            module.__dict__.pop("_bf16_table_copies", None)
            module.__dict__.pop("tied_table", None)
            module.__dict__.pop("_lookup_gradient", None)
            module.__class__ = plain
        if isinstance(module, GPT1PreTrainedModel):
            module.__dict__.pop("_loss_function", None)
            module.__dict__.pop("_no_split_modules", None)
            module.__dict__.pop("token_lm_losses", None)
            if getattr(module.config, "_attn_implementation", None) == GPT1_ATTENTION:
                module.set_attn_implementation("sdpa")
    return model


def cpu_speedups_enabled(model: nn.Module) -> bool:
    """Whether `enable_cpu_speedups` has swapped any of `model`'s modules."""
    return any(type(module) in _PLAIN for module in model.modules())
