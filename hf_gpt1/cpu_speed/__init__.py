"""hf-gpt1's CPU speed paths, plugged into the plain model of `modeling_gpt1` from outside.

    model = hf_gpt1.enable_cpu_speedups(model)     # what the training code does by default
    hf_gpt1.disable_cpu_speedups(model)            # back to the plain modules
    HF_GPT1_CPU_SPEEDUPS=0                         # makes enable_cpu_speedups a no-op (the plain model everywhere)

attention.py  `gpt1_fused`: sdpa plus a blockwise CPU training path with cheap dropout masks
modules.py    fast subclasses of the plain modules (dropout, one-row bf16 Linear, bf16 GELU, fused decode block,
              tied token table lookup + LM head)
loss.py       the chunked (bf16: kernel) LM cross-entropy
apply.py      the switch
See docs/performance.md for what each lever buys and how it was measured.
"""

from ._runtime import cpu_kernels
from .apply import ENV_VAR, cpu_speedups_enabled, cpu_speedups_requested, disable_cpu_speedups, enable_cpu_speedups
from .attention import GPT1_ATTENTION, gpt1_attention_forward, random_keep_mask
from .loss import causal_lm_loss, lm_cross_entropy
from .modules import GPT1DecodeBlock, GPT1Dropout, GPT1GELUTanh, GPT1Linear, GPT1TiedLMHead, GPT1TokenEmbedding

__all__ = [
    "ENV_VAR",
    "GPT1_ATTENTION",
    "GPT1DecodeBlock",
    "GPT1Dropout",
    "GPT1GELUTanh",
    "GPT1Linear",
    "GPT1TiedLMHead",
    "GPT1TokenEmbedding",
    "causal_lm_loss",
    "cpu_kernels",
    "cpu_speedups_enabled",
    "cpu_speedups_requested",
    "disable_cpu_speedups",
    "enable_cpu_speedups",
    "gpt1_attention_forward",
    "lm_cross_entropy",
    "random_keep_mask",
]
