"""GPT-1 model cards (README.md of a checkpoint), for both stages, built with huggingface_hub's `ModelCard`,
`ModelCardData` and `EvalResult` so the YAML header (library, pipeline tag, tags, datasets, license, base model and a
`model-index` of every eval metric) is valid Hub metadata by construction.

- `fill_model_card(spec=..., metrics=..., settings=...)`: a model fine-tuned on a task, from the repository's
  `model_card.md` (a Jinja template; a built-in fallback when the package is installed without it);
- `pretrained_model_card(config, metrics, settings, ...)`: any other checkpoint (a pretrained LM, a bare save).

`hf_gpt1.hub.render_model_card(folder)` reads a saved folder and picks one of them; `hf_gpt1.finetuning` writes the
fine-tuning card after training. This module imports neither, so the two do not import each other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

#: GLUE leaderboard file names (a submission zip holds these TSVs).
GLUE_SUBMISSION_NAMES: dict[str, str] = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "qqp": "QQP",
    "stsb": "STS-B",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
    "mnli/test_matched": "MNLI-m",
    "mnli/test_mismatched": "MNLI-mm",
    "ax": "AX",
}
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_card.md"
PAPER_CITATION = """@techreport{radford2018improving,
  title       = {Improving Language Understanding by Generative Pre-Training},
  author      = {Radford, Alec and Narasimhan, Karthik and Salimans, Tim and Sutskever, Ilya},
  institution = {OpenAI},
  year        = {2018},
  url         = {https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf}
}"""


#: Hub metadata of every GPT-1 card (the fine-tuning card of `fill_model_card` sets the same).
CARD_LICENSE = "mit"  # the license of the original release (openai/finetune-transformer-lm) and of this package
CARD_TAGS = ("gpt1", "openai-gpt", "hf-gpt1")

_PIPELINE_TAG_BY_HEAD = (  # architecture name suffix -> Hub pipeline tag
    ("ForSequenceClassification", "text-classification"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("DoubleHeadsModel", "text-generation"),
    ("Model", "feature-extraction"),
)
_EXCLUDED_METRICS = ("loss", "runtime", "per_second", "epoch", "samples")


def pipeline_tag_for_config(config: Mapping[str, Any]) -> str:
    """The Hub pipeline tag of a saved GPT-1 model, from `config.json`'s `architectures`."""
    for architecture in config.get("architectures") or ():
        for suffix, tag in _PIPELINE_TAG_BY_HEAD:
            if architecture.endswith(suffix):
                return tag
    return "text-generation"


def pipeline_tag_for(family) -> str:
    family = getattr(family, "value", family)
    return "multiple-choice" if family == "multiple_choice" else "text-classification"


def pretrained_model_card(config, metrics, settings, model_name, usage_path, base_model, datasets) -> ModelCard:
    pipeline_tag = pipeline_tag_for_config(config)
    datasets = datasets if datasets is not None else settings.get("dataset")
    dataset_list = [datasets] if isinstance(datasets, str) else list(datasets or [])
    values = {
        key.removeprefix("eval_"): value
        for key, value in metrics.items()
        if key.startswith("eval_") or key == "perplexity"
    }
    values = {
        key: value
        for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith(_EXCLUDED_METRICS)
    }
    if "perplexity" not in values and isinstance(metrics.get("eval_loss"), (int, float)):
        values["perplexity"] = math.exp(min(float(metrics["eval_loss"]), 700.0))
    eval_results = (
        [
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=dataset_list[0],
                dataset_name=dataset_list[0],
                dataset_split=str(settings.get("eval_split", "validation")),
                metric_type=key,
                metric_value=round(float(value), 4),
            )
            for key, value in sorted(values.items())
        ]
        if dataset_list
        else []
    )
    card_data = ModelCardData(
        library_name="transformers",
        license=CARD_LICENSE,
        language="en",
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        tags=[*CARD_TAGS, pipeline_tag],
        datasets=dataset_list or None,
        metrics=sorted(values) or None,
        model_name=model_name if eval_results else None,  # only used (as model-index name) with results
        eval_results=eval_results or None,
    )
    size = ", ".join(
        f"{name}={config[name]}"
        for name in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")
        if name in config
    )
    architecture = (config.get("architectures") or ["GPT1ForCausalLM"])[0]
    auto_class = next(
        (name for name, ref in (config.get("auto_map") or {}).items() if str(ref).endswith("." + architecture)),
        "AutoModelForCausalLM",
    )
    return ModelCard.from_template(
        card_data,
        template_str=_PRETRAINED_CARD,
        model_name=model_name,
        usage_path=usage_path,
        architecture=architecture,
        auto_class=auto_class,
        is_lm=pipeline_tag == "text-generation",
        size=size,
        results_table="\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(values.items())) or "| - | - |",
        hyperparameters_table="\n".join(f"| {k} | {v} |" for k, v in settings.items()) or "| - | - |",
        citation=PAPER_CITATION,
    )


# The card of checkpoints that are not fine-tuned on a task (fine-tuned ones use the repository's model_card.md).
_PRETRAINED_CARD = """---
{{ card_data }}
---

# {{ model_name }}

A GPT-1 model ("Improving Language Understanding by Generative Pre-Training", Radford et al., 2018) published with
the `hf-gpt1` plugin: `{{ architecture }}` ({{ size }}), the paper's post-LayerNorm Transformer decoder with learned
positions, and its `</w>` BPE tokenizer with the `_start_` / `_delimiter_` / `_classify_` / `<pad>` tokens.

## How to use

```python
import hf_gpt1  # registers model_type "gpt1" (or pass trust_remote_code=True without the package)
from transformers import {{ auto_class }}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ usage_path }}")
model = {{ auto_class }}.from_pretrained("{{ usage_path }}")
{% if is_lm %}inputs = tokenizer("the old man looked at the sea and", add_special_tokens=False, return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=20, do_sample=True)[0]))
{% else %}inputs = tokenizer("a gripping , funny film", return_tensors="pt")  # _start_ text _classify_
outputs = model(**inputs)
{% endif %}```

## Results

| metric | value |
|---|---|
{{ results_table }}

## Training settings

| setting | value |
|---|---|
{{ hyperparameters_table }}

## Limitations

Intended for research and education. GPT-1 models inherit the biases of their pretraining text and are not
suitable for decisions about people; the tokenizer lower-cases its input and the context is at most 512 tokens.

## Citation

```bibtex
{{ citation }}
```
"""


def is_hub_id(name: str | None) -> bool:
    if not name or os.path.exists(name) or os.path.isabs(name) or name.startswith((".", "~")):
        return False
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts)


def task_title(spec) -> str:
    glue = GLUE_SUBMISSION_NAMES.get(spec.name)
    return f"GLUE {glue}" if glue and spec.hub_path == "nyu-mll/glue" else spec.name.replace("_", " ").title()


def fill_model_card(
    *,
    spec,
    metrics: Mapping[str, float],
    settings: Mapping[str, Any],
    model_name: str,
    base_model: str | None = None,
    template_path: str | os.PathLike | None = None,
    usage_path: str | None = None,
    adapter: Mapping[str, Any] | None = None,
) -> str:
    """The model card (README.md) of a fine-tuned checkpoint, from `model_card.md` (a Jinja template).

    The YAML front matter is built with `huggingface_hub.ModelCardData` (library_name, pipeline_tag, tags, datasets,
    license, base_model and a `model-index` with every eval metric), so it is valid Hub metadata by construction.

    `adapter` (a `--peft` run's output folder): {"method", "base_model_name_or_path", "path", "merged_path"}. The card
    then says `library_name: peft`, is tagged with the method, and ends with how to load the adapter.
    """
    family = getattr(spec.family, "value", spec.family)
    pipeline_tag = pipeline_tag_for(spec.family)
    dataset_id = spec.hub_path or spec.name
    eval_results = []
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not key.startswith("eval_"):
            continue
        metric = key[len("eval_") :]
        if metric.endswith(("loss", "runtime", "per_second", "epoch")) or metric in ("steps_per_second",):
            continue
        split = "validation"
        for short in settings.get("eval_splits", []):
            if short != "validation" and metric.startswith(short + "_"):
                split, metric = f"validation_{short}", metric[len(short) + 1 :]
        eval_results.append(
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=dataset_id,
                dataset_name=task_title(spec),
                dataset_config=spec.hub_config,
                dataset_split=settings.get("eval_split_description", {}).get(split, split),
                metric_type=metric,
                metric_value=round(float(value), 4),
            )
        )
    tags = ["gpt1", "openai-gpt", "hf-gpt1", pipeline_tag, spec.name, "generated_from_trainer"]
    if adapter is not None:
        tags += ["peft", str(adapter.get("method", "lora"))]
    card_data = ModelCardData(
        library_name="peft" if adapter is not None else "transformers",
        license="mit",
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=[spec.hub_path] if spec.hub_path else None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    results_rows = (
        "\n".join(f"| {r.dataset_split} | {r.metric_type} | {r.metric_value:.4f} |" for r in eval_results)
        or "| - | - | - |"
    )
    hyper_rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items() if k not in ("eval_split_description",))
    template = Path(template_path) if template_path else MODEL_CARD_TEMPLATE
    kwargs = dict(
        model_name=model_name,
        task=spec.name,
        task_title=task_title(spec),
        task_family=family,
        task_description=spec.description or "",
        label_names=", ".join(spec.label_names or ()) if not spec.is_regression else "(regression score)",
        dataset_id=dataset_id,
        base_model=base_model or settings.get("model", "?"),
        results_table=results_rows,
        hyperparameters_table=hyper_rows,
        pipeline_tag=pipeline_tag,
        usage_path=usage_path or model_name,
        lm_coef=settings.get("lm_coef"),
        citation=PAPER_CITATION,
        is_multiple_choice=family == "multiple_choice",
        is_pair=family in ("entailment", "similarity"),
        is_regression=bool(spec.is_regression),
    )
    if template.is_file():
        card = ModelCard.from_template(card_data, template_path=str(template), **kwargs)
    else:  # installed without the repository's template: a minimal card, same metadata
        card = ModelCard.from_template(card_data, template_str=_FALLBACK_CARD, **kwargs)
    text = str(card)
    if adapter is not None:  # before the citation when the template has one, else at the end
        section = _adapter_card_section(spec, adapter)
        head, marker, tail = text.partition("\n## Citation")
        text = f"{head.rstrip()}\n\n{section}{marker}{tail}" if marker else f"{text.rstrip()}\n\n{section}"
    return text


def _adapter_card_section(spec, adapter: Mapping[str, Any]) -> str:
    family = getattr(spec.family, "value", spec.family)
    method = {"lora": "LoRA", "ia3": "IA³"}.get(str(adapter.get("method")), str(adapter.get("method")))
    path = adapter.get("path") or "."
    if family == "multiple_choice":  # PEFT has no multiple-choice task type: AutoPeftModel follows the auto mapping
        load = (
            f'from peft import AutoPeftModel\nmodel = AutoPeftModel.from_pretrained("{path}", '
            f'import_allowlist=["hf_gpt1"])'
        )
    else:
        load = (
            f"from peft import AutoPeftModelForSequenceClassification\n"
            f'model = AutoPeftModelForSequenceClassification.from_pretrained("{path}")'
        )
    contents = (
        "the adapted weights, the task head and the rows of the added special tokens"
        if adapter.get("special_rows", True)
        else "the adapted weights and the task head (the special tokens' rows are the base's)"
    )
    merged = adapter.get("merged_path")
    merged_line = (
        f"The same model with the adapter merged in, a plain GPT-1 checkpoint that needs no PEFT (the pipeline above "
        f"uses it), is in `{merged}`."
        if merged
        else "`scripts/finetune.py --merge-adapter` also saves the merged model, a plain GPT-1 checkpoint that loads "
        "without PEFT (e.g. in `pipeline`)."
    )
    return f"""## Adapter ({method}, PEFT)

This folder holds a {method} adapter, not a full model: {contents} (`adapter_model.safetensors`,
`adapter_config.json`). It applies to the GPT-1 base `{adapter.get("base_model_name_or_path")}` (recorded in
`adapter_config.json`):

```python
import hf_gpt1  # registers model_type "gpt1"
{load}
```

{merged_line}
"""


_FALLBACK_CARD = """---
{{ card_data }}
---

# {{ model_name }}

GPT-1 (Radford et al., 2018) fine-tuned on {{ task_title }} ({{ task_family }}) with hf-gpt1.

| split | metric | value |
|---|---|---|
{{ results_table }}

| setting | value |
|---|---|
{{ hyperparameters_table }}

```bibtex
{{ citation }}
```
"""
