"""scripts/benchmark.py (hf_gpt1.benchmarks): how it judges targets (pure logic on a results dict), one memory child
process started as the sections start it, and one real `--quick` generation run in a fresh interpreter, which checks
that our cached greedy decoding emits exactly the tokens of transformers' OpenAIGPTLMHeadModel (no cache) from the
same weights. Speeds are the benchmark's output, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_gpt1.benchmarks import subprocesses
from hf_gpt1.benchmarks.report import targets

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "benchmark.py"


def _training(dropout, dtype, shape, ratio):
    return {"dropout": dropout, "dtype": dtype, "shape": shape, "ratio": ratio}


def test_targets_judge_training_at_the_first_shape_and_every_other_section():
    results = {
        "training": [
            _training("paper", "fp32", "4x512", 1.30),
            _training("paper", "fp32", "8x128", 1.10),  # reported, not judged
            _training("paper", "bf16", "4x512", 1.59),
            _training("paper", "bf16", "8x128", 1.20),
            _training("attn_pdrop=0", "bf16", "4x512", 1.81),
        ],
        "generation": [
            {
                "batch": 1,
                "new_tokens": 128,
                "ratio_fp32": 3.4,
                "ratio_bf16_weights": 5.2,
                "decode_vs_floor_fp32": 1.2,
                "decode_vs_floor_bf16": 1.6,
            },
            {"batch": 8, "new_tokens": 128, "ratio_fp32": 12.0, "ratio_bf16_weights": 20.0},  # no batch-8 targets
        ],
        "memory": [
            {"which": "reference", "shape": "4x512", "peak_rss_mb": 8000.0},
            {"which": "ours", "shape": "4x512", "peak_rss_mb": 6000.0},
        ],
        "checkpointing": {"shape": "4x512", "activation_cut": 1.9, "extra_time": 0.2},
    }
    judged = {t["target"]: (t["value"], t["threshold"], t["met"]) for t in targets(results)}
    assert judged == {
        "train fp32 paper dropout 4x512 ours/ref": (1.3, 1.25, True),
        "train bf16 paper dropout 4x512 ours/ref": (1.59, 1.6, False),
        "train bf16 attn_pdrop=0 4x512 ours/ref": (1.81, 1.8, True),
        "generate b1 fp32 (128 new) ours/ref": (3.4, 3.5, False),
        "generate b1 bf16 weights (128 new) ours/ref fp32": (5.2, 5.0, True),
        "decode b1 fp32 / bandwidth floor": (1.2, 1.5, True),  # lower is better
        "decode b1 bf16 / bandwidth floor": (1.6, 1.5, False),
        "peak RSS fp32 4x512 ours/ref": (0.75, 0.75, True),  # at the threshold counts as met
        "grad checkpointing activation cut 4x512": (1.9, 2.0, False),
        "grad checkpointing extra step time 4x512": (0.2, 0.4, True),
    }
    assert targets({}) == []


@pytest.mark.slow
@pytest.mark.xdist_group("benchmark")
def test_memory_child_process_runs_this_package_from_anywhere(tmp_path, monkeypatch):
    """The memory and allocator measurements re-invoke `python -m hf_gpt1.benchmarks.subprocesses`: from another
    directory and without PYTHONPATH the child still imports the parent's hf_gpt1 and reports one JSON row."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    row = subprocesses.run_child(["memory", "ours", "fp32", "1", "16", "1"])
    assert row["which"] == "ours" and row["dtype"] == "fp32" and row["shape"] == "1x16"
    assert row["peak_rss_mb"] >= row["static_rss_mb"] > 0 and row["step_s"] > 0


@pytest.mark.slow
@pytest.mark.xdist_group("benchmark")
def test_quick_generation_run_matches_the_reference_tokens_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--only", "generation", "--json", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["parity_max_abs_logit_diff"] < 1e-4
    assert results["machine"]["gemm_gflops_fp32"] > 0 and results["machine"]["copy_gbps"] > 0
    assert "training" not in results  # --only is honoured
    (row,) = results["generation"]
    assert row["batch"] == 1 and row["new_tokens"] == 32
    assert row["same_tokens_fp32"] is True  # cached decoding == the reference's full recomputation, token for token
    assert row["ratio_fp32"] > 0 and row["decode_floor_ms_bf16"] < row["decode_floor_ms_fp32"]
    # the floor uses the copy bandwidth measured between the decode runs: weight bytes / that bandwidth
    assert row["copy_gbps_during_decode"] > 0
    fp32_weight_bytes = 116_534_784 * 4 - 511 * 768 * 4  # 117M parameters; one position row read per decode step
    assert abs(row["decode_floor_ms_fp32"] - fp32_weight_bytes / row["copy_gbps_during_decode"] / 1e6) < 1e-6
    # what bf16 decoding ran on: the compiled kernels wherever the CPU has AVX512-BF16
    expected = "hf_gpt1::bf16_addmv + decode_block" if torch.cpu._is_avx512_bf16_supported() else "torch addmv + "
    assert row["bf16_decode_kernels"].startswith(expected)
    assert f"| (bf16 decode ran on: {row['bf16_decode_kernels']}) |" in run.stdout
    assert results["targets"] == [] and "Targets are judged on a full run only" in run.stdout  # quick shapes differ
    assert "| generation | ref fp32 (no cache) tok/s |" in run.stdout and "| decode b1 ms/token (floor) |" in run.stdout
