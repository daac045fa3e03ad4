"""What every CPU speed path asks before it runs: are hf-gpt1's compiled kernels here, is a module exactly the kind
the fast path was written for (no hooks, no wrapper), is torch.compile/export tracing the call."""

from __future__ import annotations

import torch
from torch import nn

_CPU_KERNELS = None  # torch.ops.hf_gpt1 (hf-gpt1's compiled bf16 CPU kernels) or False: torch's operators


def cpu_kernels():
    """The compiled kernels (`hf_gpt1.kernels`, built on first use where the CPU has AVX512-BF16) as the
    `torch.ops.hf_gpt1` namespace, or False: torch's operators (no such CPU, `HF_GPT1_CPU_KERNELS=0`, a failed build).
    Resolved once per process."""
    global _CPU_KERNELS
    if _CPU_KERNELS is None:
        from ..kernels import load_cpu_kernels

        _CPU_KERNELS = load_cpu_kernels() or False
    return _CPU_KERNELS


def has_op(kernels, name: str) -> bool:
    """Whether the loaded kernels include `name` (a stand-in namespace may lack newer ones)."""
    if name not in _OPS_PRESENT:
        _OPS_PRESENT[name] = hasattr(kernels, name)
    return _OPS_PRESENT[name]


_OPS_PRESENT: dict[str, bool] = {}


def tracing() -> bool:
    """Inside torch.compile or torch.export: the fast paths step aside (compiled graphs fuse on their own)."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.compiler.is_compiling() or (exporting is not None and exporting())


_OUTPUT_RECORDERS = "transformers.utils.output_capturing"
# torch's global module hooks (nn.modules.module.register_module_forward_[pre_]hook): they would see the modules run.
GLOBAL_HOOKS = tuple(
    getattr(nn.modules.module, name, {}) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
)


def plain(module: nn.Module, kind: type) -> bool:
    """`module` is exactly a `kind` (not a subclass or a PEFT wrapper) and no hook would see (or change) its call: no
    forward hooks but transformers' output recorders (installed on the attention modules once any output is recorded,
    inactive unless `output_attentions` is asked for, which the decode block checks), no pre-hooks, no Accelerate
    hook (device offloading replaces `forward`)."""
    return (
        type(module) is kind
        and not module._forward_pre_hooks
        and not hasattr(module, "_hf_hook")
        and all(getattr(hook, "__module__", None) == _OUTPUT_RECORDERS for hook in module._forward_hooks.values())
    )
