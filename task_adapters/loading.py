"""``load_task``: one call that returns a task's data in its Hub layout, from the Hub or local files.

Why one function for both sources: fine-tuning code (and the tests) should not care whether the
data came from ``datasets.load_dataset("nyu-mll/glue", "sst2")`` or from a GLUE download on disk;
either way the result has the same splits, column names and ``ClassLabel`` names, so the same
adapter encodes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, DatasetDict, Value, load_dataset

from .registry import get_task_spec
from .specs import TaskSpec
from .validation import column_to_numpy

__all__ = ["load_task"]

logger = logging.getLogger(__name__)


def load_task(
    name: str | TaskSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split_val: bool = False,
    **options: Any,
) -> DatasetDict:
    """Load a registered task as a ``datasets.DatasetDict`` with the Hub version's layout.

    Args:
        name: Task name or alias (see ``list_tasks()``), or a ``TaskSpec``.
        data_dir: ``None`` → download with ``datasets.load_dataset(spec.hub_path, spec.hub_config)``.
            Otherwise read the task's original files from this folder (GLUE: the GLUE root or the
            task folder, e.g. ``glue_data/`` or ``glue_data/SST-2``; Story Cloze: the folder with
            the spring-2016 CSVs). Splits whose files are absent are skipped (QNLI dev only → just
            ``validation``).
        split_val: Carve ``train``/``validation`` out of the ``validation`` split with the task's
            ``val_split`` recipe. Story Cloze: the original GPT-1 split of the 1,871 validation
            stories into 1,497 train / 374 validation (``train_test_split(test_size=374,
            random_state=3535999445)``); ``test`` stays untouched.
        **options: Passed to the local reader (e.g. ``rebuild_from_msr=True`` for MRPC,
            ``files={...}``, ``levels=("high",)`` for RACE) or, without ``data_dir``, to
            ``datasets.load_dataset`` (``cache_dir=``, ``revision=`` …).

    Returns:
        The splits of the task. Label ids and names equal the Hub's; unlabeled test rows have
        label ``-1``. For tasks with ``drop_unlabeled`` (SNLI) rows without a gold label are
        removed and the number removed is logged.
    """
    spec = get_task_spec(name)
    if split_val and spec.val_split is None:
        raise ValueError(f"task {spec.name!r} defines no val_split recipe; split_val=True is not available")
    if data_dir is None:
        if spec.hub_path is None:
            raise ValueError(
                f"task {spec.name!r} cannot be downloaded from the Hub automatically; pass data_dir=... "
                f"{spec.download_hint}".strip()
            )
        loaded = load_dataset(spec.hub_path, spec.hub_config, **options)
        if not isinstance(loaded, DatasetDict):  # e.g. split=... was passed
            raise TypeError("load_task returns all splits; do not pass split=... (index the result instead)")
        data = _align_hub_features(loaded, spec)
    else:
        if spec.local_loader is None:
            raise ValueError(f"task {spec.name!r} has no local file reader; load it from the Hub (data_dir=None)")
        data = spec.local_loader(Path(data_dir), spec, **options)
        if not isinstance(data, DatasetDict) or not data:
            raise FileNotFoundError(f"task {spec.name!r}: no data files found in {str(data_dir)!r}")
    if spec.drop_unlabeled:
        data = _drop_unlabeled(data, spec)
    if split_val:
        data = _split_validation(data, spec)
    return data


def _align_hub_features(data: DatasetDict, spec: TaskSpec) -> DatasetDict:
    """Store string labels as ``ClassLabel`` (SciTail's ``tsv_format`` ships ``entails``/``neutral``
    strings) so every task carries label names in its features."""
    out = {}
    for split, ds in data.items():
        feat = ds.features.get(spec.label_column)
        if (
            spec.label_names
            and spec.label_values is None
            and isinstance(feat, Value)
            and feat.dtype in ("string", "large_string")
        ):
            ds = ds.cast_column(spec.label_column, ClassLabel(names=list(spec.label_names)))
        out[split] = ds
    return DatasetDict(out)


def _drop_unlabeled(data: DatasetDict, spec: TaskSpec) -> DatasetDict:
    marker = spec.unlabeled_value
    out = {}
    for split, ds in data.items():
        labels = column_to_numpy(ds, spec.label_column)
        keep = np.flatnonzero(labels != marker)
        dropped = len(ds) - len(keep)
        if dropped:
            logger.warning(
                "%s/%s: dropped %d of %d rows without a gold label (label %r)",
                spec.name,
                split,
                dropped,
                len(ds),
                marker,
            )
            ds = ds.select(keep)
        out[split] = ds
    return DatasetDict(out)


def _split_validation(data: DatasetDict, spec: TaskSpec) -> DatasetDict:
    from sklearn.model_selection import train_test_split

    assert spec.val_split is not None  # checked by load_task before loading
    if "validation" not in data:
        raise ValueError(f"task {spec.name!r}: split_val=True needs a 'validation' split, got {list(data)}")
    if "train" in data:
        raise ValueError(f"task {spec.name!r}: split_val=True would replace the existing 'train' split")
    test_size, random_state = spec.val_split
    val = data["validation"]
    # Splitting row indices with the same random_state gives the same permutation as splitting the
    # parallel lists the original GPT-1 code passes, and keeps that code's row order.
    train_idx, val_idx = train_test_split(np.arange(len(val)), test_size=test_size, random_state=random_state)
    out = {"train": val.select(train_idx), "validation": val.select(val_idx)}
    out.update({k: v for k, v in data.items() if k not in out})
    return DatasetDict(out)
