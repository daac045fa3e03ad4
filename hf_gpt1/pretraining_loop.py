"""The pretraining run of `scripts/pretrain.py` (Radford et al. 2018 §3.1/§4.1): its arguments and its Accelerate loop.

    python scripts/pretrain.py --corpus PATH_OR_DATASET --model-config PRESET_OR_JSON --output-dir DIR [options]
    accelerate launch [--config_file configs/accelerate/...yaml] scripts/pretrain.py ...   # multi-process/-node

The arguments are dataclasses parsed by `HfArgumentParser`: `PretrainModelArguments`, `PretrainDataArguments` and
`hf_gpt1.training_args.GPT1PretrainingArguments` (transformers' `TrainingArguments` with the paper's pretraining
defaults; its optimisation, logging, checkpoint and Hub fields are the options of this loop, the option spellings of
earlier versions kept as aliases). The pieces (corpus packing, presets, model, optimiser, run identity, atomic
checkpoints, loss curve) are in `hf_gpt1.pretraining`; this module runs them. The loop is Accelerate's rather than
`transformers.Trainer` (docs/ARCHITECTURE.md says why, measured); it shares with fine-tuning the arguments, the
Hub preflight and upload (`hf_gpt1.hub`) and the model card.

The output folder receives: checkpoint-N/ (accelerate state: model, optimizer, scheduler, RNG + pretrain_state.json
with the data position; written atomically, the last --save-total-limit kept), log.jsonl (train and validation
metrics), tensorboard/ (if installed), loss_curve.png, and at the end the model + tokenizer via save_pretrained, so
`AutoModelForCausalLM.from_pretrained(OUTPUT_DIR)` loads it (with --peft lora: the adapter, and with --merge-adapter
also OUTPUT_DIR/merged). Exit codes: 0 done; 1 NaN/inf loss (the last good checkpoint is kept) or the final Hub push
failed (the model stays in OUTPUT_DIR); 2 bad input, including a Hub token that cannot push; 128+signal after
SIGINT/SIGTERM (a checkpoint is saved first; continue with --resume-from-checkpoint auto).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import pretraining as pt
from .training_args import GPT1PretrainingArguments, LoraArguments, parse_cli
from .training_callbacks import NonFiniteLossError, SignalFlag

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
# Signals
# ----------------------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, dataloader, accelerator) -> float:
    """Mean next-token cross-entropy over the validation windows (every window has block_size-1 targets, so the
    mean of per-window means is the per-token mean). `gather_for_metrics` drops the samples accelerate repeats to
    even out the last batch across processes."""
    model.eval()
    losses = []
    for batch in dataloader:
        ids = batch["input_ids"]
        logits = model(input_ids=ids, use_cache=False).logits
        per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:], reduction="none")
        losses.append(accelerator.gather_for_metrics(per_token.mean(dim=1)))
    model.train()
    return torch.cat(losses).mean().item()


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
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from hf_gpt1.tokenization_gpt1 import DEFAULT_TOKENIZER, load_gpt1_tokenizer

    stop = SignalFlag(message="saving a checkpoint after this update (send it again to stop immediately)")
    stop.install()  # first thing: a signal during data preparation must not kill us mid-write
    output_dir = Path(t.output_dir).expanduser().resolve()
    report_to = _resolve_report_to(t.report_to)
    accelerator = Accelerator(
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=t.gradient_accumulation_steps,
            sync_with_dataloader=False,  # updates span epoch ends
        ),
        mixed_precision=t.mixed_precision,
        cpu=t.use_cpu,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir)),
        step_scheduler_with_optimizer=False,  # we step it once per update; accelerate would step it num_processes times
    )
    _setup_logging(accelerator)
    _check_world_size(accelerator)
    hub_repo = _check_hub_access(accelerator, t)  # before anything slow: a token that cannot push fails now
    peft = _lora_settings(m, accelerator)
    preset = pt.preset_for(m.model_config or (None if m.init_from else "gpt1"))

    # --- tokenizer, corpus identity, model: everything the run identity needs, before touching the output folder
    corpus = pt.resolve_corpus(
        d.corpus,
        text_column=d.text_column,
        dataset_split=d.dataset_split,
        dataset_config=d.dataset_config,
        revision=d.dataset_revision,
    )
    tokenizer_source = m.tokenizer or _tokenizer_next_to(m.init_from)
    cache_dir = Path(d.data_cache_dir).expanduser().resolve() if d.data_cache_dir else output_dir / "data-cache"
    if tokenizer_source is None and preset is not None and preset.bpe_vocab_size and not m.init_from:
        # the preset's own vocabulary, learned from this corpus once (main process first; the others and a resumed
        # run read the cached one)
        with accelerator.local_main_process_first():
            tokenizer = pt.corpus_bpe_tokenizer(
                corpus,
                preset.bpe_vocab_size,
                cache_dir,
                standardize=d.standardize_text,
                on_decode_error="skip" if d.skip_undecodable_files else "error",
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
        if accelerator.is_main_process:
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
    identity = pt.RunIdentity(
        model_type=config.model_type,
        model_config=pt.model_config_identity(config),
        init_from=str(Path(m.init_from).resolve()) if m.init_from and Path(m.init_from).exists() else m.init_from,
        corpus=corpus.fingerprint,
        tokenizer=pt.tokenizer_fingerprint(tokenizer),
        text_pipeline=f"{pt.TEXT_PIPELINE_VERSION}/standardize={d.standardize_text}",
        block_size=block_size,
        val_fraction=d.val_fraction,
        seed=t.seed,
        batch_size=batch_size,
        gradient_accumulation_steps=ga,
        num_processes=accelerator.num_processes,
        peft=peft,
    )
    plan = pt.check_output_dir(output_dir, identity, resume=t.resume_from_checkpoint, overwrite=t.overwrite_output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for note in plan.notes:
            logger.info(note)
        if plan.clean:
            pt.clean_output_dir(output_dir)
        pt.remove_stale_temporaries(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    # --- data: tokenise + pack once per node (the others then read the cache)
    with accelerator.local_main_process_first():
        data = pt.prepare_corpus(
            corpus,
            tokenizer,
            cache_dir,
            block_size=block_size,
            val_fraction=d.val_fraction,
            standardize=d.standardize_text,
            on_decode_error="skip" if d.skip_undecodable_files else "error",
            num_proc=d.preprocessing_num_workers,
        )
    split = data.split
    global_batch = batch_size * accelerator.num_processes * ga
    if split.num_train < batch_size * accelerator.num_processes:
        raise pt.CorpusError(
            f"The corpus ({corpus.description}) gives {split.num_train} training windows of {block_size} tokens, fewer "
            f"than one micro-batch across processes ({batch_size} x {accelerator.num_processes}). Use more text, a "
            f"smaller --batch-size or --block-size."
        )
    max_steps = pt.resolve_run_length(
        t.requested["max_steps"], t.requested["num_train_epochs"], preset, split.num_train, global_batch
    )
    learning_rate = (
        t.requested["learning_rate"]
        if t.requested["learning_rate"] is not None
        else (preset.learning_rate if preset else pt.PAPER_LEARNING_RATE)
    )
    warmup_steps = (
        t.requested["warmup_steps"]
        if t.requested["warmup_steps"] is not None
        else (preset.warmup_steps if preset else pt.PAPER_WARMUP_STEPS)
    )
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
        mixed_precision=accelerator.mixed_precision,
        global_batch_windows=global_batch,
        tokens_per_update=global_batch * block_size,
    )
    if peft is not None:  # also in the identity; here for the model card's settings table and the trackers
        identity.hyperparameters["peft"] = (
            f"lora r={peft['r']} alpha={peft['alpha']:g} dropout={peft['dropout']:g} on {' '.join(peft['target_modules'])}"
            f"{' (merged)' if m.merge_adapter else ''}"
        )
    if accelerator.is_main_process:
        _write_or_compare_run_file(output_dir, identity, resuming=plan.resume_checkpoint is not None)

    # --- loaders, optimiser, schedule; accelerate does device placement, DDP/FSDP wrapping and autocast
    sampler = pt.EpochShuffleSampler(len(data.train), t.seed)
    train_loader = torch.utils.data.DataLoader(
        data.train,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(t.seed),  # keeps DataLoader's base-seed draw off the global RNG
    )
    val_windows = data.val
    if val_windows is not None and d.eval_windows is not None:
        val_windows = pt.PackedWindows(
            data.tokens, block_size, val_windows.first, min(d.eval_windows, len(val_windows))
        )
    val_loader = torch.utils.data.DataLoader(val_windows, batch_size=batch_size) if val_windows is not None else None
    if t.activation_checkpointing and peft is None:  # (a LoRA model got it in apply_lora, before wrapping)
        model.activation_checkpointing_enable()
    optimizer, scheduler = pt.build_optimizer_and_scheduler(
        model,
        learning_rate=learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=warmup_steps,
        max_steps=max_steps,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)
    set_seed(t.seed, device_specific=True)  # dropout: a different stream per process, reproducible per rank

    log = pt.JsonlLog(output_dir / pt.LOG_FILE, enabled=accelerator.is_main_process)
    completed_steps, last_val = 0, None
    if plan.resume_checkpoint is not None:
        accelerator.load_state(str(plan.resume_checkpoint))  # weights, optimizer, scheduler, every RNG
        state = pt.read_json(plan.resume_checkpoint / pt.STATE_FILE) or {}
        completed_steps, last_val = int(state["step"]), state.get("val_loss")
        log.truncate_after(completed_steps)
        logger.info(f"Resumed from {plan.resume_checkpoint} at update {completed_steps}.")
    last_checkpoint: Path | None = plan.resume_checkpoint

    micro_per_epoch = len(train_loader)
    logger.info(
        f"Corpus: {corpus.description}: {data.num_documents} document(s), {split.num_tokens:,} tokens -> "
        f"{split.num_train} train + {split.num_val} validation windows of {block_size} "
        f"({split.dropped_tokens} tail tokens dropped). Model: {sum(p.numel() for p in model.parameters()):,} parameters. "
        f"Updates: {max_steps} x {global_batch} windows ({global_batch * block_size:,} tokens), "
        f"{accelerator.num_processes} process(es) ({accelerator.distributed_type.value}, {accelerator.device.type}), "
        f"mixed precision {accelerator.mixed_precision}."
    )
    if report_to:
        accelerator.init_trackers(
            "tensorboard" if report_to == "tensorboard" else "pretrain",
            config=pt.tracker_config(
                {
                    **vars(m),
                    **vars(d),
                    **_run_options(t),
                    **identity.hyperparameters,
                    "block_size": block_size,
                    "batch_size": batch_size,
                }
            ),
        )

    def save_checkpoint(epoch: int) -> Path:
        state = {
            "step": completed_steps,
            "epoch": epoch,
            "micro_batches_per_process": completed_steps * ga,
            "tokens_seen": completed_steps * global_batch * block_size,
            "val_loss": last_val,
            "identity": identity.to_dict(),
        }
        path = pt.save_checkpoint_atomically(
            accelerator, output_dir, completed_steps, state, t.save_total_limit or None
        )
        logger.info(f"Saved checkpoint {path}")
        return path

    def run_eval() -> None:
        nonlocal last_val
        if val_loader is None:
            return
        last_val = evaluate(model, val_loader, accelerator)
        record = {"step": completed_steps, "val_loss": last_val, "val_perplexity": math.exp(min(last_val, 50.0))}
        log.write(record)
        accelerator.log({"eval/loss": last_val, "eval/perplexity": record["val_perplexity"]}, step=completed_steps)
        logger.info(
            f"update {completed_steps}: validation loss {last_val:.4f}, perplexity {record['val_perplexity']:.2f}"
        )

    if completed_steps == 0 and eval_every:
        run_eval()  # the starting point of the curve (and of the "perplexity went down" claim)

    # --- the loop: an endless stream of micro-batches; the data position is completed_steps * ga micro-batches
    def micro_batches():
        epoch, skip = divmod(completed_steps * ga, micro_per_epoch)
        while True:
            sampler.epoch = epoch
            loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
            for batch in loader:
                yield epoch, batch
            epoch, skip = epoch + 1, 0

    model.train()
    progress = tqdm(
        total=max_steps, initial=completed_steps, desc="pretrain", disable=not accelerator.is_local_main_process
    )
    throughput, window_losses, epoch = pt.Throughput(), [], 0
    throughput.last_tokens = completed_steps * global_batch * block_size
    running = torch.zeros((), device=accelerator.device)
    saved_at = completed_steps if plan.resume_checkpoint is not None else None
    stream = micro_batches()
    stopping = False  # agreed by all processes (a signal may reach only some of them)
    while completed_steps < max_steps and not stopping:
        epoch, batch = next(stream)
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            running += loss.detach().float()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                # one collective per update: the mean loss over micro-batches and processes, and any stop request
                stats = torch.stack(
                    [running / ga, torch.tensor(float(stop.received is not None), device=running.device)]
                )
                stats = accelerator.reduce(stats, reduction="sum")
                step_loss = stats[0].item() / accelerator.num_processes
                running.zero_()
                stopping = stats[1].item() > 0
                grad_norm = None
                if math.isfinite(step_loss) and t.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                    grad_norm = grad_norm.item() if torch.is_tensor(grad_norm) else grad_norm
                if not math.isfinite(step_loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
                    name, value = ("loss", step_loss) if not math.isfinite(step_loss) else ("grad_norm", grad_norm)
                    what = "loss" if name == "loss" else "gradient norm"
                    raise NonFiniteLossError(
                        f"non-finite {what} {value} at update {completed_steps + 1}; stopped without applying it. Last "
                        f"good checkpoint: {last_checkpoint or 'none (no checkpoint saved yet)'}. Lower "
                        f"--learning-rate, raise --warmup-steps, check --max-grad-norm, or train without --bf16/--fp16.",
                        step=completed_steps + 1,
                        checkpoint=str(last_checkpoint) if last_checkpoint else None,
                        values={name: value},
                    )
                learning_rate_used = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue

        completed_steps += 1
        window_losses.append(step_loss)
        progress.update(1)
        last = completed_steps >= max_steps
        if completed_steps % t.logging_steps == 0 or last:
            tokens = completed_steps * global_batch * block_size
            rate = throughput.update(tokens)
            record = {
                "step": completed_steps,
                "epoch": epoch,
                "train_loss": sum(window_losses) / len(window_losses),
                "learning_rate": learning_rate_used,
                "grad_norm": grad_norm,
                "tokens_seen": tokens,
                "tokens_per_second": rate,
            }
            window_losses = []
            log.write(record)
            accelerator.log(
                {
                    "train/loss": record["train_loss"],
                    "train/learning_rate": record["learning_rate"],
                    "train/tokens_per_second": rate,
                },
                step=completed_steps,
            )
            progress.set_postfix(
                loss=f"{record['train_loss']:.3f}", lr=f"{record['learning_rate']:.2e}", tok_s=f"{rate:,.0f}"
            )
        if (eval_every and completed_steps % eval_every == 0) or last:
            run_eval()
        if (save_every and completed_steps % save_every == 0) or last or stopping:
            last_checkpoint, saved_at = save_checkpoint(epoch), completed_steps
    progress.close()

    if (stopping or stop.received is not None) and completed_steps < max_steps:
        if saved_at != completed_steps:
            last_checkpoint = save_checkpoint(epoch)
        signum = stop.received or signal.SIGTERM  # a rank that was not signalled itself stops with its peers
        name = signal.Signals(signum).name
        if accelerator.is_main_process:
            pt.plot_loss_curve(output_dir / pt.LOG_FILE, output_dir / pt.LOSS_CURVE_FILE)
            print(
                f"pretrain.py: stopped by {name} at update {completed_steps}/{max_steps}; saved checkpoint "
                f"{last_checkpoint}. Continue with the same command plus --resume auto.",
                file=sys.stderr,
                flush=True,
            )
        accelerator.end_training()
        return 128 + signum

    if saved_at != completed_steps:  # resumed an already finished run: nothing trained, state unchanged
        last_checkpoint = save_checkpoint(epoch)
    if accelerator.is_main_process:  # before the final save: the merged folder takes a copy of the log
        png = pt.plot_loss_curve(output_dir / pt.LOG_FILE, output_dir / pt.LOSS_CURVE_FILE)
    model_dir = output_dir
    if peft is None:
        pt.save_final_model_atomically(accelerator, model, tokenizer, output_dir)
        saved = f"Model + tokenizer saved to {output_dir} (AutoModelForCausalLM.from_pretrained)"
    else:
        pt.save_final_adapter_atomically(
            accelerator, model, tokenizer, output_dir, base_model_name_or_path=identity.init_from
        )
        saved = (
            f"LoRA adapter + tokenizer saved to {output_dir} (PeftModel.from_pretrained on the base "
            f"{identity.init_from}, or AutoPeftModelForCausalLM.from_pretrained)"
        )
        if m.merge_adapter:  # last: merging folds the adapter into the base weights in place
            model_dir = pt.save_merged_model_atomically(
                accelerator,
                model,
                tokenizer,
                output_dir / pt.MERGED_DIR,
                extra_files=[output_dir / pt.RUN_FILE, output_dir / pt.LOG_FILE],
            )
            saved += f"; merged model + tokenizer saved to {model_dir} (AutoModelForCausalLM.from_pretrained)"
    exit_code = 0
    if accelerator.is_main_process:
        summary = (
            f", validation loss {last_val:.4f} (perplexity {math.exp(min(last_val, 50.0)):.2f})"
            if last_val is not None
            else ""
        )
        print(f"pretrain.py: trained {completed_steps} updates{summary}. {saved}, loss curve {png}.", flush=True)
        if hub_repo is not None:
            exit_code = _push_to_hub(model_dir, hub_repo, m, t, corpus, completed_steps)
    accelerator.end_training()
    return exit_code


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------


def _resolve_report_to(value: str | Sequence[str] | None) -> str | list[str] | None:
    """accelerate's `log_with` from --report-to (TrainingArguments turns it into a list; "none" into [])."""
    names = [value] if isinstance(value, str) else list(value or [])
    names = [n.strip() for name in names for n in name.split(",") if n.strip() and n.strip() != "none"]
    if not names:
        return None
    if names == ["auto"]:
        try:
            import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
        except ImportError:
            return None
        return "tensorboard"
    return names[0] if len(names) == 1 else names


def _run_options(t: GPT1PretrainingArguments) -> dict:
    """The training options the trackers record (what the old CLI had; not all of TrainingArguments)."""
    names = (
        "output_dir", "gradient_accumulation_steps", "weight_decay", "max_grad_norm", "seed", "mixed_precision",
        "use_cpu", "logging_steps", "eval_steps", "save_steps", "save_total_limit", "resume_from_checkpoint",
        "overwrite_output_dir", "push_to_hub", "hub_model_id", "activation_checkpointing",
    )  # fmt: skip
    return {**{name: getattr(t, name) for name in names}, **t.requested}


def _check_hub_access(accelerator, t: GPT1PretrainingArguments) -> str | None:
    """--push-to-hub preflight (`hf_gpt1.hub.check_hub_access`, on the main process): a missing, invalid or read-only
    token, or a namespace the token cannot write to, is a `PretrainingError` (exit 2) on every process before any
    work. Returns the full repo id ("name" becomes "user/name"), or None without --push-to-hub."""
    if not t.push_to_hub:
        return None
    from hf_gpt1.hub import HubPushError, check_hub_access

    outcome: list[str | None] = [None, None]  # [repo id, error message]
    if accelerator.is_main_process:
        try:
            outcome[0] = check_hub_access(_repo_name(t), token=t.hub_token)
        except HubPushError as error:
            outcome[1] = str(error)
    if accelerator.num_processes > 1:
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


def _lora_settings(m: PretrainModelArguments, accelerator) -> dict | None:
    """The LoRA settings of a --peft lora run (None otherwise); refuses sharded training, where the adapter could not
    be read from one process's model at the end."""
    if m.peft != "lora":
        return None
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise pt.PretrainingError(
            f"--peft lora runs on one process or with data parallelism (DDP), not under "
            f"{accelerator.distributed_type.value}: the LoRA model is small enough to be replicated. Use a DDP "
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
    corpus: pt.CorpusSource,
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
            # all of TensorBoard's folder: hub.IGNORE_PATTERNS skips the event files, not the tracker's hparams.yml
            ignore_patterns=["tensorboard/*"],
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


def _check_world_size(accelerator) -> None:
    """Refuse to run as N independent single-process jobs writing into one folder.

    That happens when a launcher starts several processes but accelerate sets up no process group, e.g. an FSDP or
    multi-GPU config on a machine without GPUs: each process would believe it is the only one.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes != launched:
        raise pt.PretrainingError(
            f"The launcher started {launched} processes (WORLD_SIZE), but accelerate initialised "
            f"{accelerator.num_processes} ({accelerator.distributed_type.value} on {accelerator.device}); they would "
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


def _write_or_compare_run_file(output_dir: Path, identity: pt.RunIdentity, resuming: bool) -> None:
    """Record the run's identity (fresh run), or warn about hyperparameters changed on resume."""
    path = output_dir / pt.RUN_FILE
    stored = pt.read_json(path) if resuming else None
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


def _setup_logging(accelerator) -> None:
    import datasets
    import transformers

    level = logging.INFO if accelerator.is_local_main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger("hf_gpt1").setLevel(level)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    if not accelerator.is_local_main_process:
        datasets.disable_progress_bars()
