"""The pretraining run of `scripts/pretrain.py` (Radford et al. 2018 §3.1/§4.1): its arguments, and the corpus,
model and `GPT1PretrainingTrainer` it hands to `transformers.Trainer`.

    python scripts/pretrain.py --corpus PATH_OR_DATASET --model-config PRESET_OR_JSON --output-dir DIR [options]
    accelerate launch [--config_file configs/accelerate/...yaml] scripts/pretrain.py ...   # multi-process/-node

The arguments are dataclasses parsed by `HfArgumentParser`: `PretrainModelArguments`, `PretrainDataArguments` and
`hf_gpt1.training_args.GPT1PretrainingArguments` (transformers' `TrainingArguments` with the paper's pretraining
defaults; the option spellings of earlier versions kept as aliases). The pieces are in `hf_gpt1.pretraining` (presets,
model, LoRA), `hf_gpt1.pretraining_corpus` (corpus packing) and `hf_gpt1.pretraining_output` (run identity, saves).
The loop is `transformers.Trainer`, through the same `hf_gpt1.trainer.GPT1Trainer` fine-tuning runs on (atomic
checkpoints, NaN guard, signal handling, Hub card), with what pretraining adds: the epoch-seeded window sampler, validation and checkpoints every N updates and at the last
one, `log.jsonl` and the identity of the run inside every checkpoint.

The output folder receives: checkpoint-N/ (Trainer checkpoints: model, optimizer, scheduler, RNG, trainer_state.json
+ pretrain_state.json with the data position and run identity; written atomically, the last --save-total-limit kept),
log.jsonl (train and validation metrics), runs/ (Trainer's TensorBoard events, if installed), loss_curve.png, and at the end the model
+ tokenizer via save_pretrained, so `AutoModelForCausalLM.from_pretrained(OUTPUT_DIR)` loads it (with --peft lora:
the adapter, and with --merge-adapter also OUTPUT_DIR/merged). Exit codes: 0 done; 1 NaN/inf loss (the last good
checkpoint is kept) or the final Hub push failed (the model stays in OUTPUT_DIR); 2 bad input, including a Hub token
that cannot push; 128+signal after SIGINT/SIGTERM (a checkpoint is saved first; continue with
--resume-from-checkpoint auto).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from . import pretraining as pt
from . import pretraining_corpus, pretraining_output
from .trainer import GPT1Trainer
from .training_args import GPT1PretrainingArguments, LoraArguments, parse_cli, report_to_problems
from .training_callbacks import NonFiniteLossError, SaveOnSignalCallback
from .training_curves import plot_training_curves

logger = logging.getLogger("pretrain")


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class PretrainModelArguments(LoraArguments):
    """The model: a preset or config to build, or a checkpoint to continue; optionally a LoRA adapter on it (the
    `LoraArguments` options)."""

    model_config: str | None = field(
        default=None,
        metadata={
            "help": "Preset name or JSON file of GPT1Config fields (default gpt1). Presets: "
            + "; ".join(f"{name}: {p.description}" for name, p in pt.PRESETS.items())
            + "."
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Instead of --model-config: a checkpoint folder or Hub id to continue (gpt1 or openai-gpt)."},
    )
    init_revision: str | None = field(default=None, metadata={"help": "Hub revision for --init-from."})
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "GPT-1 tokenizer (folder or Hub id; default: the --init-from folder if it has one, else "
            "openai-community/openai-gpt)."
        },
    )
    dropout: float | None = field(
        default=None, metadata={"help": "Override residual/embedding/attention dropout (paper 0.1)."}
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention implementation (default gpt1_fused: sdpa plus the CPU blockwise dropout path, selected "
            "with hf-gpt1's CPU speedups; sdpa when HF_GPT1_CPU_SPEEDUPS=0).",
            "choices": ["eager", "sdpa", "gpt1_fused"],
        },
    )
    peft: str = field(
        default="none",
        metadata={
            "help": "none: train every weight. lora: freeze the --init-from model and train a LoRA adapter (continued "
            "pretraining at a fraction of the trainable parameters); the output folder gets the adapter.",
            "choices": list(pt.PEFT_METHODS),
        },
    )


@dataclass
class PretrainDataArguments:
    """The corpus and how it is cut into windows."""

    corpus: str = field(
        metadata={
            "help": "A text file, a folder of *.txt files (recursive), a folder from `datasets.save_to_disk`, or a "
            "dataset id for `datasets.load_dataset`."
        }
    )
    text_column: str = field(
        default="text", metadata={"help": "Text column of a datasets corpus (one document a row)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a datasets corpus."})
    dataset_config: str | None = field(
        default=None, metadata={"help": "Config name of a Hub dataset (load_dataset's `name`)."}
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub dataset."})
    skip_undecodable_files: bool = field(
        default=False,
        metadata={"help": "Skip non-UTF-8 corpus files with a warning (default: stop with an error naming the file)."},
    )
    standardize_text: bool = field(
        default=True,
        metadata={
            "help": "Map curly quotes/dashes to ASCII like the original GPT-1 pipeline (the GPT-1 BPE has no curly "
            "quotes and would emit <unk>); --no-standardize-text keeps them."
        },
    )
    block_size: int | None = field(
        default=None, metadata={"help": "Window length in tokens (default: n_positions; paper 512)."}
    )
    val_fraction: float = field(
        default=0.01, metadata={"help": "Fraction of windows (the tail of the stream) held out for validation."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for datasets.map tokenisation."}
    )
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "Tokenised/packed corpus cache (default: OUTPUT_DIR/data-cache)."}
    )
    eval_windows: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on the first N validation windows only (default: all); independent of batch size and "
            "processes."
        },
    )


#: Spellings of the argparse CLI (up to 0.x) that no option carries any more, and what they stand for now.
RENAMED_FLAGS: dict[str, list[str]] = {"--gradient-checkpointing": ["--activation_checkpointing", "True"]}
OPTIONAL_VALUES = {"--resume": "auto", "--resume-from-checkpoint": "auto"}
_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}


def _legacy_words(words: list[str]) -> list[str]:
    """`--mixed-precision X` -> `--bf16` / `--fp16` / nothing (the accelerate config's), and `--push-to-hub REPO_ID`
    (the old form, a repo id as its value) -> `--push-to-hub --hub-model-id REPO_ID`."""
    out: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        flag, eq, value = word.partition("=")
        key = flag.replace("_", "-")
        if key in ("--mixed-precision", "--push-to-hub"):
            if not eq and index + 1 < len(words) and not words[index + 1].startswith("--"):
                value, eq = words[index + 1], "="
                index += 1
            if key == "--mixed-precision":
                out += {"bf16": ["--bf16"], "fp16": ["--fp16"]}.get(value, ["--bf16", "False", "--fp16", "False"])
            elif eq and value.lower() not in _BOOL_WORDS:
                out += ["--push_to_hub", "True", "--hub_model_id", value]
            else:
                out += [word] if not eq or "=" in word else [word, value]
        else:
            out.append(word)
        index += 1
    return out


def _check(m: PretrainModelArguments, d: PretrainDataArguments, t: GPT1PretrainingArguments) -> list[str]:
    problems = []
    for name in ("per_device_train_batch_size", "max_steps"):
        value = t.requested[name]
        if value is not None and value <= 0:
            problems.append(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
    if t.gradient_accumulation_steps <= 0:
        problems.append(
            f"--gradient-accumulation-steps must be a positive integer, got {t.gradient_accumulation_steps}."
        )
    if t.logging_steps <= 0:
        problems.append(f"--logging-steps must be positive, got {t.logging_steps}.")
    for name, value in (("block_size", d.block_size), ("eval_windows", d.eval_windows)):
        if value is not None and value <= 0:
            problems.append(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
    for name in ("learning_rate", "warmup_steps"):
        value = t.requested[name]
        if value is not None and value < 0:
            problems.append(f"--{name.replace('_', '-')} must be non-negative, got {value}.")
    if t.weight_decay < 0:
        problems.append(f"--weight-decay must be non-negative, got {t.weight_decay}.")
    epochs = t.requested["num_train_epochs"]
    if epochs is not None and epochs <= 0:
        problems.append(f"--num-train-epochs must be positive, got {epochs}.")
    if m.dropout is not None and not 0.0 <= m.dropout < 1.0:
        problems.append(f"--dropout must be in [0, 1), got {m.dropout}.")
    if not 0.0 <= d.val_fraction < 1.0:
        problems.append(f"--val-fraction must be in [0, 1), got {d.val_fraction}.")
    if m.init_from and m.model_config:
        problems.append("--model-config and --init-from are exclusive: build a new model, or continue a checkpoint.")
    problems.extend(report_to_problems(_resolve_report_to(t.report_to)))
    if m.peft == "lora":
        if m.init_from is None:
            problems.append("--peft lora adapts an existing model: give it with --init-from (a folder or Hub id).")
        if m.lora_r <= 0:
            problems.append(f"--lora-r must be a positive integer, got {m.lora_r}.")
        if not 0.0 <= m.lora_dropout < 1.0:
            problems.append(f"--lora-dropout must be in [0, 1), got {m.lora_dropout}.")
        if t.push_to_hub and not m.merge_adapter:
            problems.append("--push-to-hub with --peft lora publishes the merged model: add --merge-adapter.")
    elif m.merge_adapter:
        problems.append("--merge-adapter needs --peft lora (there is no adapter to merge).")
    if t.push_to_hub and t.hub_model_id is not None and not t.hub_model_id.strip():
        problems.append("--push-to-hub needs a repo id ('namespace/name').")
    if t.hub_model_id and not t.push_to_hub:
        problems.append("--hub-model-id needs --push-to-hub")
    if t.hub_strategy != "end":
        problems.append(
            f"--hub-strategy {t.hub_strategy}: pretrain.py pushes the finished model only (end); its checkpoints are "
            f"resumable training state, not models to publish."
        )
    return problems


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[PretrainModelArguments, PretrainDataArguments, GPT1PretrainingArguments]:
    """The command line of `scripts/pretrain.py` as (model, data, training) arguments; usage errors exit 2."""
    words = _legacy_words(list(sys.argv[1:] if argv is None else argv))
    m, d, t = parse_cli(
        (PretrainModelArguments, PretrainDataArguments, GPT1PretrainingArguments),
        words,
        prog="pretrain.py",
        description="Pretrain GPT-1 as in Radford et al. (2018) §3.1/§4.1: a causal LM on contiguous windows of "
        "unlabeled text. Options whose default says 'preset' come from --model-config (paper values for gpt1 and for "
        "JSON configs / --init-from). See configs/accelerate/README.md for multi-process and multi-node launches.",
        optional_values=OPTIONAL_VALUES,
        renamed=RENAMED_FLAGS,
        check=_check,
    )
    return m, d, t


# ----------------------------------------------------------------------------------------------------------------------
# What pretraining adds to GPT1Trainer
# ----------------------------------------------------------------------------------------------------------------------


class PretrainingScheduleCallback(TrainerCallback):
    """Validate every `eval_every` updates and checkpoint every `save_every` (0: only at the end), and always
    validate, checkpoint and log at the last update: the run's final numbers are measured, and its end is resumable.
    (Trainer's own `*_strategy` schedule has no "and at the end", and no "only at the end".)"""

    def __init__(self, eval_every: int, save_every: int, has_validation: bool):
        self.eval_every, self.save_every, self.has_validation = eval_every, save_every, has_validation

    def on_step_end(self, args, state, control, **kwargs):
        step, last = state.global_step, state.global_step >= state.max_steps
        if self.has_validation and ((self.eval_every and step % self.eval_every == 0) or last):
            control.should_evaluate = True
        if (self.save_every and step % self.save_every == 0) or last:
            control.should_save = True
        if last:
            control.should_log = True


class GPT1PretrainingTrainer(GPT1Trainer):
    """`GPT1Trainer` on packed windows of a corpus (`pretraining_corpus.PackedWindows`).

    * Training order: `pretraining_corpus.EpochShuffleSampler` - a permutation per epoch from `seed + epoch`, independent of
      the global RNG (dropout) and of the number of processes, so a resumed run sees exactly the windows an
      uninterrupted one does, and 2 processes x batch B see the same global batches as 1 process x batch 2B.
    * `log.jsonl` (`log_path`, main process): one record per training window (`train_loss`, `learning_rate`,
      `grad_norm`, `tokens_seen`, `tokens_per_second`, the data `epoch`) and per validation (`val_loss`,
      `val_perplexity`); Trainer's logs (TensorBoard, progress bar) get `eval_perplexity` and `tokens_per_second`.
    * Every checkpoint also holds `pretrain_state.json`: the step, data position and the run's identity, which
      `pretraining_output.check_output_dir` compares before a resume.
    * `evaluate_before_first_update`: validate once before the first update (update 0 of the curve).
    """

    def __init__(
        self,
        *args: Any,
        sampler: torch.utils.data.Sampler,
        log_path: Path,
        checkpoint_state: Callable[[], dict[str, Any]],
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sampler, self.checkpoint_state = sampler, checkpoint_state
        self.jsonl = pretraining_output.JsonlLog(log_path, enabled=self.is_world_process_zero())
        self.throughput: pretraining_output.Throughput | None = None  # started at the first update
        self.tokens_seen = 0  # over all processes; counted locally (every rank's micro-batches have the same shape)
        self.last_val_loss: float | None = None
        self.evaluate_before_first_update = False

    def _get_train_sampler(self, train_dataset=None):
        return self.sampler

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.evaluate_before_first_update:
            # Validated from inside training, once Trainer has prepared the model: `evaluate()` before `train()`
            # leaves a model that a later DDP `train()` does not wrap (each process would step on its own gradients).
            self.evaluate_before_first_update = False
            self.evaluate()
        if self.throughput is None:  # the first update: tokens/s counts training from here on
            self.throughput = pretraining_output.Throughput(self.tokens_seen)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if model.training:
            self.tokens_seen += inputs["input_ids"].numel() * self.accelerator.num_processes
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        record: dict[str, Any] | None = None
        step = self.state.global_step
        if "loss" in logs:  # a training window (Trainer's loss: the mean over its updates and processes)
            logs["tokens_per_second"] = self.throughput.update(self.tokens_seen) if self.throughput else 0.0
            epoch = max(math.ceil(self.state.epoch or 0) - 1, 0)  # the epoch of the window's last micro-batch
            record = {
                "step": step,
                "epoch": epoch,
                "train_loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "tokens_seen": self.tokens_seen,
                "tokens_per_second": logs["tokens_per_second"],
            }
        elif "eval_loss" in logs:
            self.last_val_loss = logs["eval_loss"]
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
            record = {"step": step, "val_loss": logs["eval_loss"], "val_perplexity": logs["eval_perplexity"]}
            logger.info(
                f"update {step}: validation loss {logs['eval_loss']:.4f}, perplexity {logs['eval_perplexity']:.2f}"
            )
        super().log(logs, start_time)
        if record is not None and self.nonfinite_guard.step is None:  # a non-finite step is reported, not logged
            self.jsonl.write(record)

    def write_checkpoint_extras(self, folder: str) -> None:
        state = {"step": self.state.global_step, "tokens_seen": self.tokens_seen, "val_loss": self.last_val_loss}
        Path(folder, pretraining_output.STATE_FILE).write_text(
            json.dumps({**state, **self.checkpoint_state()}, indent=2, default=str), encoding="utf-8"
        )

    def restore_counters(self, checkpoint: Path) -> None:
        """Tokens seen and the last validation loss of a resumed run, from its checkpoint."""
        state = pretraining_output.read_json(checkpoint / pretraining_output.STATE_FILE) or {}
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.last_val_loss = state.get("val_loss")


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    m, d, t = parse_args(argv)
    try:
        return train(m, d, t)
    except NonFiniteLossError as error:
        print(f"pretrain.py: error: {error}", file=sys.stderr)
        return 1
    except pt.PretrainingError as error:
        print(f"pretrain.py: error: {error}", file=sys.stderr)
        return 2


def train(m: PretrainModelArguments, d: PretrainDataArguments, t: GPT1PretrainingArguments) -> int:
    from transformers import set_seed

    from hf_gpt1.tokenization_gpt1 import DEFAULT_TOKENIZER, load_gpt1_tokenizer

    stop = SaveOnSignalCallback()
    stop.install()  # first thing: a signal during data preparation must not kill us mid-write
    output_dir = Path(t.output_dir).expanduser().resolve()
    _setup_logging(t)
    _check_world_size(t)
    hub_repo = _check_hub_access(t)  # before anything slow: a token that cannot push fails now
    peft = _lora_settings(m, t)
    preset = pt.preset_for(m.model_config or (None if m.init_from else "gpt1"))
    is_main = t.process_index == 0

    # --- tokenizer, corpus identity, model: everything the run identity needs, before touching the output folder
    corpus = pretraining_corpus.resolve_corpus(
        d.corpus,
        text_column=d.text_column,
        dataset_split=d.dataset_split,
        dataset_config=d.dataset_config,
        revision=d.dataset_revision,
    )
    tokenizer_source = m.tokenizer or _tokenizer_next_to(m.init_from)
    cache_dir = Path(d.data_cache_dir).expanduser().resolve() if d.data_cache_dir else output_dir / "data-cache"
    on_decode_error = "skip" if d.skip_undecodable_files else "error"
    if tokenizer_source is None and preset is not None and preset.bpe_vocab_size and not m.init_from:
        # the preset's own vocabulary, learned from this corpus once (main process first; the others and a resumed
        # run read the cached one)
        with t.main_process_first(local=True, desc="learning the BPE"):
            tokenizer = pretraining_corpus.corpus_bpe_tokenizer(
                corpus,
                preset.bpe_vocab_size,
                cache_dir,
                standardize=d.standardize_text,
                on_decode_error=on_decode_error,
            )
        logger.info(f"Tokenizer: the {m.model_config} preset's {tokenizer.vocab_size}-token BPE learned on the corpus")
    else:
        tokenizer = load_gpt1_tokenizer(tokenizer_source or DEFAULT_TOKENIZER)
    if m.init_from:
        pt.check_init_from_model_type(m.init_from, m.init_revision)
    set_seed(t.seed)  # identical initial weights on every process and in every rerun
    model = pt.build_model(
        tokenizer,
        model_config=m.model_config,
        init_from=m.init_from,
        dropout=m.dropout,
        attn_implementation=m.attn_implementation,
        revision=m.init_revision,
    )
    if peft is not None:  # right after the base is built: LoRA's initialisation draws from the seeded global RNG
        model = pt.apply_lora(model, peft, activation_checkpointing=t.activation_checkpointing)
        if is_main:
            print(
                f"pretrain.py: LoRA r={peft['r']} alpha={peft['alpha']:g} dropout={peft['dropout']:g} on "
                f"{', '.join(peft['target_modules'])}; {pt.describe_trainable_parameters(model)}",
                flush=True,
            )
    config = model.config  # a PeftModel passes its base model's config through
    block_size = d.block_size or config.n_positions
    if block_size > config.n_positions:
        raise pt.PretrainingError(
            f"--block-size {block_size} exceeds the model's {config.n_positions} learned positions (n_positions)."
        )
    batch_size = t.requested["per_device_train_batch_size"] or (preset.batch_size if preset else pt.PAPER_BATCH_SIZE)
    ga = t.gradient_accumulation_steps
    identity = pretraining_output.RunIdentity(
        model_type=config.model_type,
        model_config=pretraining_output.model_config_identity(config),
        init_from=str(Path(m.init_from).resolve()) if m.init_from and Path(m.init_from).exists() else m.init_from,
        corpus=corpus.fingerprint,
        tokenizer=pretraining_corpus.tokenizer_fingerprint(tokenizer),
        text_pipeline=f"{pretraining_corpus.TEXT_PIPELINE_VERSION}/standardize={d.standardize_text}",
        block_size=block_size,
        val_fraction=d.val_fraction,
        seed=t.seed,
        batch_size=batch_size,
        gradient_accumulation_steps=ga,
        num_processes=t.world_size,
        peft=peft,
    )
    plan = pretraining_output.check_output_dir(
        output_dir, identity, resume=t.resume_from_checkpoint, overwrite=t.overwrite_output_dir
    )
    t.distributed_state.wait_for_everyone()
    if is_main:
        for note in plan.notes:
            logger.info(note)
        if plan.clean:
            pretraining_output.clean_output_dir(output_dir)
        pretraining_output.remove_stale_temporaries(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    t.distributed_state.wait_for_everyone()

    # --- data: tokenise + pack once per node (the others then read the cache)
    with t.main_process_first(local=True, desc="tokenising the corpus"):
        data = pretraining_corpus.prepare_corpus(
            corpus,
            tokenizer,
            cache_dir,
            block_size=block_size,
            val_fraction=d.val_fraction,
            standardize=d.standardize_text,
            on_decode_error=on_decode_error,
            num_proc=d.preprocessing_num_workers,
        )
    split = data.split
    global_batch = batch_size * t.world_size * ga
    if split.num_train < batch_size * t.world_size:
        raise pretraining_corpus.CorpusError(
            f"The corpus ({corpus.description}) gives {split.num_train} training windows of {block_size} tokens, fewer "
            f"than one micro-batch across processes ({batch_size} x {t.world_size}). Use more text, a "
            f"smaller --batch-size or --block-size."
        )
    max_steps = pt.resolve_run_length(
        t.requested["max_steps"], t.requested["num_train_epochs"], preset, split.num_train, global_batch
    )
    learning_rate = _preset_value(t, "learning_rate", preset.learning_rate if preset else pt.PAPER_LEARNING_RATE)
    warmup_steps = _preset_value(t, "warmup_steps", preset.warmup_steps if preset else pt.PAPER_WARMUP_STEPS)
    if warmup_steps >= max_steps:
        logger.warning(
            f"--warmup-steps {warmup_steps} >= max steps {max_steps}: the learning rate never reaches its peak."
        )
    eval_every = t.eval_steps if t.eval_steps is not None else max(1, max_steps // 10)
    save_every = t.save_steps if t.save_steps is not None else max(1, max_steps // 10)
    identity.hyperparameters = dict(
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        max_steps=max_steps,
        mixed_precision=t.mixed_precision,
        global_batch_windows=global_batch,
        tokens_per_update=global_batch * block_size,
    )
    if peft is not None:  # also in the identity; here for the model card's settings table and the trackers
        identity.hyperparameters["peft"] = (
            f"lora r={peft['r']} alpha={peft['alpha']:g} dropout={peft['dropout']:g} on {' '.join(peft['target_modules'])}"
            f"{' (merged)' if m.merge_adapter else ''}"
        )
    if is_main:
        _write_or_compare_run_file(output_dir, identity, resuming=plan.resume_checkpoint is not None)

    # --- Trainer: the resolved recipe as its arguments; it does placement, DDP/FSDP, autocast, AdamW, the schedule
    args = dataclasses.replace(
        t,
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
        eval_strategy="no",  # PretrainingScheduleCallback decides
        save_strategy="no",
        report_to=_resolve_report_to(t.report_to),
        prediction_loss_only=True,
        remove_unused_columns=False,
        # a LoRA model got activation checkpointing in apply_lora, before PEFT wrapped it
        activation_checkpointing=t.activation_checkpointing and peft is None,
        resume_from_checkpoint=None,
        overwrite_output_dir=False,
        push_to_hub=False,  # the finished model is pushed below (`hub.push_folder`), after the preflight at the start
    )
    if plan.resume_checkpoint is not None and pretraining_output.is_accelerate_checkpoint(plan.resume_checkpoint):
        if is_main:  # 0.1's checkpoint: rewritten as the Trainer checkpoint this version resumes
            pretraining_output.upgrade_checkpoint(
                plan.resume_checkpoint,
                model,
                world_size=t.world_size,
                max_steps=max_steps,
                batch_size=batch_size,
                gradient_accumulation_steps=ga,
                logging_steps=int(t.logging_steps),
                log_path=output_dir / pretraining_output.LOG_FILE,
            )
        t.distributed_state.wait_for_everyone()
    val_windows = data.val
    if val_windows is not None and d.eval_windows is not None:
        val_windows = pretraining_corpus.PackedWindows(
            data.tokens, block_size, val_windows.first, min(d.eval_windows, len(val_windows))
        )
    trainer = GPT1PretrainingTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=val_windows,
        processing_class=tokenizer,
        callbacks=[PretrainingScheduleCallback(eval_every, save_every, val_windows is not None), stop],
        sampler=pretraining_corpus.EpochShuffleSampler(len(data.train), t.seed, multiple_of=batch_size * t.world_size),
        log_path=output_dir / pretraining_output.LOG_FILE,
        checkpoint_state=lambda: {
            "epoch": max(math.ceil(trainer.state.epoch or 0) - 1, 0),
            "micro_batches_per_process": trainer.state.global_step * ga,
            "identity": identity.to_dict(),
        },
    )
    logger.info(
        f"Corpus: {corpus.description}: {data.num_documents} document(s), {split.num_tokens:,} tokens -> "
        f"{split.num_train} train + {split.num_val} validation windows of {block_size} "
        f"({split.dropped_tokens} tail tokens dropped). Model: {sum(p.numel() for p in model.parameters()):,} parameters. "
        f"Updates: {max_steps} x {global_batch} windows ({global_batch * block_size:,} tokens), "
        f"{t.world_size} process(es) ({trainer.accelerator.distributed_type.value}, {args.device.type}), "
        f"mixed precision {t.mixed_precision}."
    )
    resume = None
    if plan.resume_checkpoint is not None:
        resume = str(plan.resume_checkpoint)
        state = pretraining_output.read_json(plan.resume_checkpoint / pretraining_output.STATE_FILE) or {}
        trainer.jsonl.truncate_after(int(state["step"]))
        trainer.restore_counters(plan.resume_checkpoint)
        logger.info(f"Resumed from {plan.resume_checkpoint} at update {state['step']}.")
    else:  # the starting point of the curve (and of the "perplexity went down" claim)
        trainer.evaluate_before_first_update = bool(eval_every) and val_windows is not None
    trainer.train(resume_from_checkpoint=resume)
    completed_steps = trainer.state.global_step

    guard = trainer.nonfinite_guard
    if guard.step is not None:
        name, value = next(iter(guard.values.items()))
        raise NonFiniteLossError(
            f"non-finite {'gradient norm' if name == 'grad_norm' else 'loss'} {value} at update {guard.step}; stopped "
            f"and did not save it. Last good checkpoint: {guard.checkpoint or 'none (no checkpoint saved yet)'}. "
            f"Lower --learning-rate, raise --warmup-steps, check --max-grad-norm, or train without --bf16/--fp16.",
            step=guard.step,
            checkpoint=guard.checkpoint,
            values=guard.values,
        )
    if stop.received is not None and completed_steps < max_steps:
        name = signal.Signals(stop.received).name
        if is_main:
            _plot(trainer, output_dir, t)
            print(
                f"pretrain.py: stopped by {name} at update {completed_steps}/{max_steps}; saved checkpoint "
                f"{output_dir / f'{pretraining_output.CHECKPOINT_PREFIX}{completed_steps}'}. Continue with the same command plus "
                f"--resume auto.",
                file=sys.stderr,
                flush=True,
            )
        return 128 + stop.received

    png = _plot(trainer, output_dir, t) if is_main else None
    accelerator, model = trainer.accelerator, trainer.model
    model_dir = output_dir
    if peft is None:
        pretraining_output.save_final_model_atomically(accelerator, model, tokenizer, output_dir)
        saved = f"Model + tokenizer saved to {output_dir} (AutoModelForCausalLM.from_pretrained)"
    else:
        pretraining_output.save_final_adapter_atomically(
            accelerator, model, tokenizer, output_dir, base_model_name_or_path=identity.init_from
        )
        saved = (
            f"LoRA adapter + tokenizer saved to {output_dir} (PeftModel.from_pretrained on the base "
            f"{identity.init_from}, or AutoPeftModelForCausalLM.from_pretrained)"
        )
        if m.merge_adapter:  # last: merging folds the adapter into the base weights in place
            model_dir = pretraining_output.save_merged_model_atomically(
                accelerator,
                model,
                tokenizer,
                output_dir / pt.MERGED_DIR,
                extra_files=[output_dir / pretraining_output.RUN_FILE, output_dir / pretraining_output.LOG_FILE],
            )
            saved += f"; merged model + tokenizer saved to {model_dir} (AutoModelForCausalLM.from_pretrained)"
    exit_code = 0
    if is_main:
        last_val = trainer.last_val_loss
        summary = (
            f", validation loss {last_val:.4f} (perplexity {math.exp(min(last_val, 50.0)):.2f})"
            if last_val is not None
            else ""
        )
        print(f"pretrain.py: trained {completed_steps} updates{summary}. {saved}, loss curve {png}.", flush=True)
        if hub_repo is not None:
            exit_code = _push_to_hub(model_dir, hub_repo, m, t, corpus, completed_steps)
    return exit_code


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def _plot(trainer: GPT1PretrainingTrainer, output_dir: Path, t: GPT1PretrainingArguments) -> Path | None:
    """The loss curve (and validation perplexity) of the whole run, resumes included, unless --no-plot."""
    if not t.plot:
        return None
    return plot_training_curves(
        trainer.state.log_history, output_dir / pretraining_output.LOSS_CURVE_FILE, title="GPT-1 pretraining"
    )


def _preset_value(t: GPT1PretrainingArguments, name: str, default: float) -> float:
    value = t.requested[name]
    return value if value is not None else default


def _resolve_report_to(value: str | Sequence[str] | None) -> list[str]:
    """Trainer's `report_to` from --report-to: "auto" = TensorBoard if it is installed, else nothing."""
    names = [value] if isinstance(value, str) else list(value or [])
    names = [n.strip() for name in names for n in name.split(",") if n.strip() and n.strip() != "none"]
    if names == ["auto"]:
        try:
            import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
        except ImportError:
            return []
        return ["tensorboard"]
    return names


def _check_hub_access(t: GPT1PretrainingArguments) -> str | None:
    """--push-to-hub preflight (`hf_gpt1.hub.check_hub_access`, on the main process): a missing, invalid or read-only
    token, or a namespace the token cannot write to, is a `PretrainingError` (exit 2) on every process before any
    work. Returns the full repo id ("name" becomes "user/name"), or None without --push-to-hub."""
    if not t.push_to_hub:
        return None
    from hf_gpt1.hub import HubPushError, check_hub_access

    outcome: list[str | None] = [None, None]  # [repo id, error message]
    if t.process_index == 0:
        try:
            outcome[0] = check_hub_access(_repo_name(t), token=t.hub_token)
        except HubPushError as error:
            outcome[1] = str(error)
    if t.world_size > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(outcome)
    if outcome[1] is not None:
        raise pt.PretrainingError(
            f"--push-to-hub {_repo_name(t)}: {outcome[1]} Checked before training; nothing was run."
        )
    return outcome[0]


def _repo_name(t: GPT1PretrainingArguments) -> str:
    """--hub-model-id, else the output folder's name (in the token's namespace)."""
    return t.hub_model_id or Path(t.output_dir).expanduser().resolve().name


def _lora_settings(m: PretrainModelArguments, t: GPT1PretrainingArguments) -> dict | None:
    """The LoRA settings of a --peft lora run (None otherwise); refuses sharded training, where the adapter could not
    be read from one process's model at the end."""
    if m.peft != "lora":
        return None
    from accelerate.utils import DistributedType

    distributed_type = t.distributed_state.distributed_type
    if distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise pt.PretrainingError(
            f"--peft lora runs on one process or with data parallelism (DDP), not under "
            f"{distributed_type.value}: the LoRA model is small enough to be replicated. Use a DDP "
            f"accelerate config (e.g. configs/accelerate/multi_gpu_ddp.yaml)."
        )
    return pt.lora_settings(
        r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout, target_modules=m.lora_target_modules
    )


def _push_to_hub(
    folder: Path,
    repo_id: str,
    m: PretrainModelArguments,
    t: GPT1PretrainingArguments,
    corpus: pretraining_corpus.CorpusSource,
    steps: int,
) -> int:
    """Upload the saved model folder (main process only). A failure is reported, not raised: the model is saved
    locally either way, so the run ends with exit code 1 and the command that retries the upload."""
    from hf_gpt1.hub import CheckpointError, HubPushError, push_folder

    card_kwargs = {}
    if corpus.hub_dataset:
        card_kwargs["datasets"] = [corpus.hub_dataset]
    if m.init_from and not Path(m.init_from).exists():  # continued from a Hub model: the card's base_model
        card_kwargs["base_model"] = m.init_from
    try:
        result = push_folder(
            folder,
            repo_id,
            private=bool(t.hub_private_repo),
            token=t.hub_token,
            commit_message=f"GPT-1 pretrained, {steps} updates",
            card_kwargs=card_kwargs or None,
        )
    except (HubPushError, CheckpointError) as error:
        print(
            f"pretrain.py: error: pushing to the Hub failed: {error} The trained model stays in {folder}; retry the "
            f"upload with: python scripts/push_to_hub.py {folder} {repo_id}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    print(result.summary(), flush=True)
    print(
        f"pretrain.py: pushed to {result.repo_url or result.repo_id} (load with "
        f"AutoModelForCausalLM.from_pretrained({result.repo_id!r}) after `import hf_gpt1`).",
        flush=True,
    )
    return 0


def _check_world_size(t: GPT1PretrainingArguments) -> None:
    """Refuse to run as N independent single-process jobs writing into one folder.

    That happens when a launcher starts several processes but accelerate sets up no process group, e.g. an FSDP or
    multi-GPU config on a machine without GPUs: each process would believe it is the only one.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and t.world_size != launched:
        state = t.distributed_state
        raise pt.PretrainingError(
            f"The launcher started {launched} processes (WORLD_SIZE), but accelerate initialised "
            f"{t.world_size} ({state.distributed_type.value} on {state.device}); they would "
            f"train independently and overwrite each other. On a machine without GPUs use "
            f"configs/accelerate/cpu_2proc.yaml (or pass --cpu), not an FSDP/GPU config."
        )


def _tokenizer_next_to(init_from: str | None) -> str | None:
    """Use the tokenizer saved with an --init-from folder (ours are saved next to the model)."""
    if init_from and Path(init_from).is_dir():
        folder = Path(init_from)
        if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
            return str(folder)
    return None


def _write_or_compare_run_file(output_dir: Path, identity: pretraining_output.RunIdentity, resuming: bool) -> None:
    """Record the run's identity (fresh run), or warn about hyperparameters changed on resume."""
    path = output_dir / pretraining_output.RUN_FILE
    stored = pretraining_output.read_json(path) if resuming else None
    if stored is None:
        path.write_text(json.dumps(identity.to_dict(), indent=2, default=str), encoding="utf-8")
        return
    before, now = stored.get("hyperparameters", {}), identity.hyperparameters
    changed = {k: (before.get(k), now.get(k)) for k in now if before.get(k) != now.get(k)}
    if changed:
        logger.warning(
            "Resuming with changed hyperparameters (the trajectory will differ from an uninterrupted run): "
            + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        )
        stored["hyperparameters"] = now
        path.write_text(json.dumps(stored, indent=2, default=str), encoding="utf-8")


def _setup_logging(t: GPT1PretrainingArguments) -> None:
    import datasets
    import transformers

    is_local_main = t.local_process_index == 0
    level = logging.INFO if is_local_main else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("hf_gpt1").setLevel(level)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    if not is_local_main:
        datasets.disable_progress_bars()
