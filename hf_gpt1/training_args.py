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
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator()


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or (xpu is not None and xpu.is_available())


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
            "help": "Linear warmup: a fraction of the steps when < 1 (paper 0.002 = 0.2%%), else a number of steps.",
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


@dataclass
class LoraArguments:
    """The LoRA options both stages share (each adds its `--peft` choice): rank, alpha, dropout, target modules, and
    whether to also save the adapter merged into the base weights."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA adapter's input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules to adapt, matched as name suffixes, space- or comma-separated (e.g. c_attn,mlp.c_proj); "
            "default: GPT-1's registered targets (LoRA: c_attn attn.c_proj c_fc mlp.c_proj; IA³: c_attn mlp.c_proj)."
        },
    )
    merge_adapter: bool = field(
        default=False,
        metadata={
            "help": "With --peft: also save the adapter merged into the base weights, a plain gpt1 checkpoint that "
            "loads without PEFT, into OUTPUT_DIR/merged/."
        },
    )

    def __post_init__(self):
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if self.lora_target_modules is not None:  # "c_attn,c_fc", "c_attn c_fc" and "c_attn, c_fc" all work
            names = [n for item in self.lora_target_modules for n in item.replace(",", " ").split()]
            self.lora_target_modules = names or None


#: §4.1 "Model specifications" (pretraining): "We used the Adam optimization scheme with a max learning rate of
#: 2.5e-4. The learning rate was increased linearly from zero over the first 2000 updates and annealed to 0 using a
#: cosine schedule. We train for 100 epochs on minibatches of 64 randomly sampled, contiguous sequences of 512 tokens."
#: Weight decay w = 0.01 "on all non bias or gain weights"; clipping at 1 and Adam's betas/eps from the released code.
PAPER_LEARNING_RATE = 2.5e-4
PAPER_WARMUP_STEPS = 2000
PAPER_BATCH_SIZE = 64
PAPER_NUM_EPOCHS = 100
PAPER_WEIGHT_DECAY = 0.01
PAPER_MAX_GRAD_NORM = 1.0
PAPER_ADAM = dict(betas=(0.9, 0.999), eps=1e-8)

#: The options whose default comes from the --model-config preset (None = not given on the command line).
PRESET_OPTIONS = ("per_device_train_batch_size", "learning_rate", "warmup_steps", "num_train_epochs", "max_steps")


@dataclass
class GPT1PretrainingArguments(GPT1TrainingArguments):
    """`GPT1TrainingArguments` for the unsupervised stage (`scripts/pretrain.py`): the paper's pretraining recipe
    (lr 2.5e-4, 2000 warmup updates, cosine decay, 64 windows per update, weight decay 0.01, clipping at 1), where the
    batch size, learning rate, warmup and run length default to the `--model-config` preset's (`requested` keeps what
    the command line gave, None for "the preset's"; until then the fields hold the paper's values).

    The run (`hf_gpt1.pretraining_run`, on `transformers.Trainer`) validates and checkpoints every `eval_steps` /
    `save_steps` updates and at the last one (aliases `--eval-every`, `--save-every`; default a tenth of the run, 0 =
    only at the end) instead of following Trainer's `*_strategy` fields, and logs every `logging_steps`
    (`--log-every`). Mixed precision is Trainer's (accelerate autocast): `--bf16` / `--fp16`, else the accelerate
    config / launch flag (`mixed_precision`); without a GPU, `--bf16` implies `use_cpu`.
    """

    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Windows per device per micro-batch (preset; paper 64 in total).",
            "aliases": ["--batch-size"],
        },
    )
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate (preset; paper 2.5e-4)."})
    warmup_steps: float | None = field(
        default=None, metadata={"help": "Linear warmup updates (preset; paper 2000), then cosine decay to 0."}
    )
    num_train_epochs: float | None = field(
        default=None,
        metadata={"help": "Run length in epochs over the training windows (paper 100).", "aliases": ["--num-epochs"]},
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer updates to run (preset; gpt1: --num-train-epochs); -1: the preset's."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "The paper's schedule: warmup, then cosine."})
    weight_decay: float = field(
        default=PAPER_WEIGHT_DECAY, metadata={"help": "AdamW decay on non-bias, non-gain weights."}
    )
    max_grad_norm: float = field(default=PAPER_MAX_GRAD_NORM, metadata={"help": "Gradient clipping norm (<= 0: off)."})
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log train loss / lr / tokens per second every N updates.", "aliases": ["--log-every"]},
    )
    logging_first_step: bool = field(default=False, metadata={"help": "Also log the first update."})
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Validate every N updates (default max_steps/10; 0: only at the end).",
            "aliases": ["--eval-every"],
        },
    )
    save_steps: int | None = field(
        default=None,
        metadata={"help": "Checkpoint every N updates (default max_steps/10).", "aliases": ["--save-every"]},
    )
    save_total_limit: int | None = field(
        default=3, metadata={"help": "Keep only the newest N checkpoints (0: keep all)."}
    )
    eval_strategy: str = field(default="no", metadata={"help": "Unused: the run validates every --eval-steps."})
    save_strategy: str = field(default="no", metadata={"help": "Unused: the run checkpoints every --save-steps."})
    load_best_model_at_end: bool = field(default=False, metadata={"help": "Unused: pretraining keeps its last state."})
    report_to: str | None = field(
        default="auto",
        metadata={
            "help": "Trainer's report_to: tensorboard, wandb, all, none (comma-separated for several); auto = "
            "tensorboard if installed (events under OUTPUT_DIR/runs)."
        },
    )
    use_cpu: bool = field(
        default=False,
        metadata={"help": "Train on CPU even if an accelerator is available.", "aliases": ["--cpu"]},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue the run in --output-dir from its latest checkpoint ('auto', the default when the flag is "
            "given bare) or from the given checkpoint-N folder.",
            "aliases": ["--resume"],
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Discard a previous run / foreign checkpoint in --output-dir.", "aliases": ["--overwrite"]},
    )

    def __post_init__(self):
        self.requested = {name: getattr(self, name) for name in PRESET_OPTIONS}
        if self.requested["max_steps"] is not None and self.requested["max_steps"] < 0:
            self.requested["max_steps"] = None
        paper = (PAPER_BATCH_SIZE, PAPER_LEARNING_RATE, PAPER_WARMUP_STEPS, PAPER_NUM_EPOCHS)
        for name, value in zip(PRESET_OPTIONS, paper):
            if getattr(self, name) is None:
                setattr(self, name, value)
        if (self.bf16 or self.fp16) and not _has_accelerator():
            self.use_cpu = True  # Trainer asks for use_cpu before autocasting on the CPU; here it is the only device
        super().__post_init__()  # mixed_precision: --bf16/--fp16, else ACCELERATE_MIXED_PRECISION (accelerate config)


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


def report_to_problems(report_to: Sequence[str]) -> list[str]:
    """Usage errors for Trainer's `report_to` names: a tracker transformers does not know, or one whose package is
    not installed. Trainer raises for these only when it builds its callbacks, after the corpus is tokenized or the
    dataset and model are loaded (and for a missing TensorBoard it suggests updating PyTorch); checked with the other
    options, they fail at once, saying what to install or pass instead."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    installed = set(get_available_reporting_integrations())
    problems = []
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(sorted(INTEGRATION_TO_CALLBACK))
            problems.append(f"--report-to {name}: not a tracker transformers knows (known: {known}; or all, none)")
        elif name not in installed and name != "flyte":  # transformers' list of installed trackers leaves flyte out
            install = "pip install 'hf-gpt1[tensorboard]'" if name == "tensorboard" else f"install {name}'s package"
            problems.append(f"--report-to {name}: {name} is not installed ({install}, or pass --report-to none)")
    return problems
