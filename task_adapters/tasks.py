"""The paper's tasks (GPT-1 §4.2, Table 1 and Figure 1), declared as :class:`TaskSpec` objects.

Columns, split names and label names follow each dataset's Hub version, so data loaded from the Hub
and data read from the original files (``formats``) are interchangeable. Registered on import.
"""

from __future__ import annotations

from .formats import MNLI_FILES, GlueTsv, MrpcTsv, RaceJson, SciTailTsv, SnliJsonl, StoryClozeCsv, SwagCsv
from .registry import register_task
from .specs import TaskFamily, TaskSpec

__all__ = ["BUILTIN_TASKS"]

C, E, S, M = (
    TaskFamily.CLASSIFICATION,
    TaskFamily.ENTAILMENT,
    TaskFamily.SIMILARITY,
    TaskFamily.MULTIPLE_CHOICE,
)
GLUE = "nyu-mll/glue"
_GLUE_SPLITS = ("train", "validation", "test")
_ENT2 = ("entailment", "not_entailment")

BUILTIN_TASKS: tuple[TaskSpec, ...] = (
    # --- classification: start text extract ------------------------------------------------
    TaskSpec(
        name="cola",
        family=C,
        text_columns=("sentence",),
        label_column="label",
        label_names=("unacceptable", "acceptable"),
        metric_config="matthews_correlation",
        hub_path=GLUE,
        hub_config="cola",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(
            folder="CoLA",
            columns={"sentence": 3},
            label=1,
            headerless=frozenset({"train.tsv", "dev.tsv"}),
            test_columns={"sentence": "sentence"},
        ),
        description="CoLA: grammatical acceptability (Matthews corr.)",
    ),
    TaskSpec(
        name="sst2",
        family=C,
        text_columns=("sentence",),
        label_column="label",
        label_names=("negative", "positive"),
        hub_path=GLUE,
        hub_config="sst2",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(folder="SST-2", columns={"sentence": "sentence"}, label="label"),
        aliases=("sst-2", "sst"),
        description="SST-2: binary sentiment (accuracy)",
    ),
    # --- entailment: start premise delim hypothesis extract -------------------------------------
    TaskSpec(
        name="mnli",
        family=E,
        text_columns=("premise", "hypothesis"),
        label_column="label",
        label_names=("entailment", "neutral", "contradiction"),
        hub_path=GLUE,
        hub_config="mnli",
        splits=tuple(MNLI_FILES),
        local_loader=GlueTsv(
            folder="MNLI",
            columns={"premise": "sentence1", "hypothesis": "sentence2"},
            label="gold_label",
            files=MNLI_FILES,
        ),
        aliases=("multinli",),
        description="MultiNLI: validation_matched / validation_mismatched (accuracy)",
    ),
    TaskSpec(
        name="qnli",
        family=E,
        text_columns=("question", "sentence"),
        label_column="label",
        label_names=_ENT2,
        hub_path=GLUE,
        hub_config="qnli",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(folder="QNLI", columns={"question": "question", "sentence": "sentence"}, label="label"),
        description="QNLI: question / sentence entailment (accuracy)",
    ),
    TaskSpec(
        name="rte",
        family=E,
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        label_names=_ENT2,
        hub_path=GLUE,
        hub_config="rte",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(folder="RTE", columns={"sentence1": "sentence1", "sentence2": "sentence2"}, label="label"),
        description="RTE: recognizing textual entailment (accuracy)",
    ),
    TaskSpec(
        name="wnli",
        family=E,
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        label_names=("not_entailment", "entailment"),
        hub_path=GLUE,
        hub_config="wnli",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(
            folder="WNLI", columns={"sentence1": "sentence1", "sentence2": "sentence2"}, label="label"
        ),
        description="WNLI: Winograd NLI (accuracy)",
    ),
    TaskSpec(
        name="snli",
        family=E,
        text_columns=("premise", "hypothesis"),
        label_column="label",
        label_names=("entailment", "neutral", "contradiction"),
        hub_path="stanfordnlp/snli",
        drop_unlabeled=True,
        local_loader=SnliJsonl(),
        description="SNLI (accuracy); pairs without a gold label (-1) are dropped at load time",
    ),
    TaskSpec(
        name="scitail",
        family=E,
        text_columns=("premise", "hypothesis"),
        label_column="label",
        label_names=("entails", "neutral"),
        hub_path="allenai/scitail",
        hub_config="tsv_format",
        local_loader=SciTailTsv(),
        description="SciTail, tsv_format config (accuracy); string labels stored as ClassLabel",
    ),
    # --- similarity: both orderings, shape (2, seq) ---------------------------------------------
    TaskSpec(
        name="mrpc",
        family=S,
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        label_names=("not_equivalent", "equivalent"),
        metric_config="accuracy_f1",
        hub_path=GLUE,
        hub_config="mrpc",
        splits=_GLUE_SPLITS,
        local_loader=MrpcTsv(
            folder="MRPC", columns={"sentence1": "#1 String", "sentence2": "#2 String"}, label="Quality"
        ),
        description="MRPC: paraphrase (F1 + accuracy)",
    ),
    TaskSpec(
        name="qqp",
        family=S,
        text_columns=("question1", "question2"),
        label_column="label",
        label_names=("not_duplicate", "duplicate"),
        metric_config="accuracy_f1",
        hub_path=GLUE,
        hub_config="qqp",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(
            folder="QQP", columns={"question1": "question1", "question2": "question2"}, label="is_duplicate"
        ),
        description="QQP: duplicate questions (F1 + accuracy)",
    ),
    TaskSpec(
        name="stsb",
        family=S,
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        is_regression=True,
        label_range=(0.0, 5.0),
        metric_config="pearson_spearmanr",
        hub_path=GLUE,
        hub_config="stsb",
        splits=_GLUE_SPLITS,
        local_loader=GlueTsv(
            folder="STS-B", columns={"sentence1": "sentence1", "sentence2": "sentence2"}, label="score"
        ),
        aliases=("sts-b", "sts"),
        description="STS-B: similarity score 0-5, regression (Pearson / Spearman)",
    ),
    # --- multiple choice: start context delim answer_k extract, shape (choices, seq) -------------
    TaskSpec(
        name="story_cloze",
        family=M,
        text_columns=("input_sentence_1", "input_sentence_2", "input_sentence_3", "input_sentence_4"),
        choice_columns=("sentence_quiz1", "sentence_quiz2"),
        num_choices=2,
        label_column="answer_right_ending",
        label_values=(1, 2),
        label_names=("ending1", "ending2"),
        unlabeled_value=-1,
        splits=("validation", "test"),
        val_split=(374, 3535999445),
        context_truncation_side="left",
        local_loader=StoryClozeCsv(),
        aliases=("rocstories", "storycloze"),
        description="Story Cloze Test 2016 (accuracy); split_val=True gives the paper's 1,497/374 split",
        download_hint=(
            "Story Cloze is distributed through a request form (https://cs.rochester.edu/nlp/rocstories/); "
            "point data_dir at the folder with the spring-2016 CSVs."
        ),
    ),
    TaskSpec(
        name="race",
        family=M,
        text_columns=("article", "question"),
        choices_column="options",
        num_choices=4,
        label_column="answer",
        label_values=("A", "B", "C", "D"),
        label_names=("A", "B", "C", "D"),
        unlabeled_value=None,
        hub_path="ehovy/race",
        hub_config="all",
        context_truncation_side="left",
        local_loader=RaceJson(),
        description="RACE middle+high (accuracy); long articles are trimmed from the front",
    ),
    TaskSpec(
        name="swag",
        family=M,
        text_columns=("sent1", "sent2"),
        choice_columns=("ending0", "ending1", "ending2", "ending3"),
        num_choices=4,
        label_column="label",
        label_names=("0", "1", "2", "3"),
        hub_path="allenai/swag",
        hub_config="regular",
        context_truncation_side="left",
        local_loader=SwagCsv(),
        description="SWAG regular (accuracy); context = sent1 + sent2, answers = endings",
    ),
)

for _spec in BUILTIN_TASKS:
    register_task(_spec)
