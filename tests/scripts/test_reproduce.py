"""End to end: scripts/reproduce.py (the README's first command, `make demo`) at its `smoke` budget, in a real
subprocess, on the shared data. Two fine-tuning tasks (one classification, one multiple choice) keep it to a few
minutes; the quick/full budgets differ only in sizes. Proves the plumbing (pretrain → zero-shot curve → 3-variant
ablation → RESULTS.md, results.json and plots), not the paper's claim."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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

    # pretraining kept every checkpoint the zero-shot curve reads: 20 updates, one every 10
    assert sorted(p.name for p in (out / "pretrain").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    results = json.loads((docs / "results.json").read_text())
    assert [p["step"] for p in results["curve"]] == [0, 10, 20]
    for point in results["curve"]:
        assert 0.0 <= point["sst2_accuracy"] <= 1.0 and 0.0 <= point["story_cloze_accuracy"] <= 1.0
        assert -1.0 <= point["cola_mcc"] <= 1.0

    # every task x variant x seed ran once, with a real score, and its checkpoints were cleaned up
    runs = {(r["task"], r["variant"], r["seed"]): r["score"] for r in results["runs"]}
    variants = ("pretrained_lm0.5", "pretrained_lm0", "scratch_lm0.5")
    assert set(runs) == {(t, v, 0) for t in ("sst2", "story_cloze") for v in variants}
    assert all(0.0 <= score <= 1.0 for score in runs.values())
    assert not list((out / "finetune").rglob("*.safetensors"))
    assert set(results["timings"]) == {"pretraining", "zero-shot", "fine-tuning", "total"}

    report = (docs / "RESULTS.md").read_text(encoding="utf-8")
    assert "--budget smoke" in report and "Hardware:" in report
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
