"""Unit tests of hf_gpt1.pretraining: presets and model configs, run length, LoRA settings, and the shipped
Accelerate configs. The real GPT-1 tokenizer and real peft/accelerate objects; no mocks. The corpus and the output
folder have their own test modules (test_pretraining_corpus.py, test_pretraining_output.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_gpt1 import pretraining as pt
from testing_utils import tiny_pretraining_model as _tiny_model

# ----------------------------------------------------------------------------------------------------------------------
# Model presets and configs
# ----------------------------------------------------------------------------------------------------------------------


def test_gpt1_preset_is_the_papers_117m_model():
    from hf_gpt1 import GPT1ForCausalLM

    config = pt.resolve_model_config("gpt1")
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (12, 768, 12, 512)
    assert (config.resid_pdrop, config.attn_pdrop, config.embd_pdrop) == (0.1, 0.1, 0.1)
    config.vocab_size = 40478 + 4
    with torch.device("meta"):
        model = GPT1ForCausalLM(config)
    assert 116e6 < model.num_parameters() < 118e6
    preset = pt.PRESETS["gpt1"]
    assert (preset.learning_rate, preset.warmup_steps, preset.batch_size, preset.num_epochs) == (2.5e-4, 2000, 64, 100)
    for name in ("gpt1-mini", "gpt1-tiny"):
        assert pt.PRESETS[name].warmup_steps < 2000 and pt.PRESETS[name].max_steps


def test_model_config_from_json_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"n_layer": 3, "n_embd": 48, "n_head": 4, "n_positions": 96}), encoding="utf-8")
    config = pt.resolve_model_config(str(path), resid_pdrop=0.0, attn_pdrop=None)
    assert (config.n_layer, config.n_embd, config.n_positions, config.resid_pdrop, config.attn_pdrop) == (
        3,
        48,
        96,
        0.0,
        0.1,
    )

    openai = tmp_path / "openai.json"
    openai.write_text(
        json.dumps({"model_type": "openai-gpt", "n_layer": 2, "n_embd": 32, "n_head": 2}), encoding="utf-8"
    )
    assert pt.resolve_model_config(str(openai)).n_embd == 32

    bert = tmp_path / "bert.json"
    bert.write_text(json.dumps({"model_type": "bert", "hidden_size": 32}), encoding="utf-8")
    with pytest.raises(pt.PretrainingError, match="model_type='bert'"):
        pt.resolve_model_config(str(bert))
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"n_layers": 2}), encoding="utf-8")
    with pytest.raises(pt.PretrainingError, match=r"unknown GPT1Config field\(s\) \['n_layers'\]"):
        pt.resolve_model_config(str(typo))
    with pytest.raises(pt.PretrainingError, match="neither a preset"):
        pt.resolve_model_config("gpt1-huge")


def test_build_model_includes_special_tokens_in_the_vocabulary(tokenizer):
    model = pt.build_model(tokenizer, model_config="gpt1-tiny", dropout=0.0)
    assert model.config.vocab_size == len(tokenizer) == 40482
    assert model.get_input_embeddings().weight.shape[0] == 40482
    assert model.config.start_token_id == tokenizer.convert_tokens_to_ids("_start_") == 40478
    assert model.config.pad_token_id == 40481
    assert model.config.resid_pdrop == model.config.attn_pdrop == 0.0
    assert model.lm_head.weight.data_ptr() == model.transformer.tokens_embed.weight.data_ptr()
    eager = pt.build_model(tokenizer, model_config="gpt1-tiny", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"


def test_init_from_an_openai_gpt_checkpoint_converts_and_grows_the_vocabulary(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(0)
    source = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=40478, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    source.save_pretrained(tmp_path / "openai")
    pt.check_init_from_model_type(str(tmp_path / "openai"))
    model = pt.build_model(tokenizer, init_from=str(tmp_path / "openai"), dropout=0.0)
    assert model.config.model_type == "gpt1" and model.config.vocab_size == 40482
    assert model.config.resid_pdrop == 0.0 and model.config.extract_token_id == 40480
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[:40478], source.transformer.tokens_embed.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        model.transformer.h[1].attn.c_attn.weight, source.transformer.h[1].attn.c_attn.weight.t(), rtol=0, atol=0
    )

    BertModel(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(pt.PretrainingError, match="holds a 'bert' checkpoint"):
        pt.check_init_from_model_type(str(tmp_path / "bert"))
    with pytest.raises(pt.PretrainingError, match="no config.json found"):
        pt.check_init_from_model_type(str(tmp_path / "nothing-here"))


# ----------------------------------------------------------------------------------------------------------------------
# Run length
# ----------------------------------------------------------------------------------------------------------------------


def test_resolve_run_length():
    tiny, paper = pt.PRESETS["gpt1-tiny"], pt.PRESETS["gpt1"]
    assert pt.resolve_run_length(50, None, tiny, 1000, 8) == 50
    assert pt.resolve_run_length(None, None, tiny, 1000, 8) == tiny.max_steps
    assert pt.resolve_run_length(None, 2, tiny, 1000, 8) == 250
    assert pt.resolve_run_length(None, None, paper, 6400, 64) == 100 * 100  # the paper's 100 epochs


# ----------------------------------------------------------------------------------------------------------------------
# LoRA continued pretraining: adapter settings and a frozen base (its saves: test_pretraining_output.py)
# ----------------------------------------------------------------------------------------------------------------------


def test_apply_lora_trains_only_the_adapter(tokenizer):
    from hf_gpt1.tokenization_gpt1 import add_special_tokens

    model = _tiny_model(tokenizer)
    add_special_tokens(model, tokenizer)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    peft_model = pt.apply_lora(model, pt.lora_settings(r=4))
    trainable = [name for name, param in peft_model.named_parameters() if param.requires_grad]
    # 2 blocks x 4 linear layers x (A, B); no embedding rows (plain text never holds the task tokens), no head
    assert len(trainable) == 16 and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    description = pt.describe_trainable_parameters(peft_model)
    lora_count = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad)
    assert f"trainable parameters: {lora_count:,} of" in description and f"by kind: lora {lora_count:,})" in description
    assert peft_model.config.vocab_size == len(tokenizer)  # the config passes through, for the run identity

    # a training step moves the adapter and nothing else
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    ids = torch.randint(0, 40478, (2, 16), generator=torch.Generator().manual_seed(0))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    base = peft_model.get_base_model().state_dict()
    for name, tensor in before.items():
        key = (
            name.replace("c_attn.", "c_attn.base_layer.")
            .replace("c_proj.", "c_proj.base_layer.")
            .replace("c_fc.", "c_fc.base_layer.")
        )
        assert torch.equal(base[key], tensor), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in peft_model.named_parameters() if "lora_B" in n)

    with pytest.raises(pt.PretrainingError) as error:
        pt.apply_lora(_tiny_model(tokenizer), pt.lora_settings(target_modules=["q_proj"]))
    message = str(error.value)
    assert "--lora-target-modules q_proj" in message and "attn.c_attn" in message and "mlp.c_fc" in message


# ----------------------------------------------------------------------------------------------------------------------
# Shipped Accelerate configs
# ----------------------------------------------------------------------------------------------------------------------


def test_shipped_accelerate_configs(tmp_path):
    """The yaml files parse with accelerate's own loader, and FSDP wraps GPT1Block via _no_split_modules."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from hf_gpt1.modeling_gpt1 import GPT1Block

    folder = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    cpu = load_config_from_file(str(folder / "cpu_2proc.yaml"))
    assert cpu.num_processes == 2 and cpu.use_cpu
    ddp = load_config_from_file(str(folder / "multi_gpu_ddp.yaml"))
    assert ddp.distributed_type.value == "MULTI_GPU" and ddp.mixed_precision == "bf16"
    fsdp = load_config_from_file(str(folder / "fsdp.yaml"))
    assert fsdp.distributed_type.value == "FSDP"
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp.fsdp_config  # taken from _no_split_modules

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    plugin.set_auto_wrap_policy(_tiny_model())
    assert plugin.transformer_cls_names_to_wrap == ["GPT1Block"]
    assert plugin.auto_wrap_policy.func is transformer_auto_wrap_policy
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {GPT1Block}
