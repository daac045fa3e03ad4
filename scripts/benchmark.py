#!/usr/bin/env python
"""hf_gpt1 vs transformers' OpenAIGPTLMHeadModel: speed and memory at the same maths, in one process run.

    .venv/bin/python scripts/benchmark.py --quick                  # < 3 minutes on 2 cores: smaller shapes
    .venv/bin/python scripts/benchmark.py --json bench.json        # full run (the numbers in docs/performance.md)
    .venv/bin/python scripts/benchmark.py --threads 1 ...          # on a machine shared with other jobs
    .venv/bin/python scripts/benchmark.py --only training memory   # some sections only (--help lists them)

Same weights on both sides, timings interleaved step by step, peak memory in fresh subprocesses. The logic lives in
`hf_gpt1.benchmarks` (`cli.main`; docs/performance.md explains the method); this file only runs it, with this
repository's `hf_gpt1` first on the path.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # set before transformers is imported: it reads it once

from hf_gpt1.benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
