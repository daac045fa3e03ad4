"""The training-curve PNG of both stages, drawn from Trainer's log history (`trainer.state.log_history`, which a
resumed run restores from its checkpoint): losses on the left, evaluation metrics on the right."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = ""
) -> Path | None:
    """Loss curves (loss, task_loss, lm_loss, eval losses) and eval metrics (accuracy, F1, perplexity, ...) over
    optimizer steps, from `trainer.state.log_history`; written atomically (a temporary file renamed into place).

    Returns the path, or None when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if any(k.startswith("eval_") for k in e) and "step" in e]
    if not train and not evals:
        return None
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"loss": "C0", "task_loss": "C1", "lm_loss": "C2"}
    for key, colour in colours.items():
        points = [(e["step"], e[key]) for e in train if key in e]
        if points:
            ax_loss.plot(*zip(*points), "-", color=colour, alpha=0.8, label=f"train {key}")
    eval_loss_keys = sorted({k for e in evals for k in e if k.startswith("eval_") and k.endswith("loss")})
    for key in eval_loss_keys:
        points = [(e["step"], e[key]) for e in evals if key in e]
        part = next((p for p in ("task_loss", "lm_loss", "loss") if key.endswith(p)), None)
        ax_loss.plot(*zip(*points), "o--", color=colours.get(part), label=key)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("losses (L3 = task + λ·LM)" if any("task_loss" in e for e in train) else "losses")
    metric_keys = sorted(
        {
            k
            for e in evals
            for k, v in e.items()
            if k.startswith("eval_")
            and not k.endswith(("loss", "time", "per_second", "epoch"))
            and isinstance(v, (int, float))
        }
    )
    for key in metric_keys:
        points = [(e["step"], e[key]) for e in evals if key in e]
        ax_metric.plot(*zip(*points), "o-", label=key)
    ax_metric.set_xlabel("step")
    ax_metric.set_title("eval metrics")
    if metric_keys:
        ax_metric.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
