"""Input checks that run before any encoding work, so mistakes fail fast with a message that says
what is wrong and what was expected (task, split, column, offending values, allowed set).

Checks are column-wise on Arrow data (``Dataset.unique``, null counts, list lengths), so they cost
milliseconds even for SST-2's 67k rows, and they run in the main process where errors are readable
(not inside ``datasets.map`` workers).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from .specs import TaskSpec

__all__ = [
    "SpecialTokenIds",
    "TaskDataError",
    "TokenizerMismatchError",
    "check_dataset",
    "check_tokenizer",
    "column_to_numpy",
    "label_lookup",
]

_LOAD_HINT = (
    "Load the GPT-1 tokenizer with hf_gpt1.load_gpt1_tokenizer(path): it appends the paper's "
    "_start_/_delimiter_/_classify_ tokens and <pad> and frames inputs as "
    "'_start_ a _delimiter_ b _classify_'."
)


class TaskDataError(ValueError):
    """A dataset does not fit the task it is encoded for (columns, labels, empty split)."""


class TokenizerMismatchError(ValueError):
    """The tokenizer lacks GPT-1's special tokens or framing."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the paper's special tokens in a given tokenizer."""

    start: int
    delimiter: int
    extract: int
    pad: int


def check_tokenizer(tokenizer: Any) -> SpecialTokenIds:
    """Verify ``tokenizer`` is the fast GPT-1 tokenizer with start/delimiter/extract/pad tokens and
    the paper's framing; return their ids. Raises :class:`TokenizerMismatchError` otherwise."""
    if not getattr(tokenizer, "is_fast", False) or not callable(tokenizer):
        raise TokenizerMismatchError(
            f"task adapters need a fast (Rust) Hugging Face tokenizer, got {type(tokenizer).__name__}. {_LOAD_HINT}"
        )
    roles = {"bos_token": "start", "sep_token": "delimiter", "cls_token": "extract", "pad_token": "pad"}
    ids = {role: getattr(tokenizer, f"{attr}_id", None) for attr, role in roles.items()}
    missing = [f"{attr} ({role})" for attr, role in roles.items() if ids[role] is None]
    if missing:
        raise TokenizerMismatchError(f"tokenizer has no {', '.join(missing)} token. {_LOAD_HINT}")
    if len(set(ids.values())) != len(ids) or getattr(tokenizer, "unk_token_id", None) in ids.values():
        raise TokenizerMismatchError(f"tokenizer's special tokens are not distinct real tokens: {ids}. {_LOAD_HINT}")
    single = tokenizer("a")["input_ids"]
    pair = tokenizer("a", "b")["input_ids"]
    framed = (
        single[0] == ids["start"]
        and single[-1] == ids["extract"]
        and pair[0] == ids["start"]
        and pair[-1] == ids["extract"]
        and pair.count(ids["delimiter"]) == 1
    )
    if not framed:
        raise TokenizerMismatchError(
            f"tokenizer does not add the paper's framing (got {single} for 'a' and {pair} for ('a', 'b')). {_LOAD_HINT}"
        )
    return SpecialTokenIds(**ids)


def label_lookup(spec: TaskSpec) -> dict[Hashable, int]:
    """Raw label value → label id. Accepts the raw values, the label names, and the unlabeled
    marker (→ ``-1``). Empty for regression tasks."""
    if spec.is_regression:
        return {}
    values = spec.label_values if spec.label_values is not None else tuple(range(spec.num_labels))
    table: dict[Hashable, int] = {v: i for i, v in enumerate(values)}
    for i, name in enumerate(spec.label_names or ()):
        table.setdefault(name, i)
    if spec.unlabeled_value is not None:
        table[spec.unlabeled_value] = -1
    return table


def column_to_numpy(ds: Dataset, column: str) -> np.ndarray:
    """A column as a NumPy array, via Arrow (``ds[col]`` iterates rows in Python: ~40 s for 67k)."""
    return np.asarray(ds.with_format("arrow")[column])


def _where(spec: TaskSpec, split: str | None) -> str:
    return f"task {spec.name!r}" + (f", split {split!r}" if split else "")


def _rows(mask: np.ndarray, limit: int = 5) -> list[int]:
    return np.flatnonzero(mask)[:limit].tolist()


def check_dataset(ds: Dataset, spec: TaskSpec, split: str | None = None) -> None:
    """Raise :class:`TaskDataError` if ``ds`` cannot be encoded for ``spec``."""
    where = _where(spec, split)
    if len(ds) == 0:
        raise TaskDataError(f"{where}: the split is empty (0 rows); there is nothing to encode")
    missing = [c for c in spec.required_columns if c not in ds.column_names]
    if missing:
        raise TaskDataError(
            f"{where}: dataset is missing column(s) {missing}; {spec.name} expects columns "
            f"{list(spec.required_columns)}, the dataset has {ds.column_names}"
        )
    table = ds.with_format("arrow")
    for col in (*spec.text_columns, *spec.choice_columns):
        _check_text_column(table[col], col, where)
    if spec.choices_column:
        _check_choices_column(table[spec.choices_column], spec, where)
    if spec.is_regression:
        _check_regression_labels(ds, spec, where)
    else:
        _check_class_labels(ds, spec, where)


def _check_text_column(arr: pa.ChunkedArray | pa.Array, col: str, where: str) -> None:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TaskDataError(f"{where}: column {col!r} must hold strings, it holds {arr.type}")
    if arr.null_count:
        rows = _rows(np.asarray(arr.is_null()))
        raise TaskDataError(f"{where}: column {col!r} has {arr.null_count} missing (None) text(s), e.g. rows {rows}")


def _check_choices_column(arr: pa.ChunkedArray | pa.Array, spec: TaskSpec, where: str) -> None:
    col = spec.choices_column
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise TaskDataError(f"{where}: column {col!r} must hold a list of answers per row, it holds {arr.type}")
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), -1))
    bad = lengths != spec.num_choices
    if bad.any():
        rows = _rows(bad)
        raise TaskDataError(
            f"{where}: column {col!r} must hold exactly {spec.num_choices} answers per row; rows {rows} have "
            f"{lengths[rows].tolist()} (-1 = missing)"
        )
    flat = pc.list_flatten(arr)
    _check_text_column(flat, f"{col}[*]", where)


def _check_regression_labels(ds: Dataset, spec: TaskSpec, where: str) -> None:
    col = spec.label_column
    try:
        values = column_to_numpy(ds, col).astype(np.float64)
    except (TypeError, ValueError, pa.ArrowException):
        raise TaskDataError(f"{where}: regression label column {col!r} must hold numbers") from None
    if values.ndim != 1:
        raise TaskDataError(f"{where}: regression label column {col!r} must hold one number per row")
    nonfinite = ~np.isfinite(values)
    if nonfinite.any():
        rows = _rows(nonfinite)
        raise TaskDataError(
            f"{where}: label column {col!r} has {int(nonfinite.sum())} NaN/inf score(s) at rows {rows} "
            f"(values {values[rows].tolist()}); scores must be finite numbers"
            + (f" in [{spec.label_range[0]}, {spec.label_range[1]}]" if spec.label_range else "")
        )
    if spec.label_range is not None:
        low, high = spec.label_range
        outside = (values < low) | (values > high)
        if spec.unlabeled_value is not None:
            outside &= values != spec.unlabeled_value
        if outside.any():
            rows = _rows(outside)
            allowed = f"[{low}, {high}]" + (
                f" or {spec.unlabeled_value} (unlabeled)" if spec.unlabeled_value is not None else ""
            )
            raise TaskDataError(
                f"{where}: label column {col!r} has score(s) {sorted(set(values[outside].tolist()))[:10]} "
                f"outside the allowed range {allowed} (rows {rows})"
            )


def _check_class_labels(ds: Dataset, spec: TaskSpec, where: str) -> None:
    col = spec.label_column
    lookup = label_lookup(spec)
    uniques = ds.unique(col)
    bad = []
    for value in uniques:
        try:
            ok = value in lookup and not (isinstance(value, float) and math.isnan(value))
        except TypeError:  # unhashable (a list in the label column)
            ok = False
        if not ok:
            bad.append(value)
    if bad:
        allowed = list(spec.label_values if spec.label_values is not None else range(spec.num_labels))
        names = f" (names {list(spec.label_names)})" if spec.label_names else ""
        unl = f"; {spec.unlabeled_value!r} marks an unlabeled row" if spec.unlabeled_value is not None else ""
        raise TaskDataError(
            f"{where}: label column {col!r} has value(s) {sorted(bad, key=repr)[:10]} outside the label set; "
            f"allowed: {allowed}{names}{unl}"
        )
