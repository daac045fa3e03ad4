"""hf_gpt1 against transformers' `OpenAIGPTLMHeadModel` (speed and memory at the same maths), and the task adapters'
encoding throughput; `scripts/benchmark.py` and `scripts/benchmark_encoding.py` are their command lines.

cli.py           the model benchmark's command line: sizes (--quick or full), sections to run, JSON output
models.py        the pair of models (same weights), their training step, FLOP and byte counts
timing.py        interleaved timing (both sides step by step, medians) and the machine probes (GEMM, copy bandwidth)
sections.py      one function per section: machine, training, lever ablation, inference, generation, memory,
                 gradient checkpointing, allocators, torch.compile
subprocesses.py  the memory and allocator measurements, each in a fresh `python -m` child process
report.py        the targets of the issue judged on a full run, and the markdown tables
encoding.py      the task adapters' encoding throughput on SST-2 (scripts/benchmark_encoding.py)

Only public switches are used on our side: `enable_cpu_speedups`, `disable_cpu_speedups`, `attn_implementation`.
"""
