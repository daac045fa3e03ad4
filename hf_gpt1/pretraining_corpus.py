"""The pretraining corpus: text files or a `datasets` dataset -> cleaned text -> BPE ids -> windows.

`prepare_corpus` runs the pipeline: `resolve_corpus` finds the source, `tokenize_documents` encodes it with
`datasets.map` (cached on disk), `pack_token_stream` writes one flat token stream (a memory-mapped `.npy`), and
`split_windows`/`PackedWindows` cut it into contiguous `block_size` windows, the last `val_fraction` of which are
held out. The paper trains on "contiguous sequences of 512 tokens" drawn from long books, so documents are
concatenated and windows cross document boundaries.

Text conventions (documented here because they decide what the model sees):

* Files are read as UTF-8. A byte-order mark is stripped and CRLF/CR line ends become LF. A file that is not
  valid UTF-8 is an error naming the file and the byte offset (training on a silently partial corpus is worse
  than stopping); `on_decode_error="skip"` (`--skip-undecodable-files`) skips such files with a warning.
* Project Gutenberg `*** START OF ...` / `*** END OF ...` marker lines are dropped together with anything before
  the START marker and after the END marker (the PG header and licence, when a file still has them).
* Paragraphs are separated by blank lines; the hard-wrapped lines inside a paragraph are joined with spaces
  (line breaks inside a paragraph are typesetting, not content). Every paragraph is followed by the BPE newline
  token `"\\n</w>"` (id 40477): the GPT-1 tokenizer's normaliser erases line breaks, and the original GPT-1 text
  pipeline (`text_utils.text_standardize`) turned them into that token. Documents therefore end with it too, so it
  is also the document separator. A vocabulary without that token gets no separator.
* Like the original pipeline (`ftfy.fix_text` with its default `uncurl_quotes`, then `text_standardize`), curly
  quotes become straight quotes and dashes/ellipses/acute accents are mapped to ASCII; without this ~1% of a
  typical novel's tokens are `<unk>` (the GPT-1 BPE has no curly quotes). `standardize=False` switches it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .pretraining import PretrainingError
from .tokenization_gpt1 import standardize_text

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase


logger = logging.getLogger(__name__)


class CorpusError(PretrainingError):
    """The corpus cannot be read, is empty, or is too small for the requested windows."""


# ----------------------------------------------------------------------------------------------------------------------
# Text cleaning
# ----------------------------------------------------------------------------------------------------------------------

_BOM = "\ufeff"
_GUTENBERG_MARKER = re.compile(r"^\s*\*\*\*\s*(START|END) OF\b.*$", re.IGNORECASE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n")
# Bump when cleaning/tokenisation changes what a corpus turns into, so cached token streams are rebuilt.
TEXT_PIPELINE_VERSION = "1"


def clean_text(text: str) -> str:
    """Undo file-format noise: a leading BOM, CRLF/CR line ends, and Gutenberg START/END markers.

    With a START marker everything up to and including it goes (the PG header); with an END marker everything
    from it on goes (the PG licence). Files without markers are left as they are.
    """
    if text.startswith(_BOM):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    markers = [(i, m.group(1).upper()) for i, line in enumerate(lines) if (m := _GUTENBERG_MARKER.match(line))]
    if markers:
        starts = [i for i, kind in markers if kind == "START"]
        first = starts[0] + 1 if starts else 0
        ends = [i for i, kind in markers if kind == "END" and i >= first]
        last = ends[0] if ends else len(lines)
        lines = [line for line in lines[first:last] if not _GUTENBERG_MARKER.match(line)]
    return "\n".join(lines)


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each with its hard-wrapped lines joined by single spaces."""
    paragraphs = []
    for block in _PARAGRAPH_BREAK.split(text):
        joined = " ".join(line.strip() for line in block.split("\n") if line.strip())
        if joined:
            paragraphs.append(joined)
    return paragraphs


def read_text_file(path: str | os.PathLike, on_decode_error: str = "error") -> str | None:
    """The text of a corpus file, decoded as UTF-8 (BOM allowed). Returns None for a skipped undecodable file.

    on_decode_error: "error" raises `CorpusError` naming the file and the offending byte; "skip" logs a warning
    and returns None.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        where = f"{path}: byte 0x{data[error.start]:02x} at offset {error.start} (line {line}) is not valid UTF-8"
        if on_decode_error == "skip":
            logger.warning(f"Skipping corpus file {where}.")
            return None
        raise CorpusError(
            f"Corpus file {where}. The corpus must be UTF-8 text; convert the file (e.g. `iconv -f latin1 -t utf-8`) "
            f"or pass --skip-undecodable-files to skip such files with a warning."
        ) from None


def newline_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Id of the GPT-1 BPE newline token `"\\n</w>"` (40477), or None if the vocabulary lacks it."""
    token_id = tokenizer.get_vocab().get("\n</w>")
    return int(token_id) if token_id is not None else None


def encode_document(
    text: str, tokenizer: PreTrainedTokenizerBase, separator_id: int | None, standardize: bool = True
) -> list[int]:
    """Plain BPE ids of one document: each paragraph's ids followed by `separator_id` (if not None)."""
    paragraphs = split_paragraphs(clean_text(text))
    if standardize:
        paragraphs = [standardize_text(p) for p in paragraphs]
    if not paragraphs:
        return []
    ids: list[int] = []
    # verbose=False: paragraphs longer than model_max_length are fine here (they are packed, not fed whole)
    for paragraph_ids in tokenizer(paragraphs, add_special_tokens=False, verbose=False)["input_ids"]:
        if paragraph_ids:
            ids.extend(paragraph_ids)
            if separator_id is not None:
                ids.append(separator_id)
    return ids


# ----------------------------------------------------------------------------------------------------------------------
# Corpus sources
# ----------------------------------------------------------------------------------------------------------------------

_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass
class CorpusSource:
    """What `--corpus` resolved to: text files, or a `datasets.Dataset` with a text column.

    `fingerprint` identifies the content cheaply (paths + sizes + mtimes, or the dataset's own fingerprint) so
    the tokenised cache and the resume check can tell corpora apart without reading them.
    """

    description: str
    fingerprint: str
    files: list[Path] | None = None
    root: Path | None = None
    dataset: Any = None  # datasets.Dataset
    text_column: str | None = None
    hub_dataset: str | None = None  # the dataset id, when `--corpus` was one (for the model card's `datasets`)


def corpus_paragraphs(source: CorpusSource, on_decode_error: str = "error") -> Iterator[str]:
    """The corpus as the tokenizer will see it, one cleaned paragraph at a time (to train a BPE on)."""
    if source.files is not None:
        for path in source.files:
            yield from split_paragraphs(clean_text(read_text_file(path, on_decode_error) or ""))
    else:
        for text in source.dataset[source.text_column]:
            yield from split_paragraphs(clean_text(text or ""))


def corpus_bpe_tokenizer(
    source: CorpusSource, vocab_size: int, cache_dir: Path, *, standardize: bool = True, on_decode_error: str = "error"
) -> PreTrainedTokenizerBase:
    """A preset's BPE learned on the corpus (`train_gpt1_bpe`), cached in `cache_dir` under the corpus fingerprint.

    The cache matters beyond speed: a resumed run (or another process) reads the very vocabulary the run started
    with, even one learned by an older `train_gpt1_bpe` (whose ids of tied merges varied between trainings).
    """
    from .bpe_training import train_gpt1_bpe
    from .tokenization_gpt1 import load_gpt1_tokenizer

    key = _hash([source.fingerprint, vocab_size, standardize, on_decode_error, TEXT_PIPELINE_VERSION])
    folder = cache_dir / f"bpe-{vocab_size}-{key}"
    if (folder / "tokenizer.json").is_file():
        return load_gpt1_tokenizer(folder)
    tokenizer = train_gpt1_bpe(corpus_paragraphs(source, on_decode_error), vocab_size, standardize=standardize)
    staging = cache_dir / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)  # atomic: a reader sees the whole tokenizer or none
    logger.info(f"Trained a {tokenizer.vocab_size}-token BPE on {source.description} -> {folder}")
    return tokenizer


def find_text_files(folder: Path) -> list[Path]:
    """Every `*.txt` under `folder` (recursively), sorted by relative path so the order is platform-independent."""
    return sorted((p for p in folder.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def _hash(parts: Iterable[Any]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _files_fingerprint(files: Sequence[Path], root: Path) -> str:
    entries = []
    for path in files:
        stat = path.stat()
        entries.append(
            [path.relative_to(root).as_posix() if path != root else path.name, stat.st_size, stat.st_mtime_ns]
        )
    return _hash(["files", entries])


def resolve_corpus(
    corpus: str,
    *,
    text_column: str = "text",
    dataset_split: str = "train",
    dataset_config: str | None = None,
    revision: str | None = None,
) -> CorpusSource:
    """Turn `--corpus` into a `CorpusSource`.

    * an existing file: that one text file (any extension);
    * an existing folder saved with `datasets.save_to_disk` (it has `dataset_info.json` / `state.json` /
      `dataset_dict.json`): loaded with `datasets.load_from_disk`;
    * any other existing folder: every `*.txt` below it, recursively;
    * anything else: a dataset id for `datasets.load_dataset` (Hub id or a local loading script/folder).
    A `DatasetDict` is narrowed to `dataset_split`; the text comes from `text_column`.
    """
    path = Path(corpus).expanduser()
    if path.is_file():
        return CorpusSource(
            description=f"text file {path}", fingerprint=_files_fingerprint([path], path), files=[path], root=path
        )
    if path.is_dir():
        if any((path / marker).is_file() for marker in _SAVED_DATASET_MARKERS):
            import datasets

            loaded = datasets.load_from_disk(str(path))
            return _dataset_source(loaded, f"dataset saved at {path}", text_column, dataset_split)
        files = find_text_files(path)
        if not files:
            raise CorpusError(
                f"Corpus folder {path} contains no *.txt files (searched recursively). Expected a folder of UTF-8 "
                f"text files, a single text file, a folder written by datasets' save_to_disk, or a dataset id."
            )
        return CorpusSource(
            description=f"{len(files)} text file(s) under {path}",
            fingerprint=_files_fingerprint(files, path),
            files=files,
            root=path,
        )
    # Hub ids are "name" or "owner/name"; anything path-like that does not exist is a typo, not a dataset id
    looks_local = (
        corpus.startswith((".", "/", "~"))
        or corpus.count("/") > 1
        or "\\" in corpus
        or path.suffix in (".txt", ".text", ".md")
    )
    if looks_local:
        raise CorpusError(
            f"Corpus {corpus!r} does not exist. Expected a text file, a folder of *.txt files, a folder written by "
            f"datasets' save_to_disk, or a dataset id such as 'user/name'."
        )
    import datasets

    try:
        loaded = datasets.load_dataset(corpus, dataset_config, split=dataset_split, revision=revision)
    except Exception as error:  # datasets raises many types (FileNotFoundError, ConnectionError, DatasetNotFoundError)
        raise CorpusError(
            f"Could not load dataset {corpus!r} (config={dataset_config!r}, split={dataset_split!r}): "
            f"{type(error).__name__}: {error}. Check the id, --dataset-config/--dataset-split, network access and "
            f"HF_DATASETS_OFFLINE, or pass a local text file/folder."
        ) from error
    source = _dataset_source(loaded, f"dataset {corpus!r} (split {dataset_split!r})", text_column, dataset_split)
    source.hub_dataset = corpus
    return source


def _dataset_source(loaded: Any, description: str, text_column: str, dataset_split: str) -> CorpusSource:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if dataset_split not in loaded:
            raise CorpusError(
                f"The {description} has splits {sorted(loaded)}, not {dataset_split!r}; pick one with --dataset-split."
            )
        loaded = loaded[dataset_split]
        description = f"{description}, split {dataset_split!r}"
    if not isinstance(loaded, datasets.Dataset):
        raise CorpusError(
            f"The {description} is a {type(loaded).__name__}; pretrain.py needs a map-style datasets.Dataset."
        )
    if text_column not in loaded.column_names:
        raise CorpusError(
            f"The {description} has no column {text_column!r}; its columns are {loaded.column_names}. "
            f"Name the text column with --text-column."
        )
    if len(loaded) == 0:
        raise CorpusError(f"The {description} is empty (0 rows).")
    return CorpusSource(
        description=description,
        fingerprint=_hash(["dataset", loaded._fingerprint, text_column]),
        dataset=loaded,
        text_column=text_column,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Tokenisation (datasets.map) and packing (flat memory-mapped token stream)
# ----------------------------------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the full serialised fast tokenizer (vocab, merges, normaliser, special tokens)."""
    return _hash(["tokenizer", tokenizer.backend_tokenizer.to_str()])


class _FileTokenizer:
    """`datasets.map` function: a batch of file paths -> one row of ids per readable file (picklable for num_proc)."""

    def __init__(self, tokenizer, separator_id: int | None, standardize: bool, on_decode_error: str):
        self.tokenizer, self.separator_id = tokenizer, separator_id
        self.standardize, self.on_decode_error = standardize, on_decode_error

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "source": []}
        for path in batch["path"]:
            text = read_text_file(path, self.on_decode_error)
            if text is None:
                continue
            out["input_ids"].append(encode_document(text, self.tokenizer, self.separator_id, self.standardize))
            out["source"].append(path)
        return out


class _TextTokenizer:
    """`datasets.map` function: a batch of texts (one document per row) -> ids."""

    def __init__(self, tokenizer, separator_id: int | None, standardize: bool):
        self.tokenizer, self.separator_id, self.standardize = tokenizer, separator_id, standardize

    def __call__(self, texts: list[str | None]) -> dict[str, list]:
        return {
            "input_ids": [encode_document(t or "", self.tokenizer, self.separator_id, self.standardize) for t in texts]
        }


def tokenize_documents(
    source: CorpusSource,
    tokenizer: PreTrainedTokenizerBase,
    cache_dir: Path,
    *,
    standardize: bool = True,
    on_decode_error: str = "error",
    num_proc: int | None = None,
) -> datasets.Dataset:
    """One row per document with its BPE ids (`int32` lists), computed by `datasets.map` and cached.

    The cache file is `cache_dir/tokenized-<key>.arrow`, keyed by the corpus fingerprint, the tokenizer, the
    text options and `TEXT_PIPELINE_VERSION`, so a resumed run (or a second run on the same corpus) reuses it.
    """
    import datasets

    separator_id = newline_token_id(tokenizer)
    key = _hash(
        [source.fingerprint, tokenizer_fingerprint(tokenizer), standardize, on_decode_error, TEXT_PIPELINE_VERSION]
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = str(cache_dir / f"tokenized-{key}.arrow")
    ids_feature = datasets.List(datasets.Value("int32"))
    num_proc = num_proc if num_proc and num_proc > 1 else None
    if source.files is not None:
        documents = datasets.Dataset.from_dict({"path": [str(p) for p in source.files]})
        return documents.map(
            _FileTokenizer(tokenizer, separator_id, standardize, on_decode_error),
            batched=True,
            batch_size=1,
            remove_columns=["path"],
            features=datasets.Features({"input_ids": ids_feature, "source": datasets.Value("string")}),
            cache_file_name=cache_file,
            new_fingerprint=key,
            num_proc=num_proc,
            desc="Tokenizing files",
        )
    dataset = source.dataset
    return dataset.map(
        _TextTokenizer(tokenizer, separator_id, standardize),
        batched=True,
        batch_size=256,
        input_columns=[source.text_column],
        remove_columns=dataset.column_names,
        features=datasets.Features({"input_ids": ids_feature}),
        cache_file_name=cache_file,
        new_fingerprint=key,
        num_proc=num_proc,
        desc="Tokenizing dataset",
    )


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the stream's size and covers GPT-1's 40,482 ids; larger vocabularies get int32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def pack_token_stream(tokenized: datasets.Dataset, path: Path, vocab_size: int) -> np.ndarray:
    """Concatenate every document's ids, in order, into one memory-mapped `.npy` at `path`; return it read-only.

    Written to a temporary name and renamed, so a concurrent or interrupted writer never leaves a truncated
    stream behind (several local processes may race to build it; they produce identical bytes). Memory use is
    one batch of documents, not the corpus: the `.npy` is filled in place.
    """
    if path.is_file():
        return np.load(path, mmap_mode="r")
    import pyarrow.compute as pc

    total = sum(int(pc.sum(pc.list_value_length(column)).as_py() or 0) for column in _id_columns(tokenized))
    if total == 0:  # nothing to map (an empty file cannot be memory-mapped); the caller reports the empty corpus
        return np.zeros(0, dtype=token_dtype(vocab_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    stream = np.lib.format.open_memmap(tmp, mode="w+", dtype=token_dtype(vocab_size), shape=(total,))
    offset = 0
    for column in _id_columns(tokenized):
        for chunk in column.chunks:
            values = chunk.flatten().to_numpy(zero_copy_only=False)
            stream[offset : offset + len(values)] = values
            offset += len(values)
    if offset != total:
        raise RuntimeError(f"packing wrote {offset} tokens, expected {total}")
    stream.flush()
    del stream
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _id_columns(tokenized: datasets.Dataset, batch_size: int = 1024):
    """The `input_ids` column as Arrow chunks, a batch of documents at a time (never the whole corpus in memory)."""
    for table in tokenized.with_format("arrow").iter(batch_size=batch_size):
        yield table.column("input_ids")


@dataclass(frozen=True)
class WindowSplit:
    """Window index ranges of the packed stream: train = [0, num_train), validation = [num_train, num_windows)."""

    num_tokens: int
    block_size: int
    num_windows: int
    num_train: int
    num_val: int

    @property
    def dropped_tokens(self) -> int:
        """The tail remainder shorter than one window: the only tokens packing discards."""
        return self.num_tokens - self.num_windows * self.block_size


def split_windows(num_tokens: int, block_size: int, val_fraction: float, *, source: str = "corpus") -> WindowSplit:
    """Cut `num_tokens` into `num_tokens // block_size` contiguous windows; the LAST ones are validation.

    The validation slice is the tail of the stream (deterministic, independent of seed and world size, and it
    works for a single-file corpus): `max(1, floor(val_fraction * windows))` windows when `val_fraction > 0`.
    Raises `CorpusError` stating tokens found vs needed when the corpus cannot fill one training window (plus
    one validation window when validation is on).
    """
    if block_size <= 1:
        raise ValueError(f"block_size must be at least 2 (one input and one target), got {block_size}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    needed_windows = 2 if val_fraction > 0 else 1
    num_windows = num_tokens // block_size
    if num_windows < needed_windows:
        what = "one training and one validation window" if val_fraction > 0 else "one training window"
        raise CorpusError(
            f"The {source} yields {num_tokens} tokens after tokenisation, but {needed_windows * block_size} are "
            f"needed for {what} of --block-size {block_size} tokens. Use more text, a smaller --block-size"
            f"{', or --val-fraction 0' if val_fraction > 0 else ''}."
        )
    num_val = max(1, int(num_windows * val_fraction)) if val_fraction > 0 else 0
    num_val = min(num_val, num_windows - 1)
    return WindowSplit(num_tokens, block_size, num_windows, num_windows - num_val, num_val)


class PackedWindows(torch.utils.data.Dataset):
    """Windows `[first, first + count)` of a flat token stream, each `block_size` consecutive tokens.

    Items are `{"input_ids": LongTensor[block_size], "labels": same values}`: GPT1ForCausalLM shifts the labels
    inside, as every HF causal LM does, so window i predicts its tokens 1..block_size-1.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, first: int, count: int):
        if (first + count) * block_size > len(tokens):
            raise ValueError(f"windows [{first}, {first + count}) x {block_size} exceed the {len(tokens)}-token stream")
        self.tokens, self.block_size, self.first, self.count = tokens, block_size, first, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = (self.first + index) * self.block_size
        ids = torch.from_numpy(np.asarray(self.tokens[start : start + self.block_size], dtype=np.int64))
        return {"input_ids": ids, "labels": ids.clone()}


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A fresh permutation per epoch from `seed + epoch`, independent of the global RNG and of the world size.

    Independence from the global RNG is what makes resume exact: dropout consumes the global RNG, and a sampler
    that shared it would shift every mask after a restart. Independence from the world size gives 1 process
    with batch 2B and 2 processes with batch B the same global batches (accelerate's `BatchSamplerShard` deals
    consecutive batches of one order round-robin to the ranks). Trainer sets the epoch (`set_epoch`, forwarded by
    accelerate's data loader, also to the loader that skips into the middle of an epoch on resume).

    `multiple_of` (the micro-batch over all processes) cuts each epoch's permutation to whole micro-batches, so
    every batch is full (as `drop_last` would, but for training only: validation keeps all its windows).
    """

    def __init__(self, num_samples: int, seed: int, multiple_of: int = 1):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0
        self.length = num_samples - num_samples % multiple_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_samples, generator=generator)[: self.length].tolist()


@dataclass
class PreparedCorpus:
    """The packed corpus: the token stream, its split, and the train/validation window datasets."""

    source: CorpusSource
    tokens: np.ndarray
    split: WindowSplit
    train: PackedWindows
    val: PackedWindows | None
    num_documents: int
    skipped_files: list[str] = field(default_factory=list)


def prepare_corpus(
    source: CorpusSource,
    tokenizer: PreTrainedTokenizerBase,
    cache_dir: Path,
    *,
    block_size: int,
    val_fraction: float,
    standardize: bool = True,
    on_decode_error: str = "error",
    num_proc: int | None = None,
) -> PreparedCorpus:
    """Tokenise (cached), pack into one stream (cached), cut into train/validation windows."""
    tokenized = tokenize_documents(
        source, tokenizer, cache_dir, standardize=standardize, on_decode_error=on_decode_error, num_proc=num_proc
    )
    skipped: list[str] = []
    if source.files is not None:
        kept = set(tokenized["source"])
        skipped = [str(p) for p in source.files if str(p) not in kept]
        if skipped:
            logger.warning(f"Skipped {len(skipped)} undecodable corpus file(s): {', '.join(skipped)}")
        if not kept:
            raise CorpusError(f"No readable text in the corpus ({source.description}): every file was skipped.")
    stream_key = _hash([tokenized._fingerprint, "stream", len(tokenizer)])
    tokens = pack_token_stream(tokenized, cache_dir / f"tokens-{stream_key}.npy", len(tokenizer))
    if len(tokens) == 0:
        raise CorpusError(
            f"The corpus ({source.description}) contains no text: 0 tokens after cleaning and tokenisation."
        )
    split = split_windows(len(tokens), block_size, val_fraction, source=f"corpus ({source.description})")
    train = PackedWindows(tokens, block_size, 0, split.num_train)
    val = PackedWindows(tokens, block_size, split.num_train, split.num_val) if split.num_val else None
    return PreparedCorpus(source, tokens, split, train, val, len(tokenized), skipped)


__all__ = [
    "CorpusError",
    "clean_text",
    "split_paragraphs",
    "read_text_file",
    "encode_document",
    "resolve_corpus",
    "tokenize_documents",
    "pack_token_stream",
    "split_windows",
    "PackedWindows",
    "EpochShuffleSampler",
    "prepare_corpus",
    "standardize_text",
]
