"""Encoding: every family's input transformation on real rows (decoded back to the exact delimited
text), truncation, shapes, labels, and the input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset

import task_adapters as ta
from hf_gpt1.tokenization_gpt1 import standardize_text
from task_adapters import TaskDataError, TokenizerMismatchError

START, DELIM, EXTRACT, PAD = 40478, 40479, 40480, 40481
NAMES = {START: "_start_", DELIM: "_delimiter_", EXTRACT: "_classify_"}


# ----------------------------------------------------------------------------- helpers
def bpe(tok, text: str) -> list[int]:
    """Plain BPE of the standardized text (curly quotes, dashes, ellipses to ASCII), as the adapters tokenize it."""
    return tok(standardize_text(text), add_special_tokens=False, split_special_tokens=True)["input_ids"]


def framed(tok, first: str, second: str | None = None) -> list[int]:
    """The paper's sequence built by hand from plain BPE: start a [delim b] extract."""
    ids = [START, *bpe(tok, first)]
    if second is not None:
        ids += [DELIM, *bpe(tok, second)]
    return ids + [EXTRACT]


def norm(tok, text: str) -> str:
    """What decoding the BPE of ``text`` gives: standardized, lower-cased, BERT-pre-tokenized words."""
    backend = tok.backend_tokenizer
    normalized = backend.normalizer.normalize_str(standardize_text(text))
    return " ".join(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))


def seg(tok, text: str) -> str:
    """Expected decoded text of one segment. Characters outside GPT-1's vocabulary that standardization does not
    map (e.g. ``→``) become ``<unk>`` glued to the next word, so such segments are compared with the decode of their
    own BPE instead."""
    ids = bpe(tok, text)
    return tok.decode(ids) if tok.unk_token_id in ids else norm(tok, text)


def render(tok, ids: list[int]) -> str:
    """Decode a sequence segment by segment, special tokens by name, padding dropped."""
    parts, run = [], []
    for i in ids:
        if i in NAMES or i == PAD:
            if run:
                parts.append(tok.decode(run))
                run = []
            if i in NAMES:
                parts.append(NAMES[i])
        else:
            run.append(i)
    if run:
        parts.append(tok.decode(run))
    return " ".join(parts)


def check_sequence(ids, mask, lm, mc):
    """Structural invariants of one (possibly right-padded) sequence."""
    n = sum(mask)
    assert mask == [1] * n + [0] * (len(ids) - n)
    assert ids[0] == START and ids[n - 1] == EXTRACT and mc == n - 1
    assert ids.count(START) == 1 and ids.count(EXTRACT) == 1
    assert all(t == PAD for t in ids[n:])
    assert lm == ids[:n] + [-100] * (len(ids) - n)


@pytest.fixture(scope="module")
def glue(glue_dir):
    return {name: ta.load_task(name, glue_dir) for name in ("sst2", "cola", "mrpc", "qnli")}


# ----------------------------------------------------------------------------- classification
@pytest.mark.parametrize("task", ["sst2", "cola"])
def test_classification_real_rows_decode(task, glue, gpt1_tokenizer):
    tok = gpt1_tokenizer
    rows = glue[task]["validation"].select(range(150))
    adapter = ta.get_adapter(task)
    enc = adapter.encode(rows, tok)
    assert enc.column_names == list(ta.OUTPUT_COLUMNS)
    assert enc.features["labels"].names == rows.features["label"].names  # label names travel
    for row, ex in zip(rows, enc):
        assert ex["input_ids"] == framed(tok, row["sentence"])
        assert render(tok, ex["input_ids"]) == f"_start_ {seg(tok, row['sentence'])} _classify_"
        check_sequence(ex["input_ids"], ex["attention_mask"], ex["lm_labels"], ex["mc_token_ids"])
        assert ex["labels"] == row["label"]
    assert adapter.last_truncation_stats["validation"].num_truncated == 0


def test_sst2_first_row_exact(glue, gpt1_tokenizer):
    enc = ta.get_adapter("sst2").encode(glue["sst2"]["validation"].select([0]), gpt1_tokenizer)[0]
    assert render(gpt1_tokenizer, enc["input_ids"]) == (
        "_start_ it ' s a charming and often affecting journey . _classify_"  # BERT pre-tokenizer splits ' off
    )
    assert enc["labels"] == 1 and enc["mc_token_ids"] == len(enc["input_ids"]) - 1


# ----------------------------------------------------------------------------- entailment
def test_qnli_real_rows_decode(glue, gpt1_tokenizer):
    tok = gpt1_tokenizer
    rows = glue["qnli"]["validation"].select(range(100))
    enc = ta.get_adapter("qnli").encode(rows, tok)
    for row, ex in zip(rows, enc):
        assert ex["input_ids"] == framed(tok, row["question"], row["sentence"])
        assert render(tok, ex["input_ids"]) == (
            f"_start_ {seg(tok, row['question'])} _delimiter_ {seg(tok, row['sentence'])} _classify_"
        )
        assert ex["input_ids"].count(DELIM) == 1
        check_sequence(ex["input_ids"], ex["attention_mask"], ex["lm_labels"], ex["mc_token_ids"])
        assert ex["labels"] == row["label"]


def test_text_is_standardized_before_the_bpe_as_in_the_original_code(glue, gpt1_tokenizer):
    """QNLI's dev set has hundreds of curly quotes and en/em dashes, which the GPT-1 BPE lacks: transformers'
    tokenizer alone makes each an `<unk>`. Standardized (the default), each becomes its ASCII form instead, and
    every other token is unchanged."""
    tok, rows = gpt1_tokenizer, glue["qnli"]["validation"]
    adapter = ta.get_adapter("qnli")
    raw = adapter.encode(rows, tok, standardize=False)["input_ids"]
    std = adapter.encode(rows, tok)["input_ids"]
    unk = tok.unk_token_id
    raw_unks, std_unks = (sum(ids.count(unk) for ids in col) for col in (raw, std))
    # Each of these is one <unk> unstandardized (a punctuation token of its own, or ´ inside a word) and none after.
    mapped = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2014\u2013\u2015\u2026\u00b4"
    occurrences = sum(text.count(c) for c in mapped for text in [*rows["question"], *rows["sentence"]])
    assert occurrences > 400 and raw_unks - std_unks == occurrences, (raw_unks, std_unks, occurrences)
    changed = [i for i, (a, b) in enumerate(zip(raw, std)) if a != b]
    assert changed
    for i in changed[:50]:
        a, b = raw[i], std[i]
        assert len(a) == len(b) or "\u2026" in rows[i]["question"] + rows[i]["sentence"]  # … becomes three dots
        if len(a) == len(b):  # the same tokens, except where the <unk>s were
            assert all(x == y for x, y in zip(a, b) if x != unk) and unk not in b
    row = next(r for r in rows if "\u2013" in r["sentence"])  # an en dash: "-" in the standardized encoding
    dash = tok.convert_tokens_to_ids("-</w>")
    assert std[list(rows["sentence"]).index(row["sentence"])].count(dash) >= row["sentence"].count("\u2013")


def test_standardize_false_is_part_of_the_cache_fingerprint(tmp_path, gpt1_tokenizer):
    """`datasets` caches map results by fingerprint: switching standardization off must not reuse the cached
    standardized encoding (and back)."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"sentence": "it\u2019s \u201cfine\u201d", "label": 1}\n', encoding="utf-8")
    rows = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    rows = rows.cast_column("label", ClassLabel(names=["negative", "positive"]))
    adapter = ta.get_adapter("sst2")
    unk = gpt1_tokenizer.unk_token_id
    assert unk not in adapter.encode(rows, gpt1_tokenizer)[0]["input_ids"]
    assert adapter.encode(rows, gpt1_tokenizer, standardize=False)[0]["input_ids"].count(unk) == 3
    assert unk not in adapter.encode(rows, gpt1_tokenizer)[0]["input_ids"]


ENTAILMENT_ROWS = {
    "rte": {
        "sentence1": ["No Weapons of Mass Destruction Found in Iraq Yet."],
        "sentence2": ["Weapons of Mass Destruction Found in Iraq."],
        "label": [1],
        "idx": [0],
    },
    "snli": {
        "premise": ["A person on a horse jumps over a broken down airplane."],
        "hypothesis": ["A person is outdoors, on a horse."],
        "label": [0],
    },
    "scitail": {
        "premise": ["Vertebrates are animals that have a backbone."],
        "hypothesis": ["Animals that have a backbone are called vertebrates."],
        "label": ["entails"],
    },
    "wnli": {
        "sentence1": ["I stuck a pin through a carrot. When I pulled the pin out, it had a hole."],
        "sentence2": ["The carrot had a hole."],
        "label": [1],
        "idx": [0],
    },
    "mnli": {
        "premise": ["You and your friends are not welcome here, said Severn."],
        "hypothesis": ["Severn said the people were not welcome there."],
        "label": [0],
        "idx": [0],
    },
}


@pytest.mark.parametrize("task", sorted(ENTAILMENT_ROWS))
def test_entailment_hub_layout_rows(task, gpt1_tokenizer):
    tok = gpt1_tokenizer
    spec = ta.get_task_spec(task)
    rows = ENTAILMENT_ROWS[task]
    enc = ta.get_adapter(task).encode(rows, tok)[0]  # a plain dict of columns is accepted
    premise, hypothesis = (rows[c][0] for c in spec.text_columns)
    assert (
        render(tok, enc["input_ids"]) == f"_start_ {norm(tok, premise)} _delimiter_ {norm(tok, hypothesis)} _classify_"
    )
    assert enc["labels"] == (0 if task == "scitail" else rows["label"][0])  # label names are accepted too


def test_mnli_datasetdict_both_validation_splits(gpt1_tokenizer):
    feats = Features(
        {
            "premise": Value("string"),
            "hypothesis": Value("string"),
            "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
            "idx": Value("int32"),
        }
    )
    row = {
        "premise": ["The new rights are nice enough"],
        "hypothesis": ["Everyone really likes the newest benefits"],
        "label": [1],
        "idx": [0],
    }
    data = DatasetDict(
        {
            "validation_matched": Dataset.from_dict(row, features=feats),
            "validation_mismatched": Dataset.from_dict(dict(row, label=[2]), features=feats),
            "test_matched": Dataset.from_dict(dict(row, label=[-1]), features=feats),
        }
    )
    adapter = ta.get_adapter("mnli")
    enc = adapter.encode(data, gpt1_tokenizer, keep_columns=["idx"])
    assert isinstance(enc, DatasetDict) and list(enc) == list(data)
    assert [enc[s][0]["labels"] for s in enc] == [1, 2, -1]
    assert enc["test_matched"].column_names == [*ta.OUTPUT_COLUMNS, "idx"]
    assert set(adapter.last_truncation_stats) == set(data)


# ----------------------------------------------------------------------------- similarity
def test_mrpc_both_orderings_real_rows(glue, gpt1_tokenizer):
    tok = gpt1_tokenizer
    rows = glue["mrpc"]["validation"].select(range(60))
    enc = ta.get_adapter("mrpc").encode(rows, tok)
    for row, ex in zip(rows, enc):
        a, b = row["sentence1"], row["sentence2"]
        assert np.array(ex["input_ids"]).shape == (2, len(framed(tok, a, b)))
        assert ex["input_ids"][0] == framed(tok, a, b)
        assert ex["input_ids"][1] == framed(tok, b, a)
        assert render(tok, ex["input_ids"][1]) == f"_start_ {seg(tok, b)} _delimiter_ {seg(tok, a)} _classify_"
        for k in range(2):
            check_sequence(ex["input_ids"][k], ex["attention_mask"][k], ex["lm_labels"][k], ex["mc_token_ids"][k])
        assert ex["labels"] == row["label"]


def test_stsb_from_tsv_float_labels(tmp_path, files, gpt1_tokenizer):
    header = [
        "index",
        "genre",
        "filename",
        "year",
        "old_index",
        "source1",
        "source2",
        "sentence1",
        "sentence2",
        "score",
    ]
    files.tsv(
        tmp_path / "STS-B" / "dev.tsv",
        [
            [
                0,
                "main-captions",
                "MSRvid",
                "2012test",
                "0000",
                "none",
                "none",
                "A man with a hard hat is dancing.",
                "A man wearing a hard hat is dancing.",
                "5.000",
            ],
            [
                1,
                "main-captions",
                "MSRvid",
                "2012test",
                "0002",
                "none",
                "none",
                "A young child is riding a horse.",
                "A child is riding a horse.",
                "4.750",
            ],
        ],
        header,
    )
    adapter = ta.get_adapter("stsb")
    enc = adapter.encode(ta.load_task("stsb", tmp_path), gpt1_tokenizer)["validation"]
    assert enc.features["labels"] == Value("float32")
    assert enc["labels"][:] == [5.0, 4.75]
    ex = enc[1]
    assert (
        render(gpt1_tokenizer, ex["input_ids"][0])
        == "_start_ a young child is riding a horse . _delimiter_ a child is riding a horse . _classify_"
    )
    assert (
        render(gpt1_tokenizer, ex["input_ids"][1])
        == "_start_ a child is riding a horse . _delimiter_ a young child is riding a horse . _classify_"
    )


def test_qqp_hub_layout(gpt1_tokenizer):
    rows = {
        "question1": ["How do I read and find my YouTube comments?"],
        "question2": ["How can I see all my Youtube comments?"],
        "label": [1],
        "idx": [0],
    }
    ex = ta.get_adapter("qqp").encode(rows, gpt1_tokenizer)[0]
    assert render(gpt1_tokenizer, ex["input_ids"][0]).startswith(
        "_start_ how do i read and find my youtube comments ? _delimiter_ how can i"
    )
    assert ex["labels"] == 1 and len(ex["input_ids"]) == 2


# ----------------------------------------------------------------------------- multiple choice
def test_story_cloze_real_rows(rocstories_dir, gpt1_tokenizer):
    tok = gpt1_tokenizer
    rows = ta.load_task("story_cloze", rocstories_dir)["validation"].select(range(80))
    enc = ta.get_adapter("story_cloze").encode(rows, tok)
    for row, ex in zip(rows, enc):
        context = " ".join(row[f"input_sentence_{k}"] for k in range(1, 5))
        endings = [row["sentence_quiz1"], row["sentence_quiz2"]]
        expected = [framed(tok, context, e) for e in endings]
        width = max(map(len, expected))
        assert np.array(ex["input_ids"]).shape == (2, width)
        for k in range(2):
            assert ex["input_ids"][k] == expected[k] + [PAD] * (width - len(expected[k]))
            assert (
                render(tok, ex["input_ids"][k])
                == f"_start_ {seg(tok, context)} _delimiter_ {seg(tok, endings[k])} _classify_"
            )
            check_sequence(ex["input_ids"][k], ex["attention_mask"][k], ex["lm_labels"][k], ex["mc_token_ids"][k])
        assert ex["labels"] == row["answer_right_ending"] - 1


RACE_ROW = {
    "example_id": ["middle7.txt"],
    "article": [
        "Tom met Amy at school on Monday. They played chess after class, and Tom won. His mother was proud of him."
    ],
    "answer": ["D"],
    "question": ["How did Tom's mother feel?"],
    "options": [["happy", "angry", "bored", "proud"]],
}


def test_race_options_and_letter_answers(gpt1_tokenizer):
    tok = gpt1_tokenizer
    ex = ta.get_adapter("race").encode(RACE_ROW, tok)[0]
    assert len(ex["input_ids"]) == 4 and ex["labels"] == 3
    context = RACE_ROW["article"][0] + " " + RACE_ROW["question"][0]
    for k, option in enumerate(RACE_ROW["options"][0]):
        assert render(tok, ex["input_ids"][k]) == f"_start_ {norm(tok, context)} _delimiter_ {option} _classify_"
        check_sequence(ex["input_ids"][k], ex["attention_mask"][k], ex["lm_labels"][k], ex["mc_token_ids"][k])


def test_swag_context_and_endings(gpt1_tokenizer):
    row = {
        "video-id": ["anetv_jkn6uvmqwh4"],
        "fold-ind": ["3416"],
        "startphrase": ["x"],
        "sent1": ["Members of the procession walk down the street holding small horn brass instruments."],
        "sent2": ["A drum line"],
        "gold-source": ["gold"],
        "ending0": ["passes by walking down the street playing their instruments."],
        "ending1": ["has heard approaching them."],
        "ending2": ["arrives and they're outside dancing and asleep."],
        "ending3": ["turns the lead singer watches the performance."],
        "label": [0],
    }
    ex = ta.get_adapter("swag").encode(row, gpt1_tokenizer)[0]
    assert np.array(ex["input_ids"]).shape[0] == 4 and ex["labels"] == 0
    assert render(gpt1_tokenizer, ex["input_ids"][1]) == (
        "_start_ members of the procession walk down the street holding small horn brass instruments . a drum line "
        "_delimiter_ has heard approaching them . _classify_"
    )


# ----------------------------------------------------------------------------- truncation
LONG = " ".join(f"word{i}" for i in range(300))


def test_truncation_keeps_special_tokens_and_counts(gpt1_tokenizer):
    tok = gpt1_tokenizer
    rows = {"sentence": [LONG, "short one", LONG, "tiny", LONG], "label": [0, 1, 1, 0, 1]}
    adapter = ta.get_adapter("sst2")
    enc = adapter.encode(rows, tok, max_length=16)
    for ex, text in zip(enc, rows["sentence"]):
        ids = ex["input_ids"]
        assert len(ids) <= 16 and ids[0] == START and ids[-1] == EXTRACT
        if text == LONG:
            assert ids[1:-1] == bpe(tok, LONG)[:14]  # right-truncated content, specials kept
    stats = adapter.last_truncation_stats["data"]
    assert (stats.num_examples, stats.num_truncated, stats.num_truncated_sequences, stats.max_length) == (5, 3, 3, 16)
    assert "3 of 5 examples" in str(stats)


def test_entailment_longest_first(gpt1_tokenizer):
    tok = gpt1_tokenizer
    short = "the cat sat ."
    n_short = len(bpe(tok, short))
    rows = {"premise": [LONG, LONG], "hypothesis": [short, LONG], "label": [0, 1]}
    enc = ta.get_adapter("snli").encode(rows, tok, max_length=24)
    first = enc[0]["input_ids"]
    assert len(first) == 24 and first.count(DELIM) == 1 and first[-1] == EXTRACT
    d = first.index(DELIM)
    assert first[d + 1 : -1] == bpe(tok, short)  # the short hypothesis is untouched
    assert d - 1 == 24 - 3 - n_short  # the premise absorbed all the cuts
    both = enc[1]["input_ids"]
    d = both.index(DELIM)
    assert abs((d - 1) - (len(both) - d - 2)) <= 1  # two long segments trimmed to equal length


def test_similarity_truncated_orderings_stay_aligned(gpt1_tokenizer):
    tok = gpt1_tokenizer
    rows = {"sentence1": [LONG], "sentence2": ["a short sentence ."], "label": [2.5]}
    ex = ta.get_adapter("stsb").encode(rows, tok, max_length=20)[0]
    a, b = ex["input_ids"]
    assert len(a) == len(b) == 20 and ex["mc_token_ids"] == [19, 19]
    assert a[a.index(DELIM) + 1 : -1] == bpe(tok, "a short sentence .")
    assert b[1 : b.index(DELIM)] == bpe(tok, "a short sentence .")


def test_multiple_choice_truncates_context_only_from_the_left(gpt1_tokenizer):
    tok = gpt1_tokenizer
    question = "What did Tom win?"
    row = {
        **RACE_ROW,
        "article": [LONG],
        "question": [question],
        "options": [["a game of chess", "b", "a long answer with several words", "d"]],
    }
    adapter = ta.get_adapter("race")
    ex = adapter.encode(row, tok, max_length=32)[0]
    context_ids = bpe(tok, LONG + " " + question)
    for k, option in enumerate(row["options"][0]):
        ids = ex["input_ids"][k][: ex["mc_token_ids"][k] + 1]
        assert len(ids) == 32 and ids[0] == START and ids[-1] == EXTRACT
        d = ids.index(DELIM)
        assert ids[d + 1 : -1] == bpe(tok, option)  # the answer is never cut
        assert ids[1:d] == context_ids[-(d - 1) :]  # the context keeps its end (question) and loses its start
        assert render(tok, ids[1:d]).endswith("what did tom win ?")
    assert adapter.last_truncation_stats["data"].num_truncated_sequences == 4


def test_multiple_choice_answer_too_long_is_an_error(gpt1_tokenizer):
    row = {**RACE_ROW, "options": [["ok", "ok", LONG, "ok"]]}
    with pytest.raises(ValueError, match=r"answer 2 of row 0 has \d+ tokens, .* answers are never truncated"):
        ta.get_adapter("race").encode(row, gpt1_tokenizer, max_length=64)


def test_multiple_choice_answer_room_edge(gpt1_tokenizer):
    """Found by the fuzz test: the Rust tokenizer keeps >= 1 token of a truncated context, so an answer
    may use max_length - 4 tokens (3 specials + 1 context token), not max_length - 3."""
    tok = gpt1_tokenizer
    answer = "one two three four five six"
    n = len(bpe(tok, answer))
    row = {**RACE_ROW, "options": [[answer, "b", "c", "d"]]}
    ex = ta.get_adapter("race").encode(row, tok, max_length=n + 4)[0]
    ids = ex["input_ids"][0]
    assert len(ids) == n + 4 and ids[2] == DELIM and ids[3:-1] == bpe(tok, answer)
    with pytest.raises(
        ValueError, match=rf"answer 0 of row 0 has {n} tokens.*room for {n - 1}.*at least 1 context token"
    ):
        ta.get_adapter("race").encode(row, tok, max_length=n + 3)


def test_literal_special_token_text_stays_text(gpt1_tokenizer):
    rows = {"sentence": ["hi _start_ there _classify_ <pad> _delimiter_"], "label": [1]}
    ids = ta.get_adapter("sst2").encode(rows, gpt1_tokenizer)[0]["input_ids"]
    assert ids.count(START) == ids.count(EXTRACT) == 1 and DELIM not in ids and PAD not in ids


def test_tokenizer_state_is_restored(gpt1_tokenizer):
    tok = gpt1_tokenizer
    # (encode_special_tokens is not compared: transformers resets it on every tokenizer call anyway)
    before = (tok.backend_tokenizer.truncation, tok.backend_tokenizer.padding, tok.truncation_side)
    ta.get_adapter("race").encode(RACE_ROW, tok, max_length=40)
    assert (tok.backend_tokenizer.truncation, tok.backend_tokenizer.padding, tok.truncation_side) == before
    assert tok("a", "b")["input_ids"] == [START, bpe(tok, "a")[0], DELIM, bpe(tok, "b")[0], EXTRACT]


# ----------------------------------------------------------------------------- num_proc, labels
def test_num_proc_2_gives_identical_output(glue, gpt1_tokenizer):
    rows = glue["mrpc"]["train"].select(range(400))
    adapter = ta.get_adapter("mrpc")
    one = adapter.encode(rows, gpt1_tokenizer, max_length=48)
    stats_one = adapter.last_truncation_stats
    two = adapter.encode(rows, gpt1_tokenizer, max_length=48, num_proc=2, batch_size=100)
    assert one.to_dict() == two.to_dict()
    assert adapter.last_truncation_stats == stats_one and stats_one["train"].num_truncated > 0


def test_label_mapping_names_letters_and_unlabeled(gpt1_tokenizer):
    tok = gpt1_tokenizer
    sst = ta.get_adapter("sst2").encode({"sentence": ["good", "bad"], "label": ["positive", "negative"]}, tok)
    assert sst["labels"][:] == [1, 0]  # label names are accepted
    test = ta.get_adapter("sst2").encode({"sentence": ["?", "!"], "label": [-1, -1]}, tok)
    assert test["labels"][:] == [-1, -1]  # Hub marker for unlabeled test rows
    story = {f"input_sentence_{k}": ["s."] * 2 for k in range(1, 5)}
    story.update(sentence_quiz1=["a."] * 2, sentence_quiz2=["b."] * 2, answer_right_ending=[2, 1])
    assert ta.get_adapter("story_cloze").encode(story, tok)["labels"][:] == [1, 0]
    stsb = ta.get_adapter("stsb").encode({"sentence1": ["a"], "sentence2": ["b"], "label": [-1.0]}, tok)
    assert stsb["labels"][:] == [-1.0]


# ----------------------------------------------------------------------------- bad inputs
def test_missing_column_names_task_missing_and_expected(gpt1_tokenizer):
    with pytest.raises(TaskDataError) as err:
        ta.get_adapter("qnli").encode({"question": ["q"], "text": ["s"], "label": [0]}, gpt1_tokenizer)
    msg = str(err.value)
    assert "'qnli'" in msg and "['sentence']" in msg and "['question', 'sentence', 'label']" in msg


def test_label_out_of_range_names_values_and_allowed(gpt1_tokenizer):
    with pytest.raises(TaskDataError) as err:
        ta.get_adapter("sst2").encode({"sentence": ["a", "b", "c"], "label": [1, 7, 3]}, gpt1_tokenizer)
    msg = str(err.value)
    assert "[3, 7]" in msg and "allowed: [0, 1]" in msg and "negative" in msg
    with pytest.raises(TaskDataError, match=r"\['E'\].*\['A', 'B', 'C', 'D'\]"):
        ta.get_adapter("race").encode({**RACE_ROW, "answer": ["E"]}, gpt1_tokenizer)
    with pytest.raises(TaskDataError, match=r"\[3\]"):
        story = {f"input_sentence_{k}": ["s."] for k in range(1, 5)}
        ta.get_adapter("story_cloze").encode(
            {**story, "sentence_quiz1": ["a"], "sentence_quiz2": ["b"], "answer_right_ending": [3]}, gpt1_tokenizer
        )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_stsb_nan_inf_rejected(bad, gpt1_tokenizer):
    rows = {"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1.0, bad]}
    with pytest.raises(TaskDataError, match=r"NaN/inf score\(s\) at rows \[1\]"):
        ta.get_adapter("stsb").encode(rows, gpt1_tokenizer)


def test_stsb_out_of_range_rejected(gpt1_tokenizer):
    with pytest.raises(TaskDataError, match=r"\[7\.5\] outside the allowed range \[0\.0, 5\.0\]"):
        ta.get_adapter("stsb").encode({"sentence1": ["a"], "sentence2": ["b"], "label": [7.5]}, gpt1_tokenizer)


def test_empty_split_rejected(gpt1_tokenizer):
    empty = Dataset.from_dict(
        {"sentence": [], "label": []},
        features=Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])}),
    )
    with pytest.raises(TaskDataError, match="'sst2', split 'validation': the split is empty"):
        ta.get_adapter("sst2").encode(DatasetDict({"validation": empty}), gpt1_tokenizer)


def test_missing_text_and_wrong_option_count(gpt1_tokenizer):
    with pytest.raises(TaskDataError, match=r"'sentence' has 1 missing \(None\) text\(s\), e.g. rows \[1\]"):
        ta.get_adapter("sst2").encode({"sentence": ["a", None], "label": [0, 1]}, gpt1_tokenizer)
    with pytest.raises(TaskDataError, match=r"exactly 4 answers per row; rows \[0\] have \[3\]"):
        ta.get_adapter("race").encode({**RACE_ROW, "options": [["a", "b", "c"]]}, gpt1_tokenizer)


def test_tokenizer_without_special_tokens_rejected(tokenizer_dir):
    from transformers import OpenAIGPTTokenizer

    plain = OpenAIGPTTokenizer.from_pretrained(str(tokenizer_dir))
    with pytest.raises(TokenizerMismatchError, match=r"hf_gpt1.load_gpt1_tokenizer"):
        ta.get_adapter("sst2").encode({"sentence": ["a"], "label": [0]}, plain)
    with pytest.raises(TokenizerMismatchError, match=r"fast .*load_gpt1_tokenizer"):
        ta.get_adapter("sst2").encode({"sentence": ["a"], "label": [0]}, object())


def test_max_length_too_small(gpt1_tokenizer):
    with pytest.raises(ValueError, match="max_length must be an int >= 4"):
        ta.get_adapter("rte").encode(
            {"sentence1": ["a"], "sentence2": ["b"], "label": [0]}, gpt1_tokenizer, max_length=3
        )


def test_wrong_container_type(gpt1_tokenizer):
    with pytest.raises(TypeError, match="Dataset, DatasetDict or dict"):
        ta.get_adapter("sst2").encode(["a sentence"], gpt1_tokenizer)


# ----------------------------------------------------------------------------- original files → model inputs
def _write_release_files(task, root, files):
    """One or two rows per task, written in the task's original release format."""
    if task == "rte":
        files.tsv(
            root / "RTE" / "dev.tsv",
            [[0, 'The "Eagle" landed on the Moon in 1969.', "Humans landed on the Moon.", "entailment"]],
            ["index", "sentence1", "sentence2", "label"],
        )
        return "validation", ('The "Eagle" landed on the Moon in 1969.', "Humans landed on the Moon."), 0
    if task == "wnli":
        files.tsv(
            root / "WNLI" / "train.tsv",
            [
                [
                    0,
                    "Sam pulled up a chair to the piano, but it was broken, so he had to sing instead.",
                    "The piano was broken.",
                    1,
                ]
            ],
            ["index", "sentence1", "sentence2", "label"],
        )
        return (
            "train",
            (
                "Sam pulled up a chair to the piano, but it was broken, so he had to sing instead.",
                "The piano was broken.",
            ),
            1,
        )
    if task == "snli":
        files.jsonl(
            root / "snli_1.0" / "snli_1.0_test.jsonl",
            [
                {
                    "gold_label": "contradiction",
                    "sentence1": "This church choir sings to the masses as they sing joyous songs.",
                    "sentence2": "A choir is silent.",
                }
            ],
        )
        return "test", ("This church choir sings to the masses as they sing joyous songs.", "A choir is silent."), 2
    if task == "scitail":
        files.tsv(
            root / "SciTailV1.1" / "tsv_format" / "scitail_1.0_dev.tsv",
            [["Mercury is the closest planet to the Sun.", "The planet closest to the sun is mercury.", "entails"]],
        )
        return (
            "validation",
            ("Mercury is the closest planet to the Sun.", "The planet closest to the sun is mercury."),
            0,
        )
    if task == "race":
        files.json(
            root / "RACE" / "test" / "high" / "1.txt",
            {
                "id": "high1.txt",
                "article": "The bus was late, so Mia walked.",
                "questions": ["Why did Mia walk?"],
                "options": [["She likes walking.", "The bus was late.", "It rained.", "She had no money."]],
                "answers": ["B"],
            },
        )
        return (
            "test",
            (
                "The bus was late, so Mia walked. Why did Mia walk?",
                ["She likes walking.", "The bus was late.", "It rained.", "She had no money."],
            ),
            1,
        )
    header = [
        "",
        "video-id",
        "fold-ind",
        "startphrase",
        "sent1",
        "sent2",
        "gold-source",
        "ending0",
        "ending1",
        "ending2",
        "ending3",
        "label",
    ]
    files.csv(
        root / "swagaf" / "data" / "train.csv",
        [
            [
                0,
                "lsmdc1",
                "7",
                "x",
                "Someone opens the door.",
                "He",
                "gold",
                "walks in.",
                "flies away.",
                "eats the door.",
                "sings.",
                0,
            ]
        ],
        header,
    )
    return "train", ("Someone opens the door. He", ["walks in.", "flies away.", "eats the door.", "sings."]), 0


@pytest.mark.parametrize("task", ["rte", "wnli", "snli", "scitail", "race", "swag"])
def test_release_files_to_model_inputs(task, tmp_path, files, gpt1_tokenizer):
    tok = gpt1_tokenizer
    split, (first, second), label = _write_release_files(task, tmp_path, files)
    ex = ta.get_adapter(task).encode(ta.load_task(task, tmp_path), tok)[split][0]
    assert ex["labels"] == label
    if isinstance(second, list):  # multiple choice: one sequence per answer
        assert len(ex["input_ids"]) == len(second)
        for k, answer in enumerate(second):
            assert (
                render(tok, ex["input_ids"][k])
                == f"_start_ {seg(tok, first)} _delimiter_ {seg(tok, answer)} _classify_"
            )
    else:
        assert ex["input_ids"] == framed(tok, first, second)
        assert render(tok, ex["input_ids"]) == f"_start_ {seg(tok, first)} _delimiter_ {seg(tok, second)} _classify_"


def test_file_backed_data_reuses_the_map_cache_and_still_reports_truncation(glue, tmp_path, gpt1_tokenizer):
    from datasets import load_from_disk

    glue["mrpc"]["validation"].select(range(50)).save_to_disk(str(tmp_path / "mrpc"))
    rows = load_from_disk(str(tmp_path / "mrpc"))  # file-backed, like a Hub download
    first = ta.get_adapter("mrpc")
    a = first.encode(rows, gpt1_tokenizer, max_length=32)
    second = ta.get_adapter("mrpc")  # a fresh adapter, same settings -> same fingerprint
    b = second.encode(rows, gpt1_tokenizer, max_length=32)
    assert [f["filename"] for f in a.cache_files] == [f["filename"] for f in b.cache_files]
    assert first.last_truncation_stats == second.last_truncation_stats
    assert second.last_truncation_stats["validation"].num_truncated > 0  # stats keyed by the split name
    c = second.encode(rows, gpt1_tokenizer, max_length=33)  # other settings -> recomputed
    assert [f["filename"] for f in c.cache_files] != [f["filename"] for f in a.cache_files]
