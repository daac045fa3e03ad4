"""Readers for the files researchers actually have on disk, producing the Hub's layout.

Each reader is a small frozen dataclass (so a :class:`~task_adapters.specs.TaskSpec` can declare it)
that is called as ``reader(data_dir, spec, **options)`` and returns a ``datasets.DatasetDict`` with
the *same* split names, column names, dtypes and ``ClassLabel`` names as the task's Hub version.
Rows are parsed in Python and turned into ``Dataset.from_dict(..., features=...)`` so the label
names travel with the data.

Formats:

- :class:`GlueTsv` — the output of GLUE's ``download_glue_data.py`` (``SST-2/train.tsv`` …). Read
  with ``csv.QUOTE_NONE`` (texts contain literal ``"``; default quoting merges lines) and
  ``utf-8-sig`` (MRPC starts with a BOM). CoLA's train/dev have no header. Test files have no
  label column → label ``-1`` like the Hub. ``idx`` is the row counter, as in the Hub version.
- :class:`MrpcTsv` — :class:`GlueTsv` plus ``rebuild_from_msr=True``: rebuild train/dev from
  ``msr_paraphrase_train.txt`` + ``dev_ids.tsv`` exactly like the GLUE script (3,668 train rows;
  some GLUE downloads have a ``train.tsv`` with 3,667).
- :class:`StoryClozeCsv` — the Story Cloze spring-2016 CSVs
  (``cloze_test_val__spring2016 - cloze_test_ALL_val.csv`` / ``…_test.csv``).
- :class:`SnliJsonl`, :class:`SciTailTsv`, :class:`RaceJson`, :class:`SwagCsv` — the original
  releases of SNLI 1.0, SciTail 1.1 (``tsv_format``), RACE, and SWAG (``swagaf/data``).

The file readers accept ``files={split: filename}`` to override file names (RACE reads folders).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, NamedSplit, Value

try:  # datasets >= 4
    from datasets import List as _ListFeature
except ImportError:  # pragma: no cover - datasets 3.x
    from datasets import Sequence as _ListFeature

from .specs import TaskSpec

__all__ = [
    "DataFormatError",
    "GlueTsv",
    "MrpcTsv",
    "RaceJson",
    "SciTailTsv",
    "SnliJsonl",
    "StoryClozeCsv",
    "SwagCsv",
    "read_mrpc_from_msr",
]

logger = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """A local data file does not look like the format it is read as (names file and line)."""


# ----------------------------------------------------------------------------- shared helpers
def _resolve_dir(data_dir: Path, subdirs: tuple[str, ...], files: Mapping[str, str]) -> Path:
    """Accept either the release root (``glue_data/``) or the task folder itself (``glue_data/SST-2``)."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {str(data_dir)!r} is not a directory")
    candidates = [data_dir / s for s in subdirs] + [data_dir]
    for cand in candidates:
        if any((cand / f).is_file() for f in files.values()):
            return cand
    tried = [str(c / f) for c in candidates for f in files.values()]
    raise FileNotFoundError("none of the expected data files exist; looked for:\n  " + "\n  ".join(tried))


def _present_files(folder: Path, files: Mapping[str, str], task: str) -> dict[str, Path]:
    present = {split: folder / name for split, name in files.items() if (folder / name).is_file()}
    missing = [name for split, name in files.items() if split not in present]
    if missing:
        logger.info("%s: no %s in %s; those splits are skipped", task, ", ".join(missing), folder)
    return present


def _label_feature(spec: TaskSpec) -> Any:
    if spec.is_regression:
        return Value("float32")
    return ClassLabel(names=list(spec.label_names or ()))


def _parse_label(raw: str, spec: TaskSpec, where: str) -> int | float:
    """GLUE stores labels as ints (``1``) or names (``entailment``); STS-B as a float score."""
    raw = raw.strip()
    if spec.is_regression:
        try:
            return float(raw)
        except ValueError:
            raise DataFormatError(f"{where}: score {raw!r} is not a number") from None
    names = spec.label_names or ()
    if raw in names:
        return names.index(raw)
    try:
        value = int(raw)
    except ValueError:
        raise DataFormatError(f"{where}: label {raw!r} is neither an id nor one of {list(names)}") from None
    if not 0 <= value < len(names):
        raise DataFormatError(f"{where}: label id {value} is outside 0..{len(names) - 1} ({list(names)})")
    return value


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields). QUOTE_NONE: a ``"`` inside a text is just a character."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_no, row in enumerate(reader, start=1):
            if not row:  # tolerate a blank trailing line
                continue
            yield line_no, row


def _make_dataset(columns: dict[str, list], features: Features, split: str) -> Dataset:
    return Dataset.from_dict(columns, features=features, split=NamedSplit(split))


# ----------------------------------------------------------------------------- GLUE TSV
GLUE_FILES: dict[str, str] = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
MNLI_FILES: dict[str, str] = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


@dataclass(frozen=True)
class GlueTsv:
    """One GLUE task folder as written by ``download_glue_data.py``.

    Attributes:
        folder: Task folder name inside the GLUE root (``"SST-2"``).
        columns: Hub column → source header name (or 0-based field index for header-less files).
        label: Source label column (header name or index); absent from test files.
        files: Split → file name.
        headerless: File names that have no header row (CoLA's ``train.tsv`` / ``dev.tsv``).
        test_columns: Hub column → header name in test files, when they differ from ``columns``.
    """

    folder: str
    columns: Mapping[str, str | int]
    label: str | int
    files: Mapping[str, str] = field(default_factory=lambda: dict(GLUE_FILES))
    headerless: frozenset[str] = frozenset()
    test_columns: Mapping[str, str] | None = None

    def features(self, spec: TaskSpec) -> Features:
        feats = {col: Value("string") for col in self.columns}
        feats["label"] = _label_feature(spec)
        feats["idx"] = Value("int32")
        return Features(feats)

    def __call__(self, data_dir: Path, spec: TaskSpec, *, files: Mapping[str, str] | None = None) -> DatasetDict:
        files = dict(files or self.files)
        folder = _resolve_dir(data_dir, (self.folder,), files)
        out = {}
        for split, path in _present_files(folder, files, spec.name).items():
            out[split] = self.read_file(path, split, spec)
        return DatasetDict(out)

    def read_file(self, path: Path, split: str, spec: TaskSpec) -> Dataset:
        return self._rows_to_dataset(self._parse(path, spec), split, spec)

    def _parse(self, path: Path, spec: TaskSpec) -> Iterator[tuple[dict[str, str], int | float]]:
        rows = _tsv_rows(path)
        columns: Mapping[str, str | int] = self.columns
        label: str | int | None = self.label
        if path.name in self.headerless:
            index = {c: int(src) for c, src in columns.items()}
            label_index: int | None = int(label)
            width = max([*index.values(), label_index]) + 1
        else:
            try:
                _, header = next(rows)
            except StopIteration:
                raise DataFormatError(f"{path}: file is empty (expected a header row)") from None
            pos = {name.strip(): i for i, name in enumerate(header)}
            if self.test_columns is not None and label not in pos:
                columns = self.test_columns
            missing = [src for src in columns.values() if src not in pos]
            if missing:
                raise DataFormatError(f"{path}: header {header} lacks column(s) {missing}")
            index = {c: pos[src] for c, src in columns.items()}
            label_index = pos.get(label)  # type: ignore[arg-type]  # None → unlabeled (test) file
            width = max([*index.values(), -1 if label_index is None else label_index]) + 1
        for line_no, row in rows:
            if len(row) < width:
                raise DataFormatError(
                    f"{path}:{line_no}: expected at least {width} tab-separated fields, got {len(row)} "
                    "(is the file quoted? GLUE TSVs must be read with quoting off)"
                )
            texts = {c: row[i] for c, i in index.items()}
            if label_index is None:
                yield texts, spec.unlabeled_value if spec.unlabeled_value is not None else -1
            else:
                yield texts, _parse_label(row[label_index], spec, f"{path}:{line_no}")

    def _rows_to_dataset(self, rows, split: str, spec: TaskSpec) -> Dataset:
        cols: dict[str, list] = {c: [] for c in self.columns}
        labels: list[int | float] = []
        for texts, label in rows:
            for c in cols:
                cols[c].append(texts[c])
            labels.append(label)
        cols["label"] = labels
        cols["idx"] = list(range(len(labels)))
        return _make_dataset(cols, self.features(spec), split)


def read_mrpc_from_msr(msr_train: Path, dev_ids: Path) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """Split ``msr_paraphrase_train.txt`` into GLUE train/dev rows with ``dev_ids.tsv``.

    Same logic as GLUE's ``download_glue_data.py`` (and the Hub's MRPC builder): a pair whose
    ``[#1 ID, #2 ID]`` is listed in ``dev_ids.tsv`` goes to dev, every other pair to train; lines
    are ``strip()``-ed then split on tabs. Returns ``(train_rows, dev_rows, header)``.
    """
    with open(dev_ids, encoding="utf-8-sig") as fh:
        ids = {tuple(line.strip().split("\t")) for line in fh if line.strip()}
    train: list[list[str]] = []
    dev: list[list[str]] = []
    with open(msr_train, encoding="utf-8-sig") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        for line_no, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 5:
                raise DataFormatError(f"{msr_train}:{line_no}: expected 5 fields, got {len(fields)}")
            (dev if (fields[1], fields[2]) in ids else train).append(fields)
    return train, dev, header


@dataclass(frozen=True)
class MrpcTsv(GlueTsv):
    """MRPC: GLUE TSVs, or (``rebuild_from_msr=True``) the GLUE script's split of the MSR source."""

    def __call__(
        self,
        data_dir: Path,
        spec: TaskSpec,
        *,
        files: Mapping[str, str] | None = None,
        rebuild_from_msr: bool = False,
    ) -> DatasetDict:
        if not rebuild_from_msr:
            return super().__call__(data_dir, spec, files=files)
        source = {"msr": "msr_paraphrase_train.txt", "ids": "dev_ids.tsv"}
        folder = _resolve_dir(data_dir, (self.folder,), source)
        for name in source.values():
            if not (folder / name).is_file():
                raise FileNotFoundError(f"rebuild_from_msr needs {folder / name}")
        train, dev, _ = read_mrpc_from_msr(folder / source["msr"], folder / source["ids"])
        out = {}
        for split, rows in (("train", train), ("validation", dev)):
            parsed = (
                ({"sentence1": r[3], "sentence2": r[4]}, _parse_label(r[0], spec, f"{source['msr']} ({split})"))
                for r in rows
            )
            out[split] = self._rows_to_dataset(parsed, split, spec)
        test_file = folder / dict(files or self.files).get("test", "test.tsv")
        if test_file.is_file():
            out["test"] = self.read_file(test_file, "test", spec)
        return DatasetDict(out)


# ----------------------------------------------------------------------------- Story Cloze
STORY_CLOZE_FILES: dict[str, str] = {
    "validation": "cloze_test_val__spring2016 - cloze_test_ALL_val.csv",
    "test": "cloze_test_test__spring2016 - cloze_test_ALL_test.csv",
}
_STORY_CLOZE_HEADER = (
    ("story_id", "InputStoryid"),
    ("input_sentence_1", "InputSentence1"),
    ("input_sentence_2", "InputSentence2"),
    ("input_sentence_3", "InputSentence3"),
    ("input_sentence_4", "InputSentence4"),
    ("sentence_quiz1", "RandomFifthSentenceQuiz1"),
    ("sentence_quiz2", "RandomFifthSentenceQuiz2"),
)


@dataclass(frozen=True)
class StoryClozeCsv:
    """The Story Cloze Test CSVs (standard quoted CSV) → the Hub ``story_cloze`` ``2016`` layout.

    Columns: ``story_id, input_sentence_1..4, sentence_quiz1, sentence_quiz2,
    answer_right_ending`` (int32, 1 or 2 as in the file; the adapter maps it to label 0/1).
    """

    files: Mapping[str, str] = field(default_factory=lambda: dict(STORY_CLOZE_FILES))
    subdirs: tuple[str, ...] = ("rocstories", "story_cloze")

    @staticmethod
    def features() -> Features:
        feats = {hub: Value("string") for hub, _ in _STORY_CLOZE_HEADER}
        feats["answer_right_ending"] = Value("int32")
        return Features(feats)

    def __call__(self, data_dir: Path, spec: TaskSpec, *, files: Mapping[str, str] | None = None) -> DatasetDict:
        files = dict(files or self.files)
        folder = _resolve_dir(data_dir, self.subdirs, files)
        return DatasetDict(
            {split: self.read_file(path, split) for split, path in _present_files(folder, files, spec.name).items()}
        )

    def read_file(self, path: Path, split: str) -> Dataset:
        cols: dict[str, list] = {hub: [] for hub, _ in _STORY_CLOZE_HEADER}
        cols["answer_right_ending"] = []
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{path}: file is empty")
            pos = {name.strip(): i for i, name in enumerate(header)}
            expected = [src for _, src in _STORY_CLOZE_HEADER] + ["AnswerRightEnding"]
            missing = [c for c in expected if c not in pos]
            if missing:
                raise DataFormatError(f"{path}: header lacks {missing}; expected {expected}")
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataFormatError(f"{path}:{line_no}: expected {len(header)} fields, got {len(row)}")
                for hub, src in _STORY_CLOZE_HEADER:
                    cols[hub].append(row[pos[src]])
                raw = row[pos["AnswerRightEnding"]].strip()
                if raw not in ("1", "2"):
                    raise DataFormatError(f"{path}:{line_no}: AnswerRightEnding {raw!r} is not 1 or 2")
                cols["answer_right_ending"].append(int(raw))
        return _make_dataset(cols, self.features(), split)


# ----------------------------------------------------------------------------- SNLI / SciTail
@dataclass(frozen=True)
class SnliJsonl:
    """SNLI 1.0 ``snli_1.0_{train,dev,test}.jsonl`` → Hub ``stanfordnlp/snli`` (premise, hypothesis, label).

    ``gold_label == "-"`` (no annotator majority) becomes label ``-1`` like on the Hub; the SNLI
    spec drops those rows at load time.
    """

    files: Mapping[str, str] = field(
        default_factory=lambda: {
            "train": "snli_1.0_train.jsonl",
            "validation": "snli_1.0_dev.jsonl",
            "test": "snli_1.0_test.jsonl",
        }
    )

    def __call__(self, data_dir: Path, spec: TaskSpec, *, files: Mapping[str, str] | None = None) -> DatasetDict:
        files = dict(files or self.files)
        folder = _resolve_dir(data_dir, ("snli_1.0", "SNLI"), files)
        features = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": _label_feature(spec)})
        names = list(spec.label_names or ())
        out = {}
        for split, path in _present_files(folder, files, spec.name).items():
            cols: dict[str, list] = {"premise": [], "hypothesis": [], "label": []}
            with open(path, encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                        gold = obj["gold_label"]
                        premise, hypothesis = obj["sentence1"], obj["sentence2"]
                    except (json.JSONDecodeError, KeyError) as err:
                        raise DataFormatError(f"{path}:{line_no}: not an SNLI record ({err})") from None
                    if gold != "-" and gold not in names:
                        raise DataFormatError(f"{path}:{line_no}: gold_label {gold!r} not in {names + ['-']}")
                    cols["premise"].append(premise)
                    cols["hypothesis"].append(hypothesis)
                    cols["label"].append(-1 if gold == "-" else names.index(gold))
            out[split] = _make_dataset(cols, features, split)
        return DatasetDict(out)


@dataclass(frozen=True)
class SciTailTsv:
    """SciTail 1.1 ``tsv_format/scitail_1.0_{train,dev,test}.tsv`` (premise, hypothesis, label; no header).

    Same columns as the Hub's ``allenai/scitail`` ``tsv_format`` config; the label (``entails`` /
    ``neutral``) is stored as a ``ClassLabel`` with those names.
    """

    files: Mapping[str, str] = field(
        default_factory=lambda: {
            "train": "scitail_1.0_train.tsv",
            "validation": "scitail_1.0_dev.tsv",
            "test": "scitail_1.0_test.tsv",
        }
    )

    def __call__(self, data_dir: Path, spec: TaskSpec, *, files: Mapping[str, str] | None = None) -> DatasetDict:
        files = dict(files or self.files)
        folder = _resolve_dir(data_dir, ("SciTailV1.1/tsv_format", "tsv_format"), files)
        features = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": _label_feature(spec)})
        out = {}
        for split, path in _present_files(folder, files, spec.name).items():
            cols: dict[str, list] = {"premise": [], "hypothesis": [], "label": []}
            for line_no, row in _tsv_rows(path):
                if len(row) != 3:
                    raise DataFormatError(f"{path}:{line_no}: expected 3 tab-separated fields, got {len(row)}")
                cols["premise"].append(row[0])
                cols["hypothesis"].append(row[1])
                cols["label"].append(_parse_label(row[2], spec, f"{path}:{line_no}"))
            out[split] = _make_dataset(cols, features, split)
        return DatasetDict(out)


# ----------------------------------------------------------------------------- RACE / SWAG
@dataclass(frozen=True)
class RaceJson:
    """RACE release: ``RACE/{train,dev,test}/{high,middle}/*.txt``, one JSON passage per file.

    Each question becomes one row in the Hub ``ehovy/race`` layout: ``example_id`` (file id),
    ``article``, ``answer`` (letter), ``question``, ``options`` (list of 4). ``levels`` picks the
    Hub config: ``("high", "middle")`` = ``all``.
    """

    split_dirs: Mapping[str, str] = field(
        default_factory=lambda: {"train": "train", "validation": "dev", "test": "test"}
    )

    @staticmethod
    def features() -> Features:
        return Features(
            {
                "example_id": Value("string"),
                "article": Value("string"),
                "answer": Value("string"),
                "question": Value("string"),
                "options": _ListFeature(Value("string")),
            }
        )

    def __call__(self, data_dir: Path, spec: TaskSpec, *, levels: tuple[str, ...] = ("high", "middle")) -> DatasetDict:
        root = Path(data_dir).expanduser()
        if (root / "RACE").is_dir():
            root = root / "RACE"
        out = {}
        for split, sub in self.split_dirs.items():
            paths = sorted(p for level in levels for p in (root / sub / level).glob("*.txt"))
            if not paths:
                continue
            cols: dict[str, list] = {k: [] for k in self.features()}
            for path in paths:
                try:
                    obj = json.loads(path.read_text(encoding="utf-8"))
                    qs, opts, answers = obj["questions"], obj["options"], obj["answers"]
                except (json.JSONDecodeError, KeyError) as err:
                    raise DataFormatError(f"{path}: not a RACE passage file ({err})") from None
                if not len(qs) == len(opts) == len(answers):
                    raise DataFormatError(f"{path}: questions/options/answers have different lengths")
                for q, o, a in zip(qs, opts, answers):
                    cols["example_id"].append(obj.get("id", path.name))
                    cols["article"].append(obj["article"])
                    cols["answer"].append(a)
                    cols["question"].append(q)
                    cols["options"].append(list(o))
            out[split] = _make_dataset(cols, self.features(), split)
        if not out:
            raise FileNotFoundError(f"no RACE passages under {root}/{{train,dev,test}}/{{{','.join(levels)}}}/*.txt")
        return DatasetDict(out)


_SWAG_COLUMNS = ("video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source")
_SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")


@dataclass(frozen=True)
class SwagCsv:
    """SWAG ``swagaf/data/{train,val,test}.csv`` → Hub ``allenai/swag`` ``regular`` config.

    The test file has no ``label`` column → label ``-1`` like on the Hub.
    """

    files: Mapping[str, str] = field(
        default_factory=lambda: {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}
    )

    @staticmethod
    def features(spec: TaskSpec) -> Features:
        feats: dict[str, Any] = {c: Value("string") for c in (*_SWAG_COLUMNS, *_SWAG_ENDINGS)}
        feats["label"] = ClassLabel(names=list(spec.label_names or ("0", "1", "2", "3")))
        return Features(feats)

    def __call__(self, data_dir: Path, spec: TaskSpec, *, files: Mapping[str, str] | None = None) -> DatasetDict:
        files = dict(files or self.files)
        folder = _resolve_dir(data_dir, ("swagaf/data", "data"), files)
        out = {}
        for split, path in _present_files(folder, files, spec.name).items():
            cols: dict[str, list] = {c: [] for c in (*_SWAG_COLUMNS, *_SWAG_ENDINGS, "label")}
            with open(path, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in (*_SWAG_COLUMNS, *_SWAG_ENDINGS) if c not in (reader.fieldnames or ())]
                if missing:
                    raise DataFormatError(f"{path}: header lacks {missing}")
                has_label = "label" in (reader.fieldnames or ())
                for line_no, row in enumerate(reader, start=2):
                    for c in (*_SWAG_COLUMNS, *_SWAG_ENDINGS):
                        cols[c].append(row[c] if row[c] is not None else "")
                    raw = (row.get("label") or "").strip() if has_label else ""
                    if raw == "":
                        label = -1
                    elif raw in ("0", "1", "2", "3"):
                        label = int(raw)
                    else:
                        raise DataFormatError(f"{path}:{line_no}: label {raw!r} is not 0-3")
                    cols["label"].append(label)
            out[split] = _make_dataset(cols, self.features(spec), split)
        return DatasetDict(out)
