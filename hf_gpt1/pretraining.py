"""Building blocks of `scripts/pretrain.py`: GPT-1's unsupervised pretraining stage (paper §3.1, §4.1).

The run that uses them is `hf_gpt1.pretraining_run` (on `transformers.Trainer`; the script only calls its `main`);
everything here is importable and tested on its own:

* **Corpus** (`load_corpus_documents`, `tokenize_documents`, `pack_token_stream`, `PackedWindows`,
  `prepare_corpus`): text files or a `datasets` dataset -> cleaned text -> GPT-1 BPE ids (`datasets.map`,
  cached on disk) -> one flat token stream (a memory-mapped `.npy`) -> contiguous `block_size` windows,
  the last `val_fraction` of which are held out. The paper trains on "contiguous sequences of 512 tokens"
  drawn from long books, so documents are concatenated and windows cross document boundaries.
* **Model** (`PRESETS`, `resolve_model_config`, `build_model`): the paper's 117M model and small presets
  that train on a laptop CPU, a JSON file of `GPT1Config` fields, or an existing checkpoint.
* **Run bookkeeping** (`RunIdentity`, `check_output_dir`, `save_final_model_atomically`, `JsonlLog`): the
  identity a resumed run must match, refusal to mix a run with a foreign output folder, atomic final saves, the
  `log.jsonl` metrics log. (Optimisation - AdamW with decay on "all non bias or gain weights", warmup then cosine decay -
  and the checkpoints themselves are Trainer's.)
* **LoRA continued pretraining** (`lora_settings`, `apply_lora`, `save_final_adapter_atomically`,
  `save_merged_model_atomically`): a `peft` LoRA adapter on an existing checkpoint (`--init-from`), trained on
  plain text, saved as an adapter (and optionally merged into a full `gpt1` model in `OUTPUT_DIR/merged`).

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
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .configuration_gpt1 import GPT1Config
from .tokenization_gpt1 import standardize_text
from .training_args import (  # noqa: F401  (the paper's pretraining values, quoted there; public here too)
    PAPER_ADAM,
    PAPER_BATCH_SIZE,
    PAPER_LEARNING_RATE,
    PAPER_MAX_GRAD_NORM,
    PAPER_NUM_EPOCHS,
    PAPER_WARMUP_STEPS,
    PAPER_WEIGHT_DECAY,
)
from .training_callbacks import NonFiniteLossError  # noqa: F401  (public here too)

if TYPE_CHECKING:
    import datasets
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# Errors: every user-facing failure says what was wrong, where, and what was expected.
# ----------------------------------------------------------------------------------------------------------------------


class PretrainingError(Exception):
    """A problem with the user's input or output folder; the script prints it without a traceback."""


class CorpusError(PretrainingError):
    """The corpus cannot be read, is empty, or is too small for the requested windows."""


class OutputDirError(PretrainingError):
    """The output folder holds something this run must not overwrite or cannot resume."""


# ----------------------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A model shape plus the training defaults that go with it.

    `max_steps` or `num_epochs` fixes the run length: the paper trains "for 100 epochs" (over BooksCorpus),
    which only makes sense once the corpus size is known, so the `gpt1` preset counts epochs while the small
    presets, meant for quick CPU runs on any corpus, count steps.
    """

    model: dict[str, Any]
    learning_rate: float
    warmup_steps: int
    batch_size: int
    max_steps: int | None = None
    num_epochs: float | None = None
    description: str = ""
    # None: GPT-1's released 40,478-token BPE. A number: without --tokenizer, a BPE of that size is trained on the
    # corpus (`train_gpt1_bpe`): at small widths the 40k table would be most of the parameters and of each step.
    bpe_vocab_size: int | None = None


PRESETS: dict[str, Preset] = {
    "gpt1": Preset(
        model=dict(n_positions=512, n_embd=768, n_layer=12, n_head=12),
        learning_rate=PAPER_LEARNING_RATE,
        warmup_steps=PAPER_WARMUP_STEPS,
        batch_size=PAPER_BATCH_SIZE,
        num_epochs=PAPER_NUM_EPOCHS,
        description="the paper's 117M model: 12 layers, 768 wide, 12 heads, 512 positions; paper optimisation",
    ),
    "gpt1-mini": Preset(
        model=dict(n_positions=128, n_embd=256, n_layer=4, n_head=4),
        learning_rate=1e-3,
        warmup_steps=100,
        batch_size=32,
        max_steps=2000,
        bpe_vocab_size=8192,
        description="~5.3M parameters (2.1M of them the table of an 8,192-token BPE trained on the corpus); 2000 "
        "updates of 32x128 tokens take about 11 minutes on 2 CPU cores in bf16",
    ),
    "gpt1-tiny": Preset(
        model=dict(n_positions=128, n_embd=64, n_layer=2, n_head=4),
        learning_rate=1e-3,
        warmup_steps=30,
        batch_size=8,
        max_steps=300,
        description="~2.7M parameters; 300 updates of 8x128 tokens take a few minutes on 2 CPU cores; smoke tests, debugging",
    ),
}


def preset_for(model_config: str | None) -> Preset | None:
    return PRESETS.get(model_config) if model_config else None


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

    The cache matters beyond speed: the `tokenizers` trainer breaks ties between equally frequent merges in an order
    that varies between runs, so a resumed run (or another process) must read the vocabulary the run started with
    rather than learn a slightly different one.
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


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------

_CONFIG_JSON_IGNORED = {"architectures", "transformers_version", "auto_map", "model_type", "dtype", "torch_dtype"}


def resolve_model_config(spec: str, **overrides: Any) -> GPT1Config:
    """A `GPT1Config` from a preset name or a JSON file of `GPT1Config` fields (a saved config.json works too,
    including an `openai-gpt` one). `overrides` (e.g. dropout) win over the file; None values are ignored."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if spec in PRESETS:
        return GPT1Config(**{**PRESETS[spec].model, **overrides})
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainingError(
            f"--model-config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing JSON file."
        )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainingError(f"--model-config {path} is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise PretrainingError(f"--model-config {path} must hold a JSON object of GPT1Config fields.")
    model_type = fields.get("model_type", GPT1Config.model_type)
    if model_type == "openai-gpt":
        from .modeling_gpt1 import config_from_openai_gpt

        config = config_from_openai_gpt(fields)
        for key, value in overrides.items():
            setattr(config, key, value)
        return config
    if model_type != GPT1Config.model_type:
        raise PretrainingError(
            f"--model-config {path} describes model_type={model_type!r}; pretrain.py trains GPT-1 "
            f"(model_type 'gpt1' or 'openai-gpt')."
        )
    known = set(GPT1Config.__dataclass_fields__) if hasattr(GPT1Config, "__dataclass_fields__") else None
    values = {k: v for k, v in fields.items() if k not in _CONFIG_JSON_IGNORED}
    if known is not None:
        unknown = sorted(set(values) - known - set(GPT1Config.attribute_map) - _PRETRAINED_CONFIG_KEYS)
        if unknown:
            raise PretrainingError(
                f"--model-config {path}: unknown GPT1Config field(s) {unknown}. Known fields include "
                f"{sorted(k for k in known if not k.startswith('_'))[:25]}."
            )
    try:
        return GPT1Config(**{**values, **overrides})
    except (TypeError, ValueError) as error:
        raise PretrainingError(f"--model-config {path}: {error}") from None


_PRETRAINED_CONFIG_KEYS = {
    "id2label",
    "label2id",
    "problem_type",
    "num_labels",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "tokenizer_class",
    "task_specific_params",
    "finetuning_task",
    "tie_word_embeddings",
    "name_or_path",
    "_name_or_path",
}


def dropout_overrides(dropout: float | None) -> dict[str, float]:
    """`--dropout p` sets the three dropouts of pretraining (residual, embedding, attention) at once."""
    return {} if dropout is None else dict(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)


def build_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_config: str | None = None,
    init_from: str | None = None,
    dropout: float | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> PreTrainedModel:
    """A `GPT1ForCausalLM` whose vocabulary already holds the GPT-1 special tokens.

    Fresh models are built with `vocab_size = len(tokenizer)` (BPE + `_start_`/`_delimiter_`/`_classify_`/`<pad>`),
    so fine-tuning later needs no resize; `add_special_tokens` then records the ids in the config (and grows an
    older checkpoint's 40,478-row table, e.g. `openai-gpt`, drawing the new rows from N(0, 0.02) as the paper does).
    """
    from .cpu_speed import enable_cpu_speedups
    from .modeling_gpt1 import GPT1ForCausalLM
    from .tokenization_gpt1 import add_special_tokens

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if init_from is not None:
        overrides = dropout_overrides(dropout)
        try:
            model = GPT1ForCausalLM.from_pretrained(init_from, revision=revision, **overrides, **kwargs)
        except OSError as error:
            raise PretrainingError(f"--init-from {init_from!r}: could not load a checkpoint: {error}") from error
        except ValueError as error:
            raise PretrainingError(f"--init-from {init_from!r}: {error}") from error
    else:
        config = resolve_model_config(model_config or "gpt1", **dropout_overrides(dropout))
        if "vocab_size" not in _explicit_fields(model_config):
            config.vocab_size = len(tokenizer)
        model = GPT1ForCausalLM._from_config(config, **kwargs)
    add_special_tokens(model, tokenizer)
    # hf-gpt1's CPU speed paths (`HF_GPT1_CPU_SPEEDUPS=0`: the plain model), with GPT-1's CPU training attention
    # (`gpt1_fused`: sdpa plus the blockwise dropout path) unless an implementation was named.
    return enable_cpu_speedups(model, attention=not attn_implementation)


def _explicit_fields(model_config: str | None) -> set[str]:
    if model_config is None or model_config in PRESETS:
        return set(PRESETS.get(model_config or "gpt1", PRESETS["gpt1"]).model)
    try:
        return set(json.loads(Path(model_config).expanduser().read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def check_init_from_model_type(init_from: str, revision: str | None = None) -> None:
    """Refuse a non-GPT-1 checkpoint with a clear message before loading (from_pretrained's error is cryptic)."""
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(init_from, revision=revision)
    except OSError as error:
        raise PretrainingError(
            f"--init-from {init_from!r}: no config.json found ({error}). Expected a folder written by "
            f"save_pretrained or a Hub id of a gpt1/openai-gpt checkpoint."
        ) from None
    model_type = config_dict.get("model_type")
    if model_type not in (GPT1Config.model_type, "openai-gpt"):
        raise PretrainingError(
            f"--init-from {init_from!r} holds a {model_type!r} checkpoint; pretrain.py continues GPT-1 checkpoints "
            f"(model_type 'gpt1' or 'openai-gpt')."
        )


# ----------------------------------------------------------------------------------------------------------------------
# LoRA continued pretraining
# ----------------------------------------------------------------------------------------------------------------------

PEFT_METHODS = ("none", "lora")
ADAPTER_CONFIG_FILE = "adapter_config.json"
MERGED_DIR = "merged"  # OUTPUT_DIR/merged: a LoRA run's adapter merged into a full gpt1 model (--merge-adapter)


def lora_settings(
    *, r: int = 8, alpha: float = 16, dropout: float = 0.05, target_modules: Sequence[str] | None = None
) -> dict[str, Any]:
    """The LoRA adapter of a run, as recorded in its identity (a checkpoint only resumes into the same adapter).

    `target_modules` None means GPT-1's registered defaults (every linear layer of every block,
    `peft_integration.LORA_TARGET_MODULES`); they are written out so the record does not depend on that default.
    """
    from .peft_integration import LORA_TARGET_MODULES

    if r <= 0:
        raise PretrainingError(f"--lora-r must be a positive integer, got {r}.")
    if not 0.0 <= dropout < 1.0:
        raise PretrainingError(f"--lora-dropout must be in [0, 1), got {dropout}.")
    modules = sorted(set(target_modules or LORA_TARGET_MODULES))  # order and repeats do not make another adapter
    return {
        "method": "lora",
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
        "target_modules": modules,
        "embeddings": "none",
    }


def apply_lora(model: PreTrainedModel, settings: dict[str, Any], *, activation_checkpointing: bool = False):
    """Wrap a `GPT1ForCausalLM` in a LoRA `peft.PeftModel` for continued pretraining; the base weights are frozen.

    The token embedding (and with it the tied LM head) stays frozen too (`embeddings="none"`), unlike LoRA
    fine-tuning, which trains the rows of GPT-1's task tokens: plain-text pretraining never feeds `_start_` /
    `_delimiter_` / `_classify_` / `<pad>`, so through the tied head those rows would only learn never to be
    predicted, and the adapter would carry them for nothing. Activation checkpointing is switched on before
    wrapping (non-reentrant), as `peft_integration.make_peft_model` requires with frozen embeddings.
    """
    from .peft_integration import make_peft_model

    try:
        return make_peft_model(
            model,
            "lora",
            task="causal_lm",
            r=settings["r"],
            alpha=settings["alpha"],
            dropout=settings["dropout"],
            target_modules=list(settings["target_modules"]),
            embeddings=settings["embeddings"],
            activation_checkpointing=activation_checkpointing,
        )
    except ValueError as error:  # PEFT: "Target modules {...} not found in the base model..."
        linear = sorted(
            {".".join(name.split(".")[-2:]) for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        )
        raise PretrainingError(
            f"--lora-target-modules {' '.join(settings['target_modules'])}: {error} The linear layers of "
            f"{type(model).__name__} end in: {', '.join(linear)} (modules are matched by name suffix)."
        ) from None


def describe_trainable_parameters(model: nn.Module) -> str:
    """One line from `peft_integration.trainable_parameter_report`: trainable / total and the split by kind."""
    from .peft_integration import trainable_parameter_report

    report = trainable_parameter_report(model)
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(report["by_kind"].items())) or "none"
    return (
        f"trainable parameters: {report['trainable']:,} of {report['total']:,} "
        f"({report['trainable_percent']:.2f}%; by kind: {kinds})"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Output folder, run identity, checkpoints
# ----------------------------------------------------------------------------------------------------------------------

RUN_FILE = "pretrain_run.json"  # the identity of the run that owns the output folder
STATE_FILE = "pretrain_state.json"  # inside every checkpoint: step, data position, identity
LOG_FILE = "log.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
CHECKPOINT_PREFIX = "checkpoint-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_FORMAT_VERSION = 1

# Fields of the identity that must match for `--resume` to continue the same trajectory. Everything else
# (learning rate, length, logging cadence) may change on resume, with a warning.
IDENTITY_FIELDS = (
    "model_type",
    "model_config",
    "init_from",
    "corpus",
    "tokenizer",
    "text_pipeline",
    "block_size",
    "val_fraction",
    "seed",
    "batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "peft",
)


@dataclass
class RunIdentity:
    """What makes two runs "the same run": a checkpoint may only be resumed by a run with equal identity."""

    model_type: str
    model_config: dict[str, Any]
    init_from: str | None
    corpus: str
    tokenizer: str
    text_pipeline: str
    block_size: int
    val_fraction: float
    seed: int
    batch_size: int
    gradient_accumulation_steps: int
    num_processes: int
    peft: dict[str, Any] | None = None  # `lora_settings(...)` of a LoRA run; None = full training (old run files too)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # informative; may change on resume

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT_VERSION, **asdict(self)}

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Human-readable list of identity fields in which `other` (a stored identity) differs from this one."""
        mine = json.loads(json.dumps(self.to_dict(), default=str))
        diffs = []
        for key in IDENTITY_FIELDS:
            if mine.get(key) != other.get(key):
                if key == "model_config" and isinstance(other.get(key), dict):
                    changed = sorted(
                        k for k in set(mine[key]) | set(other[key]) if mine[key].get(k) != other[key].get(k)
                    )
                    diffs.append(
                        "model_config: "
                        + ", ".join(f"{k} {other[key].get(k)!r} -> {mine[key].get(k)!r}" for k in changed)
                    )
                else:
                    diffs.append(f"{key}: {other.get(key)!r} -> {mine.get(key)!r}")
        return diffs


def model_config_identity(config: GPT1Config) -> dict[str, Any]:
    """The architecture-and-regularisation part of a config (ids, dtypes and bookkeeping excluded)."""
    keys = (
        "vocab_size n_positions n_embd n_layer n_head afn resid_pdrop embd_pdrop attn_pdrop layer_norm_epsilon "
        "initializer_range tie_word_embeddings"
    ).split()
    return {k: getattr(config, k) for k in keys}


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (`checkpoint-N`, never `*.tmp`) sorted by step."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class OutputDirPlan:
    """What `check_output_dir` decided: start fresh, or resume from `resume_checkpoint`."""

    resume_checkpoint: Path | None
    clean: bool  # main process should delete the previous run's artifacts (--overwrite)
    notes: list[str] = field(default_factory=list)


def check_output_dir(output_dir: Path, identity: RunIdentity, *, resume: str | None, overwrite: bool) -> OutputDirPlan:
    """Decide how to use `output_dir`, refusing to mix this run with a different one. Reads only; never writes.

    * empty / missing folder: fresh run (`--resume auto` then starts fresh too, so preemptible jobs can always
      pass it);
    * a previous run of this script (`pretrain_run.json`): `--resume [auto|DIR]` continues it if the identity
      matches (else an error listing the differences); `--overwrite` discards it; neither is an error;
    * anything else that looks like a model or checkpoint (`config.json`, `checkpoint-*` not ours): a foreign
      checkpoint -> error unless `--overwrite`.
    """
    if resume is not None and overwrite:
        raise OutputDirError("--resume and --overwrite contradict each other: continue the run, or discard it.")
    run_info = read_json(output_dir / RUN_FILE) if output_dir.is_dir() else None
    checkpoints = list_checkpoints(output_dir)

    if resume not in (None, "auto"):  # an explicit checkpoint folder
        checkpoint = Path(resume).expanduser()
        state = read_json(checkpoint / STATE_FILE)
        if not checkpoint.is_dir() or state is None:
            raise OutputDirError(
                f"--resume {checkpoint}: not a pretrain.py checkpoint (expected a checkpoint-N folder holding "
                f"{STATE_FILE}; found {'no such folder' if not checkpoint.is_dir() else 'no ' + STATE_FILE})."
            )
        _check_identity(identity, state.get("identity", {}), f"checkpoint {checkpoint}")
        if run_info is not None:  # continuing into a folder that already belongs to a run: it must be this one
            _check_identity(identity, run_info, f"the run in {output_dir}")
        elif _foreign_content(output_dir):
            raise OutputDirError(
                f"Output folder {output_dir} holds {_foreign_content(output_dir)}; resume into an empty folder or the "
                f"checkpoint's own run folder."
            )
        return OutputDirPlan(resume_checkpoint=checkpoint, clean=False)

    if run_info is not None:
        if overwrite:
            return OutputDirPlan(None, clean=True, notes=[f"--overwrite: discarding the previous run in {output_dir}"])
        if resume is None:
            latest = f"latest checkpoint {checkpoints[-1][1].name}" if checkpoints else "no checkpoint yet"
            raise OutputDirError(
                f"Output folder {output_dir} already holds a pretraining run ({latest}). Pass --resume auto to "
                f"continue it, --overwrite to discard it, or choose another --output-dir."
            )
        _check_identity(identity, run_info, f"the run in {output_dir}")
        if not checkpoints:
            return OutputDirPlan(
                None, clean=True, notes=[f"--resume auto: {output_dir} has no checkpoint yet; starting fresh"]
            )
        step, latest_path = checkpoints[-1]
        state = read_json(latest_path / STATE_FILE)
        if state is None:
            raise OutputDirError(f"{latest_path} has no readable {STATE_FILE}; it was not written by pretrain.py.")
        _check_identity(identity, state.get("identity", {}), f"checkpoint {latest_path}")
        return OutputDirPlan(latest_path, clean=False)

    foreign = _foreign_content(output_dir)
    if foreign:
        if overwrite:
            return OutputDirPlan(None, clean=True, notes=[f"--overwrite: replacing {foreign} in {output_dir}"])
        raise OutputDirError(
            f"Output folder {output_dir} holds {foreign}, which this run did not write"
            f"{' and cannot resume' if resume else ''}. Choose another --output-dir, or pass --overwrite to replace it."
        )
    return OutputDirPlan(
        None, clean=False, notes=["--resume auto: nothing to resume; starting fresh"] if resume else []
    )


def _check_identity(identity: RunIdentity, stored: dict[str, Any], where: str) -> None:
    if stored.get("model_type") not in (None, identity.model_type):
        raise OutputDirError(
            f"Cannot resume {where}: it is a model_type={stored.get('model_type')!r} run, this is {identity.model_type!r}."
        )
    diffs = identity.differences(stored)
    if diffs:
        raise OutputDirError(
            f"Cannot resume {where}: it was started with different settings, so it would not continue the same "
            f"run. Differences (stored -> now): {'; '.join(diffs)}. Use the original settings, or start a new run "
            f"with --overwrite or another --output-dir."
        )


TRAINER_STATE_FILE = "trainer_state.json"


def is_accelerate_checkpoint(checkpoint: Path) -> bool:
    """A checkpoint of 0.1's Accelerate loop (`accelerator.save_state`: no trainer_state.json, optimizer.bin,
    random_states_*.pkl), which `upgrade_checkpoint` rewrites as a Trainer checkpoint before a resume."""
    return not (checkpoint / TRAINER_STATE_FILE).is_file() and (checkpoint / "optimizer.bin").is_file()


def upgrade_checkpoint(
    checkpoint: Path,
    model: nn.Module,
    *,
    world_size: int,
    max_steps: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    logging_steps: int = 500,
    log_path: Path | None = None,
) -> None:
    """Rewrite a checkpoint of 0.1's Accelerate loop as the `transformers.Trainer` checkpoint 0.2 resumes (main
    process only; written into a staging folder and renamed over the old one, which it replaces as a whole):

    * the weights: loaded into `model` (the run's model, built as the resumed run builds it, so a mismatch is an error
      here) and saved as Trainer saves them (`save_pretrained`: the whole model, or a PeftModel's adapter);
    * `optimizer.bin` / `scheduler.bin` -> `optimizer.pt` / `scheduler.pt` (the same torch state dicts: both versions
      build AdamW on the same two decay groups in the same order, and the same warmup + cosine `LambdaLR`);
    * each `random_states_<rank>.pkl` -> `rng_state[_<rank>].pth` (python, numpy and torch CPU generator states);
    * `trainer_state.json`: the update count, the logging interval, and the metrics of `log_path` up to the update
      as the log history.

    The data position carries over exactly with one accumulation step per update. With more, Trainer ends each epoch
    with a shorter update where the old loop let updates span epochs, so the windows after the resume point can differ
    from the old run's (a warning says so)."""
    from safetensors.torch import load_file
    from transformers import TrainerControl, TrainerState

    from .training_callbacks import replace_dir

    state = read_json(checkpoint / STATE_FILE) or {}
    step = int(state["step"])
    staged = checkpoint.with_name(f"{checkpoint.name}.upgrade")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    weights = load_file(checkpoint / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight", "base_model.model.lm_head.weight"}:
        raise OutputDirError(
            f"Cannot upgrade {checkpoint}: its weights do not fit the model this run builds (unexpected "
            f"{unexpected[:5]}, missing {missing[:5]}). Resume with the settings the run was started with."
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    if hasattr(model, "peft_config"):
        model.save_pretrained(staged, save_embedding_layers=False)
    else:
        model.save_pretrained(staged)
    for old, new in (("optimizer.bin", "optimizer.pt"), ("scheduler.bin", "scheduler.pt"), ("scaler.pt", "scaler.pt")):
        if (checkpoint / old).is_file():
            shutil.copy2(checkpoint / old, staged / new)
    for rank in range(world_size):
        states = torch.load(checkpoint / f"random_states_{rank}.pkl", weights_only=False)  # the run's own file
        name = "rng_state.pth" if world_size == 1 else f"rng_state_{rank}.pth"
        rng = {
            "python": states["random_state"],
            "numpy": states["numpy_random_seed"],
            "cpu": states["torch_manual_seed"],
        }
        torch.save(rng, staged / name)
    history = []
    for record in read_jsonl(log_path) if log_path is not None and log_path.is_file() else []:
        if record.get("step", 0) > step:
            continue
        if "train_loss" in record:
            keys = ("learning_rate", "grad_norm", "tokens_per_second")
            history.append(
                {"loss": record["train_loss"], **{k: record[k] for k in keys if k in record}, "step": record["step"]}
            )
        elif "val_loss" in record:
            history.append(
                {
                    "eval_loss": record["val_loss"],
                    "eval_perplexity": record.get("val_perplexity"),
                    "step": record["step"],
                }
            )
    TrainerState(
        global_step=step,
        max_steps=max_steps,
        epoch=float(state.get("epoch", 0)),
        train_batch_size=batch_size,
        logging_steps=logging_steps,  # a resumed Trainer logs on the checkpoint's schedule
        log_history=history,
        stateful_callbacks=[TrainerControl()],  # what Trainer's own checkpoints carry (it saves into this on resume)
    ).save_to_json(str(staged / TRAINER_STATE_FILE))
    shutil.copy2(checkpoint / STATE_FILE, staged / STATE_FILE)
    replace_dir(str(staged), str(checkpoint), trash_root=str(checkpoint.parent))
    _fsync_dir(checkpoint.parent)
    if gradient_accumulation_steps > 1:
        logger.warning(
            f"Upgraded {checkpoint} from 0.1's loop: with {gradient_accumulation_steps} accumulation steps the windows "
            f"after update {step} can differ from those the old loop would have read (Trainer ends each epoch with a "
            f"shorter update; the old loop let updates span epochs)."
        )
    else:
        logger.info(f"Upgraded {checkpoint} (0.1's Accelerate checkpoint) to a Trainer checkpoint.")


def _foreign_content(output_dir: Path) -> str | None:
    """Describe a model/checkpoint in `output_dir` that is not ours, or None."""
    if not output_dir.is_dir():
        return None
    config = read_json(output_dir / "config.json")
    if (output_dir / "config.json").exists():
        model_type = config.get("model_type") if config else None
        return f"a model checkpoint (config.json, model_type={model_type!r})"
    for child in sorted(output_dir.iterdir()):
        if child.name.startswith(CHECKPOINT_PREFIX) and child.is_dir() and not child.name.endswith(".tmp"):
            return f"a checkpoint folder {child.name} without {RUN_FILE}"
        if child.suffix in (".safetensors", ".bin", ".pt", ".pth") and child.is_file():
            return f"weights file {child.name}"
    return None


def clean_output_dir(output_dir: Path) -> None:
    """Delete what a previous run wrote (checkpoints, logs, final model or adapter files, the merged model, a model
    card written by PEFT or rendered for a push); keep the data cache and the rest."""
    if not output_dir.is_dir():
        return
    for child in output_dir.iterdir():
        if (child.name.startswith(CHECKPOINT_PREFIX) or child.name == MERGED_DIR) and child.is_dir():
            shutil.rmtree(child)
        elif child.name == "README.md" and _is_generated_card(child):
            child.unlink()
        elif child.name in (RUN_FILE, LOG_FILE, LOSS_CURVE_FILE, "runs", "tensorboard") or child.name.startswith(
            (".final-", "final-")
        ):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif child.is_file() and (
            child.suffix in (".safetensors", ".bin", ".pt", ".pth")
            or re.fullmatch(
                r"(configuration|conversion|modeling|modeling_outputs|input_checks|tokenization)_\w+\.py", child.name
            )  # remote code of save_pretrained
            or child.name
            in ("config.json", "generation_config.json", "model.safetensors.index.json", ADAPTER_CONFIG_FILE)
            or child.name in _TOKENIZER_FILES
        ):
            child.unlink()


_TOKENIZER_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
}


def _is_generated_card(path: Path) -> bool:
    """A README.md this script's outputs bring: PEFT's adapter card (`library_name: peft`) or a card rendered by
    `hf_gpt1.hub` for a push (tag `hf-gpt1`). A hand-written README is not one of them."""
    try:
        from huggingface_hub import metadata_load

        metadata = metadata_load(path) or {}
    except Exception:  # unreadable or invalid YAML: not ours to delete
        return False
    tags = metadata.get("tags") or []
    return metadata.get("library_name") == "peft" or (isinstance(tags, list) and "hf-gpt1" in tags)


def remove_stale_temporaries(output_dir: Path) -> None:
    """Delete what a run killed mid-save leaves (never resumed): Trainer's `_checkpoint-staging/` (a checkpoint
    being written), `.final-*` folders (the final model or the merged model being written), `checkpoint-N.upgrade`
    (a 0.1 checkpoint being upgraded) and `checkpoint-N.tmp` folders of 0.1's loop."""
    from .trainer import STAGING_DIR_NAME

    if not output_dir.is_dir():
        return
    for child in output_dir.iterdir():
        if child.is_dir() and (
            child.name == STAGING_DIR_NAME
            or (child.name.startswith(CHECKPOINT_PREFIX) and child.name.endswith((".tmp", ".upgrade")))
            or child.name.startswith(".final-")
        ):
            shutil.rmtree(child, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename survives a power cut, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_final_model_atomically(
    accelerator: Accelerator, model: nn.Module, tokenizer: PreTrainedTokenizerBase, output_dir: Path
) -> None:
    """`save_pretrained` (+ tokenizer) into a temporary folder, then move the files into `output_dir`.

    Loadability is all-or-nothing: the old `config.json` is removed first and the new one is moved in LAST, so
    `from_pretrained(output_dir)` either finds the complete new model or no model at all. A model card rendered for
    a previous push of the run is removed (it describes the model being replaced; the next push renders a new one).
    Call on ALL processes (`accelerator.get_state_dict` gathers sharded weights under FSDP/DeepSpeed).
    """
    state_dict = accelerator.get_state_dict(model)
    tmp = output_dir / f".final-{os.getpid()}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, save_function=accelerator.save)
        tokenizer.save_pretrained(tmp)
        if _is_generated_card(output_dir / "README.md"):
            (output_dir / "README.md").unlink()
        _move_files_into(tmp, output_dir, last="config.json")
    accelerator.wait_for_everyone()


def _move_files_into(tmp: Path, target: Path, *, last: str) -> None:
    """Move every entry of `tmp` into `target`, then delete `tmp`. The file loaders look for (`last`) is removed
    from `target` first and moved in last, so `target` never pairs it with a mix of old and new files."""
    (target / last).unlink(missing_ok=True)
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != last] + ([last] if last in names else []):
        destination = target / name
        if destination.is_dir():
            shutil.rmtree(destination)
        os.replace(tmp / name, destination)
    shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(target)


def save_final_adapter_atomically(
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    *,
    base_model_name_or_path: str,
) -> dict[str, Any] | None:
    """The LoRA counterpart of `save_final_model_atomically`: `peft_integration.save_adapter` (adapter_config.json
    naming `base_model_name_or_path`, adapter_model.safetensors with only the LoRA weights, PEFT's README.md, the
    tokenizer) into a temporary folder, then moved into `output_dir` with `adapter_config.json` last.

    Call on ALL processes (single process or DDP: the adapter is read from the main process's unwrapped model).
    Returns `save_adapter`'s sizes on the main process, None elsewhere.
    """
    from .peft_integration import save_adapter

    info = None
    tmp = output_dir / f".final-{os.getpid()}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        info = save_adapter(
            accelerator.unwrap_model(model), tmp, base_model_name_or_path=base_model_name_or_path, tokenizer=tokenizer
        )
        _move_files_into(tmp, output_dir, last=ADAPTER_CONFIG_FILE)
        info["path"] = str(output_dir)
    accelerator.wait_for_everyone()
    return info


def save_merged_model_atomically(
    accelerator: Accelerator,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    folder: Path,
    *,
    extra_files: Sequence[Path] = (),
) -> Path:
    """Fold the LoRA adapter into the base weights (`peft_integration.merge_adapter`: a plain `GPT1ForCausalLM` whose
    LM head stays tied) and save it with the tokenizer as `folder` (OUTPUT_DIR/merged), loadable with
    `AutoModelForCausalLM` and publishable like any pretrained model.

    Written into a temporary sibling and swapped in by renames, so `folder` is at any moment either the previous
    complete model or the new one. `extra_files` (the run's pretrain_run.json and log.jsonl) are copied in, so the
    folder says which run produced it (the Hub model card reads them). Merging changes the model in place: call
    this on ALL processes, after `save_final_adapter_atomically` and after the last use of the model.
    """
    from .peft_integration import merge_adapter

    tmp = folder.parent / f".final-{os.getpid()}-{folder.name}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        merged = merge_adapter(accelerator.unwrap_model(model))
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for path in extra_files:
            if Path(path).is_file():
                shutil.copy2(path, tmp / Path(path).name)
        _fsync_dir(tmp)
        if folder.exists():
            old = folder.parent / f"{tmp.name}.old"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    accelerator.wait_for_everyone()
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------------------------------


class JsonlLog:
    """Append-only JSON-lines metrics log (one object per line: train records and eval records)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """On resume, drop records from beyond the checkpoint (the steps that will be re-done)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut by a kill; everything before it is valid
                continue
    return records


class Throughput:
    """Tokens per second over the last logging interval (not since start: the first steps include warm-up costs)."""

    def __init__(self, tokens: int = 0):
        self.last_time, self.last_tokens = time.perf_counter(), tokens

    def update(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_tokens = now, tokens
        return rate


def resolve_run_length(
    max_steps: int | None, num_epochs: float | None, preset: Preset | None, train_windows: int, global_batch: int
) -> int:
    """Optimizer steps to run: --max-steps, else --num-epochs over the training windows, else the preset's
    default (steps, or epochs for the paper preset), else the paper's 100 epochs."""
    steps_per_epoch = max(1, train_windows // global_batch)
    if max_steps is not None:
        return max_steps
    if num_epochs is None and preset is not None and preset.max_steps is not None:
        return preset.max_steps
    epochs = (
        num_epochs
        if num_epochs is not None
        else (preset.num_epochs if preset and preset.num_epochs else PAPER_NUM_EPOCHS)
    )
    return max(1, math.ceil(epochs * steps_per_epoch))


__all__ = [
    "PretrainingError",
    "CorpusError",
    "OutputDirError",
    "NonFiniteLossError",
    "Preset",
    "PRESETS",
    "clean_text",
    "standardize_text",
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
    "resolve_model_config",
    "build_model",
    "RunIdentity",
    "check_output_dir",
    "save_final_model_atomically",
    "lora_settings",
    "apply_lora",
    "describe_trainable_parameters",
    "save_final_adapter_atomically",
    "save_merged_model_atomically",
    "JsonlLog",
]
