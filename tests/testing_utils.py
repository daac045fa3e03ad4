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
    model = model_class(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
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
