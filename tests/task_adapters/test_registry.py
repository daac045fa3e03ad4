"""The registry and TaskSpec: built-in coverage of the paper's tasks, lookups, and adding a task
end to end (spec → local files → load_task → encode → collate → metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

import task_adapters as ta
from task_adapters import (
    ClassificationAdapter,
    EntailmentAdapter,
    MultipleChoiceAdapter,
    SimilarityAdapter,
    TaskFamily,
    TaskSpec,
    UnknownTaskError,
)

PAPER_TASKS = {
    "classification": {"cola", "sst2"},
    "entailment": {"mnli", "qnli", "rte", "wnli", "snli", "scitail"},
    "similarity": {"mrpc", "qqp", "stsb"},
    "multiple_choice": {"story_cloze", "race", "swag"},
}
ADAPTER_CLASS = {
    "classification": ClassificationAdapter,
    "entailment": EntailmentAdapter,
    "similarity": SimilarityAdapter,
    "multiple_choice": MultipleChoiceAdapter,
}


def test_every_paper_task_is_registered_in_its_family():
    for family, names in PAPER_TASKS.items():
        assert set(ta.list_tasks(family)) == names
        for name in names:
            assert type(ta.get_adapter(name)) is ADAPTER_CLASS[family]
    assert ta.list_tasks() == sorted(set().union(*PAPER_TASKS.values()))


def test_hub_locations_and_label_names():
    glue = {n: ta.get_task_spec(n) for n in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")}
    assert all(s.hub_path == "nyu-mll/glue" and s.hub_config == n for n, s in glue.items())
    assert glue["sst2"].label_names == ("negative", "positive")
    assert glue["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert glue["qnli"].label_names == glue["rte"].label_names == ("entailment", "not_entailment")
    assert glue["wnli"].label_names == ("not_entailment", "entailment")
    assert glue["mrpc"].label_names == ("not_equivalent", "equivalent")
    assert glue["mnli"].splits == (
        "train",
        "validation_matched",
        "validation_mismatched",
        "test_matched",
        "test_mismatched",
    )
    assert glue["stsb"].is_regression and glue["stsb"].num_labels == 1
    assert (ta.get_task_spec("snli").hub_path, ta.get_task_spec("snli").drop_unlabeled) == ("stanfordnlp/snli", True)
    assert (ta.get_task_spec("scitail").hub_path, ta.get_task_spec("scitail").hub_config) == (
        "allenai/scitail",
        "tsv_format",
    )
    assert (ta.get_task_spec("race").hub_path, ta.get_task_spec("swag").hub_config) == ("ehovy/race", "regular")
    assert ta.get_task_spec("story_cloze").hub_path is None  # request-form data: needs data_dir
    assert [ta.get_task_spec(n).num_labels for n in ("story_cloze", "race", "swag")] == [2, 4, 4]


def test_metric_sets_follow_glue():
    expect = {
        "cola": ("matthews_correlation",),
        "mrpc": ("accuracy", "f1"),
        "qqp": ("accuracy", "f1"),
        "stsb": ("pearson", "spearmanr"),
    }
    for name in ta.list_tasks():
        assert ta.get_task_spec(name).metric_names == expect.get(name, ("accuracy",))


def test_aliases_and_case():
    assert ta.get_task_spec("SST-2").name == "sst2"
    assert ta.get_task_spec("ROCStories").name == "story_cloze"
    assert ta.get_task_spec(" sts-b ").name == "stsb"


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownTaskError) as err:
        ta.get_adapter("imdb")
    msg = str(err.value)
    assert "'imdb'" in msg and all(name in msg for name in ta.list_tasks())
    with pytest.raises(UnknownTaskError):
        ta.load_task("nope")


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError, match="exactly 2 text columns"):
        TaskSpec(name="x", family="entailment", text_columns=("a",), label_column="label", label_names=("y", "n"))
    with pytest.raises(ValueError, match="exactly one of choice_columns / choices_column"):
        TaskSpec(name="x", family="multiple_choice", text_columns=("ctx",), label_column="label")
    with pytest.raises(ValueError, match="need label_names"):
        TaskSpec(name="x", family="classification", text_columns=("t",), label_column="label")
    with pytest.raises(ValueError, match="unknown metric_config 'bleu'"):
        TaskSpec(
            name="x",
            family="classification",
            text_columns=("t",),
            label_column="label",
            label_names=("a",),
            metric_config="bleu",
        )
    with pytest.raises(ValueError, match="'sideways'"):
        TaskSpec(name="x", family="sideways", text_columns=("t",), label_column="label")


def test_register_conflicts_overwrite_and_unregister():
    spec = TaskSpec(
        name="tmp_task",
        family=TaskFamily.CLASSIFICATION,
        text_columns=("text",),
        label_column="label",
        label_names=("no", "yes"),
        aliases=("tmp-alias",),
    )
    try:
        ta.register_task(spec)
        assert ta.get_task_spec("TMP-ALIAS") is spec
        with pytest.raises(ValueError, match="already registered"):
            ta.register_task(spec)
        with pytest.raises(ValueError, match="belongs to task 'sst2'"):
            ta.register_task(
                TaskSpec(
                    name="tmp_task",
                    family="classification",
                    text_columns=("text",),
                    label_column="label",
                    label_names=("a", "b"),
                    aliases=("sst-2",),
                ),
                overwrite=True,
            )
        assert ta.get_task_spec("tmp_task") is spec  # the failed overwrite changed nothing
        replacement = TaskSpec(
            name="tmp_task",
            family="classification",
            text_columns=("text",),
            label_column="label",
            label_names=("a", "b", "c"),
        )
        ta.register_task(replacement, overwrite=True)
        assert ta.get_task_spec("tmp_task").num_labels == 3
        with pytest.raises(UnknownTaskError):
            ta.get_task_spec("tmp-alias")  # the old alias went with the old spec
    finally:
        ta.unregister_task("tmp_task")
    assert "tmp_task" not in ta.list_tasks()


def read_reviews(data_dir: Path, spec: TaskSpec, **options) -> DatasetDict:
    """A local reader for a made-up 3-class task: one ``label<TAB>text`` file per split."""
    features = Features({"review": Value("string"), "label": ClassLabel(names=list(spec.label_names))})
    out = {}
    for split in ("train", "validation"):
        path = data_dir / f"{split}.txt"
        if path.is_file():
            rows = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()]
            out[split] = Dataset.from_dict(
                {"review": [t for _, t in rows], "label": [label for label, _ in rows]}, features=features
            )
    return DatasetDict(out)


def test_adding_a_task_end_to_end(tmp_path, gpt1_tokenizer):
    """The README recipe: declare a spec, register it, and every piece works for it."""
    spec = TaskSpec(
        name="reviews3",
        family="classification",
        text_columns=("review",),
        label_column="label",
        label_names=("bad", "ok", "good"),
        local_loader=read_reviews,
        description="toy 3-way sentiment",
    )
    (tmp_path / "train.txt").write_text(
        "good\tGreat little phone.\nbad\tBroke after a day.\nok\tIt works.\n", encoding="utf-8"
    )
    ta.register_task(spec)
    try:
        data = ta.load_task("reviews3", tmp_path)
        assert data["train"]["label"][:] == [2, 0, 1]
        adapter = ta.get_adapter("reviews3")
        enc = adapter.encode(data, gpt1_tokenizer)
        assert enc["train"].features["labels"].names == ["bad", "ok", "good"]
        batch = ta.GPT1DataCollator(gpt1_tokenizer)(list(enc["train"]))
        assert batch["input_ids"].shape[0] == 3 and batch["labels"].tolist() == [2, 0, 1]
        import numpy as np

        logits = np.eye(3)[[2, 0, 0]]
        assert adapter.compute_metrics((logits, np.array([2, 0, 1]))) == {"accuracy": pytest.approx(2 / 3)}
    finally:
        ta.unregister_task("reviews3")
