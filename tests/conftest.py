"""Shared fixtures. Real data comes from ../shared/data (never copied into the project)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# Never reach for the real Hub from the test suite; tests that need a Hub start a local one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import hf_gpt1  # noqa: E402,F401  the installed package first, so tests/hf_gpt1/ cannot shadow it as a namespace package

sys.path.insert(0, str(TESTS_DIR))  # lets tests `import testing_utils`, `import hub_server`

from hub_server import hub_server  # noqa: E402,F401  (fixture: local Hub server; imported after the env defaults)

SHARED_DATA = Path(os.environ.get("HF_GPT1_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA} (set HF_GPT1_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer_dir(shared_data: Path) -> Path:
    return shared_data / "gpt1-tokenizer"


@pytest.fixture(scope="session")
def glue_dir(shared_data: Path) -> Path:
    return shared_data / "glue"
