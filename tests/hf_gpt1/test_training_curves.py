"""hf_gpt1.training_curves: one PNG from Trainer's log history, for both stages."""

from __future__ import annotations

import math

from hf_gpt1.training_curves import plot_training_curves


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_fine_tuning_history(tmp_path):
    history = [{"loss": 6.0 - i * 0.1, "task_loss": 0.7, "lm_loss": 10.6 - i * 0.2, "step": i} for i in range(1, 6)]
    history += [{"eval_loss": 5.5, "eval_accuracy": 0.6, "eval_task_loss": 0.6, "eval_runtime": 1.2, "step": 5}]
    path = plot_training_curves(history, tmp_path / "c.png", title="t")
    assert _is_png(path)
    assert plot_training_curves([], tmp_path / "none.png") is None


def test_pretraining_history_and_atomic_write(tmp_path):
    """What a pretraining run's Trainer logs: validation at update 0, training windows, validation with perplexity,
    Trainer's end-of-run summary (no "loss" key, so not a point of the curve)."""
    history = [{"eval_loss": 10.6, "eval_perplexity": math.exp(10.6), "eval_model_preparation_time": 0.01, "step": 0}]
    history += [
        {"loss": 10.6 - i * 0.5, "learning_rate": 1e-3, "tokens_per_second": 7000.0, "step": 10 * i}
        for i in range(1, 7)
    ]
    history += [{"eval_loss": 7.5, "eval_perplexity": math.exp(7.5), "step": 60}]
    history += [{"train_runtime": 12.0, "train_loss": 8.9, "step": 60}]
    out = tmp_path / "run" / "loss_curve.png"
    assert plot_training_curves(history, out, title="GPT-1 pretraining") == out
    assert _is_png(out) and sorted(p.name for p in out.parent.iterdir()) == ["loss_curve.png"]  # no temporary left
