"""Throughput of the task adapters: encode SST-2's 67,349 training sentences for GPT-1.

Measures ``task_adapters.get_adapter("sst2").encode(train, tokenizer, max_length=512, num_proc=N)``
end to end (batched ``datasets.map``, the fast tokenizer with the paper's framing, truncation
bookkeeping, Arrow writes) in examples/s, for each ``num_proc`` and ``batch_size`` asked for, best
of ``--repeats`` runs. As a ceiling it also times the bare Rust tokenizer on the same sentences
(``backend_tokenizer.encode_batch_fast``, no ``datasets``). Besides wall-clock examples/s it reports
examples per CPU-second (process + map workers), which moves much less with the load of other
processes on a shared machine. Prints a table, then one JSON object.

    .venv/bin/python scripts/benchmark_encoding.py                      # num_proc 1 and 2
    .venv/bin/python scripts/benchmark_encoding.py --batch-sizes 500 1000 2000 --json enc.json

Target: >= 20,000 examples/s on 2 CPU cores. On a shared machine the numbers move with the load
of other processes, so the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(os.environ.get("HF_GPT1_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET = 20_000


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (datasets.map workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="shared data folder (with glue/ and gpt1-tokenizer/)"
    )
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="GPT-1 tokenizer folder (default: DATA_DIR/gpt1-tokenizer)"
    )
    p.add_argument("--num-proc", type=int, nargs="+", default=[1, 2], help="datasets.map worker counts to time")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1000], help="rows per tokenizer call")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="runs per setting; the best is reported")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("task_adapters").setLevel(logging.ERROR)
    import task_adapters as ta

    from ..tokenization_gpt1 import load_gpt1_tokenizer

    tokenizer = load_gpt1_tokenizer(args.tokenizer or args.data_dir / "gpt1-tokenizer")
    t0 = time.perf_counter()
    train = ta.load_task("sst2", args.data_dir / "glue")["train"]
    load_seconds = time.perf_counter() - t0
    n = len(train)
    adapter = ta.get_adapter("sst2")

    sentences = train["sentence"][:]
    backend = tokenizer.backend_tokenizer
    raw, raw_cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), cpu_seconds()
        for i in range(0, n, 1000):
            backend.encode_batch_fast(sentences[i : i + 1000])
        raw.append(n / (time.perf_counter() - t0))
        raw_cpu.append(n / (cpu_seconds() - c0))

    rows = []
    for num_proc in args.num_proc:
        for batch_size in args.batch_sizes:
            rates, per_cpu = [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), cpu_seconds()
                encoded = adapter.encode(
                    train,
                    tokenizer,
                    max_length=args.max_length,
                    num_proc=num_proc,
                    batch_size=batch_size,
                    load_from_cache_file=False,
                )
                rates.append(n / (time.perf_counter() - t0))
                per_cpu.append(n / (cpu_seconds() - c0))
            assert len(encoded) == n
            rows.append(
                {
                    "num_proc": num_proc,
                    "batch_size": batch_size,
                    "examples_per_s": max(rates),
                    "examples_per_cpu_s": round(max(per_cpu)),
                    "all_runs": [round(r) for r in rates],
                    "truncated": adapter.last_truncation_stats["train"].num_truncated,
                }
            )

    result = {
        "task": "sst2/train",
        "examples": n,
        "max_length": args.max_length,
        "target_examples_per_s": TARGET,
        "load_task_seconds": round(load_seconds, 3),
        "tokenizer_only_examples_per_s": round(max(raw)),
        "tokenizer_only_examples_per_cpu_s": round(max(raw_cpu)),
        "encode": [dict(r, examples_per_s=round(r["examples_per_s"])) for r in rows],
        "best_examples_per_s": round(max(r["examples_per_s"] for r in rows)),
        "meets_target": max(r["examples_per_s"] for r in rows) >= TARGET,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "(unset: Rust threads on)"),
            "datasets": datasets.__version__,
        },
    }
    print(
        f"SST-2 train: {n} sentences, max_length={args.max_length}, load_task {load_seconds:.2f}s, "
        f"{os.cpu_count()} CPUs, load average {result['machine']['load_average_1m']}"
    )
    print(f"{'num_proc':>8} {'batch':>6} {'examples/s':>11} {'target':>7} {'ex/CPU-s':>9}  runs")
    for r in rows:
        ok = "ok" if r["examples_per_s"] >= TARGET else "below"
        print(
            f"{r['num_proc']:>8} {r['batch_size']:>6} {r['examples_per_s']:>11,.0f} {ok:>7} "
            f"{r['examples_per_cpu_s']:>9,}  {r['all_runs']}"
        )
    print(f"{'tokenizer only (no datasets)':>15} {max(raw):>11,.0f} {'':>7} {max(raw_cpu):>9,.0f}")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
