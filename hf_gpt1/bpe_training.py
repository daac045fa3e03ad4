"""Training a GPT-1-style BPE vocabulary on a corpus, for models much smaller than the paper's.

GPT-1's released BPE has 40,478 tokens. At the paper's width (768) its table is a quarter of the 117M parameters; at
a width of 256 a 40k table would be most of the model and most of a training step (the softmax over 40k tokens), so
small presets train their own, smaller vocabulary on the pretraining corpus instead (`gpt1-mini`: 8,192 merges and
symbols). The result is the same kind of tokenizer as the released one, so everything downstream is unchanged: an
`OpenAIGPTTokenizer` (lower-cased BERT normaliser and pre-tokenizer, `</w>` end-of-word BPE), `<unk>` at id 0, the
paragraph token `"\\n</w>"` after the learned tokens, and the paper's special tokens registered after that.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import OpenAIGPTTokenizer

from .tokenization_gpt1 import register_gpt1_special_tokens, standardize_text

UNK_TOKEN = "<unk>"
NEWLINE_TOKEN = "\n</w>"  # the paragraph separator pretraining appends (id 40477 in the released vocabulary)
END_OF_WORD = "</w>"
# Every printable ASCII character is a base symbol even if the corpus lacks it, so task text (digits, brackets,
# punctuation that novels rarely use) never maps to <unk> for want of a character.
ASCII_ALPHABET = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
MIN_VOCAB_SIZE = 2 * len(ASCII_ALPHABET) + 2  # each symbol alone and word-final, <unk>, the newline token


def train_gpt1_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    standardize: bool = True,
    model_max_length: int | None = None,
) -> OpenAIGPTTokenizer:
    """Learn a `</w>` BPE of at most `vocab_size` tokens (including `<unk>`, every printable ASCII character alone and
    word-final, and `"\\n</w>"`; excluding the four special tokens registered on top) from `texts`, one paragraph or
    document per item.

    `standardize`: map typographic quotes and dashes to ASCII first, as pretraining and fine-tuning do before
    tokenizing (`standardize_text`). The same texts always give the same tokenizer, ids included: the `tokenizers`
    trainer breaks ties between equally frequent merges by the ids of their symbols, and it numbers the word-final
    symbols (`"e</w>"`) in the hash order of the corpus's words, which changes from run to run; so every word-final
    symbol is registered before training, in sorted order. `texts` is read twice (once for the characters it holds);
    a one-shot iterator is held in memory for that.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a GPT-1 BPE: it needs at least {MIN_VOCAB_SIZE} tokens "
            f"(the {len(ASCII_ALPHABET)} ASCII base symbols, each also word-final, <unk> and the newline token)."
        )
    if iter(texts) is texts:  # a one-shot iterator: kept, since it is read twice
        texts = list(texts)
    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN, end_of_word_suffix=END_OF_WORD))
    # the normaliser and pre-tokenizer OpenAIGPTTokenizer uses, so the learned merges see the words it will see
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Word-final symbols registered up front get fixed ids (the trainer would number them in hash order, and ties
    # between merges are broken by those ids); a character that never ends a word just keeps an unused token.
    word_final = [symbol + END_OF_WORD for symbol in _alphabet(texts, backend.normalizer, standardize)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # room for the paragraph token appended below
        min_frequency=min_frequency,
        special_tokens=[UNK_TOKEN, *word_final],
        initial_alphabet=ASCII_ALPHABET,
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    backend.train_from_iterator((standardize_text(text) if standardize else text for text in texts), trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"]]
    # Number them the released vocabulary's way: <unk>, the base symbols (sorted; every printable ASCII character
    # alone and word-final among them, so a one-character word such as "%" never maps to <unk>), one token per merge
    # in merge order, then the paragraph token.
    merged = ["".join(merge) for merge in merges]
    base = sorted(set(model["vocab"]) - set(merged) - {UNK_TOKEN})
    tokens = [UNK_TOKEN, *base, *dict.fromkeys(merged)]
    if NEWLINE_TOKEN in tokens:  # cannot be learned (whitespace is split off), but keep the invariant explicit
        raise RuntimeError(f"the trained vocabulary already holds {NEWLINE_TOKEN!r}")
    tokens.append(NEWLINE_TOKEN)
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = OpenAIGPTTokenizer(vocab=vocab, merges=merges, unk_token=UNK_TOKEN)
    tokenizer.model_max_length = model_max_length or 512
    register_gpt1_special_tokens(tokenizer)
    return tokenizer


def _alphabet(texts: Iterable[str], normalizer: normalizers.Normalizer, standardize: bool) -> list[str]:
    """The sorted characters the trainer will see: printable ASCII and every character of the normalised texts."""
    raw: set[str] = set()
    for text in texts:
        raw.update(standardize_text(text) if standardize else text)
    # BertNormalizer works character by character (lower-casing, accents, control characters, spaces around CJK)
    normalised = {char for symbol in raw for char in normalizer.normalize_str(symbol) if not char.isspace()}
    return sorted(normalised | set(ASCII_ALPHABET))
