"""GPT-1 tokenizer: transformers' `OpenAIGPTTokenizer` plus the paper's special tokens and input framing.

The BPE itself (lower-casing BERT normaliser, `</w>` end-of-word merges, 40,478 ids) is transformers'
`OpenAIGPTTokenizer`, which is backed by `tokenizers`; nothing here re-implements it. What GPT-1 adds on
top (paper §3.3, original `train.py`) are three tokens appended after the BPE vocabulary, plus a pad token
for batching:

    id 40478  _start_      start of every fine-tuning input              -> tokenizer.bos_token
    id 40479  _delimiter_  between the two texts of a pair               -> tokenizer.sep_token
    id 40480  _classify_   the "extract" token the classifier reads      -> tokenizer.cls_token
    id 40481  <pad>        padding only (never attended, never scored)   -> tokenizer.pad_token

and the framing of task inputs, which lives in the backend's post-processor (`TemplateProcessing`) so that
every HF code path (`__call__`, batching, truncation, `num_special_tokens_to_add`, data collators) sees it:

    tokenizer(text)            -> _start_ text _classify_
    tokenizer(a, b)            -> _start_ a _delimiter_ b _classify_
    tokenizer(text, add_special_tokens=False) -> plain BPE (language-model pretraining)

The post-processor is serialised in `tokenizer.json`, and `OpenAIGPTTokenizer.from_pretrained` (hence
`AutoTokenizer`) hands a saved post-processor back to the rebuilt backend, so a saved tokenizer reloads with
the same framing without this package being installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import AddedToken, processors
from transformers import OpenAIGPTTokenizer
from transformers.utils import logging

if TYPE_CHECKING:  # only for annotations: importing torch/transformers models here would slow tokenizer-only use
    import torch
    from transformers import PreTrainedModel

logger = logging.get_logger(__name__)

START_TOKEN = "_start_"
DELIMITER_TOKEN = "_delimiter_"
EXTRACT_TOKEN = "_classify_"
PAD_TOKEN = "<pad>"

# HF role of each GPT-1 token. The order is the id order: they are appended in exactly this sequence.
GPT1_SPECIAL_TOKENS: dict[str, str] = {
    "bos_token": START_TOKEN,
    "sep_token": DELIMITER_TOKEN,
    "cls_token": EXTRACT_TOKEN,
    "pad_token": PAD_TOKEN,
}
# The `model.config` attributes that record each token's id (see `add_special_tokens`).
_CONFIG_ID_ATTRIBUTES: dict[str, str] = {
    "start_token_id": START_TOKEN,
    "delimiter_token_id": DELIMITER_TOKEN,
    "extract_token_id": EXTRACT_TOKEN,
    "pad_token_id": PAD_TOKEN,
    "bos_token_id": START_TOKEN,
}

DEFAULT_TOKENIZER = "openai-community/openai-gpt"
GPT1_BPE_VOCAB_SIZE = 40478
GPT1_CONTEXT_LENGTH = 512

# File names of the two layouts we read.
ORIGINAL_VOCAB_FILE = "encoder_bpe_40000.json"  # openai/finetune-transformer-lm, model/ folder
ORIGINAL_MERGES_FILE = "vocab_40000.bpe"
HF_VOCAB_FILE = "vocab.json"  # OpenAIGPTTokenizer.vocab_files_names
HF_MERGES_FILE = "merges.txt"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

_COMPATIBLE_TOKENIZER_CLASSES = {"OpenAIGPTTokenizer", "OpenAIGPTTokenizerFast"}

# What the original GPT-1 code did to every text before its BPE, pretraining and fine-tuning alike
# (openai/finetune-transformer-lm, `text_utils.TextEncoder.encode`: `ftfy.fix_text` with its default
# `uncurl_quotes=True`, then `text_standardize`): the BPE vocabulary has no curly quotes, dashes or ellipses, so
# transformers' OpenAIGPTTokenizer (which does neither) turns them into `<unk>`.
_STANDARDIZE_TABLE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",  # single curly quotes
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',  # double curly quotes
        "\u2014": "-", "\u2013": "-", "\u2015": "-",  # em dash, en dash, horizontal bar
        "\u2026": "...", "\u00b4": "'",  # ellipsis, acute accent
    }
)  # fmt: skip


def standardize_text(text: str) -> str:
    """Map curly quotes, dashes, ellipses and acute accents to the ASCII forms the GPT-1 BPE knows, as the original
    GPT-1 pipeline did before tokenizing (`ftfy.fix_text` + `text_standardize`; the rest of those functions, spacing
    around punctuation and newlines, is what the tokenizer's BERT normaliser and pre-tokenizer already do)."""
    return text.translate(_STANDARDIZE_TABLE)


# from_pretrained arguments that only locate files; meaningless for (and not to be saved by) a tokenizer built from
# the original release files.
_FILE_LOCATION_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
)
_UNSET_MODEL_MAX_LENGTH = int(1e29)  # transformers uses VERY_LARGE_INTEGER (1e30) for "no limit"


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_gpt1_tokenizer(name_or_path: str | os.PathLike = DEFAULT_TOKENIZER, **kwargs) -> OpenAIGPTTokenizer:
    """Load the GPT-1 BPE tokenizer and register the paper's special tokens and input framing.

    `name_or_path` may be:
      * a Hub id (default `openai-community/openai-gpt`);
      * an HF-style folder: `vocab.json` + `merges.txt`, or a saved tokenizer with `tokenizer.json`;
      * a folder with the original release files `encoder_bpe_40000.json` + `vocab_40000.bpe`
        (the release repository itself works too: the files are looked up in its `model/` subfolder).

    `kwargs` go to `OpenAIGPTTokenizer.from_pretrained` (e.g. `revision`, `cache_dir`, `model_max_length`).
    The result has `_start_`/`_delimiter_`/`_classify_`/`<pad>` as bos/sep/cls/pad special tokens (ids
    40478..40481 for the released vocabulary; tokens a saved tokenizer already has are not added again),
    and `model_max_length` 512 unless the source or `kwargs` set one.
    """
    tokenizer = _load_bpe_tokenizer(name_or_path, **kwargs)
    register_gpt1_special_tokens(tokenizer)
    return tokenizer


def _load_bpe_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> OpenAIGPTTokenizer:
    """The plain BPE tokenizer from any supported source, without GPT-1's special tokens."""
    if _is_local_path(name_or_path):
        tokenizer = _load_local(Path(name_or_path).expanduser(), **kwargs)
    else:
        tokenizer = OpenAIGPTTokenizer.from_pretrained(str(name_or_path), **kwargs)
    _check_vocabulary_loaded(tokenizer, name_or_path)
    if tokenizer.model_max_length >= _UNSET_MODEL_MAX_LENGTH:
        tokenizer.model_max_length = GPT1_CONTEXT_LENGTH  # so truncation=True alone fits the 512 positions
    return tokenizer


def _check_vocabulary_loaded(tokenizer: OpenAIGPTTokenizer, name_or_path: str | os.PathLike) -> None:
    """Fail loudly on an empty vocabulary.

    When none of its files can be found (Hub unreachable or offline, wrong repo id or revision),
    `OpenAIGPTTokenizer.from_pretrained` does not raise in transformers v5: it returns a tokenizer whose whole
    vocabulary is `<unk>`, which would silently map every text to id 0.
    """
    if tokenizer.vocab_size <= 1:
        raise OSError(
            f"Could not load a GPT-1 BPE vocabulary from {str(name_or_path)!r}: the tokenizer came back with "
            f"{tokenizer.vocab_size} token(s). None of {HF_TOKENIZER_FILE} / {HF_VOCAB_FILE} + {HF_MERGES_FILE} could "
            f"be found or downloaded (check the repo id and revision, network access, HF_HUB_OFFLINE), or pass a "
            f"local folder with {_expected_files_text()}."
        )


def _is_local_path(name_or_path: str | os.PathLike) -> bool:
    """True for anything that must be a local folder rather than a Hub id (`name` or `org/name`)."""
    if isinstance(name_or_path, os.PathLike):
        return True
    text = str(name_or_path)
    return (
        os.path.exists(text)
        or os.path.isabs(text)
        or text.startswith((".", "~"))
        or text.count("/") > 1
        or "\\" in text
    )


def _load_local(folder: Path, **kwargs) -> OpenAIGPTTokenizer:
    if not folder.exists():
        raise FileNotFoundError(
            f"Tokenizer folder {folder} does not exist. Pass a Hub id (e.g. {DEFAULT_TOKENIZER!r}) or a folder with "
            f"{_expected_files_text()}."
        )
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file; load_gpt1_tokenizer expects a folder with {_expected_files_text()}.")
    layout, directory = _find_tokenizer_files(folder)
    if layout == "hf":
        _check_tokenizer_class(directory)
        return OpenAIGPTTokenizer.from_pretrained(str(directory), **kwargs)
    return _load_original_release(directory, **kwargs)


def _find_tokenizer_files(folder: Path) -> tuple[str, Path]:
    """Which layout `folder` (or its `model/` subfolder, as in the release repo) holds: "hf" or "original"."""
    for directory in (folder, folder / "model"):
        if (directory / HF_TOKENIZER_FILE).is_file():
            return "hf", directory
        if (directory / HF_VOCAB_FILE).is_file() and (directory / HF_MERGES_FILE).is_file():
            return "hf", directory
        if (directory / ORIGINAL_VOCAB_FILE).is_file() and (directory / ORIGINAL_MERGES_FILE).is_file():
            return "original", directory
    found = sorted(p.name for d in (folder, folder / "model") if d.is_dir() for p in d.iterdir())
    raise FileNotFoundError(
        f"No GPT-1 tokenizer files in {folder} (nor in {folder / 'model'}). Expected {_expected_files_text()}; "
        f"found: {', '.join(found) if found else 'nothing'}."
    )


def _expected_files_text() -> str:
    return (
        f"either {HF_TOKENIZER_FILE}, or {HF_VOCAB_FILE} + {HF_MERGES_FILE} (Hugging Face layout), or "
        f"{ORIGINAL_VOCAB_FILE} + {ORIGINAL_MERGES_FILE} (original openai/finetune-transformer-lm release)"
    )


def _check_tokenizer_class(directory: Path) -> None:
    """Refuse folders saved for another tokenizer: GPT-2 also ships vocab.json + merges.txt, with other BPE rules."""
    config_file = directory / HF_TOKENIZER_CONFIG_FILE
    if not config_file.is_file():
        return
    try:
        tokenizer_class = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}).") from error
    if tokenizer_class is not None and tokenizer_class not in _COMPATIBLE_TOKENIZER_CLASSES:
        raise ValueError(
            f"{config_file} declares tokenizer_class={tokenizer_class!r}; GPT-1 needs the `</w>` BPE of "
            f"OpenAIGPTTokenizer. Point load_gpt1_tokenizer at a GPT-1 tokenizer folder."
        )


def _load_original_release(directory: Path, **kwargs) -> OpenAIGPTTokenizer:
    """Build the tokenizer from `encoder_bpe_40000.json` + `vocab_40000.bpe`, read as the original code does.

    The original `text_utils.TextEncoder` (and transformers' slow tokenizer) use `json.load` for the vocab and
    `read().split('\\n')[1:-1]` for the merges: drop the `#version` header and the empty string after the final
    newline.
    """
    vocab_file, merges_file = directory / ORIGINAL_VOCAB_FILE, directory / ORIGINAL_MERGES_FILE
    try:
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{vocab_file} is not a JSON token->id object ({error}).") from error
    if not isinstance(vocab, dict):
        raise ValueError(f"{vocab_file} must hold a JSON object mapping token -> id, got {type(vocab).__name__}.")
    merges = []
    for line_number, line in enumerate(merges_file.read_text(encoding="utf-8").split("\n")[1:-1], start=2):
        pair = tuple(line.split())
        if len(pair) != 2:
            raise ValueError(f"{merges_file}, line {line_number}: expected a merge 'a b', got {line!r}.")
        merges.append(pair)
    for name in _FILE_LOCATION_KWARGS:
        kwargs.pop(name, None)
    kwargs.setdefault("model_max_length", GPT1_CONTEXT_LENGTH)
    kwargs.setdefault("name_or_path", str(directory))
    return OpenAIGPTTokenizer(vocab=vocab, merges=merges, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Special tokens and framing
# ----------------------------------------------------------------------------------------------------------------------


def register_gpt1_special_tokens(tokenizer: OpenAIGPTTokenizer) -> dict[str, int]:
    """Add (if missing) the GPT-1 tokens as bos/sep/cls/pad and install the paper's framing. Idempotent.

    Returns `{token: id}`. Tokens are appended after the existing vocabulary in the order start, delimiter,
    extract, pad, so the released 40,478-token BPE gets ids 40478..40481 as in the original code.
    """
    tokenizer.add_special_tokens(
        {
            role: AddedToken(token, lstrip=False, rstrip=False, single_word=False, normalized=False, special=True)
            for role, token in GPT1_SPECIAL_TOKENS.items()
        }
    )
    ids = gpt1_special_token_ids(tokenizer)
    tokenizer.backend_tokenizer.post_processor = gpt1_post_processor(ids)
    return ids


def gpt1_special_token_ids(tokenizer: OpenAIGPTTokenizer) -> dict[str, int]:
    """`{token: id}` for the four GPT-1 tokens; ValueError naming the missing ones if any is not registered."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in GPT1_SPECIAL_TOKENS.values() if token not in vocab]
    if missing:
        raise ValueError(
            f"Tokenizer {tokenizer.name_or_path!r} lacks the GPT-1 special token(s) {missing}. Load it with "
            f"hf_gpt1.load_gpt1_tokenizer(...) or call "
            f"hf_gpt1.tokenization_gpt1.register_gpt1_special_tokens(tokenizer)."
        )
    return {token: vocab[token] for token in GPT1_SPECIAL_TOKENS.values()}


def gpt1_post_processor(ids: dict[str, int]) -> processors.TemplateProcessing:
    """The paper's task framing as a `tokenizers` template (single text and text pair).

    Type ids are 0 for the first text and 1 for the second, the usual convention; GPT-1 has no segment
    embedding and the tokenizer does not return `token_type_ids` by default.
    """
    start, delimiter, extract = START_TOKEN, DELIMITER_TOKEN, EXTRACT_TOKEN
    return processors.TemplateProcessing(
        single=f"{start}:0 $A:0 {extract}:0",
        pair=f"{start}:0 $A:0 {delimiter}:0 $B:1 {extract}:1",
        special_tokens=[(token, ids[token]) for token in (start, delimiter, extract)],
    )


# ----------------------------------------------------------------------------------------------------------------------
# Model side
# ----------------------------------------------------------------------------------------------------------------------


def add_special_tokens(
    model: PreTrainedModel, tokenizer: OpenAIGPTTokenizer, *, generator: torch.Generator | None = None
) -> PreTrainedModel:
    """Make `model` ready for `tokenizer`'s GPT-1 special tokens: record their ids and grow the embeddings.

    * Registers the tokens in `tokenizer` first if it lacks them (in place, see `register_gpt1_special_tokens`).
    * Sets `model.config.start_token_id / delimiter_token_id / extract_token_id / pad_token_id` and
      `bos_token_id` (= start); mirrors pad/bos into `model.generation_config` when the model has one.
    * Resizes the token embedding to `len(tokenizer)` and draws only the NEW rows from
      N(0, config.initializer_range), the paper's initialisation for the added embeddings (transformers'
      default `mean_resizing` would instead start them at the mean of the trained rows). The tied LM head
      follows the embedding. A table already large enough is left as it is (never shrunk).

    Idempotent: a second call finds the table already sized and changes no weights.
    `generator` (a `torch.Generator`) makes the new rows reproducible. Returns `model`.
    """
    import torch  # deferred: tokenizer-only users should not pay for importing torch

    ids = register_gpt1_special_tokens(tokenizer)
    embeddings = model.get_input_embeddings()
    old_rows, new_rows = embeddings.weight.shape[0], len(tokenizer)
    if new_rows > old_rows:
        model.resize_token_embeddings(new_rows, mean_resizing=False)
        weight = model.get_input_embeddings().weight
        std = getattr(model.config, "initializer_range", 0.02)
        with torch.no_grad():
            # drawn on the CPU in float32 (where a CPU generator applies), then placed like the table
            new_part = torch.empty((new_rows - old_rows, weight.shape[1]), dtype=torch.float32)
            new_part.normal_(mean=0.0, std=std, generator=generator)
            weight[old_rows:] = new_part.to(device=weight.device, dtype=weight.dtype)
        logger.info(f"Resized token embeddings {old_rows} -> {new_rows}; new rows ~ N(0, {std}).")
    elif new_rows < old_rows:
        logger.info(f"Embedding table has {old_rows} rows >= len(tokenizer)={new_rows}; left unchanged.")
    _check_ids_fit(model, ids)
    for attribute, token in _CONFIG_ID_ATTRIBUTES.items():
        setattr(model.config, attribute, ids[token])
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.pad_token_id = ids[PAD_TOKEN]
        generation_config.bos_token_id = ids[START_TOKEN]
    return model


def _check_ids_fit(model: PreTrainedModel, ids: dict[str, int]) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    too_large = {token: index for token, index in ids.items() if index >= rows}
    if too_large:
        raise ValueError(f"Special token ids {too_large} do not fit the model's {rows}-row token embedding.")


__all__ = [
    "START_TOKEN",
    "DELIMITER_TOKEN",
    "EXTRACT_TOKEN",
    "PAD_TOKEN",
    "GPT1_SPECIAL_TOKENS",
    "load_gpt1_tokenizer",
    "register_gpt1_special_tokens",
    "gpt1_special_token_ids",
    "gpt1_post_processor",
    "add_special_tokens",
    "standardize_text",
]
