"""The switch of hf_gpt1.cpu_speed: `enable_cpu_speedups` swaps modules for their fast subclasses without changing the
model (parameters, state dict, class, saved checkpoint), `disable_cpu_speedups` undoes it, `HF_GPT1_CPU_SPEEDUPS=0`
turns it off where the training code applies it, and the model file knows nothing of it."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_gpt1 import GPT1ForCausalLM, GPT1ForSequenceClassification, cpu_speed, disable_cpu_speedups, enable_cpu_speedups
from testing_utils import no_dropout, tiny_gpt1_config

FAST_TYPES = (cpu_speed.GPT1Dropout, cpu_speed.GPT1Linear, cpu_speed.GPT1GELUTanh, cpu_speed.GPT1DecodeBlock,
              cpu_speed.GPT1TokenEmbedding, cpu_speed.GPT1TiedLMHead)  # fmt: skip


def _types(model):
    return {name: type(module) for name, module in model.named_modules()}


@pytest.mark.parametrize("head", [GPT1ForCausalLM, GPT1ForSequenceClassification])
def test_enable_swaps_modules_keeping_the_model_and_disable_undoes_it(head, tmp_path):
    torch.manual_seed(0)
    model = head(tiny_gpt1_config(**no_dropout(), num_labels=2)).eval()
    plain_types, state = _types(model), {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 99, (2, 7))
    with torch.no_grad():
        expected = model(ids).logits
    assert enable_cpu_speedups(model) is model and type(model) is head
    assert model.config._attn_implementation == cpu_speed.GPT1_ATTENTION and cpu_speed.cpu_speedups_enabled(model)
    swapped = {name for name, kind in _types(model).items() if kind is not plain_types[name]}
    assert swapped and all(isinstance(dict(model.named_modules())[n], FAST_TYPES) for n in swapped)
    assert model.loss_function is cpu_speed.causal_lm_loss
    assert model._no_split_modules == ["GPT1DecodeBlock"]  # FSDP/device_map find the blocks by class name
    assert list(model.state_dict()) == list(state) and all(
        torch.equal(model.state_dict()[k], v) for k, v in state.items()
    )
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected)
    model.save_pretrained(tmp_path)  # the checkpoint is the plain model's
    loaded = head.from_pretrained(tmp_path).eval()
    assert _types(loaded) == plain_types
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected)
    enable_cpu_speedups(model)  # twice: harmless
    assert disable_cpu_speedups(model) is model
    assert _types(model) == plain_types and not cpu_speed.cpu_speedups_enabled(model)
    assert model.config._attn_implementation == "sdpa" and "_loss_function" not in model.__dict__
    assert model._no_split_modules == ["GPT1Block"]
    assert "token_lm_losses" not in model.__dict__


def test_deepcopy_keeps_the_tied_head_pointing_at_its_own_table():
    model = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config()))
    twin = copy.deepcopy(model)
    assert twin.lm_head.__dict__["tied_embedding"] is twin.transformer.tokens_embed
    assert twin.lm_head.weight is twin.transformer.tokens_embed.weight


def test_dropout_false_puts_nn_dropout_back():
    model = enable_cpu_speedups(GPT1ForCausalLM(tiny_gpt1_config()))
    assert type(model.transformer.drop) is cpu_speed.GPT1Dropout
    enable_cpu_speedups(model, attention=False, dropout=False)
    assert not any(type(m) is cpu_speed.GPT1Dropout for m in model.modules())
    assert type(model.transformer.h[0].mlp.c_fc) is cpu_speed.GPT1Linear


def test_environment_switch_turns_the_speedups_off(monkeypatch):
    monkeypatch.setenv(cpu_speed.ENV_VAR, "0")
    model = GPT1ForCausalLM(tiny_gpt1_config())
    plain_types = _types(model)
    enable_cpu_speedups(model)
    assert _types(model) == plain_types and model.config._attn_implementation != cpu_speed.GPT1_ATTENTION
    monkeypatch.setenv(cpu_speed.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="HF_GPT1_CPU_SPEEDUPS must be 1 .* or 0"):
        enable_cpu_speedups(model)


def test_training_code_applies_the_speedups_by_default_and_the_switch_removes_them(monkeypatch, tokenizer_dir):
    from hf_gpt1 import pretraining as pt
    from hf_gpt1.tokenization_gpt1 import load_gpt1_tokenizer

    tokenizer = load_gpt1_tokenizer(tokenizer_dir)
    model = pt.build_model(tokenizer, model_config="gpt1-tiny")
    assert model.config._attn_implementation == cpu_speed.GPT1_ATTENTION
    assert type(model.lm_head) is cpu_speed.GPT1TiedLMHead and type(model.transformer.drop) is cpu_speed.GPT1Dropout
    eager = pt.build_model(tokenizer, model_config="gpt1-tiny", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager" and cpu_speed.cpu_speedups_enabled(eager)
    monkeypatch.setenv(cpu_speed.ENV_VAR, "0")
    plain = pt.build_model(tokenizer, model_config="gpt1-tiny")
    assert plain.config._attn_implementation == "sdpa" and not cpu_speed.cpu_speedups_enabled(plain)
    assert type(plain.lm_head) is nn.Linear


def test_the_model_file_does_not_know_the_speed_module():
    source = (Path(cpu_speed.__file__).parents[1] / "modeling_gpt1.py").read_text()
    for word in ("cpu_speed", "gpt1_fused", "_cpu_kernels", "kernels"):
        assert word not in source, word
