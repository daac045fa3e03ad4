"""Unit tests of hf_gpt1.pretraining: corpus cleaning/packing, presets, optimizer grouping and schedule, output-folder
rules and atomic checkpoints. Real files (the shared corpus, files written to tmp_path), the real GPT-1 tokenizer and
real accelerate objects; no mocks. The end-to-end runs of scripts/pretrain.py are in tests/scripts/test_pretrain.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_gpt1 import pretraining as pt

NEWLINE_ID = 40477  # "\n</w>" in the GPT-1 BPE


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from hf_gpt1.tokenization_gpt1 import load_gpt1_tokenizer

    return load_gpt1_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def corpus_dir(shared_data) -> Path:
    return shared_data / "corpus"


def _tiny_model(tokenizer=None, **overrides):
    from hf_gpt1 import GPT1Config, GPT1ForCausalLM

    vocab = len(tokenizer) if tokenizer is not None else 99
    config = GPT1Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, **overrides)
    torch.manual_seed(0)
    return GPT1ForCausalLM(config)


# ----------------------------------------------------------------------------------------------------------------------
# Text cleaning on the real corpus files with the documented byte-level quirks
# ----------------------------------------------------------------------------------------------------------------------


def test_clean_text_strips_bom_and_gutenberg_markers_of_real_file(corpus_dir):
    raw_bytes = (corpus_dir / "gutenberg/pg74_tom_sawyer.txt").read_bytes()
    assert raw_bytes.startswith(b"\xef\xbb\xbf")  # the README's BOM caveat holds
    text = pt.clean_text(raw_bytes.decode("utf-8"))
    assert not text.startswith("\ufeff")
    assert "*** START OF" not in text and "*** END OF" not in text
    assert text.strip().startswith("THE ADVENTURES OF TOM SAWYER")
    assert text.rstrip().endswith("part of their lives at present.")


def test_clean_text_normalises_crlf_of_real_file(corpus_dir):
    raw = (corpus_dir / "gutenberg/pg1184_count_of_monte_cristo.txt").read_bytes().decode("utf-8")
    assert "\r\n" in raw and not raw.endswith("\n")  # the CRLF / no-final-newline caveat holds
    text = pt.clean_text(raw)
    assert "\r" not in text
    assert len(pt.split_paragraphs(text)) > 1000  # blank-line paragraphs are found once CRLF is gone


def test_clean_text_drops_header_before_start_and_licence_after_end():
    text = "PG header line\n*** START OF THE PROJECT GUTENBERG EBOOK 1 ***\nBody one.\n\nBody two.\n*** END OF THE PROJECT GUTENBERG EBOOK 1 ***\nLicence text\n"
    assert pt.clean_text(text) == "Body one.\n\nBody two."
    # a five-star section break is content, not a marker
    assert pt.clean_text("a\n*****\nb") == "a\n*****\nb"


def test_split_paragraphs_joins_wrapped_lines():
    text = "First line of a\nwrapped paragraph.\n\n  \nSecond\tparagraph here.\n\n\n"
    assert pt.split_paragraphs(text) == ["First line of a wrapped paragraph.", "Second\tparagraph here."]


def test_standardize_removes_unknown_tokens_from_a_real_novel(corpus_dir, tokenizer):
    text = (corpus_dir / "gutenberg/pg74_tom_sawyer.txt").read_text(encoding="utf-8")
    raw_ids = pt.encode_document(text, tokenizer, NEWLINE_ID, standardize=False)
    std_ids = pt.encode_document(text, tokenizer, NEWLINE_ID, standardize=True)
    unk = tokenizer.unk_token_id
    assert raw_ids.count(unk) / len(raw_ids) > 0.01  # curly quotes are not in the GPT-1 BPE
    assert std_ids.count(unk) / len(std_ids) < 0.0005


def test_encode_document_appends_newline_token_after_every_paragraph(tokenizer):
    ids = pt.encode_document("Hello there\nfriend.\n\nSecond one.", tokenizer, NEWLINE_ID)
    expected = (
        tokenizer("Hello there friend.", add_special_tokens=False)["input_ids"]
        + [NEWLINE_ID]
        + tokenizer("Second one.", add_special_tokens=False)["input_ids"]
        + [NEWLINE_ID]
    )
    assert ids == expected
    assert pt.newline_token_id(tokenizer) == NEWLINE_ID
    assert tokenizer.bos_token_id not in ids and tokenizer.cls_token_id not in ids  # plain BPE, no task framing


def test_non_utf8_file_is_an_error_naming_file_and_offset(tmp_path, caplog):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\u00e9 cr\u00e8me\n".encode("latin-1"))
    with pytest.raises(pt.CorpusError) as error:
        pt.read_text_file(bad)
    message = str(error.value)
    assert str(bad) in message and "offset 3" in message and "0xe9" in message and "--skip-undecodable-files" in message
    with caplog.at_level(logging.WARNING, logger="hf_gpt1.pretraining"):
        assert pt.read_text_file(bad, on_decode_error="skip") is None
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
    source = pt.resolve_corpus(str(tmp_path / "c"))
    assert [p.relative_to(tmp_path / "c").as_posix() for p in source.files] == [
        "a/deeper/moby.txt",
        "a/monte.txt",
        "b/tom.txt",
    ]
    again = pt.resolve_corpus(str(tmp_path / "c"))
    assert again.fingerprint == source.fingerprint
    (tmp_path / "c" / "b" / "tom.txt").write_text("changed", encoding="utf-8")
    assert pt.resolve_corpus(str(tmp_path / "c")).fingerprint != source.fingerprint


def test_resolve_corpus_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x", encoding="utf-8")
    with pytest.raises(pt.CorpusError, match=r"contains no \*\.txt files"):
        pt.resolve_corpus(str(tmp_path / "empty"))
    with pytest.raises(pt.CorpusError, match="does not exist"):
        pt.resolve_corpus(str(tmp_path / "missing" / "corpus.txt"))
    with pytest.raises(pt.CorpusError, match="'typo.txt' does not exist"):
        pt.resolve_corpus("typo.txt")


def test_resolve_corpus_unknown_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(pt.CorpusError, match="Could not load dataset 'no-such-user/no-such-corpus'"):
        pt.resolve_corpus("no-such-user/no-such-corpus")


def test_saved_dataset_folder_with_text_column(tmp_path, tokenizer):
    import datasets

    rows = {"story": ["One small paragraph.\n\nAnother one.", "A \u201cquoted\u201d line."], "id": [1, 2]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(pt.CorpusError, match=r"no column 'text'.*\['story', 'id'\]"):
        pt.resolve_corpus(str(tmp_path / "ds"))
    with pytest.raises(pt.CorpusError, match="not 'valid'"):
        pt.resolve_corpus(str(tmp_path / "ds"), text_column="story", dataset_split="valid")
    source = pt.resolve_corpus(str(tmp_path / "ds"), text_column="story")
    tokenized = pt.tokenize_documents(source, tokenizer, tmp_path / "cache")
    assert tokenized["input_ids"] == [pt.encode_document(t, tokenizer, NEWLINE_ID) for t in rows["story"]]
    assert list((tmp_path / "cache").glob("tokenized-*.arrow"))  # cached next to the run, not in ~/.cache


# ----------------------------------------------------------------------------------------------------------------------
# Packing: contiguous windows, nothing lost but the tail, deterministic validation split
# ----------------------------------------------------------------------------------------------------------------------


def test_packing_is_contiguous_and_loses_only_the_tail(tmp_path, corpus_dir, tokenizer):
    files = _write_excerpts(tmp_path / "c", corpus_dir)
    source = pt.resolve_corpus(str(tmp_path / "c"))
    block = 64
    data = pt.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=block, val_fraction=0.1)

    # the stream is every document's ids, in sorted-path order, concatenated
    expected = []
    for path in source.files:
        expected += pt.encode_document(path.read_text(encoding="utf-8"), tokenizer, NEWLINE_ID)
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
    again = pt.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=block, val_fraction=0.1)
    assert again.split == split
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(data.tokens))
    assert len(list((tmp_path / "cache").glob("tokens-*.npy"))) == 1  # reused, not rebuilt


def test_split_windows_arithmetic_and_too_small_error():
    split = pt.split_windows(1000, 64, 0.2)
    assert (split.num_windows, split.num_train, split.num_val, split.dropped_tokens) == (15, 12, 3, 40)
    assert pt.split_windows(1000, 64, 0.0).num_val == 0
    assert pt.split_windows(130, 64, 0.01).num_val == 1  # at least one validation window
    with pytest.raises(pt.CorpusError) as error:
        pt.split_windows(100, 64, 0.05, source="corpus tiny.txt")
    assert "corpus tiny.txt yields 100 tokens" in str(error.value) and "128 are needed" in str(error.value)
    with pytest.raises(
        pt.CorpusError, match="yields 10 tokens after tokenisation, but 64 are needed for one training window"
    ):
        pt.split_windows(10, 64, 0.0)


def test_prepare_corpus_skips_undecodable_files_only_when_asked(tmp_path, corpus_dir, tokenizer):
    _write_excerpts(tmp_path / "c", corpus_dir)
    (tmp_path / "c" / "b" / "latin1.txt").write_bytes("na\u00efve caf\u00e9\n".encode("latin-1"))
    source = pt.resolve_corpus(str(tmp_path / "c"))
    with pytest.raises(pt.CorpusError, match=r"latin1\.txt: byte 0xef at offset 2"):
        pt.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=64, val_fraction=0.1)
    data = pt.prepare_corpus(
        source, tokenizer, tmp_path / "cache", block_size=64, val_fraction=0.1, on_decode_error="skip"
    )
    assert data.skipped_files == [str(tmp_path / "c" / "b" / "latin1.txt")]
    assert data.num_documents == 3


def test_empty_corpus_is_an_error(tmp_path, tokenizer):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "blank.txt").write_text("\ufeff\r\n  \r\n", encoding="utf-8")
    source = pt.resolve_corpus(str(tmp_path / "c"))
    with pytest.raises(pt.CorpusError, match="contains no text: 0 tokens"):
        pt.prepare_corpus(source, tokenizer, tmp_path / "cache", block_size=16, val_fraction=0.1)


def test_epoch_sampler_is_seeded_per_epoch_and_independent_of_global_rng():
    sampler = pt.EpochShuffleSampler(50, seed=7)
    torch.manual_seed(0)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG does not matter
    assert list(sampler) == first
    assert sorted(first) == list(range(50))
    sampler.set_epoch(1)  # what Trainer (through accelerate's data loader) calls at each epoch
    second = list(sampler)
    assert second != first and sorted(second) == list(range(50))
    whole = pt.EpochShuffleSampler(50, seed=7, multiple_of=8)  # whole micro-batches of 8: 48 of the 50 windows
    assert len(whole) == 48 and list(whole) == first[:48]


def test_two_shards_of_batch_b_cover_one_batch_of_2b():
    """What makes 2 processes x batch B equal 1 process x batch 2B: accelerate's BatchSamplerShard deals consecutive
    batches of one sampler order round-robin to the ranks."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    sampler = pt.EpochShuffleSampler(40, seed=3)
    single = list(BatchSampler(sampler, batch_size=8, drop_last=True))
    shards = [
        list(BatchSamplerShard(BatchSampler(sampler, batch_size=4, drop_last=True), num_processes=2, process_index=r))
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for step, batch in enumerate(single):
        assert shards[0][step] + shards[1][step] == batch


# ----------------------------------------------------------------------------------------------------------------------
# Model presets and configs
# ----------------------------------------------------------------------------------------------------------------------


def test_gpt1_preset_is_the_papers_117m_model():
    from hf_gpt1 import GPT1ForCausalLM

    config = pt.resolve_model_config("gpt1")
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (12, 768, 12, 512)
    assert (config.resid_pdrop, config.attn_pdrop, config.embd_pdrop) == (0.1, 0.1, 0.1)
    config.vocab_size = 40478 + 4
    with torch.device("meta"):
        model = GPT1ForCausalLM(config)
    assert 116e6 < model.num_parameters() < 118e6
    preset = pt.PRESETS["gpt1"]
    assert (preset.learning_rate, preset.warmup_steps, preset.batch_size, preset.num_epochs) == (2.5e-4, 2000, 64, 100)
    for name in ("gpt1-mini", "gpt1-tiny"):
        assert pt.PRESETS[name].warmup_steps < 2000 and pt.PRESETS[name].max_steps


def test_model_config_from_json_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"n_layer": 3, "n_embd": 48, "n_head": 4, "n_positions": 96}), encoding="utf-8")
    config = pt.resolve_model_config(str(path), resid_pdrop=0.0, attn_pdrop=None)
    assert (config.n_layer, config.n_embd, config.n_positions, config.resid_pdrop, config.attn_pdrop) == (
        3,
        48,
        96,
        0.0,
        0.1,
    )

    openai = tmp_path / "openai.json"
    openai.write_text(
        json.dumps({"model_type": "openai-gpt", "n_layer": 2, "n_embd": 32, "n_head": 2}), encoding="utf-8"
    )
    assert pt.resolve_model_config(str(openai)).n_embd == 32

    bert = tmp_path / "bert.json"
    bert.write_text(json.dumps({"model_type": "bert", "hidden_size": 32}), encoding="utf-8")
    with pytest.raises(pt.PretrainingError, match="model_type='bert'"):
        pt.resolve_model_config(str(bert))
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"n_layers": 2}), encoding="utf-8")
    with pytest.raises(pt.PretrainingError, match=r"unknown GPT1Config field\(s\) \['n_layers'\]"):
        pt.resolve_model_config(str(typo))
    with pytest.raises(pt.PretrainingError, match="neither a preset"):
        pt.resolve_model_config("gpt1-huge")


def test_build_model_includes_special_tokens_in_the_vocabulary(tokenizer):
    model = pt.build_model(tokenizer, model_config="gpt1-tiny", dropout=0.0)
    assert model.config.vocab_size == len(tokenizer) == 40482
    assert model.get_input_embeddings().weight.shape[0] == 40482
    assert model.config.start_token_id == tokenizer.convert_tokens_to_ids("_start_") == 40478
    assert model.config.pad_token_id == 40481
    assert model.config.resid_pdrop == model.config.attn_pdrop == 0.0
    assert model.lm_head.weight.data_ptr() == model.transformer.tokens_embed.weight.data_ptr()
    eager = pt.build_model(tokenizer, model_config="gpt1-tiny", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"


def test_init_from_an_openai_gpt_checkpoint_converts_and_grows_the_vocabulary(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(0)
    source = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=40478, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    source.save_pretrained(tmp_path / "openai")
    pt.check_init_from_model_type(str(tmp_path / "openai"))
    model = pt.build_model(tokenizer, init_from=str(tmp_path / "openai"), dropout=0.0)
    assert model.config.model_type == "gpt1" and model.config.vocab_size == 40482
    assert model.config.resid_pdrop == 0.0 and model.config.extract_token_id == 40480
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[:40478], source.transformer.tokens_embed.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        model.transformer.h[1].attn.c_attn.weight, source.transformer.h[1].attn.c_attn.weight.t(), rtol=0, atol=0
    )

    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(pt.PretrainingError, match="holds a 'bert' checkpoint"):
        pt.check_init_from_model_type(str(tmp_path / "bert"))
    with pytest.raises(pt.PretrainingError, match="no config.json found"):
        pt.check_init_from_model_type(str(tmp_path / "nothing-here"))


# ----------------------------------------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------------------------------------


def test_resolve_run_length():
    tiny, paper = pt.PRESETS["gpt1-tiny"], pt.PRESETS["gpt1"]
    assert pt.resolve_run_length(50, None, tiny, 1000, 8) == 50
    assert pt.resolve_run_length(None, None, tiny, 1000, 8) == tiny.max_steps
    assert pt.resolve_run_length(None, 2, tiny, 1000, 8) == 250
    assert pt.resolve_run_length(None, None, paper, 6400, 64) == 100 * 100  # the paper's 100 epochs


# ----------------------------------------------------------------------------------------------------------------------
# Output folder rules
# ----------------------------------------------------------------------------------------------------------------------


def _identity(**changes) -> pt.RunIdentity:
    values = dict(
        model_type="gpt1",
        model_config={"n_layer": 2, "n_embd": 16},
        init_from=None,
        corpus="c0",
        tokenizer="t0",
        text_pipeline="1/standardize=True",
        block_size=32,
        val_fraction=0.1,
        seed=1,
        batch_size=4,
        gradient_accumulation_steps=1,
        num_processes=1,
    )
    values.update(changes)
    return pt.RunIdentity(**values)


def test_check_output_dir_rules(tmp_path):
    out = tmp_path / "run"
    assert pt.check_output_dir(out, _identity(), resume=None, overwrite=False).resume_checkpoint is None
    assert pt.check_output_dir(out, _identity(), resume="auto", overwrite=False).resume_checkpoint is None

    out.mkdir()
    (out / pt.RUN_FILE).write_text(json.dumps(_identity().to_dict()), encoding="utf-8")
    checkpoint = out / "checkpoint-20"
    checkpoint.mkdir()
    (checkpoint / pt.STATE_FILE).write_text(
        json.dumps({"step": 20, "identity": _identity().to_dict()}), encoding="utf-8"
    )
    (out / "checkpoint-30.tmp").mkdir()  # an interrupted save is never picked

    with pytest.raises(pt.OutputDirError, match="already holds a pretraining run .*checkpoint-20.*--resume auto"):
        pt.check_output_dir(out, _identity(), resume=None, overwrite=False)
    plan = pt.check_output_dir(out, _identity(), resume="auto", overwrite=False)
    assert plan.resume_checkpoint == checkpoint
    with pytest.raises(pt.OutputDirError) as error:
        pt.check_output_dir(
            out, _identity(corpus="c1", model_config={"n_layer": 3, "n_embd": 16}), resume="auto", overwrite=False
        )
    assert "corpus: 'c0' -> 'c1'" in str(error.value) and "n_layer 2 -> 3" in str(error.value)
    assert pt.check_output_dir(out, _identity(corpus="c1"), resume=None, overwrite=True).clean
    with pytest.raises(pt.OutputDirError, match="contradict"):
        pt.check_output_dir(out, _identity(), resume="auto", overwrite=True)


def test_a_checkpoint_of_the_old_accelerate_loop_is_resumable(tmp_path):
    """0.1 wrote `accelerator.save_state` folders (no trainer_state.json, optimizer.bin, random_states_*.pkl): the plan
    resumes them like any other (`pretraining_run` upgrades them first; tests/hf_gpt1/test_pretraining_run.py)."""
    out = tmp_path / "run"
    checkpoint = out / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (out / pt.RUN_FILE).write_text(json.dumps(_identity().to_dict()), encoding="utf-8")
    (checkpoint / pt.STATE_FILE).write_text(
        json.dumps({"step": 20, "identity": _identity().to_dict()}), encoding="utf-8"
    )
    for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl"):
        (checkpoint / name).write_bytes(b"")
    for resume in ("auto", str(checkpoint)):
        plan = pt.check_output_dir(out, _identity(), resume=resume, overwrite=False)
        assert plan.resume_checkpoint == checkpoint and pt.is_accelerate_checkpoint(checkpoint)
    (checkpoint / pt.TRAINER_STATE_FILE).write_text("{}", encoding="utf-8")
    assert not pt.is_accelerate_checkpoint(checkpoint)


def test_foreign_checkpoint_in_output_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    for resume in (None, "auto"):
        with pytest.raises(pt.OutputDirError, match=r"holds a model checkpoint \(config.json, model_type='bert'\)"):
            pt.check_output_dir(out, _identity(), resume=resume, overwrite=False)
    assert pt.check_output_dir(out, _identity(), resume=None, overwrite=True).clean
    with pytest.raises(pt.OutputDirError, match="not a pretrain.py checkpoint"):
        pt.check_output_dir(out, _identity(), resume=str(out), overwrite=False)


def test_clean_output_dir_keeps_data_cache_and_unrelated_files(tmp_path):
    out = tmp_path / "run"
    for name in ("checkpoint-5", "data-cache", "runs", "tensorboard"):
        (out / name).mkdir(parents=True)
    for name in (
        pt.RUN_FILE,
        pt.LOG_FILE,
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "notes.txt",
        "modeling_gpt1.py",
        "configuration_gpt1.py",
        "my_script.py",
    ):
        (out / name).write_text("{}", encoding="utf-8")
    pt.clean_output_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["data-cache", "my_script.py", "notes.txt"]


# ----------------------------------------------------------------------------------------------------------------------
# Final model (real Accelerator on CPU); interrupted saves
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    accelerator = Accelerator(cpu=True)
    yield accelerator
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_stale_temporaries_of_interrupted_saves_are_removed(tmp_path):
    out = tmp_path / "run"
    stale = ("_checkpoint-staging/checkpoint-4", "checkpoint-3.tmp", "checkpoint-5.upgrade", ".final-123")
    for name in (*stale, "checkpoint-2", "data-cache"):
        (out / name).mkdir(parents=True)
    pt.remove_stale_temporaries(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "data-cache"]


def test_final_model_is_loadable_with_auto_classes(tmp_path, accelerator, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = accelerator.prepare(_tiny_model(tokenizer))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "gpt1", "stale": True}), encoding="utf-8")
    pt.save_final_model_atomically(accelerator, model, tokenizer, out)
    assert "stale" not in json.loads((out / "config.json").read_text())
    assert not list(out.glob(".final-*"))
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for name, tensor in accelerator.unwrap_model(model).state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert len(AutoTokenizer.from_pretrained(out)) == len(tokenizer)


def test_final_model_save_drops_a_card_rendered_for_the_previous_model(tmp_path, accelerator, tokenizer):
    """A README.md that a push rendered describes the model being replaced (the next push renders a new one); a
    hand-written README stays."""
    model = accelerator.prepare(_tiny_model(tokenizer))
    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("---\ntags:\n- gpt1\n- hf-gpt1\n---\n# old metrics\n", encoding="utf-8")
    pt.save_final_model_atomically(accelerator, model, tokenizer, out)
    assert not (out / "README.md").exists()
    (out / "README.md").write_text("# My notes\n", encoding="utf-8")
    pt.save_final_model_atomically(accelerator, model, tokenizer, out)
    assert (out / "README.md").read_text(encoding="utf-8") == "# My notes\n"


# ----------------------------------------------------------------------------------------------------------------------
# LoRA continued pretraining: adapter settings, frozen base, atomic adapter / merged-model saves
# ----------------------------------------------------------------------------------------------------------------------


def test_lora_settings_are_part_of_the_run_identity():
    from hf_gpt1.peft_integration import LORA_TARGET_MODULES

    default = pt.lora_settings()
    assert default == {
        "method": "lora",
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": sorted(LORA_TARGET_MODULES),
        "embeddings": "none",
    }
    # the order and repetition of --lora-target-modules do not make another adapter
    assert pt.lora_settings(target_modules=["c_fc", "c_attn", "c_fc"]) == pt.lora_settings(
        target_modules=["c_attn", "c_fc"]
    )
    assert pt.lora_settings(target_modules=list(reversed(LORA_TARGET_MODULES))) == default
    with pytest.raises(pt.PretrainingError, match="--lora-r must be a positive integer"):
        pt.lora_settings(r=0)
    with pytest.raises(pt.PretrainingError, match=r"--lora-dropout must be in \[0, 1\)"):
        pt.lora_settings(dropout=1.0)

    lora = _identity(peft=default)
    assert _identity().differences(lora.to_dict())[0].startswith("peft: {'method': 'lora'")
    assert lora.differences(_identity(peft=pt.lora_settings(r=4)).to_dict())  # another rank: not the same run
    old_run_file = {k: v for k, v in _identity().to_dict().items() if k != "peft"}  # written before LoRA existed
    assert _identity().differences(old_run_file) == []


def test_apply_lora_trains_only_the_adapter(tokenizer):
    from hf_gpt1.tokenization_gpt1 import add_special_tokens

    model = _tiny_model(tokenizer)
    add_special_tokens(model, tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    peft_model = pt.apply_lora(model, pt.lora_settings(r=4))
    trainable = [name for name, param in peft_model.named_parameters() if param.requires_grad]
    # 2 blocks x 4 linear layers x (A, B); no embedding rows (plain text never holds the task tokens), no head
    assert len(trainable) == 16 and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    description = pt.describe_trainable_parameters(peft_model)
    lora_count = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad)
    assert f"trainable parameters: {lora_count:,} of" in description and f"by kind: lora {lora_count:,})" in description
    assert peft_model.config.vocab_size == len(tokenizer)  # the config passes through, for the run identity

    # a training step moves the adapter and nothing else
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    ids = torch.randint(0, 40478, (2, 16), generator=torch.Generator().manual_seed(0))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    base = peft_model.get_base_model().state_dict()
    for name, tensor in before.items():
        key = (
            name.replace("c_attn.", "c_attn.base_layer.")
            .replace("c_proj.", "c_proj.base_layer.")
            .replace("c_fc.", "c_fc.base_layer.")
        )
        assert torch.equal(base[key], tensor), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in peft_model.named_parameters() if "lora_B" in n)

    with pytest.raises(pt.PretrainingError) as error:
        pt.apply_lora(_tiny_model(tokenizer), pt.lora_settings(target_modules=["q_proj"]))
    message = str(error.value)
    assert "--lora-target-modules q_proj" in message and "attn.c_attn" in message and "mlp.c_fc" in message


def _trained_lora_model(tokenizer, base_dir: Path):
    """A tiny GPT-1 saved as the base, wrapped in LoRA with non-zero adapter weights (as after training)."""
    from hf_gpt1.tokenization_gpt1 import add_special_tokens

    model = _tiny_model(tokenizer, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    add_special_tokens(model, tokenizer)
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_model = pt.apply_lora(model, pt.lora_settings(r=4, dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return peft_model.eval()


def test_final_adapter_and_merged_model_reproduce_the_trained_model(tmp_path, accelerator, tokenizer):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from hf_gpt1 import GPT1ForCausalLM

    peft_model = _trained_lora_model(tokenizer, tmp_path / "base")
    ids = torch.randint(0, 40478, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    prepared = accelerator.prepare(peft_model)
    out = tmp_path / "run"
    out.mkdir()
    (out / pt.RUN_FILE).write_text("{}", encoding="utf-8")

    info = pt.save_final_adapter_atomically(
        accelerator, prepared, tokenizer, out, base_model_name_or_path=str(tmp_path / "base")
    )
    assert info["path"] == str(out) and 0 < info["adapter_bytes"] < 100_000
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "config.json").exists() and not list(out.glob(".final-*"))
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tmp_path / "base")
    assert all("lora_" in name for name in load_file(out / "adapter_model.safetensors"))  # no embedding, no head
    reloaded = PeftModel.from_pretrained(GPT1ForCausalLM.from_pretrained(tmp_path / "base"), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=0, atol=0)

    for _ in range(2):  # the second save swaps the complete folder for a new one
        merged_dir = pt.save_merged_model_atomically(
            accelerator, prepared, tokenizer, out / pt.MERGED_DIR, extra_files=[out / pt.RUN_FILE, out / pt.LOG_FILE]
        )
    assert merged_dir == out / pt.MERGED_DIR
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporaries left behind
    assert (merged_dir / pt.RUN_FILE).is_file() and not (merged_dir / pt.LOG_FILE).exists()  # missing extras skipped
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert type(merged).__name__ == "GPT1ForCausalLM" and "auto_map" in json.loads(
        (merged_dir / "config.json").read_text()
    )
    assert merged.lm_head.weight.data_ptr() == merged.transformer.tokens_embed.weight.data_ptr()  # still tied
    assert not any("lora" in name for name in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=1e-5)


def test_clean_output_dir_removes_lora_outputs_and_generated_cards(tmp_path):
    out = tmp_path / "run"
    (out / pt.MERGED_DIR).mkdir(parents=True)
    (out / pt.MERGED_DIR / "config.json").write_text("{}", encoding="utf-8")
    for name in ("adapter_config.json", "adapter_model.safetensors", pt.RUN_FILE):
        (out / name).write_text("{}", encoding="utf-8")
    (out / "README.md").write_text("---\nlibrary_name: peft\nbase_model: /x\n---\n# Model Card\n", encoding="utf-8")
    pt.clean_output_dir(out)
    assert list(out.iterdir()) == []
    (out / "README.md").write_text("---\nlicense: mit\n---\n# My experiment\n", encoding="utf-8")
    pt.clean_output_dir(out)
    assert [p.name for p in out.iterdir()] == ["README.md"]  # the user's own card is not ours to delete


def test_resolve_corpus_records_hub_dataset_ids_only(tmp_path):
    (tmp_path / "c.txt").write_text("Some text.", encoding="utf-8")
    assert pt.resolve_corpus(str(tmp_path / "c.txt")).hub_dataset is None  # a local corpus names no Hub dataset


# ----------------------------------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------------------------------


def test_jsonl_log_truncates_on_resume(tmp_path):
    log = pt.JsonlLog(tmp_path / pt.LOG_FILE)
    log.write({"step": 0, "val_loss": 10.0})
    for step in range(1, 11):
        log.write({"step": step, "train_loss": 10.0 - step * 0.3})
    log.write({"step": 10, "val_loss": 7.5})
    with (tmp_path / pt.LOG_FILE).open("a") as handle:
        handle.write('{"step": 11, "train_lo')  # a line cut by SIGKILL
    log.truncate_after(6)
    records = pt.read_jsonl(tmp_path / pt.LOG_FILE)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6]


def test_shipped_accelerate_configs(tmp_path):
    """The yaml files parse with accelerate's own loader, and FSDP wraps GPT1Block via _no_split_modules."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from hf_gpt1.modeling_gpt1 import GPT1Block

    folder = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    cpu = load_config_from_file(str(folder / "cpu_2proc.yaml"))
    assert cpu.num_processes == 2 and cpu.use_cpu
    ddp = load_config_from_file(str(folder / "multi_gpu_ddp.yaml"))
    assert ddp.distributed_type.value == "MULTI_GPU" and ddp.mixed_precision == "bf16"
    fsdp = load_config_from_file(str(folder / "fsdp.yaml"))
    assert fsdp.distributed_type.value == "FSDP"
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp.fsdp_config  # taken from _no_split_modules

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    plugin.set_auto_wrap_policy(_tiny_model())
    assert plugin.transformer_cls_names_to_wrap == ["GPT1Block"]
    assert plugin.auto_wrap_policy.func is transformer_auto_wrap_policy
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {GPT1Block}
