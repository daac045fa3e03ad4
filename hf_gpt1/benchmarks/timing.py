"""Timing that machine noise hits on both sides alike, and the probes that say what the machine delivered meanwhile.

`interleaved` runs the callables step by step in turn (reference, ours, reference, ours, ...); the sections report
medians. The probes run between the steps: the GEMM rate is the MFU denominator, the copy bandwidth the decode floor.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

CPU_TIMES: dict[str, list[float]] = {}  # process CPU seconds per call, filled alongside the wall times


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def interleaved(fns: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Run each callable `warmup` times, then `repeats` rounds of all of them in turn; wall seconds per call.
    Process CPU seconds per call land in CPU_TIMES[name] (steadier than wall time on a shared machine)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    CPU_TIMES.clear()
    CPU_TIMES.update(cpu)
    return times


def median(values) -> float:
    return statistics.median(values)


def copy_bandwidth_probe(megabytes: int, copies: int = 5):
    """A callable for `interleaved` that copies a `megabytes` fp32 buffer `copies` times; `.gbps(seconds)` turns its
    time into GB/s (STREAM convention: bytes read + bytes written)."""
    n = megabytes * 2**20 // 4
    src, dst = torch.ones(n), torch.empty(n)

    def probe():
        for _ in range(copies):
            dst.copy_(src)

    probe.gbps = lambda seconds: 2 * n * 4 * copies / seconds / 1e9
    return probe


def gemm_probe(dtype: str, calls: int = 10):
    """A callable for `interleaved`: `calls` (2048×768)·(768×3072) matmuls, the MLP's shape; `.gflops(seconds)`."""
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(2048, 768, dtype=torch_dtype), torch.randn(768, 3072, dtype=torch_dtype)

    def probe():
        for _ in range(calls):
            torch.mm(a, b)

    probe.gflops = lambda seconds: 2 * 2048 * 768 * 3072 * calls / seconds / 1e9
    return probe
