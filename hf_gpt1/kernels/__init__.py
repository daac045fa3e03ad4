"""hf-gpt1's optional compiled CPU kernels, for bf16 (and batch-1 fp32 decoding) on AVX-512 machines where torch
2.13's CPU kernels or their dispatch from Python are slow.

- `torch.ops.hf_gpt1.bf16_addmv(bias, weight, x)`: the one-row product of batch-1 decoding with bf16 weights
  (`bf16_gemv.cpp`), instead of torch's `addmv`.
- `torch.ops.hf_gpt1.gelu_tanh_bf16(x)` and `gelu_tanh_bf16_backward(grad, x)`: the MLP's tanh-GELU on bf16
  activations (bf16 autocast training, bf16 inference; `gelu_tanh_bf16.cpp`), instead of
  `F.gelu(approximate="tanh")`.
- `torch.ops.hf_gpt1.decode_block(x, query, keys, values, <the block's weights>, scaling, eps)`: a GPT-1 block after
  its q/k/v projection and KV-cache update, for one token of batch-1 decoding with bf16 or fp32 weights
  (`decode_block.cpp`): attention over the cache, output projection, both residual LayerNorms and the MLP in one
  call instead of ~25 operators (bf16 hand-written, fp32 as ATen's operators called from C++).
- `torch.ops.hf_gpt1.cross_entropy_bf16(logits, targets)` and `cross_entropy_bf16_backward(...)`: the LM loss's
  log-sum-exp and gradient on bf16 logits (`cross_entropy_bf16.cpp`), instead of the chunked fp32 path in
  hf_gpt1/cpu_speed/loss.py.

They are compiled from source with `torch.utils.cpp_extension` the first time a fast module of `hf_gpt1.cpu_speed` asks for them (well under a
minute, once per torch release: the build is cached under `$TORCH_EXTENSIONS_DIR`, by default
`~/.cache/torch_extensions`, in a folder named for the release, `library_name()`), the way
transformers builds RWKV's kernels. They need Linux on x86-64, a CPU with AVX512-BF16, a C++ compiler and ninja
(`pip install ninja`); anywhere else, or if the build fails, the fast modules use torch's operators and this module says
why once.

`HF_GPT1_CPU_KERNELS=0` turns them off (torch's operators everywhere); `=1` (the default) uses them where they run.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import threading
from pathlib import Path

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

ENV_VAR = "HF_GPT1_CPU_KERNELS"
SOURCES = [
    Path(__file__).with_name(name)
    for name in ("bf16_gemv.cpp", "gelu_tanh_bf16.cpp", "cross_entropy_bf16.cpp", "decode_block.cpp")
]


def library_name(torch_version: str = torch.__version__) -> str:
    """The library's name, and so its build folder's under `$TORCH_EXTENSIONS_DIR`: one per torch release.

    A library is built against one torch's C++ ABI, and a shared folder can hang: torch 2.14 and later guard a build
    folder with an OS lock that leaves its `lock` file behind, and torch 2.13 (our floor) reads an existing `lock` file
    as a build in progress and waits for it forever. One `$TORCH_EXTENSIONS_DIR` for environments on different torch
    releases (or a CPU torch moved to another release in place) would otherwise stall 2.13 at its first fast module."""
    return "hf_gpt1_cpu_kernels_torch" + re.sub(r"\W", "_", torch_version)


_lock = threading.Lock()
_resolved: dict[str, object | None] = {}
_unavailable_reason: dict[str, str] = {}


def unavailable_reason() -> str | None:
    """Why the kernels are not in use (None if they are, or have not been asked for yet)."""
    return _unavailable_reason.get("cpu")


def _why_not_buildable() -> str | None:
    setting = os.environ.get(ENV_VAR, "1").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return f"{ENV_VAR}={os.environ[ENV_VAR]}"
    if setting not in ("1", "true", "yes", "on", ""):
        raise ValueError(
            f"{ENV_VAR} must be 1 (use hf-gpt1's CPU kernels where they can run) or 0 (never); got {setting!r}"
        )
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the kernels are written for Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    if not torch.cpu._is_avx512_bf16_supported():
        return "this CPU has no AVX512-BF16 instructions"
    from torch.utils.cpp_extension import is_ninja_available

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r}) on PATH to build it"
    if not is_ninja_available():
        return "ninja is not installed (`pip install ninja`), which torch.utils.cpp_extension needs to build it"
    return None


def _already_built() -> bool:
    """Whether a build is cached (only to word the log line; torch's `load` decides what to rebuild)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory  # private: tolerate its absence

        name = library_name()
        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except Exception:
        return False


def _build() -> None:
    from torch.utils.cpp_extension import load

    built = _already_built()
    (logger.info if built else logger.warning)(
        "hf-gpt1: %s its bf16 CPU kernels (%s). Set %s=0 to use torch's operators instead.",
        "loading" if built else "building",
        "cached build" if built else "one time, well under a minute; cached under $TORCH_EXTENSIONS_DIR",
        ENV_VAR,
    )
    # -fopenmp: at::parallel_for splits the work over torch's OpenMP threads (without it, the loop runs on one
    # thread). The library resolves libgomp.so.1 to the copy torch has already loaded: one thread pool.
    load(
        name=library_name(),
        sources=[str(path) for path in SOURCES],
        extra_cflags=["-O3", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    if not hasattr(torch.library, "register_fake"):
        return
    # Shapes for torch.compile's tracing (the ops themselves are CPU-only and run eagerly).
    torch.library.register_fake("hf_gpt1::bf16_addmv")(lambda bias, weight, x: weight.new_empty(weight.shape[0]))
    torch.library.register_fake("hf_gpt1::gelu_tanh_bf16")(lambda x: torch.empty_like(x))
    torch.library.register_fake("hf_gpt1::gelu_tanh_bf16_backward")(lambda grad, x: torch.empty_like(x))
    torch.library.register_fake("hf_gpt1::cross_entropy_bf16")(
        lambda logits, targets: (logits.new_empty(logits.shape[0], dtype=torch.float32),) * 2
    )
    torch.library.register_fake("hf_gpt1::cross_entropy_bf16_backward")(
        lambda logits, targets, lse, scale: torch.empty_like(logits)
    )
    torch.library.register_fake("hf_gpt1::decode_block")(lambda x, *args: torch.empty_like(x))


def load_cpu_kernels():
    """The `torch.ops.hf_gpt1` namespace (`bf16_addmv`, `gelu_tanh_bf16[_backward]`, `cross_entropy_bf16[_backward]`,
    `decode_block`), built on first call if needed; None where they cannot run (the reason is logged once and kept in
    `unavailable_reason()`)."""
    with _lock:
        if "cpu" not in _resolved:
            reason = _why_not_buildable()
            if reason is None:
                try:
                    _build()
                except Exception as error:  # a failed build must not break the model: torch's operators still work
                    reason = f"building them failed ({type(error).__name__}: {str(error).strip()[-500:]})"
            if reason is None:
                _resolved["cpu"] = torch.ops.hf_gpt1
            else:
                _resolved["cpu"] = None
                _unavailable_reason["cpu"] = reason
                log = logger.warning if reason.startswith("building") else logger.info
                log("hf-gpt1: using torch's CPU operators, not hf-gpt1's bf16 kernels: %s", reason)
        return _resolved["cpu"]
