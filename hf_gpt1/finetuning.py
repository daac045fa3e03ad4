"""Fine-tuning GPT-1 on a task with `transformers.Trainer`, the recipe of the paper (§3.2, §4.1).

`scripts/finetune.py` is a thin CLI over `main()`; the pieces are reusable on their own:

* `parse_args()` - the CLI: `ModelArguments`, `DataArguments`, `PeftArguments` and `GPT1TrainingArguments` (every
  `TrainingArguments` option, §4.1's hyperparameters as defaults; `hf_gpt1.training_args`) parsed by `HfArgumentParser`;
* `head_auto_class()` / `load_model_for_task()` - the head follows the task family (classification, entailment and
  similarity -> `AutoModelForSequenceClassification`; multiple choice -> `AutoModelForMultipleChoice`), labels and
  regression come from the task's `TaskSpec`, the new `_start_/_delimiter_/_classify_/<pad>` embeddings are random
  (`add_special_tokens`), and `config.lm_coef` (λ) / `config.clf_pdrop` come from the arguments;
* `GPT1Trainer` (from `hf_gpt1.trainer`, shared with pretraining) - `Trainer` that logs the two parts of
  L3 = L2 + λ·L1 separately, never gathers LM logits, writes checkpoints atomically, stops on a non-finite loss and
  fills our model card when pushing;
* `SaveOnSignalCallback` - SIGTERM/SIGINT -> checkpoint at the end of the current step, then a clean stop;
* `NonFiniteLossCallback` - a NaN/inf loss (or gradient norm) -> stop at once, without checkpointing that step;
* `apply_peft()` / `adapter_base_model()` - `--peft lora|ia3`: the model wrapped by `peft_integration.make_peft_model`
  (task head and special-token rows trained), saved as an adapter pointing to a gpt1-format base;
* `fill_model_card()`, `write_predictions()` (GLUE submission TSVs), `plot_training_curves()`.

What Trainer, Accelerate and `evaluate` already do (device placement, DDP, mixed precision, grad clipping, the linear
warmup/decay schedule, AdamW with decay grouping, best-checkpoint tracking, progress bars, checkpoint pushes) is left
to them. The final upload goes through `hf_gpt1.hub.push_folder` (validated folder, our card, clear errors).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import (
    AutoConfig,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .configuration_gpt1 import GPT1Config
from .cpu_speed import enable_cpu_speedups
from .hub import CheckpointError, HubPushError, attach_model_card, check_hub_access, push_folder
from .model_cards import (  # noqa: F401  (fill_model_card, MODEL_CARD_TEMPLATE, PAPER_CITATION: public here too)
    GLUE_SUBMISSION_NAMES,
    MODEL_CARD_TEMPLATE,
    PAPER_CITATION,
    fill_model_card,
    is_hub_id,
    pipeline_tag_for,
)
from .peft_integration import (
    EMBEDDING_MODES,
    make_peft_config,
    make_peft_model,
    merge_adapter,
    save_adapter,
    trainable_parameter_report,
)
from .tokenization_gpt1 import add_special_tokens, load_gpt1_tokenizer
from .trainer import (  # noqa: F401  (public here too)
    LOSS_PARTS,
    STAGING_DIR_NAME,
    GPT1Trainer,
    check_task_logits,
)
from .training_args import (  # noqa: F401  (PAPER_FINETUNING_DEFAULTS, cpu_process_group_needed: public here too)
    PAPER_FINETUNING_DEFAULTS,
    GPT1TrainingArguments,
    LoraArguments,
    cpu_process_group_needed,
    parse_cli,
    report_to_problems,
)
from .training_callbacks import (  # noqa: F401  (public here too)
    NonFiniteLossCallback,
    NonFiniteLossError,
    SaveOnSignalCallback,
    SignalFlag,
    replace_dir,
)
from .training_curves import plot_training_curves

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# The paper's recipe
# ----------------------------------------------------------------------------------------------------------------------

#: Metric that picks the best checkpoint: the one the paper reports per task (Table 2-4): F1 for MRPC/QQP, Pearson
#: for STS-B, Matthews for CoLA, accuracy elsewhere. Keys are task names; tasks not listed use their first metric.
BEST_METRIC_BY_TASK: dict[str, str] = {
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "pearson",
    "cola": "matthews_correlation",
}

#: GLUE tasks whose official TSVs (hence the leaderboard) use label *strings*; the others use integer ids 0/1.
GLUE_STRING_LABEL_TASKS = frozenset({"mnli", "qnli", "rte", "ax"})

BASE_MODEL_DIR_NAME = "base_model"  # --peft: the resized gpt1 base an adapter points to, when --model cannot serve
MERGED_DIR_NAME = "merged"  # --merge-adapter: the plain gpt1 checkpoint with the adapter merged in
PEFT_METHODS = ("none", "lora", "ia3")
CURVES_FILE_NAME = "training_curves.png"
EVAL_RESULTS_FILE_NAME = "eval_results.json"
_SUPPORTED_MODEL_TYPES = ("gpt1", "openai-gpt")


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    """The model to fine-tune and the task head's settings."""

    model: str = field(
        metadata={
            "help": "Model to fine-tune: a Hub id or folder of a gpt1 checkpoint (e.g. from scripts/pretrain.py) or of "
            "transformers' openai-gpt (e.g. openai-community/openai-gpt, converted on load)."
        }
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer (Hub id, saved folder, or the original BPE files); default: the same as --model."},
    )
    lm_coef: float = field(
        default=PAPER_FINETUNING_DEFAULTS["lm_coef"],
        metadata={
            "help": "λ, weight of the auxiliary LM loss: L3 = L2 + λ·L1 (config.lm_coef). 0 = no auxiliary objective "
            "(lm_loss is then neither computed nor logged)."
        },
    )
    clf_dropout: float = field(
        default=PAPER_FINETUNING_DEFAULTS["clf_dropout"],
        metadata={"help": "Dropout on the extract-token state before the classifier (config.clf_pdrop)."},
    )
    base_model_id: str | None = field(
        default=None,
        metadata={"help": "Hub id recorded as base_model in the model card; default: --model when it is a Hub id."},
    )


@dataclass
class DataArguments:
    """The task, its data, and what is predicted."""

    task: str = field(
        metadata={
            "help": "Task name (see task_adapters.list_tasks()), e.g. sst2, cola, mrpc, qnli, mnli, rte, stsb, "
            "story_cloze, race."
        }
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the task's original files (e.g. the GLUE download or the Story Cloze CSVs); default: "
            "download the task from the Hub with `datasets`."
        },
    )
    split_validation: str | None = field(
        default=None,
        metadata={
            "help": "Carve train and eval sets out of the validation split, for tasks whose train file is not "
            "available (QNLI dev only; Story Cloze). Without a value: the task's own recipe (Story Cloze: 1,497 train "
            "/ 374 eval as in the original code), otherwise 20%% eval. A value: an eval-set size (int) or fraction."
        },
    )
    split_seed: int = field(
        default=3535999445,
        metadata={
            "help": "Seed of the --split-validation split (the original code's random_state); independent of --seed."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N examples of each eval split."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Predict only the first N examples of each --predict split (quick checks)."}
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Max tokens per sequence, special tokens included (paper: 512); default: 512 capped at the "
            "model's n_positions."
        },
    )
    standardize_text: bool = field(
        default=True,
        metadata={
            "help": "Map curly quotes, dashes and ellipses to ASCII first, as the original GPT-1 code did (the GPT-1 "
            "BPE has none of them and would emit <unk>); --no-standardize-text tokenizes texts as they are."
        },
    )
    predict: bool = field(
        default=False,
        metadata={
            "help": "Predict the --predict-split and write GLUE submission TSVs (index<TAB>prediction, e.g. "
            "SST-2.tsv) into --output-dir."
        },
    )
    predict_split: str = field(
        default="test",
        metadata={"help": "Split(s) to predict: a name or prefix ('test' covers MNLI's test_matched/_mismatched)."},
    )


@dataclass
class PeftArguments(LoraArguments):
    """Parameter-efficient fine-tuning: a LoRA or IA³ adapter instead of all weights (`LoraArguments` + these)."""

    peft: str = field(
        default="none",
        metadata={
            "help": "Train a LoRA or IA³ adapter instead of all weights (hf_gpt1.peft_integration.make_peft_model: "
            "GPT-1's default target modules, the task head trained in full, the special-token rows trained). "
            "--output-dir then holds the adapter (+ head + token rows), not a full checkpoint.",
            "choices": list(PEFT_METHODS),
        },
    )
    peft_embeddings: str = field(
        default="auto",
        metadata={
            "help": "The rows of the added _start_/_delimiter_/_classify_/<pad> tokens: 'tokens' = train and save "
            "only those rows, 'full' = the whole token table, 'none' = keep them frozen (random). 'auto' = tokens "
            "with LoRA, none with IA³.",
            "choices": list(EMBEDDING_MODES),
        },
    )


class FineTuningArguments(NamedTuple):
    """The parsed command line of `scripts/finetune.py`."""

    model: ModelArguments
    data: DataArguments
    peft: PeftArguments
    training: GPT1TrainingArguments


#: Spellings of the argparse CLI (up to 0.x) that no option carries any more, and what they stand for now.
RENAMED_FLAGS: dict[str, list[str]] = {
    "--no-load-best-model": ["--load_best_model_at_end", "False"],
}
#: Flags given without a value, and the value they then mean.
OPTIONAL_VALUES = {"--resume-from-checkpoint": "auto", "--split-validation": "recipe"}


def _check(model: ModelArguments, data: DataArguments, peft: PeftArguments, training: GPT1TrainingArguments):
    """Problems with the values (reported together as one usage error, before anything is loaded)."""
    problems = []
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    for owner, name in [
        (training, "eval_steps"),
        (training, "save_total_limit"),
        (data, "max_train_samples"),
        (data, "max_eval_samples"),
        (data, "max_predict_samples"),
        (data, "max_length"),
    ]:
        value = getattr(owner, name)
        if value is not None and value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if training.learning_rate <= 0:
        problems.append("--learning-rate must be > 0")
    if training.num_train_epochs <= 0 and training.max_steps <= 0:
        problems.append("--num-train-epochs must be > 0 (or give --max-steps)")
    if training.warmup_steps < 0:
        problems.append("--warmup-steps must be >= 0 (a fraction of the steps when < 1)")
    if not 0.0 <= model.clf_dropout < 1.0:
        problems.append("--clf-dropout must be in [0, 1)")
    if model.lm_coef < 0:
        problems.append("--lm-coef must be >= 0")
    if training.weight_decay < 0:
        problems.append("--weight-decay must be >= 0")
    problems.extend(report_to_problems(training.report_to))
    if training.hub_model_id and not training.push_to_hub:
        problems.append("--hub-model-id needs --push-to-hub")
    if _strategy(training.hub_strategy) != "end" and not training.push_to_hub:
        problems.append("--hub-strategy needs --push-to-hub")
    if peft.lora_r < 1:
        problems.append("--lora-r must be >= 1")
    if not 0.0 <= peft.lora_dropout < 1.0:
        problems.append("--lora-dropout must be in [0, 1)")
    if peft.peft == "none":
        if peft.merge_adapter:
            problems.append("--merge-adapter needs --peft lora|ia3")
    else:
        if peft.peft_embeddings in ("tokens", "full") and peft.peft != "lora":
            problems.append(
                f"--peft-embeddings {peft.peft_embeddings} needs --peft lora (PEFT trains embedding rows only with LoRA)"
            )
        if training.push_to_hub and not peft.merge_adapter:
            problems.append(
                "--push-to-hub with --peft needs --merge-adapter: the merged model is what is uploaded (an adapter "
                "folder points to a base model on this machine, which a Hub repo cannot load)"
            )
        if training.push_to_hub and _strategy(training.hub_strategy) != "end":
            problems.append(
                "--hub-strategy other than 'end' is not supported with --peft (checkpoint pushes would "
                "upload adapters that point to a local base model)"
            )
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value))


def parse_args(argv: Sequence[str] | None = None) -> FineTuningArguments:
    """Parse and sanity-check the CLI (clear errors, exit status 2, before anything is loaded).

    The options are the fields of `ModelArguments`, `DataArguments`, `PeftArguments` and `GPT1TrainingArguments`
    (every `TrainingArguments` option, with the paper's defaults), parsed by `HfArgumentParser`.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    ratios = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--warmup-ratio", "--warmup_ratio")]

    def check(*values: Any) -> list[str]:
        problems = _check(*values)
        if any(not 0.0 <= float(r) < 1.0 for r in ratios if _is_number(r)):  # the old flag took fractions only
            problems.append("--warmup-ratio must be in [0, 1) (a number of steps: --warmup-steps N)")
        return problems

    values = parse_cli(
        (ModelArguments, DataArguments, PeftArguments, GPT1TrainingArguments),
        words,
        prog="finetune.py",
        description=(
            "Fine-tune GPT-1 on a task with transformers.Trainer, as in Radford et al. (2018) §3.2/§4.1: "
            "L3 = L2 + λ·L1 (task loss + λ × auxiliary LM loss), linear warmup over 0.2 % of the steps then linear "
            "decay, AdamW with weight decay on all but biases and LayerNorm gains. Every transformers "
            "TrainingArguments option is accepted (--learning-rate or --learning_rate). Also runs under "
            "`accelerate launch`."
        ),
        optional_values=OPTIONAL_VALUES,
        renamed=RENAMED_FLAGS,
        check=check,
    )
    return FineTuningArguments(*values)


def schedule_training_arguments(
    training: GPT1TrainingArguments, spec, eval_names: Sequence[str], hub_model_id: str | None = None
) -> GPT1TrainingArguments:
    """The TrainingArguments the run uses: the CLI's, with the task's metric for the best checkpoint, `--save-steps`
    bringing step-wise evaluation along (the best checkpoint needs a metric at every save) and `--eval-steps` step-wise
    checkpoints, and Trainer's own pushes only for checkpoints (`--hub-strategy` other than end; the final upload is
    `push_folder`'s). `hub_model_id`: the repo id as resolved by `check_hub_access` (namespace filled in).
    """
    changes: dict[str, Any] = {}
    eval_strategy, save_strategy = _strategy(training.eval_strategy), _strategy(training.save_strategy)
    if training.eval_steps is not None and eval_strategy == "epoch":
        eval_strategy = changes["eval_strategy"] = "steps"
    if save_strategy == "epoch" and _given(training, "save_steps"):
        save_strategy = changes["save_strategy"] = "steps"
    if save_strategy == "steps" and eval_strategy != "no" and training.eval_steps is None:
        changes.update(eval_strategy="steps", eval_steps=training.save_steps)
    elif eval_strategy == "steps" and save_strategy == "epoch":
        changes.update(save_strategy="steps", save_steps=training.eval_steps or training.save_steps)
    if training.requested_metric is None and training.load_best_model_at_end:
        changes.update(metric_for_best_model=metric_for_best_model(spec, eval_names), greater_is_better=None)
    changes["push_to_hub"] = bool(training.push_to_hub and _strategy(training.hub_strategy) != "end")
    changes["hub_model_id"] = hub_model_id or training.hub_model_id
    return dataclasses.replace(training, **changes)


def _given(training: TrainingArguments, name: str) -> bool:
    """Was `name` set to something other than TrainingArguments' default?"""
    return getattr(training, name) != TrainingArguments.__dataclass_fields__[name].default


# ----------------------------------------------------------------------------------------------------------------------
# Model and data
# ----------------------------------------------------------------------------------------------------------------------


def _task_api():
    """`task_adapters` is imported lazily so `import hf_gpt1.finetuning` stays cheap for `--help`."""
    import task_adapters

    return task_adapters


def get_task_spec(task: str):
    """The task's `TaskSpec`; an unknown name raises `UnknownTaskError` listing the known tasks."""
    return _task_api().get_task_spec(task)


def head_auto_class(family) -> type:
    """The Auto class for a task family (paper Figure 1): one sequence (or the two similarity orderings) ->
    `AutoModelForSequenceClassification`; one sequence per answer -> `AutoModelForMultipleChoice`."""
    family = getattr(family, "value", family)
    return AutoModelForMultipleChoice if family == "multiple_choice" else AutoModelForSequenceClassification


def metric_for_best_model(spec, eval_names: Sequence[str] | None = None) -> str:
    """The metric that selects the best checkpoint, with Trainer's key prefix for dict eval sets (MNLI's matched)."""
    name = BEST_METRIC_BY_TASK.get(spec.name, spec.metric_names[0])
    if eval_names and len(eval_names) > 1:
        return f"{eval_names[0]}_{name}"
    return name


def head_config_overrides(spec, lm_coef: float, clf_dropout: float) -> dict[str, Any]:
    """Config values the task fixes: λ, classifier dropout, and (for sequence classification) the label set.

    Regression (STS-B) gets `num_labels=1`, `problem_type="regression"` (so the pipeline returns the raw score) and a
    single label called "score"; classification gets the task's label names, so pipelines answer with names.
    """
    overrides: dict[str, Any] = {"lm_coef": float(lm_coef), "clf_pdrop": float(clf_dropout)}
    family = getattr(spec.family, "value", spec.family)
    if family == "multiple_choice":
        return overrides
    if spec.is_regression:
        overrides.update(num_labels=1, problem_type="regression", id2label={0: "score"}, label2id={"score": 0})
    else:
        overrides.update(
            num_labels=spec.num_labels,
            problem_type="single_label_classification",
            id2label=dict(spec.id2label),
            label2id=dict(spec.label2id),
        )
    return overrides


def _check_model_type(model_name_or_path: str, hub_kwargs: Mapping[str, Any]) -> str:
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(model_name_or_path, **hub_kwargs)
    except OSError as error:
        raise OSError(f"Cannot load a model config from {model_name_or_path!r}: {error}") from error
    model_type = config_dict.get("model_type")
    if model_type not in _SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{model_name_or_path!r} is a {model_type!r} model; finetune.py fine-tunes GPT-1 checkpoints "
            f"(model_type {' or '.join(map(repr, _SUPPORTED_MODEL_TYPES))}), e.g. openai-community/openai-gpt or the "
            f"output of scripts/pretrain.py."
        )
    return model_type


def load_model_for_task(
    model_name_or_path: str,
    spec,
    tokenizer,
    *,
    lm_coef: float = PAPER_FINETUNING_DEFAULTS["lm_coef"],
    clf_dropout: float = PAPER_FINETUNING_DEFAULTS["clf_dropout"],
    seed: int | None = None,
    ignore_mismatched_sizes: bool = False,
    **hub_kwargs: Any,
) -> PreTrainedModel:
    """Load the task head on a GPT-1 checkpoint and make it ready for `tokenizer`'s special tokens.

    The head class comes from the Auto class of the task family. A gpt1 checkpoint loads through the Auto class
    itself; an `openai-gpt` one goes through the same class's `from_pretrained`, which converts its layout (the Auto
    class would pick transformers' `OpenAIGPT*` for that config). The new task head is initialised by the model,
    and the embeddings of `_start_/_delimiter_/_classify_/<pad>` are appended with N(0, 0.02) rows, as in the paper.
    """
    model_type = _check_model_type(model_name_or_path, hub_kwargs)
    if seed is not None:
        set_seed(seed)  # the new head's weights are drawn from the global RNG
    auto_class = head_auto_class(spec.family)
    overrides = head_config_overrides(spec, lm_coef, clf_dropout)
    if model_type == "gpt1":
        model = auto_class.from_pretrained(
            model_name_or_path, ignore_mismatched_sizes=ignore_mismatched_sizes, **overrides, **hub_kwargs
        )
    else:
        head_class = auto_class._model_mapping[GPT1Config]  # our class for this Auto class (registered on import)
        model = head_class.from_pretrained(model_name_or_path, **overrides, **hub_kwargs)
    if model.config.model_type != "gpt1":  # e.g. a custom registration shadowing ours
        raise ValueError(f"Loaded a {type(model).__name__} ({model.config.model_type}); expected a GPT-1 head.")
    model.config.finetuning_task = spec.name  # recorded in config.json (not an __init__ argument in v5)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    add_special_tokens(model, tokenizer, generator=generator)
    # hf-gpt1's CPU speed paths and the CPU training attention (`HF_GPT1_CPU_SPEEDUPS=0`: the plain model, sdpa)
    return enable_cpu_speedups(model)


# ----------------------------------------------------------------------------------------------------------------------
# PEFT (--peft lora|ia3)
# ----------------------------------------------------------------------------------------------------------------------


def peft_options(args: PeftArguments) -> dict[str, Any]:
    """`make_peft_config` / `make_peft_model` keyword arguments from the CLI's --peft/--lora-* options."""
    return dict(
        r=args.lora_r,
        alpha=args.lora_alpha,
        dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        embeddings=args.peft_embeddings,
    )


def _adapter_carries_special_rows(peft_config) -> bool:
    """True when the adapter saves the special-token rows itself (LoRA trainable_token_indices, or the whole table
    through modules_to_save=["lm_head"]), so any base resized by `add_special_tokens` reproduces the model."""
    return bool(getattr(peft_config, "trainable_token_indices", None)) or "lm_head" in (
        peft_config.modules_to_save or []
    )


def adapter_base_model(
    model_name_or_path: str, model: PreTrainedModel, peft_config, output_dir: str
) -> tuple[str, bool]:
    """The gpt1-format base an adapter's `base_model_name_or_path` points to: `(path, must_save)`.

    `--model` itself (absolute path) when it is a local gpt1 folder that can serve as the base: the adapter carries
    the special-token rows (the folder may predate `add_special_tokens`; AutoPeft grows it to the saved tokenizer),
    and `AutoModelFor*.from_pretrained(folder)` builds the same head shape (e.g. an LM checkpoint has the default 2
    labels: fine for SST-2, not for MNLI's 3 or STS-B's regression). Otherwise - a Hub id, an openai-gpt folder
    (AutoPeft would build transformers' OpenAIGPT* class), a head that does not fit, or frozen random special rows
    (IA³, --peft-embeddings none) - `output_dir/base_model/`, where `must_save` says to save the resized base model
    before it is wrapped.
    """
    local = Path(model_name_or_path)
    config_file = local / "config.json"
    if local.is_dir() and config_file.is_file() and _adapter_carries_special_rows(peft_config):
        try:
            config_dict = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config_dict = {}
        if config_dict.get("model_type") == "gpt1" and _head_fits(model_name_or_path, model):
            return str(local.resolve()), False
    return str((Path(output_dir) / BASE_MODEL_DIR_NAME).resolve()), True


def _head_fits(model_name_or_path: str, model: PreTrainedModel) -> bool:
    """Does `AutoModelFor<head>.from_pretrained(model_name_or_path)` build a head of `model`'s shape?"""
    if type(model) is AutoModelForMultipleChoice._model_mapping[GPT1Config]:
        return True  # one score per choice, whatever the config says
    base_config = AutoConfig.from_pretrained(model_name_or_path)
    is_regression = getattr(model.config, "problem_type", None) == "regression"
    return (
        base_config.num_labels == model.config.num_labels
        and (base_config.problem_type == "regression") == is_regression
    )


def apply_peft(
    model: PreTrainedModel,
    tokenizer,
    args: PeftArguments,
    *,
    model_name_or_path: str,
    output_dir: str,
    resuming: bool = False,
    save_base: bool = True,
):
    """Wrap `model` (after `add_special_tokens`) with `make_peft_model` as the CLI options say.

    Returns `(peft_model, info)`: info has `base_model_name_or_path` (recorded in every adapter_config.json; see
    `adapter_base_model`), `saved_base` (a base was written to output_dir/base_model/ now) and `report`
    (`trainable_parameter_report`). The base is saved only by the process that saves (`save_base`), and only once:
    a resumed run keeps the folder it finds (same --model and --seed give the same base anyway).
    """
    options = peft_options(args)
    with warnings.catch_warnings():  # make_peft_model below warns (e.g. IA³'s frozen token rows) once
        warnings.simplefilter("ignore")
        config = make_peft_config(model, args.peft, **options)  # the config make_peft_model will apply
    base_path, must_save = adapter_base_model(model_name_or_path, model, config, output_dir)
    saved = False
    if must_save and save_base and not (resuming and Path(base_path, "config.json").is_file()):
        _save_folder_atomically(base_path, model, tokenizer)
        saved = True
    peft_model = make_peft_model(model, args.peft, **options)
    for peft_config in peft_model.peft_config.values():
        peft_config.base_model_name_or_path = base_path
    report = trainable_parameter_report(peft_model)
    by_kind = ", ".join(f"{kind} {count:,}" for kind, count in sorted(report["by_kind"].items()))
    logger.info(
        f"PEFT {args.peft}: {report['trainable']:,} trainable parameters of {report['total']:,} "
        f"({report['trainable_percent']:.3f}%): {by_kind}. Adapter base model: {base_path}"
        + (" (saved now)" if saved else "")
    )
    return peft_model, {
        "base_model_name_or_path": base_path,
        "saved_base": saved,
        "report": report,
        "special_rows": _adapter_carries_special_rows(config),
    }


def peft_settings(args: PeftArguments, info: Mapping[str, Any]) -> dict[str, Any]:
    """The PEFT part of the run settings (eval_results.json, model card)."""
    report = info["report"]
    options = peft_options(args)
    return {
        "peft": args.peft,
        **(
            {"lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout}
            if args.peft == "lora"
            else {}
        ),
        "peft_target_modules": options["target_modules"] or "default",
        "peft_embeddings": args.peft_embeddings,
        "trainable_parameters": report["trainable"],
        "trainable_parameters_by_kind": dict(report["by_kind"]),
        "trainable_percent": round(report["trainable_percent"], 4),
        "adapter_base_model": info["base_model_name_or_path"],
    }


def _save_folder_atomically(path: str | os.PathLike, model: PreTrainedModel, tokenizer) -> None:
    """`save_pretrained` model + tokenizer into a "_"-prefixed sibling, then rename it to `path` (replacing it)."""
    path = Path(path)
    staging = path.with_name(f"_{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    replace_dir(str(staging), str(path), trash_root=str(path.parent))


def _parse_split_size(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError as error:
        raise ValueError(f"--split-validation SIZE must be a number, got {text!r}") from error
    if value >= 1:
        if value != int(value):
            raise ValueError(f"--split-validation SIZE >= 1 must be an integer count, got {text!r}")
        return int(value)
    if value <= 0:
        raise ValueError(f"--split-validation SIZE must be > 0, got {text!r}")
    return value


def load_raw_splits(args: DataArguments, spec):
    """The task's `DatasetDict`, with train/validation carved out of validation when `--split-validation` asks."""
    ta = _task_api()
    use_recipe = args.split_validation == "recipe" and spec.val_split is not None
    data = ta.load_task(spec.name, data_dir=args.data_dir, split_val=use_recipe)
    if args.split_validation is not None and not use_recipe:
        if "validation" not in data:
            raise ValueError(f"--split-validation needs a 'validation' split; task {spec.name!r} has {list(data)}.")
        if "train" in data:
            raise ValueError(
                f"task {spec.name!r} already has a train split ({len(data['train'])} rows); --split-validation is for "
                f"tasks whose train file is missing (drop the flag)."
            )
        size = 0.2 if args.split_validation == "recipe" else _parse_split_size(args.split_validation)
        parts = data["validation"].train_test_split(test_size=size, seed=args.split_seed)
        data["train"], data["validation"] = parts["train"], parts["test"]
    if "train" not in data:
        raise ValueError(
            f"task {spec.name!r}: no train split in {args.data_dir or 'the Hub dataset'} (found {list(data)}). If only "
            f"the validation file is available, pass --split-validation to carve train/eval out of it."
        )
    return data


def eval_split_names(data) -> list[str]:
    """Validation splits: `validation`, or MNLI's `validation_matched` + `validation_mismatched`."""
    names = [name for name in data if name == "validation" or name.startswith("validation_")]
    if not names:
        raise ValueError(f"no validation split to evaluate on (found {list(data)}).")
    return sorted(names, key=lambda n: (n != "validation", n))


def short_eval_name(split: str) -> str:
    """`validation_matched` -> `matched`: Trainer prefixes dict eval sets' metrics with the key (eval_matched_...)."""
    return split[len("validation_") :] if split.startswith("validation_") else split


def prepare_datasets(args: DataArguments, spec, adapter, tokenizer, max_length: int):
    """Encoded (train, eval, predict) sets and the row counts of the train/validation splits before any
    `--max-*-samples` cut. eval is a Dataset, or a dict {short name: Dataset} for MNLI."""
    data = load_raw_splits(args, spec)
    data_rows = {name: len(ds) for name, ds in data.items() if name == "train" or name.startswith("validation")}
    train = data["train"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    eval_sets = {}
    for split in eval_split_names(data):
        ds = data[split]
        if args.max_eval_samples is not None:
            ds = ds.select(range(min(args.max_eval_samples, len(ds))))
        eval_sets[short_eval_name(split)] = ds
    predict_sets = {}
    if args.predict:
        wanted = [s for s in data if s == args.predict_split or s.startswith(args.predict_split + "_")]
        if not wanted:
            raise ValueError(f"--predict: no split named {args.predict_split!r}(_*) in {list(data)} for {spec.name}.")
        predict_sets = {s: data[s] for s in wanted}
        if args.max_predict_samples is not None:
            predict_sets = {
                s: ds.select(range(min(args.max_predict_samples, len(ds)))) for s, ds in predict_sets.items()
            }

    standardize = args.standardize_text
    train_enc = adapter.encode(train, tokenizer, max_length, standardize=standardize)
    eval_enc = {
        name: adapter.encode(ds, tokenizer, max_length, standardize=standardize) for name, ds in eval_sets.items()
    }
    predict_enc = {
        name: adapter.encode(
            ds, tokenizer, max_length, keep_columns=["idx"] if "idx" in ds.column_names else [], standardize=standardize
        )
        for name, ds in predict_sets.items()
    }
    eval_dataset = eval_enc["validation"] if list(eval_enc) == ["validation"] else eval_enc
    return train_enc, eval_dataset, predict_enc, data_rows


# ----------------------------------------------------------------------------------------------------------------------
# Outputs: results, model card, predictions, curves
# ----------------------------------------------------------------------------------------------------------------------


def write_predictions(
    predictions: Any,
    dataset,
    spec,
    output_dir: str | os.PathLike,
    split: str = "test",
) -> Path:
    """Write predictions as a GLUE submission TSV (`index<TAB>prediction`), returning the file path.

    GLUE tasks get the leaderboard's file name (`SST-2.tsv`, `MNLI-m.tsv`, ...) and label format: label names for
    the tasks whose official TSVs use strings (MNLI, QNLI, RTE, AX), integer ids for the others (CoLA, SST-2, MRPC,
    QQP, WNLI), and scores clipped to [0, 5] for STS-B. Other tasks get `<task>_<split>.tsv` with label names. The
    index is the dataset's `idx` column when it has one, else the row number.
    """
    import numpy as np

    logits = np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)
    if spec.is_regression:
        values = logits.reshape(len(logits)).astype(float)
        if spec.label_range is not None:
            values = np.clip(values, *spec.label_range)
        column = [f"{v:.3f}" for v in values]
    else:
        ids = logits.argmax(axis=-1)
        glue_name = _glue_name(spec, split)
        if glue_name is not None and spec.name not in GLUE_STRING_LABEL_TASKS:
            column = [str(int(i)) for i in ids]
        else:
            names = list(spec.label_names) if spec.label_names else None
            column = [names[int(i)] if names else str(int(i)) for i in ids]
    index = list(dataset["idx"]) if "idx" in dataset.column_names else list(range(len(column)))
    if len(index) != len(column):
        raise ValueError(f"{len(column)} predictions for {len(index)} rows of {spec.name}/{split}.")
    glue_name = _glue_name(spec, split)
    path = Path(output_dir) / (f"{glue_name}.tsv" if glue_name else f"{spec.name}_{split}.tsv")
    lines = ["index\tprediction"] + [f"{i}\t{p}" for i, p in zip(index, column)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _glue_name(spec, split: str) -> str | None:
    if spec.hub_path != "nyu-mll/glue":
        return None
    return GLUE_SUBMISSION_NAMES.get(f"{spec.name}/{split}") or GLUE_SUBMISSION_NAMES.get(spec.name)


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def resolve_max_length(requested: int | None, config: PretrainedConfig) -> int:
    n_positions = getattr(config, "n_positions", PAPER_FINETUNING_DEFAULTS["max_length"])
    if requested is None:
        return min(PAPER_FINETUNING_DEFAULTS["max_length"], n_positions)
    if requested > n_positions:
        raise ValueError(f"--max-length {requested} exceeds the model's {n_positions} learned positions (n_positions).")
    return requested


def resolve_checkpoint(resume: str | None, output_dir: str) -> str | None:
    """`--resume-from-checkpoint`: a folder, or 'auto' -> the latest complete checkpoint in output_dir (or None)."""
    if resume is None:
        return None
    if resume == "auto":
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.info(f"--resume-from-checkpoint auto: no checkpoint in {output_dir}, starting from scratch.")
        else:
            logger.info(f"Resuming from {last}.")
        return last
    if not os.path.isfile(os.path.join(resume, "trainer_state.json")):
        raise FileNotFoundError(f"--resume-from-checkpoint {resume}: not a Trainer checkpoint (no trainer_state.json).")
    return resume


def run_settings(
    args: FineTuningArguments,
    training_args: TrainingArguments,
    *,
    max_length: int,
    train_size: int,
    eval_sizes: Mapping[str, int],
    data_rows: Mapping[str, int],
    model,
) -> dict[str, Any]:
    """What a reader needs to reproduce the run, for eval_results.json and the model card."""
    world = training_args.world_size
    batch = training_args.per_device_train_batch_size
    return {
        "task": args.data.task,
        "model": args.model.model,
        "tokenizer": args.model.tokenizer or args.model.model,
        "data_dir": args.data.data_dir,
        "split_validation": args.data.split_validation,
        "data_rows": dict(data_rows),
        "train_examples": train_size,
        "eval_examples": dict(eval_sizes),
        "eval_splits": list(eval_sizes),
        "max_length": max_length,
        "standardize_text": args.data.standardize_text,
        "learning_rate": training_args.learning_rate,
        "lr_scheduler_type": _strategy(training_args.lr_scheduler_type),
        "warmup_ratio": training_args.warmup_steps,
        "batch_size_per_device": batch,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "num_processes": world,
        "effective_batch_size": batch * training_args.gradient_accumulation_steps * world,
        "epochs": training_args.num_train_epochs,
        "max_steps": training_args.max_steps,
        "weight_decay": training_args.weight_decay,
        "max_grad_norm": training_args.max_grad_norm,
        "clf_dropout": args.model.clf_dropout,
        "lm_coef": args.model.lm_coef,
        "optimizer": str(getattr(training_args.optim, "value", training_args.optim)),
        "train_sampling_strategy": _strategy(training_args.train_sampling_strategy),
        "seed": training_args.seed,
        "mixed_precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no",
        "metric_for_best_model": training_args.metric_for_best_model,
        "num_parameters": int(model.num_parameters()),
    }


def _check_output_dir(args: GPT1TrainingArguments, is_main: bool) -> None:
    out = Path(args.output_dir)
    if out.is_dir() and args.resume_from_checkpoint is None and not args.overwrite_output_dir:
        existing = sorted(p.name for p in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir())
        if existing:
            raise FileExistsError(
                f"{out} already holds {existing}. Pass --resume-from-checkpoint (auto) to continue that run, or "
                f"--overwrite-output-dir to start over."
            )
    if is_main:
        shutil.rmtree(out / STAGING_DIR_NAME, ignore_errors=True)  # a save interrupted by a kill: never complete


class UsageError(Exception):
    """Bad input found while setting up a run (unknown task, wrong model type, missing files, ...)."""


_SETUP_ERRORS = (ValueError, FileNotFoundError, FileExistsError, LookupError, OSError)


def run(args: FineTuningArguments) -> int:
    """Fine-tune as `args` say; returns the process exit status (0, or 128 + signal number when interrupted).

    Errors in the set-up phase (before training starts) come out as `UsageError` with the original as cause - a Hub
    token that cannot push (`--push-to-hub`) included. A NaN/inf loss raises `NonFiniteLossError`, a failed final
    upload `HubPushError` (the local output is complete by then).
    """
    try:
        trainer, parts = _setup(args)
    except HubPushError as error:
        raise UsageError(str(error)) from error
    except _SETUP_ERRORS as error:
        raise UsageError(str(error)) from error
    return _train_and_report(args, trainer, **parts)


def _setup(args: FineTuningArguments):
    ta = _task_api()
    spec = ta.get_task_spec(args.data.task)
    adapter = ta.get_adapter(spec)
    training = args.training
    is_main = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
    repo_id = None
    if training.push_to_hub:  # before anything is loaded: a token that cannot push fails now, not after training
        repo_id = check_hub_access(
            training.hub_model_id or Path(training.output_dir).resolve().name, token=training.hub_token
        )
    _check_output_dir(training, is_main)

    tokenizer = load_gpt1_tokenizer(args.model.tokenizer or args.model.model)
    model = load_model_for_task(
        args.model.model,
        spec,
        tokenizer,
        lm_coef=args.model.lm_coef,
        clf_dropout=args.model.clf_dropout,
        seed=training.seed,
    )
    max_length = resolve_max_length(args.data.max_length, model.config)
    train_ds, eval_ds, predict_sets, data_rows = prepare_datasets(args.data, spec, adapter, tokenizer, max_length)
    eval_names = list(eval_ds) if isinstance(eval_ds, dict) else ["validation"]
    training_args = schedule_training_arguments(training, spec, eval_names, hub_model_id=repo_id)
    eval_sizes = {k: len(v) for k, v in eval_ds.items()} if isinstance(eval_ds, dict) else {"validation": len(eval_ds)}
    settings = run_settings(
        args,
        training_args,
        max_length=max_length,
        train_size=len(train_ds),
        eval_sizes=eval_sizes,
        data_rows=data_rows,
        model=model,
    )
    peft_info = None
    if args.peft.peft != "none":
        model, peft_info = apply_peft(
            model,
            tokenizer,
            args.peft,
            model_name_or_path=args.model.model,
            output_dir=training.output_dir,
            resuming=training.resume_from_checkpoint is not None,
            save_base=training_args.should_save,
        )
        settings.update(peft_settings(args.peft, peft_info))
    logger.info("Fine-tuning settings:\n" + json.dumps(settings, indent=2, default=str))

    signal_callback = SaveOnSignalCallback()
    trainer = GPT1Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=ta.GPT1DataCollator(tokenizer),
        compute_metrics=adapter.compute_metrics,
        callbacks=[signal_callback],
    )
    if training_args.push_to_hub:  # checkpoint pushes: code files + our card in each one
        attach_model_card(trainer, task=spec.name, base_model=_card_base_model(args.model))
    checkpoint = resolve_checkpoint(training.resume_from_checkpoint, training.output_dir)
    return trainer, dict(
        spec=spec,
        settings=settings,
        checkpoint=checkpoint,
        predict_sets=predict_sets,
        signal_callback=signal_callback,
        tokenizer=tokenizer,
        repo_id=repo_id,
        peft_info=peft_info,
    )


def _card_base_model(args: ModelArguments) -> str | None:
    return args.base_model_id or (args.model if is_hub_id(args.model) else None)


def _train_and_report(
    args: FineTuningArguments,
    trainer: GPT1Trainer,
    *,
    spec,
    settings: dict[str, Any],
    checkpoint: str | None,
    predict_sets: Mapping[str, Any],
    signal_callback: SaveOnSignalCallback,
    tokenizer=None,
    repo_id: str | None = None,
    peft_info: Mapping[str, Any] | None = None,
) -> int:
    out = args.training.output_dir
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    guard = trainer.nonfinite_guard
    if guard.step is not None:
        raise NonFiniteLossError(guard.message, step=guard.step, checkpoint=guard.checkpoint, values=guard.values)
    if signal_callback.received is not None:
        last = get_last_checkpoint(out)
        name = signal.Signals(signal_callback.received).name
        logger.warning(
            f"Stopped by {name} at step {trainer.state.global_step}; checkpoint: {last}. Resume with "
            f"--resume-from-checkpoint auto."
        )
        return 128 + int(signal_callback.received)

    metrics = trainer.evaluate()  # the best checkpoint's weights when load_best_model_at_end
    settings["global_step"] = trainer.state.global_step
    best = trainer.state.best_model_checkpoint
    settings["best_checkpoint"] = os.path.basename(best) if best else None
    tokenizer = tokenizer if tokenizer is not None else trainer.processing_class
    is_main = trainer.is_world_process_zero()
    if peft_info is not None:
        if is_main:  # the adapter (+ head, + token rows), pointing to a gpt1-format base
            save_adapter(
                trainer.model,
                out,
                tokenizer=tokenizer,
                save_embedding_layers=False,
                base_model_name_or_path=peft_info["base_model_name_or_path"],
            )
            # sizes of this folder's own adapter files (save_adapter's totals also count the checkpoints' copies)
            weights = sum(f.stat().st_size for f in Path(out).glob("adapter_model.*"))
            settings["adapter_bytes"] = weights
            report = peft_info["report"]
            logger.info(
                f"Adapter saved to {out}: adapter_model.safetensors {_mb(weights)} on disk "
                f"({report['trainable']:,} trainable of {report['total']:,} parameters); base model: "
                f"{peft_info['base_model_name_or_path']}"
            )
    else:
        # model + tokenizer (+ config with label names, lm_coef, clf_pdrop). `_internal_call`: no Trainer push of the
        # folder here even with a checkpoint hub strategy; the final upload is push_folder's, once the card is written.
        trainer.save_model(out, _internal_call=True)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    prediction_files = []
    for split, dataset in predict_sets.items():
        output = trainer.predict(dataset, metric_key_prefix=f"predict_{split}")
        if is_main:
            prediction_files.append(str(write_predictions(output.predictions, dataset, spec, out, split)))

    model_id = repo_id or Path(out).resolve().name
    base_model = _card_base_model(args.model)
    merged_dir = Path(out, MERGED_DIR_NAME)
    if peft_info is not None:
        usage_path = repo_id or str(merged_dir if args.peft.merge_adapter else out)
        adapter = {
            "method": args.peft.peft,
            "base_model_name_or_path": peft_info["base_model_name_or_path"],
            "path": out,
            "merged_path": str(merged_dir) if args.peft.merge_adapter else None,
            "special_rows": peft_info["special_rows"],
        }
    else:
        usage_path, adapter = repo_id or out, None
    card = fill_model_card(
        spec=spec,
        metrics=metrics,
        settings=settings,
        model_name=model_id,
        base_model=base_model,
        usage_path=usage_path,
        adapter=adapter,
    )
    trainer.model_card_text = card
    results = {**{k: v for k, v in metrics.items()}, "task": spec.name, "settings": settings}
    if prediction_files:
        results["prediction_files"] = prediction_files
    results_text = json.dumps(results, indent=2, default=str) + "\n"
    if is_main:
        Path(out, EVAL_RESULTS_FILE_NAME).write_text(results_text)
        Path(out, "README.md").write_text(card, encoding="utf-8")
        if args.training.plot:
            plot_training_curves(
                trainer.state.log_history,
                Path(out, CURVES_FILE_NAME),
                title=f"GPT-1 fine-tuning: {spec.name} (λ = {args.model.lm_coef})",
            )
        logger.info("Eval results:\n" + json.dumps({k: v for k, v in metrics.items()}, indent=2))

    if peft_info is not None and args.peft.merge_adapter and is_main:
        # last use of the PEFT model: merge_and_unload folds the adapter into the base weights in place
        merged = merge_adapter(trainer.model)
        merged_card = fill_model_card(
            spec=spec,
            metrics=metrics,
            settings=settings,
            model_name=model_id,
            base_model=base_model,
            usage_path=repo_id or str(merged_dir),
        )
        staging = merged_dir.with_name(f"_{MERGED_DIR_NAME}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / EVAL_RESULTS_FILE_NAME).write_text(results_text)
        (staging / "README.md").write_text(merged_card, encoding="utf-8")
        replace_dir(str(staging), str(merged_dir), trash_root=out)
        logger.info(f"Merged model (plain gpt1 checkpoint) saved to {merged_dir}.")

    if repo_id is not None and is_main:
        folder = merged_dir if peft_info is not None else Path(out)
        result = push_folder(
            folder,
            repo_id,
            private=args.training.hub_private_repo,
            token=args.training.hub_token,
            commit_message=f"GPT-1 fine-tuned on {spec.name}",
        )
        logger.info(result.summary())
    return 0


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} KB"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (`scripts/finetune.py`): parse, run, and turn expected errors into one-line messages.

    Exit status: 0 done; 2 bad input found before training (unknown task, wrong model, a Hub token that cannot push,
    ...); 1 training hit a NaN/inf loss (earlier checkpoints kept) or the final Hub upload failed (local output
    complete); 128 + N stopped by signal N (checkpoint saved, resumable).
    """
    args = parse_args(argv)
    is_main = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if is_main else logging.WARNING,
        stream=sys.stdout,
    )
    from transformers.utils import logging as hf_logging

    previous_verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # transformers' INFO chatter off; our own logger and the progress bars stay
    hf_logging.enable_progress_bar()
    try:
        return run(args)
    except UsageError as error:
        if os.environ.get("HF_GPT1_DEBUG"):
            raise
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, HubPushError, CheckpointError) as error:
        # after training started: the local output (checkpoints, or the finished run when the push failed) is kept
        if os.environ.get("HF_GPT1_DEBUG"):
            raise
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 1
    finally:
        hf_logging.set_verbosity(previous_verbosity)  # main() may be called in-process (tests, notebooks)
