"""Measurements that need a fresh process each: peak memory (peaks must never mix) and allocator settings (they act at
process start). The parent runs `python -m hf_gpt1.benchmarks.subprocesses KIND WHICH DTYPE BATCH SEQ STEPS`, with
the `hf_gpt1` it imported itself first on the path, and reads one JSON line back."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import OpenAIGPTLMHeadModel

from .models import PAPER_DROPOUT, autocast, make_optimizer, make_train_step, our_model, reference_config
from .timing import interleaved, median

THREADS_ENV = "HF_GPT1_BENCH_THREADS"  # --threads of the parent, applied in every child
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this `hf_gpt1`


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def child_memory(which: str, dtype: str, batch: int, seq: int, steps: int) -> dict:
    """Peak RSS of a training run of one model (VmHWM: ru_maxrss would carry the parent's peak across exec), and
    activation memory: RSS growth from before a step to the end of its forward (what forward keeps for backward)."""
    torch.manual_seed(0)
    if which == "reference":
        model = OpenAIGPTLMHeadModel(reference_config(PAPER_DROPOUT))
    else:
        model = our_model(PAPER_DROPOUT)
        if which == "ours_gc":
            model.activation_checkpointing_enable()
    model.train()
    optimizer = make_optimizer(model)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    peak_kb = 0
    activation_kb, times = [], []
    for index in range(steps + 1):  # the first step also creates AdamW's state
        _trim()
        base = _status_kb("VmRSS")
        peak_kb = max(peak_kb, _status_kb("VmHWM"))
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        start = time.perf_counter()
        with autocast(dtype):
            loss = model(input_ids=ids, labels=ids).loss
        after_forward = _status_kb("VmRSS")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index:
            times.append(time.perf_counter() - start)
            activation_kb.append(after_forward - base)
        del loss
    peak_kb = max(peak_kb, _status_kb("VmHWM"))
    return {
        "which": which,
        "dtype": dtype,
        "shape": f"{batch}x{seq}",
        "peak_rss_mb": peak_kb / 1024,
        "static_rss_mb": base / 1024,  # weights + AdamW state (+ what the allocator keeps after malloc_trim)
        "activation_peak_mb": median(activation_kb) / 1024,
        "step_s": median(times),
    }


def child_speed(which: str, dtype: str, batch: int, seq: int, steps: int) -> dict:
    """Median training step time of our model, and the process's peak RSS."""
    torch.manual_seed(0)
    step = make_train_step(our_model(PAPER_DROPOUT), batch, seq, dtype)
    times = interleaved({"s": step}, 1, steps)["s"]
    return {"step_s": median(times), "peak_rss_mb": _status_kb("VmHWM") / 1024}


def run_child(args: list[str], env: dict | None = None) -> dict:
    """Run one measurement (`child_memory` for args[0] == "memory", else `child_speed`) in a fresh interpreter."""
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", __name__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    kind, which, dtype, batch, seq, steps = argv if argv is not None else sys.argv[1:]
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    measure = child_memory if kind == "memory" else child_speed
    print(json.dumps(measure(which, dtype, int(batch), int(seq), int(steps))))


if __name__ == "__main__":
    main()
