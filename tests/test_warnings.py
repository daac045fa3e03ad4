"""Deprecations are errors in the test suite (pyproject's filterwarnings), so a call of ours that transformers,
accelerate, peft or datasets deprecates fails a named test instead of scrolling by."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from hf_gpt1 import GPT1ForCausalLM
from testing_utils import REPO_ROOT, tiny_gpt1_config


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning, PendingDeprecationWarning])
def test_deprecation_warnings_are_errors_here(category):
    with pytest.raises(category):
        warnings.warn("a deprecated call", category, stacklevel=1)


def test_a_deprecated_argument_of_ours_is_an_error_in_the_suite():
    """transformers' own deprecation of `past_key_values=` (for `cache=`, 5.24) reaches a caller as a FutureWarning."""
    model = GPT1ForCausalLM(tiny_gpt1_config()).eval()
    with pytest.raises(FutureWarning, match="past_key_values"):
        model(torch.ones(1, 3, dtype=torch.long), past_key_values=None)


def test_the_ignored_library_deprecation_is_not_ours():
    """The one transformers deprecation pyproject ignores is raised for peft's call; no code of ours makes it."""
    sources = [*(REPO_ROOT / "hf_gpt1").rglob("*.py"), *(REPO_ROOT / "scripts").glob("*.py"),
               *(REPO_ROOT / "task_adapters").rglob("*.py")]  # fmt: skip
    assert sources
    offenders = [
        str(path.relative_to(REPO_ROOT)) for path in sources if "is_gradient_checkpointing" in Path(path).read_text()
    ]
    assert offenders == []
