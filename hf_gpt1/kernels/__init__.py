"""hf-gpt1's optional compiled CPU kernels.

One kernel today: `torch.ops.hf_gpt1.bf16_addmv(bias, weight, x)`, the one-row product of batch-1 decoding with bf16
weights (`bf16_gemv.cpp` explains why and how). It is compiled from source with `torch.utils.cpp_extension` the first
time a bf16 batch-1 decode step asks for it (about a minute, once: the build is cached under
`$TORCH_EXTENSIONS_DIR`, by default `~/.cache/torch_extensions`), the way transformers builds RWKV's kernels. It needs
Linux on x86-64, a CPU with AVX512-BF16, a C++ compiler and ninja (`pip install ninja`); anywhere else, or if the build
fails, the model keeps using torch's `addmv` and this module says why once.

`HF_GPT1_CPU_KERNELS=0` turns the kernel off (torch's `addmv` everywhere); `=1` (the default) uses it where it can run.
"""

from __future__ import annotations

import os
import platform
import shutil
import threading
from pathlib import Path
from typing import Callable

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

ENV_VAR = "HF_GPT1_CPU_KERNELS"
SOURCE = Path(__file__).with_name("bf16_gemv.cpp")
_LIBRARY_NAME = "hf_gpt1_cpu_kernels"

_lock = threading.Lock()
_resolved: dict[str, Callable | None] = {}
_unavailable_reason: dict[str, str] = {}


def unavailable_reason() -> str | None:
    """Why the bf16 decode kernel is not in use (None if it is, or has not been asked for yet)."""
    return _unavailable_reason.get("bf16_addmv")


def _why_not_buildable() -> str | None:
    setting = os.environ.get(ENV_VAR, "1").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return f"{ENV_VAR}={os.environ[ENV_VAR]}"
    if setting not in ("1", "true", "yes", "on", ""):
        raise ValueError(f"{ENV_VAR} must be 1 (use hf-gpt1's CPU kernels where they can run) or 0 (never); got {setting!r}")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the kernel is written for Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    if not torch.cpu._is_avx512_bf16_supported():
        return "this CPU has no AVX512-BF16 instructions"
    from torch.utils.cpp_extension import is_ninja_available

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r}) on PATH to build it"
    if not is_ninja_available():
        return "ninja is not installed (`pip install ninja`), which torch.utils.cpp_extension needs to build it"
    return None


def _build() -> None:
    from torch.utils.cpp_extension import _get_build_directory, load

    built = (Path(_get_build_directory(_LIBRARY_NAME, verbose=False)) / f"{_LIBRARY_NAME}.so").exists()
    (logger.info if built else logger.warning)(
        "hf-gpt1: %s the bf16 CPU decode kernel (%s). Set %s=0 to use torch's addmv instead.",
        "loading" if built else "building",
        "cached build" if built else "one time, about a minute; cached under $TORCH_EXTENSIONS_DIR",
        ENV_VAR,
    )
    # -fopenmp: at::parallel_for splits the rows over torch's OpenMP threads (without it, the loop runs on one
    # thread). The library resolves libgomp.so.1 to the copy torch has already loaded: one thread pool.
    load(
        name=_LIBRARY_NAME,
        sources=[str(SOURCE)],
        extra_cflags=["-O3", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    if not hasattr(torch.library, "register_fake"):
        return
    # Shapes for torch.compile's tracing (the op itself is CPU-only and runs eagerly).
    torch.library.register_fake("hf_gpt1::bf16_addmv")(lambda bias, weight, x: weight.new_empty(weight.shape[0]))


def bf16_addmv_kernel() -> Callable | None:
    """`torch.ops.hf_gpt1.bf16_addmv` (bias or None, (N, K) bf16 weight, (K,) bf16 row -> (N,) bf16), built on first
    call if needed; None where it cannot run (the reason is logged once and kept in `unavailable_reason()`)."""
    with _lock:
        if "bf16_addmv" not in _resolved:
            reason = _why_not_buildable()
            if reason is None:
                try:
                    _build()
                except Exception as error:  # a failed build must not break decoding: torch's addmv still works
                    reason = f"building it failed ({type(error).__name__}: {str(error).strip()[-500:]})"
            if reason is None:
                _resolved["bf16_addmv"] = torch.ops.hf_gpt1.bf16_addmv
            else:
                _resolved["bf16_addmv"] = None
                _unavailable_reason["bf16_addmv"] = reason
                log = logger.warning if reason.startswith("building") else logger.info
                log("hf-gpt1: bf16 batch-1 decoding uses torch's addmv: %s", reason)
        return _resolved["bf16_addmv"]
