"""Unit tests of hf_gpt1.reproduction that need no training: the labelled variant's pretraining text
(`--with-task-text`) and where each variant writes. Real shared data; the end-to-end demo is tests/scripts/test_reproduce.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hf_gpt1.reproduction import REPO_ROOT, TASK_TEXT_TASKS, parse_args, write_task_text_corpus
from task_adapters import get_task_spec, load_task


def _texts(shared_data: Path, task: str, split: str) -> set[str]:
    data = load_task(task, shared_data / "glue")[split]
    return {" ".join(text.split()) for column in get_task_spec(task).text_columns for text in data[column]}


def test_task_text_corpus_is_the_corpus_plus_training_sentences_only(tmp_path, shared_data):
    base = shared_data / "corpus"
    target = tmp_path / "corpus-with-task-text"
    (tmp_path / "corpus-with-task-text.tmp").mkdir()  # a staging folder left by a killed earlier call
    counts = write_task_text_corpus(shared_data, base, target)

    # the corpus itself, byte for byte
    originals = sorted(p.relative_to(base) for p in base.rglob("*.txt"))
    assert sorted(p.relative_to(target / "corpus") for p in (target / "corpus").rglob("*.txt")) == originals
    for rel in originals:
        assert (target / "corpus" / rel).read_bytes() == (base / rel).read_bytes()
    assert not (tmp_path / "corpus-with-task-text.tmp").exists()

    paragraphs = (target / "task_text.txt").read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    assert len(paragraphs) == len(set(paragraphs)) == sum(counts.values())
    assert list(counts) == list(TASK_TEXT_TASKS) and "story_cloze" not in TASK_TEXT_TASKS
    written = set(paragraphs)
    for task in TASK_TEXT_TASKS:
        train = _texts(shared_data, task, "train")
        assert train <= written  # every training sentence, labels dropped
        dev_only = _texts(shared_data, task, "validation") - train
        assert dev_only and not dev_only & written  # no dev sentence the training split does not hold itself
    assert counts["sst2"] == len(_texts(shared_data, "sst2", "train"))
    assert counts["sst2"] > 60_000 and counts["cola"] > 8_000 and counts["mrpc"] > 6_000
    stories = load_task("story_cloze", shared_data / "rocstories")["validation"]
    assert not {" ".join(s.split()) for s in stories["input_sentence_1"]} & written

    # a second call replaces the folder rather than adding to it
    assert write_task_text_corpus(shared_data, base, target) == counts


def test_each_variant_writes_to_its_own_folders():
    default = parse_args([])
    assert (Path(default.output_dir), Path(default.docs_dir)) == (REPO_ROOT / "runs" / "reproduce", REPO_ROOT / "docs")
    variant = parse_args(["--with-task-text"])
    assert Path(variant.output_dir) == REPO_ROOT / "runs" / "reproduce-task-text"
    assert Path(variant.docs_dir) == REPO_ROOT / "docs" / "task-text"
    assert parse_args(["--with-task-text", "--docs-dir", "elsewhere"]).docs_dir == "elsewhere"


def test_a_missing_training_set_is_a_clear_error_and_writes_nothing(tmp_path, shared_data):
    glue = tmp_path / "data" / "glue"
    (glue / "SST-2").mkdir(parents=True)
    shutil.copy(shared_data / "glue" / "SST-2" / "dev.tsv", glue / "SST-2" / "dev.tsv")  # dev only: no train.tsv
    target = tmp_path / "corpus-with-task-text"
    with pytest.raises(
        FileNotFoundError, match=r"needs sst2's training set \(train.tsv\).*found only \['validation'\]"
    ):
        write_task_text_corpus(tmp_path / "data", shared_data / "corpus", target)
    assert not target.exists() and not target.with_name(target.name + ".tmp").exists()


@pytest.mark.parametrize("budget_name", ["smoke", "quick", "full"])
def test_fine_tuning_runs_get_the_budgets_sampler(tmp_path, budget_name):
    """The budget's length-grouped tasks reach Trainer as `train_sampling_strategy='group_by_length'` through the real
    fine-tuning parser; every other task keeps random batches. (Nested inputs are grouped by their longest sequence:
    tests/hf_gpt1/test_finetuning.py.)"""
    from hf_gpt1 import finetuning
    from hf_gpt1.reproduction import BUDGETS, TASKS, Paths, finetune_args

    budget = BUDGETS[budget_name]
    paths = Paths(out=tmp_path, docs=tmp_path, data=tmp_path)
    for task in TASKS:
        args = finetune_args(task, tmp_path / "model", tmp_path / task, 0.5, 0, paths, budget)
        parsed = finetuning.parse_args(args)
        grouped = task in budget.finetune_length_grouped
        assert parsed.training.train_sampling_strategy == ("group_by_length" if grouped else "random")
    # the full table was run before grouping existed, with random batches
    assert set(budget.finetune_length_grouped) == (set() if budget_name == "full" else set(TASKS))
