"""Unit tests of hf_gpt1.pretraining_corpus: text cleaning on the real corpus files, corpus sources, packing into
windows and the epoch sampler. Real files (the shared corpus, files written to tmp_path) and the real GPT-1 tokenizer;
no mocks. The end-to-end runs of scripts/pretrain.py are in tests/scripts/test_pretrain.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_gpt1 import pretraining_corpus

NEWLINE_ID = 40477  # "\n</w>" in the GPT-1 BPE


@pytest.fixture(scope="module")
def corpus_dir(shared_data) -> Path:
    return shared_data / "corpus"


# ----------------------------------------------------------------------------------------------------------------------
# Text cleaning on the real corpus files with the documented byte-level quirks
# ----------------------------------------------------------------------------------------------------------------------


def test_clean_text_strips_bom_and_gutenberg_markers_of_real_file(corpus_dir):
    raw_bytes = (corpus_dir / "gutenberg/pg74_tom_sawyer.txt").read_bytes()
    assert raw_bytes.startswith(b"\xef\xbb\xbf")  # the README's BOM caveat holds
    text = pretraining_corpus.clean_text(raw_bytes.decode("utf-8"))
    assert not text.startswith("\ufeff")
    assert "*** START OF" not in text and "*** END OF" not in text
    assert text.strip().startswith("THE ADVENTURES OF TOM SAWYER")
    assert text.rstrip().endswith("part of their lives at present.")


def test_clean_text_normalises_crlf_of_real_file(corpus_dir):
    raw = (corpus_dir / "gutenberg/pg1184_count_of_monte_cristo.txt").read_bytes().decode("utf-8")
    assert "\r\n" in raw and not raw.endswith("\n")  # the CRLF / no-final-newline caveat holds
    text = pretraining_corpus.clean_text(raw)
    assert "\r" not in text
    assert len(pretraining_corpus.split_paragraphs(text)) > 1000  # blank-line paragraphs are found once CRLF is gone


def test_clean_text_drops_header_before_start_and_licence_after_end():
    text = "PG header line\n*** START OF THE PROJECT GUTENBERG EBOOK 1 ***\nBody one.\n\nBody two.\n*** END OF THE PROJECT GUTENBERG EBOOK 1 ***\nLicence text\n"
    assert pretraining_corpus.clean_text(text) == "Body one.\n\nBody two."
    # a five-star section break is content, not a marker
    assert pretraining_corpus.clean_text("a\n*****\nb") == "a\n*****\nb"


def test_split_paragraphs_joins_wrapped_lines():
    text = "First line of a\nwrapped paragraph.\n\n  \nSecond\tparagraph here.\n\n\n"
    assert pretraining_corpus.split_paragraphs(text) == [
        "First line of a wrapped paragraph.",
        "Second\tparagraph here.",
    ]


def test_standardize_removes_unknown_tokens_from_a_real_novel(corpus_dir, tokenizer):
    text = (corpus_dir / "gutenberg/pg74_tom_sawyer.txt").read_text(encoding="utf-8")
    raw_ids = pretraining_corpus.encode_document(text, tokenizer, NEWLINE_ID, standardize=False)
    std_ids = pretraining_corpus.encode_document(text, tokenizer, NEWLINE_ID, standardize=True)
    unk = tokenizer.unk_token_id
    assert raw_ids.count(unk) / len(raw_ids) > 0.01  # curly quotes are not in the GPT-1 BPE
    assert std_ids.count(unk) / len(std_ids) < 0.0005


def test_encode_document_appends_newline_token_after_every_paragraph(tokenizer):
    ids = pretraining_corpus.encode_document("Hello there\nfriend.\n\nSecond one.", tokenizer, NEWLINE_ID)
    expected = (
        tokenizer("Hello there friend.", add_special_tokens=False)["input_ids"]
        + [NEWLINE_ID]
        + tokenizer("Second one.", add_special_tokens=False)["input_ids"]
        + [NEWLINE_ID]
    )
    assert ids == expected
    assert pretraining_corpus.newline_token_id(tokenizer) == NEWLINE_ID
    assert tokenizer.bos_token_id not in ids and tokenizer.cls_token_id not in ids  # plain BPE, no task framing


def test_non_utf8_file_is_an_error_naming_file_and_offset(tmp_path, caplog):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    with pytest.raises(pretraining_corpus.CorpusError) as error:
        pretraining_corpus.read_text_file(bad)
    message = str(error.value)
    assert str(bad) in message and "offset 3" in message and "0xe9" in message and "--skip-undecodable-files" in message
    with caplog.at_level(logging.WARNING, logger="hf_gpt1.pretraining_corpus"):
        assert pretraining_corpus.read_text_file(bad, on_decode_error="skip") is None
    assert str(bad) in caplog.text


# ----------------------------------------------------------------------------------------------------------------------
# Corpus sources
# ----------------------------------------------------------------------------------------------------------------------


def _write_excerpts(folder: Path, corpus_dir: Path, size: int = 20_000) -> list[Path]:
    """Three real excerpts (BOM file, CRLF file, marker file) in nested folders, plus a non-txt file to ignore."""
    sources = {
        "b/tom.txt": "gutenberg/pg74_tom_sawyer.txt",
        "a/monte.txt": "gutenberg/pg1184_count_of_monte_cristo.txt",
        "a/deeper/moby.txt": "gutenberg/pg2701_moby_dick.txt",
    }
    written = []
    for name, source in sources.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (corpus_dir / source).read_bytes()[:size]
        path.write_bytes(data[: len(data.decode("utf-8", errors="ignore").encode("utf-8"))])  # cut on a char boundary
        written.append(path)
    (folder / "a" / "notes.md").write_text("not corpus text", encoding="utf-8")
    return written


def test_resolve_corpus_folder_is_recursive_and_sorted(tmp_path, corpus_dir):
    _write_excerpts(tmp_path / "c", corpus_dir)
    source = pretraining_corpus.resolve_corpus(str(tmp_path / "c"))
    assert [p.relative_to(tmp_path / "c").as_posix() for p in source.files] == [
        "a/deeper/moby.txt",
        "a/monte.txt",
        "b/tom.txt",
    ]
    again = pretraining_corpus.resolve_corpus(str(tmp_path / "c"))
    assert again.fingerprint == source.fingerprint
    (tmp_path / "c" / "b" / "tom.txt").write_text("changed", encoding="utf-8")
    assert pretraining_corpus.resolve_corpus(str(tmp_path / "c")).fingerprint != source.fingerprint


def test_resolve_corpus_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x", encoding="utf-8")
    with pytest.raises(pretraining_corpus.CorpusError, match=r"contains no \*\.txt files"):
        pretraining_corpus.resolve_corpus(str(tmp_path / "empty"))
    with pytest.raises(pretraining_corpus.CorpusError, match="does not exist"):
        pretraining_corpus.resolve_corpus(str(tmp_path / "missing" / "corpus.txt"))
    with pytest.raises(pretraining_corpus.CorpusError, match="'typo.txt' does not exist"):
        pretraining_corpus.resolve_corpus("typo.txt")


def test_resolve_corpus_unknown_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(pretraining_corpus.CorpusError, match="Could not load dataset 'no-such-user/no-such-corpus'"):
        pretraining_corpus.resolve_corpus("no-such-user/no-such-corpus")


def test_saved_dataset_folder_with_text_column(tmp_path, tokenizer):
    import datasets

    rows = {"story": ["One small paragraph.\n\nAnother one.", "A \u201cquoted\u201d line."], "id": [1, 2]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(pretraining_corpus.CorpusError, match=r"no column 'text'.*\['story', 'id'\]"):
        pretraining_corpus.resolve_corpus(str(tmp_path / "ds"))
    with pytest.raises(pretraining_corpus.CorpusError, match="not 'valid'"):
        pretraining_corpus.resolve_corpus(str(tmp_path / "ds"), text_column="story", dataset_split="valid")
    source = pretraining_corpus.resolve_corpus(str(tmp_path / "ds"), text_column="story")
    tokenized = pretraining_corpus.tokenize_documents(source, tokenizer, tmp_path / "cache")
    assert tokenized["input_ids"] == [
        pretraining_corpus.encode_document(t, tokenizer, NEWLINE_ID) for t in rows["story"]
    ]
    assert list((tmp_path / "cache").glob("tokenized-*.arrow"))  # cached next to the run, not in ~/.cache


# ----------------------------------------------------------------------------------------------------------------------
# Packing: contiguous windows, nothing lost but the tail, deterministic validation split
# ----------------------------------------------------------------------------------------------------------------------


def test_packing_is_contiguous_and_loses_only_the_tail(tmp_path, corpus_dir, tokenizer):
    files = _write_excerpts(tmp_path / "c", corpus_dir)
    source = pretraining_corpus.resolve_corpus(str(tmp_path / "c"))
    block = 64
    data = pretraining_corpus.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=block, val_fraction=0.1)

    # the stream is every document's ids, in sorted-path order, concatenated
    expected = []
    for path in source.files:
        expected += pretraining_corpus.encode_document(path.read_text(encoding="utf-8"), tokenizer, NEWLINE_ID)
    assert len(files) == data.num_documents == 3
    assert data.tokens.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(data.tokens), np.asarray(expected))

    split = data.split
    assert split.num_windows == len(expected) // block
    assert split.dropped_tokens == len(expected) % block < block
    assert split.num_train + split.num_val == split.num_windows
    assert split.num_val == int(split.num_windows * 0.1) >= 1

    windows = [data.train[i]["input_ids"] for i in range(len(data.train))] + [
        data.val[i]["input_ids"] for i in range(len(data.val))
    ]
    assert all(w.dtype == torch.long and w.shape == (block,) for w in windows)
    np.testing.assert_array_equal(torch.cat(windows).numpy(), np.asarray(expected[: split.num_windows * block]))
    torch.testing.assert_close(data.train[0]["labels"], data.train[0]["input_ids"])
    # validation = the tail windows: its first window starts right after the last training window
    assert torch.equal(
        data.val[0]["input_ids"], torch.tensor(expected[split.num_train * block : (split.num_train + 1) * block])
    )

    # deterministic: a second preparation (from the cache) gives the same split and bytes
    again = pretraining_corpus.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=block, val_fraction=0.1)
    assert again.split == split
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(data.tokens))
    assert len(list((tmp_path / "cache").glob("tokens-*.npy"))) == 1  # reused, not rebuilt


def test_split_windows_arithmetic_and_too_small_error():
    split = pretraining_corpus.split_windows(1000, 64, 0.2)
    assert (split.num_windows, split.num_train, split.num_val, split.dropped_tokens) == (15, 12, 3, 40)
    assert pretraining_corpus.split_windows(1000, 64, 0.0).num_val == 0
    assert pretraining_corpus.split_windows(130, 64, 0.01).num_val == 1  # at least one validation window
    with pytest.raises(pretraining_corpus.CorpusError) as error:
        pretraining_corpus.split_windows(100, 64, 0.05, source="corpus tiny.txt")
    assert "corpus tiny.txt yields 100 tokens" in str(error.value) and "128 are needed" in str(error.value)
    with pytest.raises(
        pretraining_corpus.CorpusError,
        match="yields 10 tokens after tokenisation, but 64 are needed for one training window",
    ):
        pretraining_corpus.split_windows(10, 64, 0.0)


def test_prepare_corpus_skips_undecodable_files_only_when_asked(tmp_path, corpus_dir, tokenizer):
    _write_excerpts(tmp_path / "c", corpus_dir)
    (tmp_path / "c" / "b" / "latin1.txt").write_bytes("na\u00efve caf\u00e9\n".encode("latin-1"))
    source = pretraining_corpus.resolve_corpus(str(tmp_path / "c"))
    with pytest.raises(pretraining_corpus.CorpusError, match=r"latin1\.txt: byte 0xef at offset 2"):
        pretraining_corpus.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=64, val_fraction=0.1)
    data = pretraining_corpus.prepare_corpus(
        source, tokenizer, tmp_path / "cache", block_size=64, val_fraction=0.1, on_decode_error="skip"
    )
    assert data.skipped_files == [str(tmp_path / "c" / "b" / "latin1.txt")]
    assert data.num_documents == 3


def test_empty_corpus_is_an_error(tmp_path, tokenizer):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "blank.txt").write_text("\ufeff\r\n  \r\n", encoding="utf-8")
    source = pretraining_corpus.resolve_corpus(str(tmp_path / "c"))
    with pytest.raises(pretraining_corpus.CorpusError, match="contains no text: 0 tokens"):
        pretraining_corpus.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=16, val_fraction=0.1)


def test_epoch_sampler_is_seeded_per_epoch_and_independent_of_global_rng():
    sampler = pretraining_corpus.EpochShuffleSampler(50, seed=7)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG does not matter
    assert list(sampler) == first
    assert sorted(first) == list(range(50))
    sampler.set_epoch(1)  # what Trainer (through accelerate's data loader) calls at each epoch
    second = list(sampler)
    assert second != first and sorted(second) == list(range(50))
    whole = pretraining_corpus.EpochShuffleSampler(
        50, seed=7, multiple_of=8
    )  # whole micro-batches of 8: 48 of the 50 windows
    assert len(whole) == 48 and list(whole) == first[:48]


def test_two_shards_of_batch_b_cover_one_batch_of_2b():
    """What makes 2 processes x batch B equal 1 process x batch 2B: accelerate's BatchSamplerShard deals consecutive
    batches of one sampler order round-robin to the ranks."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    sampler = pretraining_corpus.EpochShuffleSampler(40, seed=3)
    single = list(BatchSampler(sampler, batch_size=8, drop_last=True))
    shards = [
        list(BatchSamplerShard(BatchSampler(sampler, batch_size=4, drop_last=True), num_processes=2, process_index=r))
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for step, batch in enumerate(single):
        assert shards[0][step] + shards[1][step] == batch


def test_resolve_corpus_records_hub_dataset_ids_only(tmp_path):
    (tmp_path / "c.txt").write_text("Some text.", encoding="utf-8")
    assert (
        pretraining_corpus.resolve_corpus(str(tmp_path / "c.txt")).hub_dataset is None
    )  # a local corpus names no Hub dataset
