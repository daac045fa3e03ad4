"""Fixtures shared by the hf_gpt1 unit tests (a module may define its own fixture of the same name instead)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    """The real GPT-1 tokenizer; one per test module, since building a model may add special tokens to it."""
    from hf_gpt1.tokenization_gpt1 import load_gpt1_tokenizer

    return load_gpt1_tokenizer(tokenizer_dir)


@pytest.fixture
def accelerator():
    """A real CPU Accelerator; accelerate's process-wide state is reset afterwards so tests stay independent."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    accelerator = Accelerator(cpu=True)
    yield accelerator
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
