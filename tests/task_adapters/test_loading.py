"""load_task on the real shared files, on small files written in each original release format, and
through ``datasets.load_dataset`` (the Hub code path) on a local dataset folder."""

from __future__ import annotations

import csv
import logging
from collections import Counter

import numpy as np
import pytest
from datasets import ClassLabel, Value
from sklearn.model_selection import train_test_split

import task_adapters as ta
from task_adapters import DataFormatError, TaskFamily, TaskSpec

ROC_VAL = "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"


def labels_of(ds) -> Counter:
    return Counter(np.asarray(ds.with_format("arrow")[ds.column_names[ds.column_names.index("label")]]).tolist())


# ----------------------------------------------------------------------------- shared GLUE files
def test_sst2_rows_columns_labels(glue_dir):
    data = ta.load_task("sst2", glue_dir)
    assert list(data) == ["train", "validation"]  # no test.tsv in shared/
    train, dev = data["train"], data["validation"]
    assert (len(train), len(dev)) == (67_349, 872)
    assert train.column_names == ["sentence", "label", "idx"]
    assert train.features["label"] == ClassLabel(names=["negative", "positive"])
    assert train.features["idx"] == Value("int32")
    assert labels_of(train) == {0: 29_780, 1: 37_569}
    assert labels_of(dev) == {0: 428, 1: 444}
    # text kept byte-for-byte, including SST-2's trailing space before the tab
    assert train[0] == {"sentence": "hide new secretions from the parental units ", "label": 0, "idx": 0}
    assert dev[len(dev) - 1]["idx"] == 871


def test_task_folder_itself_is_accepted(glue_dir):
    assert len(ta.load_task("sst-2", glue_dir / "SST-2")["validation"]) == 872  # alias + task folder


def test_cola_headerless(glue_dir):
    data = ta.load_task("cola", glue_dir)
    train, dev = data["train"], data["validation"]
    assert (len(train), len(dev)) == (8_551, 1_043)
    assert train.column_names == ["sentence", "label", "idx"]
    assert train.features["label"].names == ["unacceptable", "acceptable"]
    assert labels_of(train) == {1: 6_023, 0: 2_528}
    assert labels_of(dev) == {1: 721, 0: 322}
    assert train[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    # the first data line is data (no header was swallowed); the last line has no trailing newline
    with open(glue_dir / "CoLA" / "dev.tsv", encoding="utf-8") as fh:
        last = fh.read().split("\n")[-1].split("\t")
    assert dev[len(dev) - 1]["sentence"] == last[3] and dev[len(dev) - 1]["label"] == int(last[1])


def test_mrpc_bom_quotes_and_counts(glue_dir):
    data = ta.load_task("mrpc", glue_dir)
    train, dev = data["train"], data["validation"]
    assert (len(train), len(dev)) == (3_667, 408)  # shared copy lacks one row (README caveat)
    assert train.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert train.features["label"].names == ["not_equivalent", "equivalent"]
    assert labels_of(train) == {1: 2_473, 0: 1_194}
    assert labels_of(dev) == {1: 279, 0: 129}
    # quoting is off: a literal '"' stays inside its field instead of merging lines
    assert train[0]["sentence1"].startswith('Amrozi accused his brother , whom he called " the witness "')
    assert not any("\ufeff" in s for s in train.select(range(5))["sentence1"])


def test_mrpc_rebuild_from_msr_gives_official_3668(glue_dir):
    rebuilt = ta.load_task("mrpc", glue_dir, rebuild_from_msr=True)
    shipped = ta.load_task("mrpc", glue_dir)
    assert (len(rebuilt["train"]), len(rebuilt["validation"])) == (3_668, 408)
    # dev is reproduced exactly
    assert rebuilt["validation"].to_dict() == shipped["validation"].to_dict()
    # train = shipped train + the missing Brandeis pair at data row 92 (line 93 with the header)
    missing = rebuilt["train"][91]
    assert missing["sentence1"].startswith("Officials at Brandeis said")
    assert missing["label"] == 1
    keep = [i for i in range(3_668) if i != 91]
    assert rebuilt["train"].select(keep)["sentence1"][:] == shipped["train"]["sentence1"][:]
    assert rebuilt["train"].select(keep)["label"][:] == shipped["train"]["label"][:]


def test_qnli_dev_only_string_labels(glue_dir):
    data = ta.load_task("qnli", glue_dir)
    assert list(data) == ["validation"]
    dev = data["validation"]
    assert len(dev) == 5_463
    assert dev.column_names == ["question", "sentence", "label", "idx"]
    assert dev.features["label"].names == ["entailment", "not_entailment"]
    assert labels_of(dev) == {0: 2_702, 1: 2_761}
    assert dev[0]["question"] == "What came into force after the new constitution was herald?"
    assert dev[1]["label"] == 1  # "not_entailment" in the file


# ----------------------------------------------------------------------------- Story Cloze CSV
def test_story_cloze_validation_file(rocstories_dir):
    data = ta.load_task("story_cloze", rocstories_dir)
    assert list(data) == ["validation"]
    val = data["validation"]
    assert len(val) == 1_871
    assert val.column_names == [
        "story_id",
        "input_sentence_1",
        "input_sentence_2",
        "input_sentence_3",
        "input_sentence_4",
        "sentence_quiz1",
        "sentence_quiz2",
        "answer_right_ending",
    ]
    assert Counter(val["answer_right_ending"][:]) == {1: 962, 2: 909}
    first = val[0]
    assert first["story_id"] == "138d5bfb-05cc-41e3-bf2c-fa85ebad14e2"
    assert first["input_sentence_2"] == "He never found good support in family, and turned to gangs."  # quoted field
    assert first["sentence_quiz1"] == "He is happy now." and first["answer_right_ending"] == 1


def test_story_cloze_split_val_matches_original_code(rocstories_dir):
    data = ta.load_task("rocstories", rocstories_dir, split_val=True)
    assert (len(data["train"]), len(data["validation"])) == (1_497, 374)
    # the original datasets.py: train_test_split over parallel lists read with csv.reader
    with open(rocstories_dir / ROC_VAL, encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    storys = [" ".join(r[1:5]) for r in rows]
    comps1 = [r[5] for r in rows]
    ys = [int(r[-1]) - 1 for r in rows]
    tr_s, va_s, tr_c1, va_c1, tr_y, va_y = train_test_split(storys, comps1, ys, test_size=374, random_state=3535999445)

    def story(ds):
        cols = [ds[f"input_sentence_{k}"][:] for k in range(1, 5)]
        return [" ".join(parts) for parts in zip(*cols)]

    assert story(data["train"]) == tr_s and story(data["validation"]) == va_s
    assert data["train"]["sentence_quiz1"][:] == tr_c1
    assert [y - 1 for y in data["validation"]["answer_right_ending"][:]] == va_y
    assert not set(data["train"]["story_id"][:]) & set(data["validation"]["story_id"][:])


def test_story_cloze_without_data_dir_explains(rocstories_dir):
    with pytest.raises(ValueError, match="request form"):
        ta.load_task("story_cloze")


def test_story_cloze_test_file_and_bad_answer(tmp_path, rocstories_dir, files):
    header = [
        "InputStoryid",
        "InputSentence1",
        "InputSentence2",
        "InputSentence3",
        "InputSentence4",
        "RandomFifthSentenceQuiz1",
        "RandomFifthSentenceQuiz2",
        "AnswerRightEnding",
    ]
    row = [
        "id-1",
        "Ann had a dog.",
        'It was old, "very" old.',
        "It died.",
        "Ann was sad.",
        "She cried.",
        "She laughed.",
        "1",
    ]
    files.csv(tmp_path / "cloze_test_test__spring2016 - cloze_test_ALL_test.csv", [row, row[:-1] + ["2"]], header)
    data = ta.load_task("story_cloze", tmp_path)
    assert list(data) == ["test"] and data["test"]["answer_right_ending"][:] == [1, 2]
    assert data["test"][0]["input_sentence_2"] == 'It was old, "very" old.'
    files.csv(tmp_path / "bad" / ROC_VAL, [row[:-1] + ["3"]], header)
    with pytest.raises(DataFormatError, match="AnswerRightEnding '3'"):
        ta.load_task("story_cloze", tmp_path / "bad")


# ----------------------------------------------------------------------------- GLUE TSVs written here
RTE_HEADER = ["index", "sentence1", "sentence2", "label"]
RTE_ROWS = [
    [
        0,
        'Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the "Christopher Reeve Foundation.',
        "Christopher Reeve had an accident.",
        "not_entailment",
    ],
    [
        1,
        "Yet, we now are discovering that antibiotics are losing their effectiveness against illness.",
        "Bacteria is winning the war against antibiotics.",
        "entailment",
    ],
]


def test_rte_tsv_quotes_and_unlabeled_test(tmp_path, files):
    files.tsv(tmp_path / "RTE" / "train.tsv", RTE_ROWS, RTE_HEADER)
    files.tsv(tmp_path / "RTE" / "test.tsv", [r[:3] for r in RTE_ROWS], RTE_HEADER[:3])
    data = ta.load_task("rte", tmp_path)
    assert list(data) == ["train", "test"]
    train = data["train"]
    assert train.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert train.features["label"].names == ["entailment", "not_entailment"]
    assert train["label"][:] == [1, 0]
    assert train[0]["sentence1"] == RTE_ROWS[0][1]  # the unbalanced '"' did not swallow the next line
    assert data["test"]["label"][:] == [-1, -1]
    assert data["test"]["idx"][:] == [0, 1]


def test_wnli_integer_labels(tmp_path, files):
    rows = [
        [0, "The trophy doesn't fit into the suitcase because it is too large.", "The trophy is too large.", 1],
        [1, "The trophy doesn't fit into the suitcase because it is too large.", "The suitcase is too large.", 0],
    ]
    files.tsv(tmp_path / "WNLI" / "dev.tsv", rows, RTE_HEADER)
    dev = ta.load_task("wnli", tmp_path)["validation"]
    assert dev.features["label"].names == ["not_entailment", "entailment"]
    assert dev["label"][:] == [1, 0]


STSB_HEADER = [
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
STSB_ROWS = [
    [
        0,
        "main-captions",
        "MSRvid",
        "2012test",
        "0001",
        "none",
        "none",
        "A plane is taking off.",
        "An air plane is taking off.",
        "5.000",
    ],
    [
        1,
        "main-captions",
        "MSRvid",
        "2012test",
        "0004",
        "none",
        "none",
        "A man is playing a large flute.",
        "A man is playing a flute.",
        "3.800",
    ],
    [
        2,
        "main-captions",
        "MSRvid",
        "2012test",
        "0005",
        "none",
        "none",
        "A man is spreading shreded cheese on a pizza.",
        "A man is spreading shredded cheese on an uncooked pizza.",
        "3.800",
    ],
    [
        3,
        "main-news",
        "headlines",
        "2013",
        "0010",
        "none",
        "none",
        "Three men are playing chess.",
        "Two men are playing chess.",
        "2.600",
    ],
]


def test_stsb_float_scores_and_unlabeled_test(tmp_path, files):
    files.tsv(tmp_path / "STS-B" / "train.tsv", STSB_ROWS, STSB_HEADER)
    files.tsv(tmp_path / "STS-B" / "test.tsv", [r[:-1] for r in STSB_ROWS], STSB_HEADER[:-1])
    data = ta.load_task("sts-b", tmp_path)
    train = data["train"]
    assert train.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert train.features["label"] == Value("float32")
    assert np.allclose(train["label"][:], [5.0, 3.8, 3.8, 2.6])
    assert data["test"]["label"][:] == [-1.0] * 4


MNLI_TRAIN_HEADER = [
    "index",
    "promptID",
    "pairID",
    "genre",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "label1",
    "gold_label",
]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:11] + ["label2", "label3", "label4", "label5", "gold_label"]


def _mnli_row(i, s1, s2, gold, dev=False):
    labels = [gold] * (5 if dev else 1)
    return [i, 1000 + i, f"{1000 + i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2, *labels, gold]


def test_mnli_matched_mismatched_splits(tmp_path, files):
    folder = tmp_path / "glue_data" / "MNLI"
    files.tsv(
        folder / "train.tsv",
        [
            _mnli_row(
                0,
                "Conceptually cream skimming has two basic dimensions.",
                "Product and geography are what make cream skimming work.",
                "neutral",
            )
        ],
        MNLI_TRAIN_HEADER,
    )
    files.tsv(
        folder / "dev_matched.tsv",
        [
            _mnli_row(
                0, "The new rights are nice enough", "Everyone really likes the newest benefits", "neutral", True
            ),
            _mnli_row(
                1,
                "This site includes a list of all award winners.",
                "The Government Executive articles housed on the website are not able to be searched.",
                "contradiction",
                True,
            ),
        ],
        MNLI_DEV_HEADER,
    )
    files.tsv(
        folder / "dev_mismatched.tsv",
        [
            _mnli_row(
                0,
                "Your contribution helped make it possible.",
                "Your contributions were of no help.",
                "contradiction",
                True,
            )
        ],
        MNLI_DEV_HEADER,
    )
    files.tsv(
        folder / "test_matched.tsv",
        [
            _mnli_row(0, "Hierbas, ans seco, ans dulce, and frigola are just a few names.", "Hierbas is a name.", "x")[
                :10
            ]
        ],
        MNLI_TRAIN_HEADER[:10],
    )
    data = ta.load_task("mnli", tmp_path / "glue_data")
    assert list(data) == ["train", "validation_matched", "validation_mismatched", "test_matched"]
    assert data["train"].column_names == ["premise", "hypothesis", "label", "idx"]
    assert data["train"].features["label"].names == ["entailment", "neutral", "contradiction"]
    assert data["validation_matched"]["label"][:] == [1, 2]
    assert data["validation_mismatched"]["label"][:] == [2]
    assert data["test_matched"]["label"][:] == [-1]
    assert data["validation_matched"][1]["premise"] == "This site includes a list of all award winners."


def test_qqp_and_glue_test_files(tmp_path, files):
    files.tsv(
        tmp_path / "QQP" / "dev.tsv",
        [[201359, 303345, 303346, "Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", 0]],
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    )
    files.tsv(
        tmp_path / "QQP" / "test.tsv",
        [[0, "How do I learn Python?", "What is the best way to learn Python?"]],
        ["id", "question1", "question2"],
    )
    qqp = ta.load_task("qqp", tmp_path)
    assert qqp["validation"].column_names == ["question1", "question2", "label", "idx"]
    assert qqp["validation"].features["label"].names == ["not_duplicate", "duplicate"]
    assert qqp["test"]["label"][:] == [-1]
    # SST-2 / CoLA / MRPC test.tsv have an index column and no label
    files.tsv(tmp_path / "SST-2" / "test.tsv", [[0, "uneasy mishmash of styles and genres ."]], ["index", "sentence"])
    files.tsv(tmp_path / "CoLA" / "test.tsv", [[0, "Bill whistled past the house."]], ["index", "sentence"])
    files.tsv(
        tmp_path / "MRPC" / "test.tsv",
        [[0, 1089874, 1089925, "PCCW 's chief \" operating officer", "Current Chief Operating Officer Mike Butcher"]],
        ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    )
    assert ta.load_task("sst2", tmp_path)["test"][0] == {
        "sentence": "uneasy mishmash of styles and genres .",
        "label": -1,
        "idx": 0,
    }
    assert ta.load_task("cola", tmp_path)["test"][0]["sentence"] == "Bill whistled past the house."
    mrpc_test = ta.load_task("mrpc", tmp_path)["test"][0]
    assert mrpc_test["sentence1"] == "PCCW 's chief \" operating officer" and mrpc_test["label"] == -1


def test_glue_format_errors(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="SST-2"):
        ta.load_task("sst2", tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ta.load_task("sst2", tmp_path / "nowhere")
    files.tsv(tmp_path / "RTE" / "train.tsv", [[0, "only one text"]], RTE_HEADER)
    with pytest.raises(DataFormatError, match=r"train\.tsv:2: expected at least 4"):
        ta.load_task("rte", tmp_path)
    files.tsv(tmp_path / "RTE" / "train.tsv", [[0, "a", "b", "maybe"]], RTE_HEADER)
    with pytest.raises(DataFormatError, match="'maybe' is neither an id nor one of"):
        ta.load_task("rte", tmp_path)
    files.tsv(tmp_path / "RTE" / "train.tsv", [[0, "a", "b", 1]], ["index", "premise", "hypothesis", "label"])
    with pytest.raises(DataFormatError, match="lacks column"):
        ta.load_task("rte", tmp_path)


def test_split_val_needs_a_recipe(glue_dir):
    with pytest.raises(ValueError, match="no val_split recipe"):
        ta.load_task("sst2", glue_dir, split_val=True)


# ----------------------------------------------------------------------------- SNLI / SciTail / RACE / SWAG
def test_snli_jsonl_drops_no_gold_label(tmp_path, files, caplog):
    recs = [
        {
            "gold_label": "neutral",
            "sentence1": "A person on a horse jumps over a broken down airplane.",
            "sentence2": "A person is training his horse for a competition.",
        },
        {"gold_label": "-", "sentence1": "Two women are embracing.", "sentence2": "The sisters are hugging."},
        {
            "gold_label": "contradiction",
            "sentence1": "A person on a horse jumps over a broken down airplane.",
            "sentence2": "A person is at a diner, ordering an omelette.",
        },
        {
            "gold_label": "entailment",
            "sentence1": "A person on a horse jumps over a broken down airplane.",
            "sentence2": "A person is outdoors, on a horse.",
        },
    ]
    files.jsonl(tmp_path / "snli_1.0" / "snli_1.0_dev.jsonl", recs)
    with caplog.at_level(logging.WARNING, logger="task_adapters.loading"):
        dev = ta.load_task("snli", tmp_path)["validation"]
    assert "dropped 1 of 4 rows without a gold label" in caplog.text
    assert dev.column_names == ["premise", "hypothesis", "label"]
    assert dev.features["label"].names == ["entailment", "neutral", "contradiction"]
    assert dev["label"][:] == [1, 2, 0]


def test_scitail_tsv(tmp_path, files):
    rows = [
        [
            "Pluto rotates once on its axis every 6.39 Earth days.",
            "Earth rotates on its axis once times in one day.",
            "neutral",
        ],
        [
            "Vertebrates are animals that have a backbone.",
            "Animals that have a backbone are called vertebrates.",
            "entails",
        ],
    ]
    files.tsv(tmp_path / "SciTailV1.1" / "tsv_format" / "scitail_1.0_train.tsv", rows)
    train = ta.load_task("scitail", tmp_path)["train"]
    assert train.column_names == ["premise", "hypothesis", "label"]
    assert train.features["label"].names == ["entails", "neutral"]
    assert train["label"][:] == [1, 0]


RACE_PASSAGE = {
    "answers": ["B", "D"],
    "options": [["in a park", "at school", "at home", "in a shop"], ["happy", "angry", "bored", "proud"]],
    "questions": ["Where did Tom meet Amy?", "How did Tom's mother feel?"],
    "article": "Tom met Amy at school on Monday. They played chess after class, and Tom won. His mother was proud of him.",
    "id": "middle7.txt",
}


def test_race_json_files(tmp_path, files):
    files.json(tmp_path / "RACE" / "dev" / "middle" / "7.txt", RACE_PASSAGE)
    files.json(tmp_path / "RACE" / "dev" / "high" / "3.txt", dict(RACE_PASSAGE, id="high3.txt"))
    data = ta.load_task("race", tmp_path)
    dev = data["validation"]
    assert list(data) == ["validation"] and len(dev) == 4
    assert dev.column_names == ["example_id", "article", "answer", "question", "options"]
    assert dev[0]["example_id"] == "high3.txt" and dev[0]["answer"] == "B"
    assert dev[0]["options"] == ["in a park", "at school", "at home", "in a shop"]
    assert len(ta.load_task("race", tmp_path, levels=("middle",))["validation"]) == 2


SWAG_HEADER = [
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
SWAG_ROWS = [
    [
        0,
        "anetv_jkn6uvmqwh4",
        "3416",
        "Members of the procession walk down the street holding small horn brass instruments. A drum line",
        "Members of the procession walk down the street holding small horn brass instruments.",
        "A drum line",
        "gold",
        "passes by walking down the street playing their instruments.",
        "has heard approaching them.",
        "arrives and they're outside dancing and asleep.",
        "turns the lead singer watches the performance.",
        0,
    ],
    [
        1,
        "anetv_jkn6uvmqwh4",
        "3417",
        "A drum line passes by walking down the street playing their instruments. Members of the procession",
        "A drum line passes by walking down the street playing their instruments.",
        "Members of the procession",
        "gen",
        "are playing ping pong and celebrating one left each in quick.",
        "wait slowly towards the cadets.",
        "continues to play as well along the crowd along with the band being interviewed.",
        "continue to play marching, interspersed.",
        3,
    ],
]


def test_swag_csv(tmp_path, files):
    files.csv(tmp_path / "swagaf" / "data" / "val.csv", SWAG_ROWS, SWAG_HEADER)
    files.csv(tmp_path / "swagaf" / "data" / "test.csv", [r[:-1] for r in SWAG_ROWS], SWAG_HEADER[:-1])
    data = ta.load_task("swag", tmp_path)
    val = data["validation"]
    assert val.column_names == [
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
    assert val["label"][:] == [0, 3]
    assert data["test"]["label"][:] == [-1, -1]
    assert val[1]["sent2"] == "Members of the procession"


# ----------------------------------------------------------------------------- the Hub code path
def test_hub_path_goes_through_load_dataset(tmp_path, files):
    """``data_dir=None`` calls ``datasets.load_dataset(hub_path, hub_config)``. A local dataset
    folder stands in for a Hub repo: SciTail-like string labels become a ClassLabel, and a
    ``drop_unlabeled`` task loses its -1 rows."""
    repo = tmp_path / "repo"
    files.jsonl(
        repo / "train.jsonl",
        [
            {"premise": "p1", "hypothesis": "h1", "label": "neutral"},
            {"premise": "p2", "hypothesis": "h2", "label": "entails"},
        ],
    )
    files.jsonl(repo / "validation.jsonl", [{"premise": "p3", "hypothesis": "h3", "label": "entails"}])
    spec = TaskSpec(
        name="local_scitail",
        family=TaskFamily.ENTAILMENT,
        text_columns=("premise", "hypothesis"),
        label_column="label",
        label_names=("entails", "neutral"),
        hub_path=str(repo),
    )
    data = ta.load_task(spec)
    assert set(data) == {"train", "validation"}
    assert data["train"].features["label"] == ClassLabel(names=["entails", "neutral"])
    assert data["train"]["label"][:] == [1, 0]

    repo2 = tmp_path / "repo2"
    files.jsonl(repo2 / "train.jsonl", [{"premise": "p", "hypothesis": "h", "label": k} for k in (0, -1, 2, -1)])
    spec2 = TaskSpec(
        name="local_snli",
        family=TaskFamily.ENTAILMENT,
        text_columns=("premise", "hypothesis"),
        label_column="label",
        label_names=("entailment", "neutral", "contradiction"),
        hub_path=str(repo2),
        drop_unlabeled=True,
    )
    assert ta.load_task(spec2)["train"]["label"][:] == [0, 2]
