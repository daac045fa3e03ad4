"""The arguments of both training stages: `GPT1TrainingArguments` (transformers' `TrainingArguments` with the paper's
defaults) and `parse_cli`, which parses `HfArgumentParser` dataclasses from a command line.

Every option of `TrainingArguments` is an option of `scripts/finetune.py` (and of anything else parsed with
`parse_cli`) under its own name, in either spelling (`--learning_rate` / `--learning-rate`); the dataclass fields
below only change defaults to the paper's (§4.1) and keep the short names the scripts have always had as aliases
(`--batch-size`, `--epochs`, `--eval-batch-size`, `--warmup-ratio`). Spellings that no option carries any more are
mapped by `parse_cli`'s `renamed` table (the old spelling keeps working) or rejected with the new name
(`removed`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool

#: §4.1 "Fine-tuning details": "Unless specified, we reuse the hyperparameter settings from unsupervised pre-training.
#: We add dropout to the classifier with a rate of 0.1. For most tasks, we use a learning rate of 6.25e-5 and a
#: batchsize of 32. Our model finetunes quickly and 3 epochs of training was sufficient for most cases. We use a linear
#: learning rate decay schedule with warmup over 0.2% of training. λ was set to 0.5." Weight decay 0.01 on all
#: non-bias, non-gain weights and gradient clipping at 1 are what the released code (`train.py`) fine-tunes with;
#: 512 is the model's context.
PAPER_FINETUNING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 6.25e-5,
    "batch_size": 32,
    "epochs": 3.0,
    "warmup_ratio": 0.002,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "clf_dropout": 0.1,
    "lm_coef": 0.5,
    "max_grad_norm": 1.0,
    "max_length": 512,
}
_D = PAPER_FINETUNING_DEFAULTS


def cpu_process_group_needed() -> bool:
    """True when a launcher started several processes (WORLD_SIZE > 1) on a machine without GPUs.

    Accelerate only sets up a CPU process group (gloo, MULTI_CPU) when told to use the CPU; otherwise each process
    would silently train alone on the whole data and write to the same output folder.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    xpu = getattr(torch, "xpu", None)
    return not (torch.cuda.is_available() or (xpu is not None and xpu.is_available()))


@dataclass
class GPT1TrainingArguments(TrainingArguments):
    """`TrainingArguments` with GPT-1's fine-tuning recipe as defaults (lr 6.25e-5, batch 32, 3 epochs, linear decay
    with warmup over 0.2 % of the steps, weight decay 0.01, clipping at 1), evaluation and a checkpoint every epoch,
    the best checkpoint (by the task's metric) reloaded at the end, and two options of our own (`overwrite_output_dir`,
    `plot`). Everything else is Trainer's, with Trainer's meaning.

    Derived values (idempotent, so `dataclasses.replace` gives the same result): `per_device_eval_batch_size`
    defaults to the train batch size; `load_best_model_at_end` is off without evaluation; `use_cpu` is set when
    several processes were launched on a machine without GPUs (they then form one gloo group); memory pinning only
    with CUDA. `metric_for_best_model=None` means "the task's metric" (`requested_metric` keeps what was asked for;
    Trainer's own default, "loss", applies until the task fills it in).
    """

    output_dir: str = field(
        metadata={"help": "Where checkpoints, the final model, its results, model card and training curves go."}
    )
    learning_rate: float = field(default=_D["learning_rate"], metadata={"help": "Peak learning rate (paper 6.25e-5)."})
    per_device_train_batch_size: int = field(
        default=_D["batch_size"],
        metadata={
            "help": "Examples per device per forward pass (the paper's 32 is the total: batch size x gradient "
            "accumulation steps x processes).",
            "aliases": ["--batch-size", "--batch_size"],
        },
    )
    per_device_eval_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Eval examples per device; default: the train batch size.",
            "aliases": ["--eval-batch-size", "--eval_batch_size"],
        },
    )
    num_train_epochs: float = field(
        default=_D["epochs"], metadata={"help": "Training epochs (paper 3).", "aliases": ["--epochs"]}
    )
    warmup_steps: float = field(
        default=_D["warmup_ratio"],
        metadata={
            "help": "Linear warmup: a fraction of the steps when < 1 (paper 0.002 = 0.2%), else a number of steps.",
            "aliases": ["--warmup-ratio", "--warmup_ratio"],
        },
    )
    weight_decay: float = field(
        default=_D["weight_decay"],
        metadata={"help": "Decoupled (AdamW) weight decay on all weights except biases and LayerNorm gains."},
    )
    max_grad_norm: float = field(default=_D["max_grad_norm"], metadata={"help": "Gradient clipping norm (0: off)."})
    eval_strategy: str = field(
        default="epoch",
        metadata={
            "help": "When to evaluate: epoch, steps (with --eval-steps) or no.",
            "choices": ["no", "steps", "epoch"],
        },
    )
    save_strategy: str = field(
        default="epoch", metadata={"help": "When to checkpoint: epoch, steps (with --save-steps), best or no."}
    )
    logging_steps: float = field(
        default=0.02, metadata={"help": "Log every N steps (int), or N x total steps when < 1 (default: 50 points)."}
    )
    logging_first_step: bool = field(default=True, metadata={"help": "Log the first step too."})
    load_best_model_at_end: bool = field(
        default=True,
        metadata={
            "help": "Reload the best checkpoint (by --metric-for-best-model) at the end; off without evaluation."
        },
    )
    metric_for_best_model: str | None = field(
        default=None,
        metadata={
            "help": "Metric choosing the best checkpoint; default per task (accuracy; F1 for MRPC/QQP; Pearson for "
            "STS-B; Matthews for CoLA; MNLI: matched accuracy)."
        },
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"],
        metadata={"help": "Label keys of a batch (not lm_labels: its (batch, seq) targets must not be gathered)."},
    )
    hub_strategy: str = field(
        default="end",
        metadata={
            "help": "What is pushed during training: 'end' = only the final upload; otherwise Trainer's hub_strategy "
            "for the checkpoints as they are saved, then the final upload.",
            "choices": ["end", "every_save", "checkpoint", "all_checkpoints"],
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start from scratch even if --output-dir already holds checkpoints of an earlier run."},
    )
    plot: bool = field(default=True, metadata={"help": "Write the training-curve PNG (--no-plot: do not)."})

    def __post_init__(self):
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        if str(getattr(self.eval_strategy, "value", self.eval_strategy)) == "no":
            self.load_best_model_at_end = False
        self.use_cpu = bool(self.use_cpu or cpu_process_group_needed())
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning only helps host->GPU copies
        requested = self.metric_for_best_model
        super().__post_init__()
        self.requested_metric = requested


def parse_cli(
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    optional_values: Mapping[str, str] | None = None,
    renamed: Mapping[str, Sequence[str]] | None = None,
    removed: Mapping[str, str] | None = None,
    check=None,
) -> tuple[Any, ...]:
    """Parse `argv` into `dataclass_types` with `HfArgumentParser`; argparse-style errors (exit 2) for bad input.

    * `optional_values`: flags that may be given without a value, and the value they then mean
      (`--resume-from-checkpoint` alone = "auto");
    * `renamed`: old spelling -> the argv words it stands for now (`--no-load-best-model` ->
      `["--load_best_model_at_end", "False"]`), so commands written for an earlier version keep working;
    * `removed`: old spelling -> the message naming its replacement (an error);
    * `bool | None` options (`--disable-tqdm`, `--hub-private-repo`) may be given bare, meaning True;
    * `check(*values)`: returns a list of problems, reported together as one usage error.
    An unknown flag is an argparse error ("unrecognized arguments"), as before.
    """
    parser = HfArgumentParser(tuple(dataclass_types), prog=prog, description=description)
    for action in parser._actions:  # `bool | None` fields (--disable-tqdm, --hub-private-repo): a bare flag = True
        if action.type is string_to_bool and action.nargs is None:
            action.nargs, action.const = "?", True
    words = list(sys.argv[1:] if argv is None else argv)
    rewritten: list[str] = []
    for index, word in enumerate(words):
        flag, eq, value = word.partition("=")
        key = flag.replace("_", "-")
        if removed and key in removed:
            parser.error(f"{flag} was removed: {removed[key]}")
        if renamed and key in renamed:
            rewritten.extend(renamed[key])
            if eq:
                rewritten.append(value)
            continue
        rewritten.append(word)
        if optional_values and key in optional_values and not eq:
            following = words[index + 1] if index + 1 < len(words) else None
            if following is None or following.startswith("--"):
                rewritten.append(optional_values[key])
    namespace, remaining = parser.parse_known_args(rewritten)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    values = []
    try:
        for dtype in dataclass_types:
            keys = {f.name for f in dataclasses.fields(dtype) if f.init}
            values.append(dtype(**{k: v for k, v in vars(namespace).items() if k in keys}))
    except ValueError as error:  # TrainingArguments' own consistency checks
        parser.error(str(error))
    if check is not None:
        problems = check(*values)
        if problems:
            parser.error("; ".join(problems))
    return tuple(values)
