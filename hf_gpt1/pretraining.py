"""Building blocks of `scripts/pretrain.py`: GPT-1's unsupervised pretraining stage (paper §3.1, §4.1).

The run that uses them is `hf_gpt1.pretraining_run` (on `transformers.Trainer`; the script only calls its `main`).
Its parts are importable and tested on their own, one concept per module:

* **Model and run length** (here: `PRESETS`, `resolve_model_config`, `build_model`, `resolve_run_length`): the
  paper's 117M model and small presets that train on a laptop CPU, a JSON file of `GPT1Config` fields, or an
  existing checkpoint. (Optimisation - AdamW with decay on "all non bias or gain weights", warmup then cosine
  decay - and the checkpoints themselves are Trainer's.)
* **LoRA continued pretraining** (here: `lora_settings`, `apply_lora`): a `peft` LoRA adapter on an existing
  checkpoint (`--init-from`), trained on plain text.
* **Corpus** (`hf_gpt1.pretraining_corpus`): text files or a `datasets` dataset -> cleaned text -> BPE ids ->
  one flat memory-mapped token stream -> contiguous `block_size` windows, the last `val_fraction` held out.
* **Output folder** (`hf_gpt1.pretraining_output`): the identity a resumed run must match, refusal to mix a run
  with a foreign output folder, atomic final saves (model, LoRA adapter, merged model), the `log.jsonl` log.

`PretrainingError` is the base of every user-facing error of the stage; the script prints it without a traceback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .configuration_gpt1 import GPT1Config
from .training_args import (  # noqa: F401  (the paper's pretraining values, quoted there; public here too)
    PAPER_ADAM,
    PAPER_BATCH_SIZE,
    PAPER_LEARNING_RATE,
    PAPER_MAX_GRAD_NORM,
    PAPER_NUM_EPOCHS,
    PAPER_WARMUP_STEPS,
    PAPER_WEIGHT_DECAY,
)
from .training_callbacks import NonFiniteLossError  # noqa: F401  (public here too)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# Errors: every user-facing failure says what was wrong, where, and what was expected.
# ----------------------------------------------------------------------------------------------------------------------


class PretrainingError(Exception):
    """A problem with the user's input or output folder; the script prints it without a traceback."""


# ----------------------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A model shape plus the training defaults that go with it.

    `max_steps` or `num_epochs` fixes the run length: the paper trains "for 100 epochs" (over BooksCorpus),
    which only makes sense once the corpus size is known, so the `gpt1` preset counts epochs while the small
    presets, meant for quick CPU runs on any corpus, count steps.
    """

    model: dict[str, Any]
    learning_rate: float
    warmup_steps: int
    batch_size: int
    max_steps: int | None = None
    num_epochs: float | None = None
    description: str = ""
    # None: GPT-1's released 40,478-token BPE. A number: without --tokenizer, a BPE of that size is trained on the
    # corpus (`train_gpt1_bpe`): at small widths the 40k table would be most of the parameters and of each step.
    bpe_vocab_size: int | None = None


PRESETS: dict[str, Preset] = {
    "gpt1": Preset(
        model=dict(n_positions=512, n_embd=768, n_layer=12, n_head=12),
        learning_rate=PAPER_LEARNING_RATE,
        warmup_steps=PAPER_WARMUP_STEPS,
        batch_size=PAPER_BATCH_SIZE,
        num_epochs=PAPER_NUM_EPOCHS,
        description="the paper's 117M model: 12 layers, 768 wide, 12 heads, 512 positions; paper optimisation",
    ),
    "gpt1-mini": Preset(
        model=dict(n_positions=128, n_embd=256, n_layer=4, n_head=4),
        learning_rate=1e-3,
        warmup_steps=100,
        batch_size=32,
        max_steps=2000,
        bpe_vocab_size=8192,
        description="~5.3M parameters (2.1M of them the table of an 8,192-token BPE trained on the corpus); 2000 "
        "updates of 32x128 tokens take about 11 minutes on 2 CPU cores in bf16",
    ),
    "gpt1-tiny": Preset(
        model=dict(n_positions=128, n_embd=64, n_layer=2, n_head=4),
        learning_rate=1e-3,
        warmup_steps=30,
        batch_size=8,
        max_steps=300,
        description="~2.7M parameters; 300 updates of 8x128 tokens take a few minutes on 2 CPU cores; smoke tests, debugging",
    ),
}


def preset_for(model_config: str | None) -> Preset | None:
    return PRESETS.get(model_config) if model_config else None


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------

_CONFIG_JSON_IGNORED = {"architectures", "transformers_version", "auto_map", "model_type", "dtype", "torch_dtype"}


def resolve_model_config(spec: str, **overrides: Any) -> GPT1Config:
    """A `GPT1Config` from a preset name or a JSON file of `GPT1Config` fields (a saved config.json works too,
    including an `openai-gpt` one). `overrides` (e.g. dropout) win over the file; None values are ignored."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if spec in PRESETS:
        return GPT1Config(**{**PRESETS[spec].model, **overrides})
    path = Path(spec).expanduser()
    if not path.is_file():
        raise PretrainingError(
            f"--model-config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing JSON file."
        )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainingError(f"--model-config {path} is not valid JSON: {error}") from None
    if not isinstance(fields, dict):
        raise PretrainingError(f"--model-config {path} must hold a JSON object of GPT1Config fields.")
    model_type = fields.get("model_type", GPT1Config.model_type)
    if model_type == "openai-gpt":
        from .modeling_gpt1 import config_from_openai_gpt

        config = config_from_openai_gpt(fields)
        for key, value in overrides.items():
            setattr(config, key, value)
        return config
    if model_type != GPT1Config.model_type:
        raise PretrainingError(
            f"--model-config {path} describes model_type={model_type!r}; pretrain.py trains GPT-1 "
            f"(model_type 'gpt1' or 'openai-gpt')."
        )
    known = set(GPT1Config.__dataclass_fields__) if hasattr(GPT1Config, "__dataclass_fields__") else None
    values = {k: v for k, v in fields.items() if k not in _CONFIG_JSON_IGNORED}
    if known is not None:
        unknown = sorted(set(values) - known - set(GPT1Config.attribute_map) - _PRETRAINED_CONFIG_KEYS)
        if unknown:
            raise PretrainingError(
                f"--model-config {path}: unknown GPT1Config field(s) {unknown}. Known fields include "
                f"{sorted(k for k in known if not k.startswith('_'))[:25]}."
            )
    try:
        return GPT1Config(**{**values, **overrides})
    except (TypeError, ValueError) as error:
        raise PretrainingError(f"--model-config {path}: {error}") from None


_PRETRAINED_CONFIG_KEYS = {
    "id2label",
    "label2id",
    "problem_type",
    "num_labels",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "tokenizer_class",
    "task_specific_params",
    "finetuning_task",
    "tie_word_embeddings",
    "name_or_path",
    "_name_or_path",
}


def dropout_overrides(dropout: float | None) -> dict[str, float]:
    """`--dropout p` sets the three dropouts of pretraining (residual, embedding, attention) at once."""
    return {} if dropout is None else dict(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)


def build_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_config: str | None = None,
    init_from: str | None = None,
    dropout: float | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> PreTrainedModel:
    """A `GPT1ForCausalLM` whose vocabulary already holds the GPT-1 special tokens.

    Fresh models are built with `vocab_size = len(tokenizer)` (BPE + `_start_`/`_delimiter_`/`_classify_`/`<pad>`),
    so fine-tuning later needs no resize; `add_special_tokens` then records the ids in the config (and grows an
    older checkpoint's 40,478-row table, e.g. `openai-gpt`, drawing the new rows from N(0, 0.02) as the paper does).
    """
    from .cpu_speed import enable_cpu_speedups
    from .modeling_gpt1 import GPT1ForCausalLM
    from .tokenization_gpt1 import add_special_tokens

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if init_from is not None:
        overrides = dropout_overrides(dropout)
        try:
            model = GPT1ForCausalLM.from_pretrained(init_from, revision=revision, **overrides, **kwargs)
        except OSError as error:
            raise PretrainingError(f"--init-from {init_from!r}: could not load a checkpoint: {error}") from error
        except ValueError as error:
            raise PretrainingError(f"--init-from {init_from!r}: {error}") from error
    else:
        config = resolve_model_config(model_config or "gpt1", **dropout_overrides(dropout))
        if "vocab_size" not in _explicit_fields(model_config):
            config.vocab_size = len(tokenizer)
        model = GPT1ForCausalLM._from_config(config, **kwargs)
    add_special_tokens(model, tokenizer)
    # hf-gpt1's CPU speed paths (`HF_GPT1_CPU_SPEEDUPS=0`: the plain model), with GPT-1's CPU training attention
    # (`gpt1_fused`: sdpa plus the blockwise dropout path) unless an implementation was named.
    return enable_cpu_speedups(model, attention=not attn_implementation)


def _explicit_fields(model_config: str | None) -> set[str]:
    if model_config is None or model_config in PRESETS:
        return set(PRESETS.get(model_config or "gpt1", PRESETS["gpt1"]).model)
    try:
        return set(json.loads(Path(model_config).expanduser().read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def check_init_from_model_type(init_from: str, revision: str | None = None) -> None:
    """Refuse a non-GPT-1 checkpoint with a clear message before loading (from_pretrained's error is cryptic)."""
    from transformers import PretrainedConfig

    try:
        config_dict, _ = PretrainedConfig.get_config_dict(init_from, revision=revision)
    except OSError as error:
        raise PretrainingError(
            f"--init-from {init_from!r}: no config.json found ({error}). Expected a folder written by "
            f"save_pretrained or a Hub id of a gpt1/openai-gpt checkpoint."
        ) from None
    model_type = config_dict.get("model_type")
    if model_type not in (GPT1Config.model_type, "openai-gpt"):
        raise PretrainingError(
            f"--init-from {init_from!r} holds a {model_type!r} checkpoint; pretrain.py continues GPT-1 checkpoints "
            f"(model_type 'gpt1' or 'openai-gpt')."
        )


# ----------------------------------------------------------------------------------------------------------------------
# LoRA continued pretraining
# ----------------------------------------------------------------------------------------------------------------------

PEFT_METHODS = ("none", "lora")
ADAPTER_CONFIG_FILE = "adapter_config.json"
MERGED_DIR = "merged"  # OUTPUT_DIR/merged: a LoRA run's adapter merged into a full gpt1 model (--merge-adapter)


def lora_settings(
    *, r: int = 8, alpha: float = 16, dropout: float = 0.05, target_modules: Sequence[str] | None = None
) -> dict[str, Any]:
    """The LoRA adapter of a run, as recorded in its identity (a checkpoint only resumes into the same adapter).

    `target_modules` None means GPT-1's registered defaults (every linear layer of every block,
    `peft_integration.LORA_TARGET_MODULES`); they are written out so the record does not depend on that default.
    """
    from .peft_integration import LORA_TARGET_MODULES

    if r <= 0:
        raise PretrainingError(f"--lora-r must be a positive integer, got {r}.")
    if not 0.0 <= dropout < 1.0:
        raise PretrainingError(f"--lora-dropout must be in [0, 1), got {dropout}.")
    modules = sorted(set(target_modules or LORA_TARGET_MODULES))  # order and repeats do not make another adapter
    return {
        "method": "lora",
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
        "target_modules": modules,
        "embeddings": "none",
    }


def apply_lora(model: PreTrainedModel, settings: dict[str, Any], *, activation_checkpointing: bool = False):
    """Wrap a `GPT1ForCausalLM` in a LoRA `peft.PeftModel` for continued pretraining; the base weights are frozen.

    The token embedding (and with it the tied LM head) stays frozen too (`embeddings="none"`), unlike LoRA
    fine-tuning, which trains the rows of GPT-1's task tokens: plain-text pretraining never feeds `_start_` /
    `_delimiter_` / `_classify_` / `<pad>`, so through the tied head those rows would only learn never to be
    predicted, and the adapter would carry them for nothing. Activation checkpointing is switched on before
    wrapping (non-reentrant), as `peft_integration.make_peft_model` requires with frozen embeddings.
    """
    from .peft_integration import make_peft_model

    try:
        return make_peft_model(
            model,
            "lora",
            task="causal_lm",
            r=settings["r"],
            alpha=settings["alpha"],
            dropout=settings["dropout"],
            target_modules=list(settings["target_modules"]),
            embeddings=settings["embeddings"],
            activation_checkpointing=activation_checkpointing,
        )
    except ValueError as error:  # PEFT: "Target modules {...} not found in the base model..."
        linear = sorted(
            {".".join(name.split(".")[-2:]) for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        )
        raise PretrainingError(
            f"--lora-target-modules {' '.join(settings['target_modules'])}: {error} The linear layers of "
            f"{type(model).__name__} end in: {', '.join(linear)} (modules are matched by name suffix)."
        ) from None


def describe_trainable_parameters(model: nn.Module) -> str:
    """One line from `peft_integration.trainable_parameter_report`: trainable / total and the split by kind."""
    from .peft_integration import trainable_parameter_report

    report = trainable_parameter_report(model)
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(report["by_kind"].items())) or "none"
    return (
        f"trainable parameters: {report['trainable']:,} of {report['total']:,} "
        f"({report['trainable_percent']:.2f}%; by kind: {kinds})"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Run length
# ----------------------------------------------------------------------------------------------------------------------


def resolve_run_length(
    max_steps: int | None, num_epochs: float | None, preset: Preset | None, train_windows: int, global_batch: int
) -> int:
    """Optimizer steps to run: --max-steps, else --num-epochs over the training windows, else the preset's
    default (steps, or epochs for the paper preset), else the paper's 100 epochs."""
    steps_per_epoch = max(1, train_windows // global_batch)
    if max_steps is not None:
        return max_steps
    if num_epochs is None and preset is not None and preset.max_steps is not None:
        return preset.max_steps
    epochs = (
        num_epochs
        if num_epochs is not None
        else (preset.num_epochs if preset and preset.num_epochs else PAPER_NUM_EPOCHS)
    )
    return max(1, math.ceil(epochs * steps_per_epoch))


__all__ = [
    "PretrainingError",
    "NonFiniteLossError",
    "Preset",
    "PRESETS",
    "resolve_model_config",
    "build_model",
    "lora_settings",
    "apply_lora",
    "describe_trainable_parameters",
    "resolve_run_length",
]
