"""hf-gpt1: GPT-1 (Radford et al., 2018) as a Hugging Face plugin.

Importing the package registers `model_type="gpt1"` with the transformers Auto classes, and marks
the classes for auto-class export so `save_pretrained` writes `auto_map` and copies the modeling code
(checkpoints then load with `trust_remote_code=True` where this package is not installed).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    OpenAIGPTTokenizer,
)

from .configuration_gpt1 import GPT1Config
from .convert_openai_checkpoint import convert_openai_checkpoint
from .cpu_speed import disable_cpu_speedups, enable_cpu_speedups  # also registers the `gpt1_fused` attention
from .modeling_gpt1 import (
    GPT1ClassifierOutput,
    GPT1DoubleHeadsModel,
    GPT1DoubleHeadsModelOutput,
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1LMHeadModel,
    GPT1Model,
    GPT1PreTrainedModel,
)
from .peft_integration import make_peft_model, register_peft_mappings
from .tokenization_gpt1 import add_special_tokens, load_gpt1_tokenizer

_AUTO_CLASSES = {
    "AutoModel": (AutoModel, GPT1Model),
    "AutoModelForCausalLM": (AutoModelForCausalLM, GPT1ForCausalLM),
    "AutoModelForSequenceClassification": (AutoModelForSequenceClassification, GPT1ForSequenceClassification),
    "AutoModelForMultipleChoice": (AutoModelForMultipleChoice, GPT1ForMultipleChoice),
}


def _register() -> None:
    AutoConfig.register(GPT1Config.model_type, GPT1Config, exist_ok=True)
    GPT1Config.register_for_auto_class("AutoConfig")
    # GPT-1 uses the original `</w>` BPE; its tokenizer is transformers' own OpenAIGPTTokenizer.
    AutoTokenizer.register(GPT1Config, tokenizer_class=OpenAIGPTTokenizer, exist_ok=True)
    for auto_name, (auto_class, model_class) in _AUTO_CLASSES.items():
        auto_class.register(GPT1Config, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_name)


_register()
register_peft_mappings()  # PEFT finds GPT-1's default LoRA/IA³ target modules (no target_modules needed)

__all__ = [
    "load_gpt1_tokenizer",
    "add_special_tokens",
    "convert_openai_checkpoint",
    "make_peft_model",
    "enable_cpu_speedups",
    "disable_cpu_speedups",
    "register_peft_mappings",
    "GPT1Config",
    "GPT1PreTrainedModel",
    "GPT1Model",
    "GPT1ForCausalLM",
    "GPT1LMHeadModel",
    "GPT1ForSequenceClassification",
    "GPT1ForMultipleChoice",
    "GPT1DoubleHeadsModel",
    "GPT1ClassifierOutput",
    "GPT1DoubleHeadsModelOutput",
]
