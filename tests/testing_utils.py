"""Helpers shared by tests: tiny configs and reference (transformers OpenAIGPT*) models saved to disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import OpenAIGPTConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4)


def tiny_openai_config(**overrides) -> OpenAIGPTConfig:
    return OpenAIGPTConfig(**{**TINY, **overrides})


def tiny_gpt1_config(**overrides):
    from hf_gpt1 import GPT1Config

    return GPT1Config(**{**TINY, **overrides})


def no_dropout(**overrides) -> dict:
    return dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **overrides)


def save_reference(model_class, config: OpenAIGPTConfig, path: Path, seed: int = 0):
    """Instantiate a random transformers OpenAIGPT* model (biases and LayerNorms randomised too, so a
    wrong transpose or a swapped parameter cannot hide behind zeros/ones) and save it."""
    torch.manual_seed(seed)
    model = randomize_biases_and_norms(model_class(config), scale=0.1)
    model.save_pretrained(path)
    return model.eval()


def run_python(
    code: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (the real thing: a new process, real imports)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def randomize_biases_and_norms(model, scale: float = 0.2):
    """Move every bias and LayerNorm parameter off its init value (0 or 1), so that a wrong transpose, a swapped
    parameter or a skipped LayerNorm cannot hide behind zeros and ones. In place; returns the model."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * scale)
    return model


def assert_steps_equal_full_forward(model, out, prompt_len: int, *, atol: float, rtol: float = 0.0,
                                    attention_mask=None, **forward_kwargs):  # fmt: skip
    """A `generate(..., return_dict_in_generate=True, output_logits=True)` result: the raw logits of generated step i
    equal the logits an uncached full forward over `out.sequences` gives at position prompt_len - 1 + i (scores, not
    only tokens: a tiny random model's greedy tokens survive a cache that forgets). `attention_mask` (of the prompt)
    is extended over the generated tokens."""
    sequences = out.sequences
    if attention_mask is not None:
        new = sequences.shape[1] - attention_mask.shape[1]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], new)], dim=1)
        forward_kwargs["attention_mask"] = attention_mask
    with torch.no_grad():
        full = model(sequences, **forward_kwargs).logits.float()
    assert len(out.logits) == sequences.shape[1] - prompt_len
    for step, logits in enumerate(out.logits):
        torch.testing.assert_close(
            logits.float(), full[:, prompt_len - 1 + step], atol=atol, rtol=rtol, msg=lambda m: f"step {step}: {m}"
        )


def tiny_pretraining_model(tokenizer=None, seed: int = 0, **overrides):
    """A 2-layer, 16-wide GPT1ForCausalLM (vocabulary: the tokenizer's, else 99), seeded for reproducible weights."""
    from hf_gpt1 import GPT1Config, GPT1ForCausalLM

    vocab = len(tokenizer) if tokenizer is not None else 99
    config = GPT1Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, **overrides)
    torch.manual_seed(seed)
    return GPT1ForCausalLM(config)


def assert_modes_follow_umask(*paths: Path) -> None:
    """Every file (and folder) at or under `paths` has the mode a plain create gives under the current umask: what
    `hf_gpt1.file_modes` promises for our saves (safetensors alone writes weights 0600, mkdtemp folders 0700)."""
    import stat

    from hf_gpt1.file_modes import current_umask

    mask = current_umask()
    wrong = {}
    for root in paths:
        for item in [root, *root.rglob("*")] if root.is_dir() else [root]:
            wanted = (0o777 if item.is_dir() else 0o666) & ~mask
            if stat.S_IMODE(item.stat().st_mode) != wanted:
                wrong[str(item)] = oct(stat.S_IMODE(item.stat().st_mode))
    assert not wrong, f"modes other than the umask's {oct(0o666 & ~mask)} / {oct(0o777 & ~mask)}: {wrong}"
