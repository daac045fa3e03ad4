"""Task adapters: the paper's input transformations for GLUE-style datasets.

GPT-1 (Radford et al. 2018, §3.3 / Figure 1) fine-tunes one pretrained transformer on many tasks by
rewriting structured inputs into token sequences framed by ``_start_`` / ``_delimiter_`` /
``_classify_`` (extract). This package does that for every task family of the paper::

    from hf_gpt1 import load_gpt1_tokenizer
    import task_adapters as ta

    tok = load_gpt1_tokenizer("path/to/gpt1-tokenizer")
    data = ta.load_task("sst2")                       # Hub; or ta.load_task("sst2", "glue_data/")
    adapter = ta.get_adapter("sst2")
    encoded = adapter.encode(data, tok, max_length=512)
    trainer = Trainer(..., data_collator=ta.GPT1DataCollator(tok),
                      compute_metrics=adapter.compute_metrics)

See ``task_adapters/README.md`` for the families, data formats and how to add a task.
"""

from typing import TYPE_CHECKING, Any

from .encoding import (
    OUTPUT_COLUMNS,
    ClassificationAdapter,
    EntailmentAdapter,
    MultipleChoiceAdapter,
    SimilarityAdapter,
    TaskAdapter,
    TruncationStats,
)
from .formats import DataFormatError
from .loading import load_task
from .metrics import METRIC_SCRIPT, load_metric
from .registry import UnknownTaskError, get_adapter, get_task_spec, list_tasks, register_task, unregister_task
from .specs import TaskFamily, TaskSpec
from .tasks import BUILTIN_TASKS
from .validation import TaskDataError, TokenizerMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from .collator import GPT1DataCollator


def __getattr__(name: str) -> Any:
    # PEP 562: the collator needs torch (seconds to import); loading and encoding data do not.
    if name == "GPT1DataCollator":
        from .collator import GPT1DataCollator

        return GPT1DataCollator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_TASKS",
    "METRIC_SCRIPT",
    "OUTPUT_COLUMNS",
    "ClassificationAdapter",
    "DataFormatError",
    "EntailmentAdapter",
    "GPT1DataCollator",
    "MultipleChoiceAdapter",
    "SimilarityAdapter",
    "TaskAdapter",
    "TaskDataError",
    "TaskFamily",
    "TaskSpec",
    "TokenizerMismatchError",
    "TruncationStats",
    "UnknownTaskError",
    "get_adapter",
    "get_task_spec",
    "list_tasks",
    "load_metric",
    "load_task",
    "register_task",
    "unregister_task",
]
