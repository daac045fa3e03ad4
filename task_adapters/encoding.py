"""Task adapters: turn a task's rows into GPT-1 model inputs, and score predictions.

The paper (§3.3, Figure 1) fine-tunes one pretrained model on every task by rewriting each input
as token sequences the model can read left-to-right:

====================  =========================================================  ==============
family                sequences per example                                      shape
====================  =========================================================  ==============
classification        ``start text extract``                                     ``(seq,)``
entailment            ``start premise delim hypothesis extract``                 ``(seq,)``
similarity            ``start a delim b extract`` and ``start b delim a extract`` ``(2, seq)``
multiple choice       ``start context delim answer_k extract`` for every k       ``(choices, seq)``
====================  =========================================================  ==============

The framing itself is the tokenizer's post-processor (``hf_gpt1.load_gpt1_tokenizer``); adapters
only decide *which* texts form each sequence, call the fast tokenizer on whole batches inside
``datasets.map``, and add what the model heads need:

- ``input_ids`` / ``attention_mask``;
- ``mc_token_ids``: position of the extract token in every sequence (its hidden state feeds the
  task head);
- ``labels``: class id, choice id, or float score (``-1`` for unlabeled rows, as on the Hub);
- ``lm_labels``: ``input_ids`` with ``-100`` on padding, for the auxiliary LM loss (the model
  shifts them itself, so the start position is kept as is).

Sequences longer than ``max_length`` are truncated *between* the special tokens, which always
survive: the longest segment is trimmed first (HF ``longest_first``), and for multiple choice only
the context (``only_first``) — an answer is never cut. How many examples were truncated is logged
and kept in ``adapter.last_truncation_stats``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

try:  # datasets >= 4
    from datasets import List as _ListFeature
except ImportError:  # pragma: no cover - datasets 3.x
    from datasets import Sequence as _ListFeature

from hf_gpt1.tokenization_gpt1 import standardize_text

from .metrics import load_metric
from .specs import TaskFamily, TaskSpec
from .validation import (
    SpecialTokenIds,
    TaskDataError,
    check_dataset,
    check_tokenizer,
    column_to_numpy,
    label_lookup,
)

__all__ = [
    "OUTPUT_COLUMNS",
    "ClassificationAdapter",
    "EntailmentAdapter",
    "MultipleChoiceAdapter",
    "SimilarityAdapter",
    "TaskAdapter",
    "TruncationStats",
    "adapter_for_spec",
]

logger = logging.getLogger(__name__)

#: Columns every encoded dataset has, in this order.
OUTPUT_COLUMNS: tuple[str, ...] = ("input_ids", "attention_mask", "mc_token_ids", "labels", "lm_labels")
LM_IGNORE_INDEX = -100
_TRUNC_COL = "_gpt1_num_truncated"
#: GPT-1 has 512 learned positions; longer inputs cannot be fed to the released model.
GPT1_MAX_POSITIONS = 512


@dataclass(frozen=True)
class TruncationStats:
    """How much of one split did not fit ``max_length``."""

    split: str
    num_examples: int
    num_truncated: int  # examples with at least one truncated sequence
    num_truncated_sequences: int
    max_length: int

    @property
    def fraction(self) -> float:
        return self.num_truncated / self.num_examples if self.num_examples else 0.0

    def __str__(self) -> str:
        return (
            f"{self.split}: {self.num_truncated} of {self.num_examples} examples "
            f"({self.fraction:.2%}; {self.num_truncated_sequences} sequences) truncated to max_length={self.max_length}"
        )


class TaskAdapter:
    """Encodes data and computes metrics for one task. Get one with ``task_adapters.get_adapter(name)``.

    Subclasses implement one family each: they say which (first, second) text pairs make up an
    example (:meth:`_pairs`) and how the sequences of one example are grouped.
    """

    families: ClassVar[tuple[TaskFamily, ...]] = ()
    #: Sequences per example; ``None`` = ``spec.num_choices``.
    group_size: ClassVar[int | None] = 1
    truncation_strategy: ClassVar[str] = "longest_first"

    def __init__(self, spec: TaskSpec) -> None:
        if spec.family not in self.families:
            raise ValueError(
                f"{type(self).__name__} handles {[f.value for f in self.families]}, not {spec.family.value}"
            )
        self.spec = spec
        self.last_truncation_stats: dict[str, TruncationStats] = {}
        self._labels = label_lookup(spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, family={self.spec.family.value!r})"

    def __getstate__(self) -> dict[str, Any]:
        # ``datasets.map`` fingerprints the encode function by pickling it (this adapter included):
        # leave the stats of earlier runs out, so re-encoding the same data hits the map cache.
        state = self.__dict__.copy()
        state["last_truncation_stats"] = {}
        return state

    # ------------------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_labels(self) -> int:
        """Width of the task head (classes; 1 for regression; choices for multiple choice)."""
        return self.spec.num_labels

    @property
    def sequences_per_example(self) -> int:
        return self.group_size if self.group_size is not None else int(self.spec.num_labels)

    # ------------------------------------------------------------------------------ encoding
    def encode(
        self,
        data: Dataset | DatasetDict | Mapping[str, Sequence[Any]],
        tokenizer: Any,
        max_length: int = 512,
        num_proc: int | None = None,
        *,
        batch_size: int = 1000,
        keep_columns: Sequence[str] = (),
        load_from_cache_file: bool | None = None,
        standardize: bool = True,
    ) -> Dataset | DatasetDict:
        """Encode a split (``Dataset``), all splits (``DatasetDict``) or a dict of columns.

        Args:
            data: Rows in the task's Hub layout (see ``load_task``).
            tokenizer: The GPT-1 fast tokenizer from ``hf_gpt1.load_gpt1_tokenizer``.
            max_length: Maximum tokens per sequence, special tokens included (GPT-1: 512).
            num_proc: Worker processes for ``datasets.map`` (``None`` = in-process; the Rust
                tokenizer still uses several threads per batch).
            batch_size: Rows per tokenizer call.
            keep_columns: Input columns to carry over (e.g. ``["idx"]`` for GLUE test
                submissions); all others are dropped so the result feeds a ``Trainer`` directly.
            load_from_cache_file: Passed to ``datasets.map``.
            standardize: Map curly quotes, dashes, ellipses and acute accents to ASCII before tokenizing
                (``hf_gpt1.tokenization_gpt1.standardize_text``), as the original GPT-1 code did for every
                text; the GPT-1 BPE has none of them, so without this they become ``<unk>``.

        Returns:
            Same container type as ``data`` with columns :data:`OUTPUT_COLUMNS` (+ ``keep_columns``).
            No padding between examples (the collator pads per batch); multiple-choice answers of
            one example are padded to a common length so each example is a ``(choices, seq)``
            array.

        Raises:
            TokenizerMismatchError: the tokenizer lacks the GPT-1 special tokens / framing.
            TaskDataError: missing columns, labels outside the label set, NaN/inf scores, empty
                split, missing texts.
            ValueError: a multiple-choice answer alone does not fit ``max_length``.
        """
        specials = check_tokenizer(tokenizer)
        minimum = tokenizer.num_special_tokens_to_add(pair=self._uses_pairs()) + 1
        if not isinstance(max_length, int) or max_length < minimum:
            raise ValueError(f"max_length must be an int >= {minimum} (special tokens + 1), got {max_length!r}")
        if max_length > GPT1_MAX_POSITIONS:
            logger.warning("max_length=%d exceeds GPT-1's %d positions", max_length, GPT1_MAX_POSITIONS)

        if isinstance(data, DatasetDict):
            splits = dict(data.items())
        elif isinstance(data, Dataset):
            splits = {str(data.split) if data.split is not None else "data": data}
        elif isinstance(data, Mapping):
            splits = {"data": Dataset.from_dict({k: list(v) for k, v in data.items()})}
        else:
            raise TypeError(f"encode takes a Dataset, DatasetDict or dict of columns, got {type(data).__name__}")
        for split, ds in splits.items():  # validate everything before doing any work
            check_dataset(ds, self.spec, split)
            absent = [c for c in keep_columns if c not in ds.column_names]
            if absent:
                raise TaskDataError(
                    f"task {self.name!r}, split {split!r}: keep_columns {absent} not in {ds.column_names}"
                )
            clash = [c for c in keep_columns if c in OUTPUT_COLUMNS]
            if clash:
                raise ValueError(f"keep_columns {clash} would collide with the encoded columns {OUTPUT_COLUMNS}")

        encoded: dict[str, Dataset] = {}
        stats: dict[str, TruncationStats] = {}
        for split, ds in splits.items():
            encoded[split], stats[split] = self._encode_split(
                ds,
                split,
                tokenizer,
                specials,
                max_length,
                num_proc,
                batch_size,
                tuple(keep_columns),
                load_from_cache_file,
                standardize,
            )
        self.last_truncation_stats = stats
        for st in stats.values():
            (logger.warning if st.num_truncated else logger.info)("%s %s", self.name, st)
        if isinstance(data, DatasetDict):
            return DatasetDict(encoded)
        return next(iter(encoded.values()))

    def _encode_split(
        self,
        ds: Dataset,
        split: str,
        tokenizer: Any,
        specials: SpecialTokenIds,
        max_length: int,
        num_proc: int | None,
        batch_size: int,
        keep_columns: tuple[str, ...],
        load_from_cache_file: bool | None,
        standardize: bool,
    ) -> tuple[Dataset, TruncationStats]:
        features = self.output_features()
        for col in keep_columns:
            features[col] = ds.features[col]
        features[_TRUNC_COL] = Value("int16")
        # The map function reads and writes Arrow tables: only the text/label columns are turned
        # into Python objects, kept columns are copied as they are, and outputs skip datasets'
        # per-value Python conversion.
        mapped = (
            ds.with_format("arrow")
            .map(
                self._encode_batch,
                batched=True,
                batch_size=batch_size,
                with_indices=True,
                num_proc=num_proc if num_proc and num_proc > 1 else None,
                fn_kwargs={
                    "tokenizer": tokenizer,
                    "max_length": max_length,
                    "pad_id": specials.pad,
                    "keep_columns": keep_columns,
                    "standardize": standardize,  # also part of datasets' cache fingerprint
                },
                remove_columns=list(ds.column_names),
                features=features,
                load_from_cache_file=load_from_cache_file,
                desc=f"GPT-1 encode {self.name}/{split}",
            )
            .with_format(None)
        )
        counts = column_to_numpy(mapped, _TRUNC_COL)
        mapped = mapped.remove_columns(_TRUNC_COL)
        stats = TruncationStats(
            split=split,
            num_examples=len(mapped),
            num_truncated=int((counts > 0).sum()),
            num_truncated_sequences=int(counts.sum()),
            max_length=max_length,
        )
        return mapped, stats

    def output_features(self) -> Features:
        """Arrow types of the encoded columns (int32 ids, int8 mask, like ``datasets``' defaults)."""
        ids: Any = _ListFeature(Value("int32"))
        mask: Any = _ListFeature(Value("int8"))
        position: Any = Value("int32")
        if self.group_size != 1:
            ids, mask, position = _ListFeature(ids), _ListFeature(mask), _ListFeature(position)
        if self.spec.is_regression:
            label: Any = Value("float32")
        else:
            label = (
                ClassLabel(names=list(self.spec.label_names))
                if self.spec.label_names
                else ClassLabel(num_classes=self.spec.num_labels)
            )
        return Features(
            {"input_ids": ids, "attention_mask": mask, "mc_token_ids": position, "labels": label, "lm_labels": ids}
        )

    # The batched ``datasets.map`` function (runs in worker processes when num_proc > 1).
    def _encode_batch(
        self,
        batch: pa.Table,
        indices: list[int],
        tokenizer: Any,
        max_length: int,
        pad_id: int,
        keep_columns: tuple[str, ...] = (),
        standardize: bool = True,
    ) -> pa.Table:
        columns = {c: batch.column(c).to_pylist() for c in self.spec.required_columns}
        firsts, seconds = self._pairs(columns)
        if standardize:
            firsts = [standardize_text(text) for text in firsts]
            seconds = None if seconds is None else [standardize_text(text) for text in seconds]
        ids, truncated = self._tokenize(tokenizer, firsts, seconds, max_length, indices)
        labels = self._encode_labels(columns[self.spec.label_column], indices)
        out = self._arrays(ids, pad_id)
        out["labels"] = pa.array(labels, type=pa.float32() if self.spec.is_regression else pa.int64())
        group = self.sequences_per_example
        out[_TRUNC_COL] = pa.array(
            truncated if group == 1 else [sum(truncated[i : i + group]) for i in range(0, len(truncated), group)],
            type=pa.int16(),
        )
        for col in keep_columns:
            out[col] = batch.column(col)
        return pa.table(out)

    def _arrays(self, ids: list[list[int]], pad_id: int) -> dict[str, pa.Array]:
        """Arrow columns for the token ids of all sequences of a batch (``group`` per example)."""
        group = self.sequences_per_example
        if group == 1:
            # No padding yet, so lm_labels == input_ids: convert once and share; the mask and the
            # extract positions come from the list offsets (~10x cheaper than Python lists).
            id_array = pa.array(ids, type=pa.list_(pa.int32()))
            offsets = id_array.offsets
            ones = pa.array(np.ones(len(id_array.values), dtype=np.int8))
            return {
                "input_ids": id_array,
                "attention_mask": pa.ListArray.from_arrays(offsets, ones),
                "mc_token_ids": pa.array(np.diff(offsets.to_numpy()) - 1, type=pa.int32()),
                "lm_labels": id_array,
            }
        # Several sequences per example: pad them to the example's longest, so each example is a
        # (group, seq) array (the collator pads across examples).
        cols: dict[str, list] = {"input_ids": [], "attention_mask": [], "mc_token_ids": [], "lm_labels": []}
        for start in range(0, len(ids), group):
            seqs = ids[start : start + group]
            width = max(len(s) for s in seqs)
            cols["input_ids"].append([s + [pad_id] * (width - len(s)) for s in seqs])
            cols["attention_mask"].append([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            cols["lm_labels"].append([s + [LM_IGNORE_INDEX] * (width - len(s)) for s in seqs])
            cols["mc_token_ids"].append([len(s) - 1 for s in seqs])
        nested = {"input_ids": pa.int32(), "attention_mask": pa.int8(), "lm_labels": pa.int32()}
        out = {k: pa.array(cols[k], type=pa.list_(pa.list_(t))) for k, t in nested.items()}
        out["mc_token_ids"] = pa.array(cols["mc_token_ids"], type=pa.list_(pa.int32()))
        return out

    def _tokenize(
        self, tokenizer: Any, firsts: list[str], seconds: list[str] | None, max_length: int, indices: list[int]
    ) -> tuple[list[list[int]], list[int]]:
        """Token ids of every (first, second) sequence, framed by the tokenizer's post-processor,
        and whether each one was truncated.

        Calls the tokenizer's Rust backend (``tokenizer.backend_tokenizer``) with the same
        truncation settings ``tokenizer(..., truncation=..., max_length=...)`` would install:
        for short texts the Python-side conversion inside ``PreTrainedTokenizer.__call__`` costs
        more than the tokenization itself (SST-2: up to ~2x slower). The backend state is
        restored afterwards.
        """
        backend = tokenizer.backend_tokenizer
        inputs: list[Any] = firsts if seconds is None else list(zip(firsts, seconds))
        with _backend_settings(backend, max_length, self.truncation_strategy, self.spec.context_truncation_side):
            try:
                encodings = backend.encode_batch_fast(inputs)
            except Exception as err:  # the Rust tokenizer raises a bare Exception on truncation errors
                if "truncat" not in str(err).lower():
                    raise
                raise self._truncation_error(tokenizer, firsts, seconds, max_length, indices) from err
        return [e.ids for e in encodings], [int(bool(e.overflowing)) for e in encodings]

    def _truncation_error(self, tokenizer, firsts, seconds, max_length, indices) -> ValueError:
        return ValueError(f"task {self.name!r}: cannot fit rows {indices[:5]}... into max_length={max_length}")

    def _encode_labels(self, values: list[Any], indices: list[int]) -> list[int] | list[float]:
        if self.spec.is_regression:
            return [float(v) for v in values]
        try:
            return [self._labels[v] for v in values]
        except (KeyError, TypeError):  # validated up front; only reachable if data changed under us
            bad = next(v for v in values if not _hashable_in(v, self._labels))
            raise TaskDataError(
                f"task {self.name!r}: label {bad!r} is not in the label set {list(self._labels)}"
            ) from None

    # ------------------------------------------------------------------------------ family hooks
    def _uses_pairs(self) -> bool:
        return len(self.spec.text_columns) > 1 or self.spec.family is not TaskFamily.CLASSIFICATION

    def _pairs(self, batch: Mapping[str, list]) -> tuple[list[str], list[str] | None]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ metrics
    @property
    def metric(self) -> Any:
        """The ``evaluate`` module for this task (shipped, works offline)."""
        return load_metric(self.spec.metric_config)

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        """``Trainer(compute_metrics=adapter.compute_metrics)``: scores an ``EvalPrediction``.

        Picks the task logits out of the model outputs (ignoring LM logits), takes the argmax for
        classification / multiple choice or squeezes the score for regression, drops unlabeled
        rows (label ``-1``), and returns the task's GLUE metrics (``spec.metric_names``).
        """
        predictions, label_ids = _unpack_eval_prediction(eval_pred)
        logits = np.asarray(self._select_logits(predictions, np))
        labels = self._select_label_ids(label_ids, len(logits))
        if self.spec.is_regression:
            preds = logits.reshape(len(logits)).astype(np.float32)
        else:
            preds = logits.argmax(axis=-1)
        mask = np.ones(len(labels), dtype=bool)
        if self.spec.unlabeled_value is not None:
            mask = labels != self.spec.unlabeled_value
        if not mask.any():
            raise ValueError(f"task {self.name!r}: no gold labels to score (all rows unlabeled, e.g. a test split)")
        return self.metric.compute(predictions=preds[mask], references=labels[mask])

    def preprocess_logits_for_metrics(self, logits: Any, labels: Any) -> Any:
        """``Trainer(preprocess_logits_for_metrics=...)``: keep only the task logits.

        Without it the Trainer accumulates the LM logits ``(n, seq, vocab)`` of the whole eval
        set in memory.
        """
        return self._select_logits(logits, None)

    def _expected_width(self) -> int:
        return 1 if self.spec.is_regression else self.spec.num_labels

    def _select_logits(self, predictions: Any, xp: Any) -> Any:
        """The task logits among the model outputs: the first array of shape ``(n, num_labels)``
        (``(n,)`` or ``(n, 1)`` for regression). LM logits are 3-D/4-D and never match."""
        width = self._expected_width()
        candidates = list(predictions) if isinstance(predictions, (tuple, list)) else [predictions]
        for cand in candidates:
            if cand is None:
                continue
            shape = tuple(cand.shape)
            if len(shape) == 2 and shape[1] == width:
                return cand
            if len(shape) == 1 and self.spec.is_regression:
                return cand
        shapes = [None if c is None else tuple(c.shape) for c in candidates]
        raise ValueError(
            f"task {self.name!r}: no model output has the task-logits shape (n, {width}); got shapes {shapes}"
        )

    def _select_label_ids(self, label_ids: Any, n: int) -> np.ndarray:
        if label_ids is None:
            raise ValueError(f"task {self.name!r}: no labels to score (the eval set is unlabeled)")
        candidates = list(label_ids) if isinstance(label_ids, (tuple, list)) else [label_ids]
        for cand in candidates:
            arr = np.asarray(cand)
            if arr.ndim == 1 and len(arr) == n:
                return arr
            if arr.ndim == 2 and arr.shape == (n, 1) and self.spec.is_regression:
                return arr[:, 0]
        raise ValueError(
            f"task {self.name!r}: no label array of shape ({n},) among {[np.shape(c) for c in candidates]}"
        )


@contextmanager
def _backend_settings(backend: Any, max_length: int, strategy: str, direction: str) -> Iterator[None]:
    """Truncate to ``max_length`` (special tokens kept), no padding, and text that happens to contain
    ``_start_`` / ``<pad>`` stays text (``encode_special_tokens``): special tokens come only from
    the post-processor, exactly one start and one extract per sequence. Restores the previous state."""
    old_truncation, old_padding = backend.truncation, backend.padding
    old_special = backend.encode_special_tokens
    backend.enable_truncation(max_length, stride=0, strategy=strategy, direction=direction)
    backend.no_padding()
    backend.encode_special_tokens = True
    try:
        yield
    finally:
        if old_truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**old_truncation)
        if old_padding is not None:
            padding = dict(old_padding)
            length = padding.pop("length", None)
            backend.enable_padding(length=length, **padding)
        backend.encode_special_tokens = old_special  # last: resetting truncation also resets this flag


def _unpack_eval_prediction(eval_pred: Any) -> tuple[Any, Any]:
    if hasattr(eval_pred, "predictions"):
        return eval_pred.predictions, eval_pred.label_ids
    predictions, label_ids = eval_pred  # a (predictions, labels) tuple
    return predictions, label_ids


def _hashable_in(value: Any, table: Mapping[Any, Any]) -> bool:
    try:
        return value in table
    except TypeError:
        return False


class ClassificationAdapter(TaskAdapter):
    """``start text extract`` — one sequence per example (CoLA, SST-2)."""

    families = (TaskFamily.CLASSIFICATION,)

    def _pairs(self, batch):
        (col,) = self.spec.text_columns
        return list(batch[col]), None


class EntailmentAdapter(TaskAdapter):
    """``start premise delim hypothesis extract`` — one sequence per example (MNLI, QNLI, RTE, …).

    Over-long pairs lose tokens from the longer of premise and hypothesis first (``longest_first``).
    """

    families = (TaskFamily.ENTAILMENT,)

    def _pairs(self, batch):
        a, b = self.spec.text_columns
        return list(batch[a]), list(batch[b])


class SimilarityAdapter(TaskAdapter):
    """Both orderings ``start a delim b extract`` / ``start b delim a extract`` → ``(2, seq)``.

    Similarity has no inherent order, so the paper encodes both and adds the two extract
    representations before the head (MRPC, QQP, STS-B). Both orderings have the same length.
    """

    families = (TaskFamily.SIMILARITY,)
    group_size = 2

    def _pairs(self, batch):
        a_col, b_col = self.spec.text_columns
        firsts: list[str] = []
        seconds: list[str] = []
        for a, b in zip(batch[a_col], batch[b_col]):
            firsts += (a, b)
            seconds += (b, a)
        return firsts, seconds


class MultipleChoiceAdapter(TaskAdapter):
    """``start context delim answer_k extract`` for each answer → ``(choices, seq)`` (RACE, Story
    Cloze, SWAG). The context is the task's context columns joined by spaces; only the context is
    ever truncated (``only_first``), from ``spec.context_truncation_side``."""

    families = (TaskFamily.MULTIPLE_CHOICE,)
    group_size = None
    truncation_strategy = "only_first"

    def _choices(self, batch) -> list[list[str]]:
        if self.spec.choices_column:
            return [list(c) for c in batch[self.spec.choices_column]]
        return [list(row) for row in zip(*(batch[c] for c in self.spec.choice_columns))]

    def _pairs(self, batch):
        contexts = [" ".join(parts) for parts in zip(*(batch[c] for c in self.spec.text_columns))]
        firsts: list[str] = []
        seconds: list[str] = []
        for context, answers in zip(contexts, self._choices(batch)):
            firsts += [context] * len(answers)
            seconds += answers
        return firsts, seconds

    def _truncation_error(self, tokenizer, firsts, seconds, max_length, indices) -> ValueError:
        # ``only_first`` must keep at least one context token (the Rust tokenizer refuses to empty
        # a truncated segment), so an answer fits only if it leaves room for 3 specials + 1 token.
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - 1
        plain = dict(add_special_tokens=False, split_special_tokens=True)
        answers = [len(x) for x in tokenizer(seconds, **plain)["input_ids"]]
        contexts = [len(x) for x in tokenizer(firsts, **plain)["input_ids"]]
        group = self.sequences_per_example
        for flat, (n_ans, n_ctx) in enumerate(zip(answers, contexts)):
            if n_ans + n_ctx + 3 > max_length and n_ans > room:
                return ValueError(
                    f"task {self.name!r}: answer {flat % group} of row {indices[flat // group]} has {n_ans} tokens, but "
                    f"max_length={max_length} leaves room for {room} once the 3 special tokens and at least 1 context "
                    "token are in; answers are never truncated (only the context is) - raise max_length or shorten "
                    "the answers"
                )
        return ValueError(f"task {self.name!r}: cannot fit rows {indices[:5]} into max_length={max_length}")


_ADAPTERS: dict[TaskFamily, type[TaskAdapter]] = {
    TaskFamily.CLASSIFICATION: ClassificationAdapter,
    TaskFamily.ENTAILMENT: EntailmentAdapter,
    TaskFamily.SIMILARITY: SimilarityAdapter,
    TaskFamily.MULTIPLE_CHOICE: MultipleChoiceAdapter,
}


def adapter_for_spec(spec: TaskSpec) -> TaskAdapter:
    """Instantiate the adapter class of ``spec.family``."""
    return _ADAPTERS[spec.family](spec)
