"""hf_gpt1 vs transformers' OpenAIGPTLMHeadModel: speed and memory at the same math, in one process run.

Both models are the paper's 117M GPT-1 built from the same config and the *same weights* (the reference's random init,
converted to our layout), trained with the same loss and AdamW, with the same dropout. Timings are interleaved step by
step (reference, ours, reference, ours, ...) so machine noise hits both sides alike; we report medians and the ratio
ours / reference. Peak memory is measured in fresh subprocesses, one per configuration, so peaks never mix.

    .venv/bin/python scripts/benchmark.py --quick            # < 3 minutes on 2 cores: smaller shapes, fewer repeats
    .venv/bin/python scripts/benchmark.py --json bench.json  # full run (the numbers in docs/performance.md)

Sections: machine (GEMM GFLOP/s fp32/bf16, copy bandwidth), training tok/s (fp32 and bf16 autocast; paper dropout and
attn_pdrop=0), lever ablation, inference tok/s, generation tok/s (reference has no KV cache; ours with cache, fp32 and
bf16 weights) and the batch-1 decode floor, peak RSS, gradient checkpointing, allocator variants (opt-in, subprocesses),
and optionally `--compile` (torch.compile of our model, falls back to eager if it fails).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from .models import PAPER_DROPOUT, build_pair, check_parity
from .report import markdown, targets
from .sections import (
    bench_ablation,
    bench_allocators,
    bench_checkpointing,
    bench_compile,
    bench_generation,
    bench_inference,
    bench_machine,
    bench_memory,
    bench_training,
)
from .subprocesses import THREADS_ENV
from .timing import log

QUICK = dict(
    train_shapes=[(2, 256)],
    train_warmup=1,
    train_steps=2,
    attn0_dtypes=[],
    ablation=False,
    infer_shapes=[(2, 256)],
    infer_steps=2,
    gen_batches=[1],
    gen_new=32,
    gen_repeats=1,
    mem_shapes=[(2, 256)],
    mem_steps=1,
    gc_shape=(2, 256),
    gc_steps=1,
    allocators=False,
    copy_mb=64,
)
FULL = dict(
    train_shapes=[(4, 512), (8, 128)],
    train_warmup=1,
    train_steps=3,
    attn0_dtypes=["fp32", "bf16"],
    ablation=True,
    infer_shapes=[(4, 512)],
    infer_steps=3,
    gen_batches=[1, 8],
    gen_new=128,
    gen_repeats=2,
    mem_shapes=[(4, 512)],
    mem_steps=2,
    gc_shape=(4, 512),
    gc_steps=3,
    allocators=True,
    copy_mb=128,
)


def main(argv: list[str] | None = None) -> None:
    hf_logging.set_verbosity_error()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats: < 3 minutes on 2 cores")
    parser.add_argument("--json", type=Path, help="write the results (with ratios and targets) here")
    parser.add_argument(
        "--only", nargs="*", help="sections: training ablation inference generation memory checkpointing allocators"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(ours) (falls back if it fails)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's choice). On a machine shared with other "
        "jobs, --threads 1 avoids OpenMP barrier stalls that swamp wall-clock ratios; subprocesses inherit it",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ[THREADS_ENV] = str(args.threads)  # for the child processes
    elif os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))

    cfg = QUICK if args.quick else FULL
    sections = set(
        args.only or ["training", "ablation", "inference", "generation", "memory", "checkpointing", "allocators"]
    )
    start = time.perf_counter()
    results = {"mode": "quick" if args.quick else "full", "torch": torch.__version__}
    results["load_average"] = round(os.getloadavg()[0], 1)  # other jobs on the machine make timings noisy
    log("machine ...")
    results["machine"] = bench_machine(args.quick)
    log(f"  {results['machine']}")
    ours, reference = build_pair(PAPER_DROPOUT)
    results["parity_max_abs_logit_diff"] = check_parity(ours, reference)
    del ours, reference
    if "training" in sections:
        results["training"] = bench_training(cfg, results["machine"])
    if "ablation" in sections and cfg["ablation"]:
        results["ablation"] = bench_ablation(cfg)
    if "inference" in sections:
        results["inference"] = bench_inference(cfg)
    if "generation" in sections:
        results["generation"] = bench_generation(cfg)
    if "memory" in sections:
        results["memory"] = bench_memory(cfg)
    if "checkpointing" in sections:
        results["checkpointing"] = bench_checkpointing(cfg, results.get("memory", []))
    if "allocators" in sections and cfg["allocators"]:
        results["allocators"] = bench_allocators(cfg)
    if args.compile:
        results["compile"] = bench_compile(cfg)
    results["targets"] = [] if args.quick else targets(results)
    results["seconds"] = time.perf_counter() - start
    print(markdown(results))
    print(f"\n({results['mode']} run, {results['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        log(f"wrote {args.json}")
