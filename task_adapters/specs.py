"""Declarative task descriptions.

A :class:`TaskSpec` says everything the rest of the package needs to know about a task, so adding a
task is writing one frozen dataclass instead of a new code path: which of the paper's four input
transformations (Figure 1) it uses, which columns hold the texts and the label, what the labels
mean, which metric the benchmark reports, and where the data comes from (Hub or local files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

__all__ = ["LocalLoader", "TaskFamily", "TaskSpec"]


class TaskFamily(str, Enum):
    """The paper's four task families (§3.3). The family fixes the input transformation and shapes.

    - ``classification``: ``start text extract`` → one sequence per example, shape ``(seq,)``.
    - ``entailment``: ``start premise delim hypothesis extract`` → shape ``(seq,)``.
    - ``similarity``: both orderings ``start a delim b extract`` / ``start b delim a extract`` →
      shape ``(2, seq)``; the model adds the two final representations (no inherent order).
    - ``multiple_choice``: ``start context delim answer_k extract`` per answer → ``(choices, seq)``.
    """

    CLASSIFICATION = "classification"
    ENTAILMENT = "entailment"
    SIMILARITY = "similarity"
    MULTIPLE_CHOICE = "multiple_choice"


class LocalLoader(Protocol):
    """Reads a task from the files researchers actually have (e.g. the GLUE TSV download).

    Called as ``loader(data_dir, spec, **options)`` and returns a ``DatasetDict`` whose splits and
    columns match the task's Hub version.
    """

    def __call__(self, data_dir: Path, spec: TaskSpec, **options: Any) -> DatasetDict: ...


#: The metric sets the shipped ``evaluate`` module (``metrics/gpt1_glue.py``) knows, by config name.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "accuracy_f1": ("accuracy", "f1"),
    "matthews_correlation": ("matthews_correlation",),
    "pearson_spearmanr": ("pearson", "spearmanr"),
}


@dataclass(frozen=True)
class TaskSpec:
    """Everything about one task, declared once.

    Attributes:
        name: Canonical task name used by :func:`task_adapters.get_adapter` / ``load_task``.
        family: Which input transformation of the paper applies (:class:`TaskFamily`).
        text_columns: Text inputs. Classification: ``(text,)``; entailment ``(premise, hypothesis)``;
            similarity ``(a, b)``; multiple choice: the *context* columns, joined with a space in the
            given order (e.g. RACE ``("article", "question")``).
        label_column: Column holding the gold label (Hub name, e.g. ``label`` or ``answer``).
        label_names: Human-readable class names in label-id order (``ClassLabel`` names). For
            multiple choice they name the choices.
        label_values: Raw label values in label-id order when the data does not store ids
            ``0..n-1`` directly (RACE ``("A", "B", "C", "D")``, Story Cloze ``(1, 2)``). ``None``
            means the raw values are the ids.
        is_regression: ``True`` for real-valued targets (STS-B); labels become float32.
        label_range: Inclusive range for regression targets (STS-B ``(0.0, 5.0)``).
        choice_columns: Multiple choice: one column per answer (``ending0`` … ``ending3``).
        choices_column: Multiple choice: one list-valued column with all answers (RACE ``options``).
        num_choices: Multiple choice: answers per example (checked on every example).
        metric_config: Config of the shipped metric module (a key of ``METRIC_NAMES`` or a GLUE
            task name); decides what ``adapter.compute_metrics`` reports.
        hub_path, hub_config: ``datasets.load_dataset(hub_path, hub_config)`` when no ``data_dir``
            is given. ``hub_path=None`` means the data cannot be downloaded automatically.
        splits: Split names of the Hub version (local loaders use the same names).
        local_loader: Reads the task's original release files (see :class:`LocalLoader`).
        unlabeled_value: Label the Hub uses for unlabeled rows (GLUE test splits: ``-1``).
            Encoded as label ``-1``; ``None`` if the task has no unlabeled marker.
        drop_unlabeled: Remove unlabeled rows at load time (SNLI's "no gold label" pairs).
        val_split: ``(test_size, random_state)`` recipe for ``load_task(..., split_val=True)``:
            carve train/validation out of the ``validation`` split (Story Cloze's original
            1,497/374 split).
        context_truncation_side: Which end of over-long text is trimmed. Multiple-choice tasks
            trim the context only; ``"left"`` keeps the end of the context (the question / last
            sentences, adjacent to the answer) and drops the beginning of the passage.
        aliases: Other accepted names (``"sst-2"``, ``"rocstories"``).
        description: One line for ``list_tasks`` / docs.
        download_hint: Shown when ``hub_path`` is ``None`` and no ``data_dir`` was given.
    """

    name: str
    family: TaskFamily
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...] | None = None
    label_values: tuple[Hashable, ...] | None = None
    is_regression: bool = False
    label_range: tuple[float, float] | None = None
    choice_columns: tuple[str, ...] = ()
    choices_column: str | None = None
    num_choices: int | None = None
    metric_config: str = "accuracy"
    hub_path: str | None = None
    hub_config: str | None = None
    splits: tuple[str, ...] = ("train", "validation", "test")
    local_loader: LocalLoader | Callable[..., DatasetDict] | None = field(default=None, compare=False)
    unlabeled_value: int | float | None = -1
    drop_unlabeled: bool = False
    val_split: tuple[int, int] | None = None
    context_truncation_side: Literal["left", "right"] = "right"
    aliases: tuple[str, ...] = ()
    description: str = ""
    download_hint: str = ""

    def __post_init__(self) -> None:
        # Coerce lists to tuples so specs stay hashable/immutable even if written with lists.
        for name in ("text_columns", "label_names", "label_values", "choice_columns", "splits", "aliases"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "family", TaskFamily(self.family))
        self._check()

    def _check(self) -> None:
        problems: list[str] = []
        if not self.name or self.name != self.name.strip():
            problems.append("name must be a non-empty string without surrounding spaces")
        n_text = len(self.text_columns)
        if self.family is TaskFamily.CLASSIFICATION and n_text != 1:
            problems.append(f"classification takes exactly 1 text column, got {self.text_columns}")
        if self.family in (TaskFamily.ENTAILMENT, TaskFamily.SIMILARITY) and n_text != 2:
            problems.append(f"{self.family.value} takes exactly 2 text columns, got {self.text_columns}")
        if self.family is TaskFamily.MULTIPLE_CHOICE:
            if n_text < 1:
                problems.append("multiple_choice needs at least one context column")
            if bool(self.choice_columns) == bool(self.choices_column):
                problems.append("multiple_choice needs exactly one of choice_columns / choices_column")
            if self.choices_column and not self.num_choices:
                problems.append("choices_column needs num_choices")
            if self.choice_columns and self.num_choices not in (None, len(self.choice_columns)):
                problems.append("num_choices disagrees with choice_columns")
            if self.is_regression:
                problems.append("multiple_choice cannot be a regression task")
        elif self.choice_columns or self.choices_column:
            problems.append("choice_columns / choices_column only apply to multiple_choice")
        if self.is_regression:
            if self.label_names or self.label_values:
                problems.append("regression tasks have no label_names / label_values")
            if self.label_range is not None and not (
                math.isfinite(self.label_range[0])
                and math.isfinite(self.label_range[1])
                and self.label_range[0] <= self.label_range[1]
            ):
                problems.append(f"label_range must be finite (low, high), got {self.label_range}")
        elif self.family is not TaskFamily.MULTIPLE_CHOICE and not self.label_names:
            problems.append("classification tasks need label_names")
        if (
            self.label_values is not None
            and self.label_names is not None
            and len(self.label_values) != len(self.label_names)
        ):
            problems.append("label_values and label_names must have the same length")
        if self.metric_config not in METRIC_NAMES and self.metric_config not in _GLUE_METRIC_CONFIGS:
            known = sorted(METRIC_NAMES) + sorted(_GLUE_METRIC_CONFIGS)
            problems.append(f"unknown metric_config {self.metric_config!r}; known: {known}")
        if self.val_split is not None and len(self.val_split) != 2:
            problems.append("val_split is (test_size, random_state)")
        if self.context_truncation_side not in ("left", "right"):
            problems.append("context_truncation_side is 'left' or 'right'")
        if problems:
            raise ValueError(f"invalid TaskSpec {self.name!r}: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived properties
    @property
    def num_labels(self) -> int:
        """Width of the task head: classes, 1 for regression, or the number of choices."""
        if self.is_regression:
            return 1
        if self.family is TaskFamily.MULTIPLE_CHOICE:
            return self.num_choices or len(self.choice_columns)
        return len(self.label_names or ())

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Keys of the dict ``adapter.compute_metrics`` returns."""
        return METRIC_NAMES[_GLUE_METRIC_CONFIGS.get(self.metric_config, self.metric_config)]

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns a dataset must have to be encoded for this task."""
        cols = list(self.text_columns) + list(self.choice_columns)
        if self.choices_column:
            cols.append(self.choices_column)
        cols.append(self.label_column)
        return tuple(dict.fromkeys(cols))

    @property
    def id2label(self) -> dict[int, str]:
        """For ``GPT1Config(id2label=...)``: label id → name (empty for regression)."""
        return dict(enumerate(self.label_names or ()))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}


#: GLUE config names accepted by the metric module, mapped to the metric set they report (same as
#: ``evaluate.load("glue", name)``).
_GLUE_METRIC_CONFIGS: dict[str, str] = {
    "sst2": "accuracy",
    "mnli": "accuracy",
    "mnli_matched": "accuracy",
    "mnli_mismatched": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "hans": "accuracy",
    "mrpc": "accuracy_f1",
    "qqp": "accuracy_f1",
    "cola": "matthews_correlation",
    "stsb": "pearson_spearmanr",
}
