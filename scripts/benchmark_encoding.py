#!/usr/bin/env python
"""Throughput of the task adapters: encode SST-2's 67,349 training sentences for GPT-1 (target: >= 20,000
examples/s on 2 CPU cores). Prints a table, then one JSON object.

    .venv/bin/python scripts/benchmark_encoding.py                      # num_proc 1 and 2
    .venv/bin/python scripts/benchmark_encoding.py --batch-sizes 500 1000 2000 --json enc.json

The logic lives in `hf_gpt1.benchmarks.encoding` (what is measured and how: its docstring); this file only runs it,
with this repository's `hf_gpt1` first on the path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_gpt1.benchmarks.encoding import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
