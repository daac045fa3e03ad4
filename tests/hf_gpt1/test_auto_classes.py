"""Auto-class registration, save/load round trips, remote code without the plugin, pipelines."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    OpenAIGPTLMHeadModel,
    pipeline,
)

import hf_gpt1
from hf_gpt1 import (
    GPT1Config,
    GPT1DoubleHeadsModel,
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1Model,
)
from testing_utils import run_python, save_reference, tiny_gpt1_config, tiny_openai_config

AUTO_CASES = [
    (AutoModel, GPT1Model, (2, 7)),
    (AutoModelForCausalLM, GPT1ForCausalLM, (2, 7)),
    (AutoModelForSequenceClassification, GPT1ForSequenceClassification, (2, 7)),
    (AutoModelForMultipleChoice, GPT1ForMultipleChoice, (2, 3, 7)),
]


def _first_output(output):
    return output.logits if hasattr(output, "logits") and output.logits is not None else output.last_hidden_state


def test_auto_config_knows_gpt1():
    config = AutoConfig.for_model("gpt1", n_layer=3)
    assert isinstance(config, GPT1Config) and config.n_layer == 3


@pytest.mark.parametrize("auto_class, model_class, shape", AUTO_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_save_and_load_round_trip_via_auto_classes(tmp_path, auto_class, model_class, shape):
    torch.manual_seed(0)
    model = auto_class.from_config(tiny_gpt1_config(num_labels=3)).eval()
    assert type(model) is model_class
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_gpt1.py", "configuration_gpt1.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_gpt1.GPT1Config"
    assert auto_map[auto_class.__name__] == f"modeling_gpt1.{model_class.__name__}"

    loaded = auto_class.from_pretrained(tmp_path).eval()  # plugin installed: no trust_remote_code needed
    assert type(loaded) is model_class
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    input_ids = torch.randint(0, 99, shape)
    with torch.no_grad():
        torch.testing.assert_close(_first_output(loaded(input_ids)), _first_output(model(input_ids)))


def test_double_heads_round_trip(tmp_path):
    model = GPT1DoubleHeadsModel(tiny_gpt1_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = GPT1DoubleHeadsModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 99, (1, 2, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).mc_logits, model(ids).mc_logits)


def test_tied_lm_head_is_stored_once(tmp_path):
    from safetensors import safe_open

    GPT1ForCausalLM(tiny_gpt1_config()).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "transformer.tokens_embed.weight" in keys and "lm_head.weight" not in keys


# Blocks `import hf_gpt1` in the child interpreter, as on a machine without the plugin.
_BLOCK_PLUGIN = textwrap.dedent(
    """
    import sys
    class _NoPlugin:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_gpt1" or name.startswith("hf_gpt1."):
                raise ImportError("hf_gpt1 is not installed here")
    sys.meta_path.insert(0, _NoPlugin())
    """
)


@pytest.mark.slow
def test_trust_remote_code_loads_without_the_plugin(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = GPT1ForSequenceClassification(tiny_gpt1_config(num_labels=3)).eval()
    model_dir = tmp_path / "ckpt"
    model.save_pretrained(model_dir)
    input_ids = torch.randint(0, 99, (2, 2, 8))  # similarity-shaped input exercises the remote head fully
    torch.save(input_ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = model(input_ids).logits
    # Batch-1 bf16 decoding: the remote modeling file is the plain model (the CPU speed paths live in the package's
    # hf_gpt1.cpu_speed, which it never imports) and decodes as the plugin's plain model does.
    lm = GPT1ForCausalLM(tiny_gpt1_config()).to(torch.bfloat16).eval()
    lm.save_pretrained(tmp_path / "lm")
    prompt = input_ids[0, :1]
    with torch.inference_mode():
        expected_tokens = lm.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)

    code = _BLOCK_PLUGIN + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoModelForCausalLM
        try:
            import hf_gpt1
            raise SystemExit("plugin was importable")
        except ImportError:
            pass
        try:
            AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r}, trust_remote_code=False)
            raise SystemExit("loading without trust_remote_code should be refused")
        except ValueError as err:
            assert "trust_remote_code" in str(err), err
        model = AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert "hf_gpt1" not in sys.modules
        with torch.no_grad():
            logits = model(torch.load({str(tmp_path / "ids.pt")!r})).logits
        torch.save(logits, {str(tmp_path / "remote_logits.pt")!r})
        print(type(model).__name__)
        lm = AutoModelForCausalLM.from_pretrained({str(tmp_path / "lm")!r}, trust_remote_code=True).eval()
        assert lm.dtype == torch.bfloat16, lm.dtype
        with torch.inference_mode():
            tokens = lm.generate(torch.tensor({prompt.tolist()!r}), max_new_tokens=5,
                                 do_sample=False, pad_token_id=0, eos_token_id=None)
        remote_module = sys.modules[type(lm).__module__]
        assert not hasattr(remote_module, "_CPU_KERNELS") and "cpu_speed" not in open(remote_module.__file__).read()
        assert "hf_gpt1" not in sys.modules
        torch.save(tokens, {str(tmp_path / "remote_tokens.pt")!r})
        """
    )
    result = run_python(code, env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GPT1ForSequenceClassification" in result.stdout
    torch.testing.assert_close(torch.load(tmp_path / "remote_logits.pt"), expected)
    assert torch.equal(torch.load(tmp_path / "remote_tokens.pt"), expected_tokens)


def test_openai_gpt_checkpoint_loads_through_our_auto_class_path(tmp_path):
    """`GPT1ForCausalLM.from_pretrained` on an openai-gpt folder converts config and weights; saving gives gpt1."""
    reference = save_reference(OpenAIGPTLMHeadModel, tiny_openai_config(), tmp_path / "openai")
    ours = GPT1ForCausalLM.from_pretrained(tmp_path / "openai").eval()
    ours.save_pretrained(tmp_path / "gpt1")
    assert json.loads((tmp_path / "gpt1" / "config.json").read_text())["model_type"] == "gpt1"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "gpt1").eval()
    ids = torch.randint(0, 99, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, reference(ids).logits, atol=1e-5, rtol=0)


def test_text_generation_pipeline(tmp_path, tokenizer_dir):
    from hf_gpt1.tokenization_gpt1 import load_gpt1_tokenizer

    tokenizer = load_gpt1_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_gpt1_config(vocab_size=len(tokenizer), n_positions=128))
    hf_gpt1.tokenization_gpt1.add_special_tokens(model, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    generator = pipeline("text-generation", model=str(tmp_path))
    assert isinstance(generator.model, GPT1ForCausalLM)
    prompt = "the old man and the sea"
    out = generator(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert out[0]["generated_text"].startswith(prompt)
    # A random model may pick special tokens, which decode to nothing: count the tokens, not the characters.
    (ids,) = generator(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False, return_tensors=True)
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert list(ids["generated_token_ids"][: len(prompt_ids)]) == prompt_ids
    assert len(ids["generated_token_ids"]) == len(prompt_ids) + 8
