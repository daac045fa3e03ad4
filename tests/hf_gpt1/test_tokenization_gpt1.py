"""GPT-1 tokenizer on the real release files (shared data): ids, framing, truncation, save/load, layouts, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, OpenAIGPTTokenizer

from hf_gpt1.configuration_gpt1 import GPT1Config
from hf_gpt1.modeling_gpt1 import GPT1ForCausalLM
from hf_gpt1.tokenization_gpt1 import (
    DELIMITER_TOKEN,
    EXTRACT_TOKEN,
    PAD_TOKEN,
    START_TOKEN,
    _is_local_path,
    _load_bpe_tokenizer,
    add_special_tokens,
    load_gpt1_tokenizer,
)

BPE_SIZE = 40478
START_ID, DELIMITER_ID, EXTRACT_ID, PAD_ID = 40478, 40479, 40480, 40481


# ----------------------------------------------------------------------------------------------------------------------
# fixtures: real files, read once
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> OpenAIGPTTokenizer:
    return load_gpt1_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def encoder(tokenizer_dir: Path) -> dict[str, int]:
    return json.loads((tokenizer_dir / "encoder_bpe_40000.json").read_text(encoding="utf-8"))


def _read_tsv_column(path: Path, columns: list[int]) -> list[str]:
    """Plain tab split (the GLUE files hold literal quotes, so no csv quoting); utf-8-sig drops MRPC's BOM."""
    rows = path.read_text(encoding="utf-8-sig").split("\n")[1:]
    return [row.split("\t")[c] for row in rows if row for c in columns]


@pytest.fixture(scope="module")
def sst2_sentences(glue_dir: Path) -> list[str]:
    sentences = _read_tsv_column(glue_dir / "SST-2" / "dev.tsv", [0])
    assert len(sentences) == 872
    return sentences


@pytest.fixture(scope="module")
def mrpc_pairs(glue_dir: Path) -> list[tuple[str, str]]:
    rows = [r.split("\t") for r in (glue_dir / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").split("\n")[1:] if r]
    assert len(rows) == 408
    return [(r[3], r[4]) for r in rows]


@pytest.fixture(scope="module")
def real_sentences(sst2_sentences, mrpc_pairs) -> list[str]:
    return sst2_sentences + [s for pair in mrpc_pairs for s in pair]


def _tiny_model(**config) -> GPT1ForCausalLM:
    torch.manual_seed(0)
    return GPT1ForCausalLM(GPT1Config(n_layer=1, n_embd=32, n_head=2, **config)).eval()


# ----------------------------------------------------------------------------------------------------------------------
# vocabulary and ids
# ----------------------------------------------------------------------------------------------------------------------


def test_plain_bpe_vocabulary_is_the_released_one(tokenizer_dir, encoder):
    plain = _load_bpe_tokenizer(tokenizer_dir)
    assert len(plain) == BPE_SIZE == len(encoder)
    assert plain.get_vocab() == encoder
    assert plain.unk_token == "<unk>" and plain.unk_token_id == 0
    assert plain.bos_token is None and plain.cls_token is None  # nothing GPT-1 specific yet


def test_known_word_ids(tokenizer, encoder):
    # ids straight from encoder_bpe_40000.json
    assert (encoder["the</w>"], encoder["movie</w>"], encoder[".</w>"], encoder["hello</w>"]) == (481, 4121, 239, 3570)
    ids = tokenizer("The movie.", add_special_tokens=False)["input_ids"]
    assert ids == [481, 4121, 239]
    assert tokenizer.convert_ids_to_tokens(ids) == ["the</w>", "movie</w>", ".</w>"]
    assert tokenizer.convert_tokens_to_ids("\n</w>") == 40477  # last BPE id


def test_special_tokens_registered_with_roles_and_ids(tokenizer):
    assert (START_TOKEN, DELIMITER_TOKEN, EXTRACT_TOKEN, PAD_TOKEN) == ("_start_", "_delimiter_", "_classify_", "<pad>")
    assert len(tokenizer) == BPE_SIZE + 4
    assert tokenizer.vocab_size == BPE_SIZE  # base vocabulary, without added tokens
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("_start_", "_delimiter_", "_classify_", "<pad>")] == [
        START_ID,
        DELIMITER_ID,
        EXTRACT_ID,
        PAD_ID,
    ]
    assert (tokenizer.bos_token, tokenizer.sep_token, tokenizer.cls_token, tokenizer.pad_token) == (
        "_start_",
        "_delimiter_",
        "_classify_",
        "<pad>",
    )
    assert (tokenizer.bos_token_id, tokenizer.sep_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id) == (
        START_ID,
        DELIMITER_ID,
        EXTRACT_ID,
        PAD_ID,
    )
    assert tokenizer.unk_token == "<unk>" and tokenizer.unk_token_id == 0
    assert tokenizer.eos_token is None
    for index in (START_ID, DELIMITER_ID, EXTRACT_ID, PAD_ID):
        assert tokenizer.added_tokens_decoder[index].special
    assert tokenizer.model_max_length == 512


def test_ids_identical_to_transformers_openai_tokenizer(tokenizer, tokenizer_dir, real_sentences):
    reference_from_files = OpenAIGPTTokenizer(
        vocab=str(tokenizer_dir / "vocab.json"), merges=str(tokenizer_dir / "merges.txt")
    )
    reference_from_folder = OpenAIGPTTokenizer.from_pretrained(tokenizer_dir)
    assert len(reference_from_files) == len(reference_from_folder) == BPE_SIZE
    ours = tokenizer(real_sentences, add_special_tokens=False)["input_ids"]
    assert ours == reference_from_files(real_sentences)["input_ids"]
    assert ours == reference_from_folder(real_sentences)["input_ids"]
    assert sum(map(len, ours)) > 30_000  # really tokenised ~2.5k sentences


def test_decode_round_trip_on_glue_sentences(tokenizer, real_sentences):
    """decode(encode(s)) is the *normalised* text: lower-cased, accents stripped, words and punctuation split by the
    BERT pre-tokenizer and re-joined with single spaces. Characters outside the 478 base symbols become <unk>."""
    backend = tokenizer.backend_tokenizer
    alphabet = {token.removesuffix("</w>") for token in tokenizer.get_vocab() if len(token.removesuffix("</w>")) == 1}
    exact = with_unk = 0
    for sentence in real_sentences:
        ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        normalised = backend.normalizer.normalize_str(sentence)
        words = [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalised)]
        out_of_alphabet = sum(1 for word in words for char in word if char not in alphabet)
        assert ids.count(tokenizer.unk_token_id) == out_of_alphabet, sentence
        if out_of_alphabet == 0:
            assert tokenizer.decode(ids) == " ".join(words), sentence
            assert tokenizer.decode(tokenizer(sentence)["input_ids"], skip_special_tokens=True) == " ".join(words)
            exact += 1
        else:
            with_unk += 1
    assert len(real_sentences) == 872 + 2 * 408
    assert (exact, with_unk) == (1675, 13)  # 13 MRPC sentences hold curly quotes / en dashes, outside the alphabet
    # Even SST-2's lower-cased PTB text is not a fixed point: the BERT pre-tokenizer splits every punctuation
    # character off, so "it 's" comes back as "it ' s" (and "U.S." as "u . s .").
    sst2_first = "it 's a charming and often affecting journey . "
    decoded = tokenizer.decode(tokenizer(sst2_first, add_special_tokens=False)["input_ids"])
    assert decoded == "it ' s a charming and often affecting journey ."


# ----------------------------------------------------------------------------------------------------------------------
# framing
# ----------------------------------------------------------------------------------------------------------------------


def test_single_text_framing(tokenizer):
    plain = tokenizer("it 's a charming journey .", add_special_tokens=False)["input_ids"]
    framed = tokenizer("it 's a charming journey .")["input_ids"]
    assert framed == [START_ID, *plain, EXTRACT_ID]
    assert tokenizer.convert_ids_to_tokens(framed)[0] == "_start_"
    assert tokenizer.convert_ids_to_tokens(framed)[-1] == "_classify_"
    assert PAD_ID not in framed and DELIMITER_ID not in framed


def test_pair_framing_on_mrpc(tokenizer, mrpc_pairs):
    for first, second in mrpc_pairs[:50]:
        a = tokenizer(first, add_special_tokens=False)["input_ids"]
        b = tokenizer(second, add_special_tokens=False)["input_ids"]
        assert tokenizer(first, second)["input_ids"] == [START_ID, *a, DELIMITER_ID, *b, EXTRACT_ID]
    assert tokenizer.num_special_tokens_to_add(pair=False) == 2
    assert tokenizer.num_special_tokens_to_add(pair=True) == 3


def test_batch_padding_uses_pad_token(tokenizer):
    batch = tokenizer(["a b c d e", "hello"], padding=True)
    assert batch["input_ids"][1] == [START_ID, 3570, EXTRACT_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]
    assert batch["attention_mask"][1] == [1, 1, 1, 0, 0, 0, 0]
    assert "token_type_ids" not in batch  # GPT-1 has no segment embedding


def test_literal_special_token_text_is_the_special_token(tokenizer):
    # As for every HF special token: the literal string in the input maps to the token (split_special_tokens=False).
    assert tokenizer("x _classify_ y", add_special_tokens=False)["input_ids"][1] == EXTRACT_ID


# ----------------------------------------------------------------------------------------------------------------------
# truncation keeps the framing
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [True, "longest_first", "only_first"])
def test_pair_truncation_keeps_special_tokens(tokenizer, mrpc_pairs, strategy):
    first, second = max(mrpc_pairs, key=lambda pair: len(pair[0]))
    a = tokenizer(first, add_special_tokens=False)["input_ids"]
    b = tokenizer(second, add_special_tokens=False)["input_ids"]
    max_length = len(b) + 3 + 5  # room for `second` plus 5 tokens of `first`
    assert len(a) + len(b) + 3 > max_length
    ids = tokenizer(first, second, truncation=strategy, max_length=max_length)["input_ids"]
    assert len(ids) == max_length
    assert ids[0] == START_ID and ids[-1] == EXTRACT_ID and ids.count(DELIMITER_ID) == 1
    kept_a, kept_b = ids[1 : ids.index(DELIMITER_ID)], ids[ids.index(DELIMITER_ID) + 1 : -1]
    assert kept_a == a[: len(kept_a)] and kept_b == b[: len(kept_b)]  # right-truncation of each text
    if strategy == "only_first":
        assert kept_b == b and len(kept_a) == 5


def test_single_truncation_keeps_special_tokens(tokenizer, sst2_sentences):
    sentence = max(sst2_sentences, key=len)
    plain = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    ids = tokenizer(sentence, truncation=True, max_length=10)["input_ids"]
    assert ids == [START_ID, *plain[:8], EXTRACT_ID]
    # truncation=True without max_length uses model_max_length = GPT-1's 512 positions
    long_ids = tokenizer(" ".join(sst2_sentences[:40]), truncation=True)["input_ids"]
    assert len(long_ids) == 512 and long_ids[0] == START_ID and long_ids[-1] == EXTRACT_ID
    # and plain LM chunks stay plain
    assert tokenizer(sentence, add_special_tokens=False, truncation=True, max_length=10)["input_ids"] == plain[:10]


# ----------------------------------------------------------------------------------------------------------------------
# save / load round trip
# ----------------------------------------------------------------------------------------------------------------------


def test_save_pretrained_autotokenizer_round_trip(tokenizer, tmp_path, mrpc_pairs, sst2_sentences):
    tokenizer.save_pretrained(tmp_path)
    saved_json = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    post = saved_json["post_processor"]
    assert post["type"] == "TemplateProcessing"
    assert [next(iter(part.values()))["id"] for part in post["pair"]] == [
        "_start_",
        "A",
        "_delimiter_",
        "B",
        "_classify_",
    ]
    assert {t["content"]: t["id"] for t in saved_json["added_tokens"] if t["special"]} == {
        "<unk>": 0,
        "_start_": START_ID,
        "_delimiter_": DELIMITER_ID,
        "_classify_": EXTRACT_ID,
        "<pad>": PAD_ID,
    }
    saved_config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert saved_config["tokenizer_class"] == "OpenAIGPTTokenizer"
    assert (saved_config["bos_token"], saved_config["sep_token"], saved_config["cls_token"]) == (
        "_start_",
        "_delimiter_",
        "_classify_",
    )
    assert saved_config["pad_token"] == "<pad>" and saved_config["model_max_length"] == 512
    # With add_bos_token/add_eos_token in the config, v5 would rebuild the post-processor from them on load
    # (TokenizersBackend.update_post_processor) and drop the framing; the saved post-processor is used instead.
    assert "add_bos_token" not in saved_config and "add_eos_token" not in saved_config

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded) is OpenAIGPTTokenizer
    assert len(reloaded) == len(tokenizer) == BPE_SIZE + 4
    assert reloaded.special_tokens_map == tokenizer.special_tokens_map
    assert reloaded.all_special_ids == tokenizer.all_special_ids
    assert reloaded.cls_token_id == EXTRACT_ID and reloaded.pad_token_id == PAD_ID
    firsts, seconds = [p[0] for p in mrpc_pairs[:40]], [p[1] for p in mrpc_pairs[:40]]
    assert reloaded(firsts, seconds)["input_ids"] == tokenizer(firsts, seconds)["input_ids"]
    assert reloaded(sst2_sentences[:40])["input_ids"] == tokenizer(sst2_sentences[:40])["input_ids"]
    assert (
        reloaded(firsts[0], seconds[0], truncation=True, max_length=12)["input_ids"]
        == tokenizer(firsts[0], seconds[0], truncation=True, max_length=12)["input_ids"]
    )
    assert (
        reloaded(firsts[:3], add_special_tokens=False)["input_ids"]
        == tokenizer(firsts[:3], add_special_tokens=False)["input_ids"]
    )

    # loading the saved (already extended) tokenizer again does not add the tokens twice
    again = load_gpt1_tokenizer(tmp_path)
    assert len(again) == BPE_SIZE + 4 and again.cls_token_id == EXTRACT_ID
    assert again("a", "b")["input_ids"] == tokenizer("a", "b")["input_ids"]


# ----------------------------------------------------------------------------------------------------------------------
# layouts and errors
# ----------------------------------------------------------------------------------------------------------------------


def _copy(tokenizer_dir: Path, target: Path, names: list[str]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(tokenizer_dir / name, target / name)
    return target


@pytest.mark.parametrize("subfolder", ["", "model"])
def test_loads_original_release_layout(tokenizer, tokenizer_dir, encoder, tmp_path, sst2_sentences, subfolder):
    _copy(tokenizer_dir, tmp_path / subfolder, ["encoder_bpe_40000.json", "vocab_40000.bpe"])
    release = load_gpt1_tokenizer(tmp_path)
    assert len(release) == BPE_SIZE + 4
    assert release.cls_token_id == EXTRACT_ID and release.model_max_length == 512
    assert release(sst2_sentences[:100])["input_ids"] == tokenizer(sst2_sentences[:100])["input_ids"]
    assert release("a", "b")["input_ids"] == [START_ID, encoder["a</w>"], DELIMITER_ID, encoder["b</w>"], EXTRACT_ID]


def test_loads_hf_vocab_and_merges_folder(tokenizer_dir, tmp_path, tokenizer):
    folder = _copy(tokenizer_dir, tmp_path / "hf", ["vocab.json", "merges.txt"])
    loaded = load_gpt1_tokenizer(str(folder))  # str path works as well as Path
    assert len(loaded) == BPE_SIZE + 4
    assert loaded("the movie")["input_ids"] == [START_ID, 481, 4121, EXTRACT_ID]


def test_folder_without_tokenizer_files_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("nothing here")
    with pytest.raises(FileNotFoundError) as info:
        load_gpt1_tokenizer(empty)
    message = str(info.value)
    assert str(empty) in message
    for expected in ("vocab.json", "merges.txt", "tokenizer.json", "encoder_bpe_40000.json", "vocab_40000.bpe"):
        assert expected in message
    assert "README.md" in message  # says what it found instead


def test_half_a_layout_is_not_enough(tokenizer_dir, tmp_path):
    folder = _copy(tokenizer_dir, tmp_path / "half", ["vocab.json", "encoder_bpe_40000.json"])
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_gpt1_tokenizer(folder)


def test_missing_folder_and_file_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gpt1_tokenizer(tmp_path / "nope")
    file_path = tmp_path / "vocab.json"
    file_path.write_text("{}")
    with pytest.raises(ValueError, match="is a file"):
        load_gpt1_tokenizer(file_path)


def test_refuses_a_gpt2_style_folder(tokenizer_dir, tmp_path):
    folder = _copy(tokenizer_dir, tmp_path / "gpt2", ["vocab.json", "merges.txt"])
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    with pytest.raises(ValueError, match="GPT2Tokenizer"):
        load_gpt1_tokenizer(folder)


def test_unreachable_hub_id_raises_instead_of_returning_an_empty_vocabulary():
    # conftest forces HF_HUB_OFFLINE=1; transformers v5 would hand back a 1-token tokenizer here.
    with pytest.raises(OSError, match="hf-gpt1-tests/no-such-tokenizer"):
        load_gpt1_tokenizer("hf-gpt1-tests/no-such-tokenizer")


def test_hub_ids_and_paths_are_told_apart(tmp_path):
    assert not _is_local_path("openai-community/openai-gpt")
    assert not _is_local_path("openai-gpt")
    assert _is_local_path(tmp_path) and _is_local_path(str(tmp_path))
    assert _is_local_path("./model") and _is_local_path("~/gpt1") and _is_local_path("a/b/c")


# ----------------------------------------------------------------------------------------------------------------------
# add_special_tokens(model, tokenizer)
# ----------------------------------------------------------------------------------------------------------------------


def test_add_special_tokens_resizes_records_ids_and_inits_new_rows(tokenizer):
    model = _tiny_model(initializer_range=0.3)  # a std the trained rows don't have, so the init is visible
    before = model.get_input_embeddings().weight.detach().clone()
    assert before.shape == (BPE_SIZE, 32)

    returned = add_special_tokens(model, tokenizer, generator=torch.Generator().manual_seed(0))
    assert returned is model
    weight = model.get_input_embeddings().weight
    assert weight.shape == (BPE_SIZE + 4, 32)
    assert torch.equal(weight[:BPE_SIZE], before)  # trained rows untouched
    new_rows = weight[BPE_SIZE:].detach()
    assert 0.2 < new_rows.std().item() < 0.4 and abs(new_rows.mean().item()) < 0.1  # N(0, 0.3), 128 draws
    assert not torch.allclose(new_rows, before.mean(0).expand_as(new_rows), atol=0.05)  # not mean-resizing

    # the LM head is tied: same storage, and logits of the new ids use the new rows
    assert model.lm_head.weight.shape == (BPE_SIZE + 4, 32)
    assert model.lm_head.weight.data_ptr() == weight.data_ptr()
    with torch.no_grad():
        out = model(torch.tensor([tokenizer("a", "b")["input_ids"]]), output_hidden_states=True)
    last = out.hidden_states[-1][0, -1]
    assert torch.allclose(out.logits[0, -1, EXTRACT_ID], last @ new_rows[EXTRACT_ID - BPE_SIZE], atol=1e-5)

    config = model.config
    assert (config.start_token_id, config.delimiter_token_id, config.extract_token_id, config.pad_token_id) == (
        START_ID,
        DELIMITER_ID,
        EXTRACT_ID,
        PAD_ID,
    )
    assert config.bos_token_id == START_ID and config.vocab_size == BPE_SIZE + 4
    assert model.generation_config.pad_token_id == PAD_ID


def test_add_special_tokens_is_idempotent(tokenizer):
    model = _tiny_model()
    add_special_tokens(model, tokenizer)
    snapshot = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    add_special_tokens(model, tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == BPE_SIZE + 4
    assert len(tokenizer) == BPE_SIZE + 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshot[name]), name


def test_add_special_tokens_registers_tokens_on_a_plain_tokenizer(tokenizer_dir):
    plain = OpenAIGPTTokenizer.from_pretrained(tokenizer_dir)
    model = _tiny_model()
    add_special_tokens(model, plain)
    assert len(plain) == BPE_SIZE + 4 and plain.cls_token_id == EXTRACT_ID
    assert plain("a")["input_ids"] == [START_ID, 246, EXTRACT_ID]
    assert model.config.extract_token_id == EXTRACT_ID


def test_add_special_tokens_survives_save_and_reload(tokenizer, tmp_path):
    model = _tiny_model()
    add_special_tokens(model, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = GPT1ForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
    assert reloaded.config.extract_token_id == EXTRACT_ID and reloaded.config.pad_token_id == PAD_ID
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    add_special_tokens(reloaded, reloaded_tokenizer)  # already consistent: a no-op
    assert reloaded.get_input_embeddings().weight.shape[0] == BPE_SIZE + 4


def test_loads_from_a_hub_id(hub_server, tokenizer_dir, tokenizer):
    """A Hub repo laid out like `openai-community/openai-gpt` (vocab.json + merges.txt), on the local test Hub."""
    repo_id = "test-user/openai-gpt"
    hub_server.create_repo(repo_id)
    hub_server.commit(repo_id, {name: (tokenizer_dir / name).read_bytes() for name in ("vocab.json", "merges.txt")})
    from_hub = load_gpt1_tokenizer(repo_id)
    assert len(from_hub) == BPE_SIZE + 4 and from_hub.cls_token_id == EXTRACT_ID
    assert from_hub("the movie", "hello")["input_ids"] == tokenizer("the movie", "hello")["input_ids"]
    with pytest.raises(OSError, match="test-user/no-such-repo"):
        load_gpt1_tokenizer("test-user/no-such-repo")
