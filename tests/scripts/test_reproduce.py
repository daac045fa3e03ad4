"""End to end: scripts/reproduce.py (the README's first command, `make demo`) at its `smoke` budget, in a real
subprocess, on the shared data. Two fine-tuning tasks (one classification, one multiple choice) keep it to a few
minutes; the quick/full budgets differ only in sizes. Proves the plumbing (pretrain → zero-shot curve → 3-variant
ablation → RESULTS.md, results.json and plots), not the paper's claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "reproduce.py"

pytestmark = pytest.mark.slow


@pytest.mark.xdist_group("reproduce")
def test_smoke_budget_runs_end_to_end_and_reports(tmp_path, shared_data):
    out, docs = tmp_path / "runs", tmp_path / "docs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        str(SCRIPT),
        "--budget",
        "smoke",
        "--data-dir",
        str(shared_data),
        "--output-dir",
        str(out),
        "--docs-dir",
        str(docs),
        "--tasks",
        "sst2",
        "story_cloze",
        "--corpus",
        str(shared_data / "corpus" / "tinyshakespeare.txt"),
    ]
    run = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    # the smoke budget's BPE was trained on the given corpus, and pretraining used it
    from hf_gpt1 import GPT1Config, load_gpt1_tokenizer

    tokenizer = load_gpt1_tokenizer(out / "tokenizer")
    assert tokenizer.vocab_size <= 1000
    assert GPT1Config.from_pretrained(out / "pretrain").vocab_size == len(tokenizer)
    assert load_gpt1_tokenizer(out / "pretrain").get_vocab() == tokenizer.get_vocab()

    # pretraining kept every checkpoint the zero-shot curve reads: 20 updates, one every 10
    assert sorted(p.name for p in (out / "pretrain").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    results = json.loads((docs / "results.json").read_text())
    assert [p["step"] for p in results["curve"]] == [0, 10, 20]
    for point in results["curve"]:
        assert 0.0 <= point["sst2_accuracy"] <= 1.0 and 0.0 <= point["story_cloze_accuracy"] <= 1.0
        assert -1.0 <= point["cola_mcc"] <= 1.0
        for key in ("sst2_accuracy", "story_cloze_accuracy", "cola_mcc"):
            low, high = point[f"{key}_ci95"]
            assert low <= point[key] <= high
        assert point["examples"] == {"sst2": 24, "cola": 24, "story_cloze": 24}

    # every task x variant x seed ran once, with a real score, and its checkpoints were cleaned up
    runs = {(r["task"], r["variant"], r["seed"]): r["score"] for r in results["runs"]}
    variants = ("pretrained_lm0.5", "pretrained_lm0", "scratch_lm0.5")
    assert set(runs) == {(t, v, 0) for t in ("sst2", "story_cloze") for v in variants}
    assert all(0.0 <= score <= 1.0 for score in runs.values())
    assert not list((out / "finetune").rglob("*.safetensors"))
    assert set(results["timings"]) == {"pretraining", "zero-shot", "fine-tuning", "total"}

    report = (docs / "RESULTS.md").read_text(encoding="utf-8")
    assert "--budget smoke" in report and "Hardware:" in report and "Versions: transformers " in report
    # the claims are checked on the run's own numbers, one row each, with yes/no as they came out
    claims = results["claims"]
    assert {c["claim"] for c in claims} >= {
        "sst2: (a) beats (c) by more than twice the larger seed std",
        "average: (a) beats (c) by at least 5 points",
        "sst2: (a) accuracy ≥ 80.0",
        "story_cloze: (a) accuracy ≥ 62.0",
    }
    for claim in claims:
        assert f"| {claim['claim']} | {'yes' if claim['met'] else '**no**'} | {claim['numbers']} |" in report
    # one seed has no spread: the beyond-noise claim cannot be met with n=1
    assert not next(c for c in claims if c["claim"].startswith("sst2: (a) beats (c)"))["met"]
    for task in ("sst2 (accuracy)", "story_cloze (accuracy)"):
        assert f"| {task} |" in report
    assert f"{100 * runs[('sst2', 'pretrained_lm0', 0)]:.2f}" in report  # the table is the run's numbers
    for png in ("pretraining_loss.png", "zero_shot.png", "ablation.png"):
        assert (docs / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report

    # a second invocation reuses every finished run instead of training again
    again = subprocess.run(
        command + ["--skip-pretrain"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 0:" not in again.stdout  # no fine-tuning run was timed, i.e. none was started
    assert json.loads((docs / "results.json").read_text())["runs"] == results["runs"]


def test_the_committed_results_document_the_quick_budget_as_it_is():
    """docs/RESULTS.md (what README quotes) was generated by `make demo`'s budget exactly as the code defines it."""
    from hf_gpt1.reproduction import BUDGETS

    report = (REPO_ROOT / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    line = next(line for line in report.splitlines() if line.startswith("- Budget `quick`: "))
    documented = json.loads(line.split(": ", 1)[1].strip("`"))
    quick = asdict(BUDGETS["quick"])
    quick["seeds"] = list(quick["seeds"])
    assert documented == quick
    assert "python scripts/reproduce.py --budget quick" in report
    results = json.loads((REPO_ROOT / "docs" / "results.json").read_text(encoding="utf-8"))
    assert results["budget"] == documented
    # every claim row of the document is the results file's, as it came out
    for claim in results["claims"]:
        assert f"| {claim['claim']} | {'yes' if claim['met'] else '**no**'} | {claim['numbers']} |" in report
