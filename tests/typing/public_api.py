"""Type-checked use of hf-gpt1's public API, as the README shows it (`make lint` runs mypy on this file; it is not a
test module and never runs). mypy reads the package's own annotations (`--follow-imports=silent`: errors inside the
package are not reported here, only whether what it exports is typed and fits the documented calls)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import OpenAIGPTTokenizer, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

import hf_gpt1
from hf_gpt1 import (
    GPT1ClassifierOutput,
    GPT1Config,
    GPT1DoubleHeadsModel,
    GPT1DoubleHeadsModelOutput,
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1Model,
    add_special_tokens,
    convert_openai_checkpoint,
    load_gpt1_tokenizer,
    make_peft_model,
)
from hf_gpt1.cpu_speed import cpu_speedups_enabled, disable_cpu_speedups, enable_cpu_speedups
from hf_gpt1.hub import PushResult, push_folder
from hf_gpt1.tokenization_gpt1 import standardize_text


def usage(folder: Path) -> None:
    config: GPT1Config = GPT1Config(n_embd=64, n_layer=2, n_head=4, id2label={0: "negative", 1: "positive"})
    tokenizer: OpenAIGPTTokenizer = load_gpt1_tokenizer(folder)
    text: str = standardize_text("“curly” — quotes…")

    lm = GPT1ForCausalLM(config)
    model: PreTrainedModel = add_special_tokens(lm, tokenizer)
    ids = torch.ones(1, 4, dtype=torch.long)
    out: CausalLMOutputWithPast = lm(ids, labels=ids)
    loss: torch.Tensor | None = out.loss
    base: BaseModelOutputWithPast = GPT1Model(config)(ids)
    clf: GPT1ClassifierOutput = GPT1ForSequenceClassification(config)(ids, labels=torch.tensor([1]))
    mc: GPT1ClassifierOutput = GPT1ForMultipleChoice(config)(ids.unsqueeze(1), labels=torch.tensor([0]))
    double: GPT1DoubleHeadsModelOutput = GPT1DoubleHeadsModel(config)(ids.unsqueeze(1))

    fast: torch.nn.Module = enable_cpu_speedups(lm, attention=True, dropout=True)
    enabled: bool = cpu_speedups_enabled(fast)
    plain: torch.nn.Module = disable_cpu_speedups(fast)

    adapted = make_peft_model(GPT1ForSequenceClassification(config), "lora", r=4)
    report = convert_openai_checkpoint(folder / "release", folder / "converted", n_head=12)
    pushed: PushResult = push_folder(folder, "user/gpt1", dry_run=True)
    print(hf_gpt1.__name__, model, text, loss, base, clf, mc, double, enabled, plain, adapted, report, pushed)
