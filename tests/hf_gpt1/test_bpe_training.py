"""A BPE vocabulary trained on real corpus text (shared data): GPT-1's tokenizer format, save/load, special tokens,
the paragraph token, no <unk> for ASCII, determinism, compression, and the too-small error."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from transformers import AutoTokenizer, OpenAIGPTTokenizer

from hf_gpt1.bpe_training import ASCII_ALPHABET, MIN_VOCAB_SIZE, NEWLINE_TOKEN, train_gpt1_bpe
from hf_gpt1.pretraining_corpus import clean_text, encode_document, newline_token_id, split_paragraphs
from hf_gpt1.tokenization_gpt1 import (
    DELIMITER_TOKEN,
    EXTRACT_TOKEN,
    PAD_TOKEN,
    START_TOKEN,
    gpt1_special_token_ids,
    load_gpt1_tokenizer,
)

VOCAB_SIZE = 1000


@pytest.fixture(scope="module")
def paragraphs(shared_data: Path) -> list[str]:
    return split_paragraphs(clean_text((shared_data / "corpus" / "tinyshakespeare.txt").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def trained(paragraphs: list[str]) -> OpenAIGPTTokenizer:
    return train_gpt1_bpe(paragraphs, VOCAB_SIZE)


def test_vocabulary_layout_matches_gpt1s(trained: OpenAIGPTTokenizer) -> None:
    vocab = trained.get_vocab()
    assert trained.vocab_size <= VOCAB_SIZE
    assert vocab["<unk>"] == 0
    assert vocab[NEWLINE_TOKEN] == trained.vocab_size - 1  # last learned id, as 40477 in the released vocabulary
    # the paper's four tokens right after the BPE, as for the released vocabulary
    ids = gpt1_special_token_ids(trained)
    assert [ids[token] for token in (START_TOKEN, DELIMITER_TOKEN, EXTRACT_TOKEN, PAD_TOKEN)] == list(
        range(trained.vocab_size, trained.vocab_size + 4)
    )
    assert trained.convert_tokens_to_ids([START_TOKEN, DELIMITER_TOKEN, EXTRACT_TOKEN, PAD_TOKEN]) == list(
        range(trained.vocab_size, trained.vocab_size + 4)
    )
    assert len(trained) == trained.vocab_size + 4


def test_every_printable_ascii_character_has_a_token(trained: OpenAIGPTTokenizer) -> None:
    # task text has characters the corpus may lack ('%', '~', digits); alone or inside words, none becomes <unk>
    text = " ".join(ASCII_ALPHABET) + " 100% ~tilde {braces} a|b " + string.punctuation
    ids = trained(text, add_special_tokens=False)["input_ids"]
    assert trained.unk_token_id not in ids
    assert trained.decode(ids).replace(" ", "") == text.lower().replace(" ", "")


def test_learned_merges_compress_the_corpus(trained: OpenAIGPTTokenizer, paragraphs: list[str]) -> None:
    sample = paragraphs[:500]
    no_merges = train_gpt1_bpe(paragraphs, MIN_VOCAB_SIZE)  # characters only: the alphabet leaves no room

    def count(tokenizer: OpenAIGPTTokenizer) -> int:
        return sum(len(ids) for ids in tokenizer(sample, add_special_tokens=False)["input_ids"])

    assert count(trained) < 0.5 * count(no_merges), (count(trained), count(no_merges))


def test_save_and_load_round_trip(trained: OpenAIGPTTokenizer, paragraphs: list[str], tmp_path: Path) -> None:
    trained.save_pretrained(tmp_path)
    for loaded in (load_gpt1_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert loaded.get_vocab() == trained.get_vocab()
        for text in paragraphs[:50]:
            assert loaded(text)["input_ids"] == trained(text)["input_ids"]
        # the paper's framing (start ... extract) survives the round trip
        assert loaded("to be", "or not")["input_ids"] == trained("to be", "or not")["input_ids"]


def test_pretraining_separates_paragraphs_with_its_newline_token(trained: OpenAIGPTTokenizer) -> None:
    separator = newline_token_id(trained)
    assert separator == trained.vocab_size - 1
    ids = encode_document("First paragraph.\n\nSecond one.", trained, separator)
    assert ids.count(separator) == 2 and ids[-1] == separator


def test_training_again_learns_the_same_tokens(paragraphs: list[str]) -> None:
    first = train_gpt1_bpe(paragraphs, VOCAB_SIZE)
    second = train_gpt1_bpe(iter(paragraphs), VOCAB_SIZE)  # a one-shot iterator is read twice as well
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()  # vocabulary, merges, ids
    assert len(first) == VOCAB_SIZE + 4  # exactly the size asked for, and the paper's four special tokens


def test_merges_that_tie_come_in_the_same_order_every_time() -> None:
    """Every "q?" word is equally frequent, so the merges (q, ?</w>) tie; the `tokenizers` trainer orders tied merges
    by the ids of their symbols, and numbers word-final symbols in the hash order of the words (a new order for each
    training, even in one process). Registering them first, sorted, makes the order, and so every id, the same."""
    texts = [" ".join("q" + letter for letter in string.ascii_lowercase)] * 5
    runs = [train_gpt1_bpe(texts, MIN_VOCAB_SIZE + 30) for _ in range(3)]
    vocab = runs[0].get_vocab()
    learned = [token for token in sorted(vocab, key=vocab.get) if token.startswith("q") and len(token) == 6]
    assert learned == [f"q{letter}</w>" for letter in string.ascii_lowercase]  # in alphabetical order
    assert all(run.get_vocab() == runs[0].get_vocab() for run in runs)


def test_standardize_maps_typographic_marks_before_training() -> None:
    texts = ["\u201cquoted\u201d words \u2014 with dashes"] * 10
    tokenizer = train_gpt1_bpe(texts, MIN_VOCAB_SIZE + 20)
    assert not any("\u201c" in token or "\u2014" in token for token in tokenizer.get_vocab())


def test_too_small_a_vocabulary_is_a_clear_error(paragraphs: list[str]) -> None:
    with pytest.raises(ValueError, match=rf"vocab_size=10 is too small.*at least {MIN_VOCAB_SIZE}"):
        train_gpt1_bpe(paragraphs[:10], 10)
