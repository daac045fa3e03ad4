"""PEFT (LoRA, IA³, ...) on GPT-1 without hand-written `target_modules`.

`register_peft_mappings()` (called on `import hf_gpt1`) tells PEFT which GPT-1 modules to adapt by
default for `model_type="gpt1"`, so this works as it does for built-in architectures:

    model = AutoModelForSequenceClassification.from_pretrained(path)           # any GPT-1 head
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS"))        # no target_modules

Default targets, with module names from `modeling_gpt1.py` (matched as name suffixes by PEFT):

    LoRA (and AdaLoRA, LoHa, LoKr)   c_attn, attn.c_proj, c_fc, mlp.c_proj   every linear layer of every block
    IA³                              c_attn, mlp.c_proj  (feed-forward: mlp.c_proj)
    LN tuning                        ln_1, ln_2

Why every block linear for LoRA, not only `c_attn` (PEFT's GPT-2 default): `c_attn` is the fused q/k/v
projection, so it alone already adapts queries, keys and values, but adapting the MLP and output
projections too is what lets LoRA match full fine-tuning on classification (QLoRA, Dettmers et al. 2023,
§4: "all linear layers" is the setting that closes the gap). GPT-1 is small (117M), so the cost is modest:
r=8 adds 98,304 parameters per block, 1.18M in all (1% of the model). Pass `target_modules=["c_attn"]` for
the leaner GPT-2-style adapter. IA³ follows the paper (Liu et al. 2022): scale keys/values (here the fused
q/k/v output, as PEFT does for GPT-2's fused `c_attn`) and the feed-forward intermediate activation, i.e.
the input of `mlp.c_proj`.

On top of the adapter, GPT-1 fine-tuning needs two things PEFT cannot guess, which `make_peft_model` sets:

* the task head is trained and saved (`modules_to_save`): `score` for `GPT1ForSequenceClassification`
  (PEFT adds it itself for `task_type="SEQ_CLS"`) and `GPT1ForMultipleChoice` (no PEFT task type, added
  here), `multiple_choice_head` for `GPT1DoubleHeadsModel`;
* the embedding rows of the tokens `add_special_tokens` appended (start, delimiter, extract, pad) are
  trained: they start as random vectors, and the classifier reads the extract token's state. We use
  `LoraConfig(trainable_token_indices=ids)`: only those rows are trainable and saved (4 x n_embd values),
  and PEFT ties the same rows of the LM head (`lm_head` shares `tokens_embed`'s weight). The adapter stores
  the rows' full values, not deltas, so it reproduces the trained model on any base whose special rows were
  (randomly) initialised differently, e.g. the Hub checkpoint after `add_special_tokens`.
  The heavier alternative `embeddings="full"` trains and saves the whole table (`modules_to_save` with
  `ensure_weight_tying=True`, so the LM head stays tied to the trained copy).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .file_modes import reset_modes_to_umask

GPT1_MODEL_TYPE = "gpt1"

LORA_TARGET_MODULES: tuple[str, ...] = ("c_attn", "attn.c_proj", "c_fc", "mlp.c_proj")
IA3_TARGET_MODULES: tuple[str, ...] = ("c_attn", "mlp.c_proj")
IA3_FEEDFORWARD_MODULES: tuple[str, ...] = ("mlp.c_proj",)
LN_TUNING_TARGET_MODULES: tuple[str, ...] = ("ln_1", "ln_2")

# peft.utils.constants mapping name -> GPT-1 default. Tuners not listed need explicit target_modules.
_PEFT_MAPPINGS: dict[str, tuple[str, ...]] = {
    "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING": LORA_TARGET_MODULES,
    "TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING": LORA_TARGET_MODULES,
    "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING": LORA_TARGET_MODULES,
    "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING": LORA_TARGET_MODULES,
    "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING": IA3_TARGET_MODULES,
    "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING": IA3_FEEDFORWARD_MODULES,
    "TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING": LN_TUNING_TARGET_MODULES,
}
# Tuner classes that read a mapping through a class attribute (same dict object today; updated too in case a
# PEFT release makes them copies).
_TUNER_CLASSES: dict[str, str] = {
    "LoraModel": "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING",
    "AdaLoraModel": "TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING",
    "LoHaModel": "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING",
    "LoKrModel": "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING",
    "LNTuningModel": "TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING",
}

# task name -> (PEFT task type, task head modules to add to modules_to_save)
TASKS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "seq_cls": ("SEQ_CLS", ()),  # PeftModelForSequenceClassification adds "score" (and "classifier") itself
    "multiple_choice": (None, ("score",)),  # PEFT has no multiple-choice task type
    "double_heads": (None, ("multiple_choice_head",)),
    "causal_lm": ("CAUSAL_LM", ()),
    "feature_extraction": ("FEATURE_EXTRACTION", ()),
}
_TASK_BY_CLASS: dict[str, str] = {
    "GPT1ForSequenceClassification": "seq_cls",
    "GPT1ForMultipleChoice": "multiple_choice",
    "GPT1DoubleHeadsModel": "double_heads",
    "GPT1ForCausalLM": "causal_lm",
    "GPT1Model": "feature_extraction",
}
# The config attributes `add_special_tokens` fills, in id order.
SPECIAL_TOKEN_ID_ATTRIBUTES: tuple[str, ...] = (
    "start_token_id",
    "delimiter_token_id",
    "extract_token_id",
    "pad_token_id",
)

METHODS = ("lora", "ia3")
EMBEDDING_MODES = ("auto", "tokens", "full", "none")


# ----------------------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------------------


def register_peft_mappings(model_type: str = GPT1_MODEL_TYPE) -> dict[str, list[str]]:
    """Register GPT-1's default target (and IA³ feed-forward) modules with PEFT's model-type mappings.

    Idempotent; an entry already present for `model_type` (e.g. set by the user beforehand) is left alone.
    Returns `{mapping name: modules}` as PEFT now sees them for `model_type` ({} if PEFT is not installed, so
    `import hf_gpt1` never fails because of PEFT).
    """
    try:
        import peft
        from peft.utils import constants
    except ImportError:
        return {}

    registered: dict[str, list[str]] = {}
    for name, modules in _PEFT_MAPPINGS.items():
        mapping = getattr(constants, name, None)
        if mapping is None:  # an older/newer PEFT without this tuner
            continue
        mapping.setdefault(model_type, list(modules))
        registered[name] = list(mapping[model_type])

    for class_name, mapping_name in _TUNER_CLASSES.items():
        tuner_class = getattr(peft, class_name, None)
        mapping = getattr(tuner_class, "target_module_mapping", None)
        if isinstance(mapping, dict) and mapping_name in registered:
            mapping.setdefault(model_type, list(registered[mapping_name]))
    return registered


# ----------------------------------------------------------------------------------------------------------------------
# Building PEFT models
# ----------------------------------------------------------------------------------------------------------------------


def infer_task(model: nn.Module) -> str:
    """`seq_cls` / `multiple_choice` / `double_heads` / `causal_lm` / `feature_extraction` from the GPT-1 head class."""
    for cls in type(model).__mro__:
        if cls.__name__ in _TASK_BY_CLASS:
            return _TASK_BY_CLASS[cls.__name__]
    raise ValueError(
        f"Cannot infer the PEFT task of {type(model).__name__}; pass task= one of {sorted(TASKS)} "
        f"(GPT-1 heads: {', '.join(_TASK_BY_CLASS)})."
    )


def special_token_indices(model_or_config) -> list[int]:
    """Ids of GPT-1's added tokens recorded in the config by `add_special_tokens` (sorted, unique; [] if none)."""
    config = getattr(model_or_config, "config", model_or_config)
    ids = {getattr(config, attribute, None) for attribute in SPECIAL_TOKEN_ID_ATTRIBUTES}
    return sorted(int(i) for i in ids if i is not None)


def make_peft_config(
    model: nn.Module,
    method: str = "lora",
    *,
    task: str = "auto",
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    modules_to_save: list[str] | None = None,
    special_token_ids: list[int] | str | None = "auto",
    embeddings: str = "auto",
    **config_kwargs: Any,
):
    """The `LoraConfig` / `IA3Config` that `make_peft_model` applies (see there for the arguments)."""
    from peft import IA3Config, LoraConfig

    register_peft_mappings()
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if task == "auto":
        task = infer_task(model)
    if task not in TASKS:
        raise ValueError(f"task must be 'auto' or one of {sorted(TASKS)}, got {task!r}.")
    if embeddings not in EMBEDDING_MODES:
        raise ValueError(f"embeddings must be one of {EMBEDDING_MODES}, got {embeddings!r}.")
    task_type, head_modules = TASKS[task]

    token_ids = special_token_indices(model) if special_token_ids == "auto" else list(special_token_ids or [])
    rows = model.get_input_embeddings().weight.shape[0]
    if any(not 0 <= i < rows for i in token_ids):
        raise ValueError(f"special_token_ids {token_ids} do not all fit the {rows}-row token embedding.")
    if embeddings == "auto":
        embeddings = "tokens" if (token_ids and method == "lora") else "none"
        if token_ids and method != "lora":
            warnings.warn(
                f"{method}: PEFT offers trainable_token_indices for LoRA only, so the rows of the special tokens "
                f"{token_ids} stay as initialised. Use method='lora', or pre-train those rows.",
                stacklevel=2,
            )
    if embeddings == "tokens" and not token_ids:
        raise ValueError(
            "embeddings='tokens' needs the special-token ids: call hf_gpt1.add_special_tokens(model, tokenizer) "
            "first (it records them in model.config), or pass special_token_ids=[...]."
        )
    if embeddings in ("tokens", "full") and method != "lora":
        raise ValueError(
            f"embeddings={embeddings!r} is supported with method='lora' only (PEFT's {method} cannot train "
            f"embedding rows while keeping the LM head tied)."
        )

    modules = list(modules_to_save or [])
    modules += [m for m in head_modules if m not in modules]
    extra: dict[str, Any] = {}
    if embeddings == "tokens":
        extra["trainable_token_indices"] = token_ids
    elif embeddings == "full":
        # PEFT recognises the tied embedding pair by the name "lm_head": it then saves the *input* embedding and
        # ties lm_head to that trained copy ("tokens_embed" alone would untie them).
        modules.append("lm_head")
        extra["ensure_weight_tying"] = True

    common = dict(task_type=task_type, target_modules=target_modules, modules_to_save=modules or None)
    if method == "lora":
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, **common, **extra, **config_kwargs)
    return IA3Config(**common, **config_kwargs)


def make_peft_model(
    model: nn.Module,
    method: str = "lora",
    *,
    task: str = "auto",
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    modules_to_save: list[str] | None = None,
    special_token_ids: list[int] | str | None = "auto",
    embeddings: str = "auto",
    activation_checkpointing: bool | dict = False,
    adapter_name: str = "default",
    **config_kwargs: Any,
):
    """Wrap a GPT-1 model for parameter-efficient fine-tuning; returns a `peft.PeftModel` (modified in place).

    method: "lora" (LoRA; `config_kwargs` such as `use_dora=True`, `use_rslora=True` go to `LoraConfig`) or "ia3".
    task: "auto" (from the head class) or one of `TASKS`; picks the PEFT task type and the head in modules_to_save.
    r / alpha / dropout: LoRA rank, scaling numerator (scale = alpha / r) and dropout on the adapter input.
    target_modules: None = GPT-1 defaults registered with PEFT (`LORA_TARGET_MODULES` / `IA3_TARGET_MODULES`).
    modules_to_save: extra modules trained in full and saved with the adapter (the task head is added for you).
    special_token_ids: "auto" = the ids `add_special_tokens` recorded in the config (start/delimiter/extract/pad).
    embeddings: "tokens" = train only those rows (LoRA default when ids are known), "full" = train and save the
        whole token table (tied LM head follows), "none" = freeze all embeddings.
    activation_checkpointing: True or a dict of `torch.utils.checkpoint` kwargs: enable activation checkpointing
        (default `use_reentrant=False`) before wrapping; PEFT then makes the embedding output require grad.
    """
    from peft import get_peft_model

    config = make_peft_config(
        model,
        method,
        task=task,
        r=r,
        alpha=alpha,
        dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        special_token_ids=special_token_ids,
        embeddings=embeddings,
        **config_kwargs,
    )
    if activation_checkpointing:
        kwargs = activation_checkpointing if isinstance(activation_checkpointing, dict) else {"use_reentrant": False}
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    return get_peft_model(model, config, adapter_name=adapter_name)


# ----------------------------------------------------------------------------------------------------------------------
# Reporting and saving
# ----------------------------------------------------------------------------------------------------------------------


def _parameter_kind(name: str) -> str:
    if "lora_" in name:
        return "lora"
    if "ia3_" in name:
        return "ia3"
    if "trainable_tokens_" in name:
        return "trainable_tokens"
    if ".modules_to_save." in name:
        return "modules_to_save"
    return "other"


def trainable_parameter_report(model: nn.Module) -> dict[str, Any]:
    """Counts of trainable parameters, split by kind (lora / ia3 / trainable_tokens / modules_to_save / other).

    `total` counts every parameter of `model` once (tied weights once), adapters and head copies included, as
    `PeftModel.get_nb_trainable_parameters` does. Works on plain models too (everything trainable is "other").
    """
    by_kind: dict[str, int] = {}
    names: list[str] = []
    trainable = total = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            kind = _parameter_kind(name)
            by_kind[kind] = by_kind.get(kind, 0) + param.numel()
            names.append(name)
    return {
        "trainable": trainable,
        "total": total,
        "trainable_percent": 100.0 * trainable / max(total, 1),
        "by_kind": by_kind,
        "trainable_names": names,
    }


def merge_adapter(peft_model) -> nn.Module:
    """`peft_model.merge_and_unload()`, returning a plain GPT-1 model with its LM head tied to the token table.

    With `embeddings="tokens"` PEFT keeps the tie by itself. With `embeddings="full"` it merges the trained table into
    both modules and then marks the model untied (`tie_word_embeddings=False`), so the checkpoint would store the
    table twice; the two tables are equal, so we tie them again. A head that really differs is left untied.
    """
    merged = peft_model.merge_and_unload()
    output, embeddings = merged.get_output_embeddings(), merged.get_input_embeddings()
    if output is not None and output.weight is not embeddings.weight and torch.equal(output.weight, embeddings.weight):
        merged.config.tie_word_embeddings = True
        merged.tie_weights()  # recomputes the tied-keys mapping from the config (v5)
    return merged


def directory_size(path: str | os.PathLike) -> int:
    """Bytes of all files under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _warn_if_not_gpt1_checkpoint(path: str | os.PathLike) -> None:
    """AutoPeft builds the base with transformers' Auto classes from this path: an `openai-gpt` folder would become
    transformers' OpenAIGPT* (Conv1D layout, other head), not GPT-1. Only local folders are checked."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != GPT1_MODEL_TYPE:
        warnings.warn(
            f"base_model_name_or_path={str(path)!r} holds a {model_type!r} checkpoint, not {GPT1_MODEL_TYPE!r}: "
            f"AutoPeftModel would load it with another model class. Save the base with a GPT1* class first "
            f"(GPT1ForSequenceClassification.from_pretrained(path).save_pretrained(new_path)).",
            stacklevel=3,
        )


def save_adapter(
    peft_model,
    output_dir: str | os.PathLike,
    *,
    base_model_name_or_path: str | os.PathLike | None = None,
    tokenizer=None,
    save_embedding_layers: bool | str = "auto",
) -> dict[str, Any]:
    """`peft_model.save_pretrained(output_dir)` with what GPT-1 adapters need; returns paths and sizes.

    base_model_name_or_path: recorded in `adapter_config.json` so `AutoPeftModelFor*.from_pretrained(output_dir)`
        finds the base model (PEFT takes `model.name_or_path`, which is empty for a model built from a config).
    tokenizer: saved next to the adapter (AutoPeft then grows a base embedding smaller than the tokenizer).
    save_embedding_layers: "auto" = False when the adapter trains the special-token rows (they are in the
        adapter; saving the table too would make it as big as the embedding), PEFT's own "auto" otherwise.
    Returns {"path", "adapter_bytes" (weights file), "total_bytes" (folder), "files"}.
    """
    configs = peft_model.peft_config
    if base_model_name_or_path is not None:
        _warn_if_not_gpt1_checkpoint(base_model_name_or_path)
        for config in configs.values():
            config.base_model_name_or_path = str(base_model_name_or_path)
    if save_embedding_layers == "auto" and all(
        getattr(config, "trainable_token_indices", None) for config in configs.values()
    ):
        save_embedding_layers = False
    output_dir = Path(output_dir)
    peft_model.save_pretrained(output_dir, save_embedding_layers=save_embedding_layers)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    weights = sorted(output_dir.rglob("adapter_model.*"))
    for file in weights:  # only what this save wrote: output_dir may hold other files
        reset_modes_to_umask(file)  # safetensors writes weights owner-only (file_modes)
    return {
        "path": str(output_dir),
        "adapter_bytes": sum(f.stat().st_size for f in weights),
        "total_bytes": directory_size(output_dir),
        "files": sorted(str(f.relative_to(output_dir)) for f in output_dir.rglob("*") if f.is_file()),
    }


__all__ = [
    "GPT1_MODEL_TYPE",
    "LORA_TARGET_MODULES",
    "IA3_TARGET_MODULES",
    "IA3_FEEDFORWARD_MODULES",
    "LN_TUNING_TARGET_MODULES",
    "TASKS",
    "register_peft_mappings",
    "infer_task",
    "special_token_indices",
    "make_peft_config",
    "make_peft_model",
    "trainable_parameter_report",
    "merge_adapter",
    "directory_size",
    "save_adapter",
]
