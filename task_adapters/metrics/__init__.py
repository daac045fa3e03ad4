"""Offline GLUE-style metrics: the shipped ``evaluate`` module and a cached loader for it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import evaluate

__all__ = ["METRIC_SCRIPT", "load_metric"]

#: Path of the ``evaluate`` metric module; ``evaluate.load(str(METRIC_SCRIPT), config_name)``.
METRIC_SCRIPT: Path = Path(__file__).with_name("gpt1_glue.py")


@functools.cache
def load_metric(config_name: str) -> evaluate.EvaluationModule:
    """Load the shipped metric for ``config_name`` (e.g. ``"mrpc"`` or ``"accuracy_f1"``), no Hub access.

    Cached: ``evaluate.load`` copies and imports the module, which is wasted work on every eval
    step. ``evaluate`` is imported here, not at package import: it pulls in transformers'
    pipelines (seconds), which loading and encoding data do not need.
    """
    import evaluate

    return evaluate.load(str(METRIC_SCRIPT), config_name)
