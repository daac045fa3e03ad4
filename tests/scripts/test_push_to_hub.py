"""scripts/push_to_hub.py, run as a user would: a fresh interpreter per call, talking to the local Hub server."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_gpt1 import GPT1ForSequenceClassification, add_special_tokens, load_gpt1_tokenizer
from hub_server import USER, HubServer, hub_env
from testing_utils import REPO_ROOT, tiny_gpt1_config

SCRIPT = REPO_ROOT / "scripts" / "push_to_hub.py"

pytestmark = pytest.mark.slow  # every test starts interpreters


@pytest.fixture(scope="module")
def checkpoint(tokenizer_dir, tmp_path_factory) -> Path:
    """A fine-tuning output folder: model + tokenizer, eval_results.json as scripts/finetune.py writes it, and
    training leftovers that must not be uploaded."""
    tokenizer = load_gpt1_tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT1ForSequenceClassification(tiny_gpt1_config(num_labels=2))
    add_special_tokens(model, tokenizer, generator=torch.Generator().manual_seed(0))
    folder = tmp_path_factory.mktemp("run")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = {"task": "sst2", "model": "openai-community/openai-gpt", "learning_rate": 6.25e-5, "lm_coef": 0.5}
    (folder / "eval_results.json").write_text(
        json.dumps({"eval_accuracy": 0.875, "eval_loss": 0.4, "epoch": 3.0, "task": "sst2", "settings": settings})
    )
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"\0" * 64)
    (folder / "training_args.bin").write_bytes(b"pickle")
    return folder


def folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _closed_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _isolated_env(tmp_path: Path, endpoint: str, token: str = "") -> dict[str, str]:
    """A user without stored credentials (empty HF_HOME), talking to `endpoint`."""
    home = tmp_path / "hf_home"
    return {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_OFFLINE": "0",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


def test_dry_run_lists_files_without_network(checkpoint, tmp_path):
    before = folder_hash(checkpoint)
    result = run_script(
        str(checkpoint), f"{USER}/gpt1-sst2", "--dry-run", env=_isolated_env(tmp_path, _closed_endpoint())
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Would upload 11 file(s)") and f"to {USER}/gpt1-sst2" in lines[0]
    listed = {line.split()[0]: line for line in lines[1:]}
    assert set(listed) == {
        "README.md",
        "config.json",
        "configuration_gpt1.py",
        "conversion_gpt1.py",
        "input_checks_gpt1.py",
        "modeling_gpt1.py",
        "modeling_outputs_gpt1.py",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "eval_results.json",
    }
    assert "rendered" in listed["README.md"] and "MB" in listed["model.safetensors"]
    assert folder_hash(checkpoint) == before  # the card is only rendered, not written


def test_push(checkpoint, hub_server: HubServer, tmp_path):
    before = folder_hash(checkpoint)
    repo_id = f"{USER}/gpt1-sst2-cli"
    env = hub_env(hub_server, home=tmp_path / "hf_home")
    result = run_script(str(checkpoint), repo_id, "--private", "--commit-message", "GPT-1 on SST-2", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("Uploaded 11 file(s)") and "Commit: " in result.stdout

    files = hub_server.files(repo_id)
    assert set(files) == {
        ".gitattributes",
        "README.md",
        "config.json",
        "configuration_gpt1.py",
        "conversion_gpt1.py",
        "input_checks_gpt1.py",
        "modeling_gpt1.py",
        "modeling_outputs_gpt1.py",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "eval_results.json",
    }
    assert hub_server.repo(repo_id).private
    assert hub_server.commits(repo_id)[0].title == "GPT-1 on SST-2"
    metadata = yaml.safe_load(files["README.md"].decode().split("---\n", 2)[1])
    assert {"library_name", "pipeline_tag", "tags", "license", "datasets", "model-index", "base_model"} <= set(metadata)
    assert metadata["model-index"][0]["results"][0]["metrics"] == [{"type": "accuracy", "value": 0.875}]
    # The card now lives in the folder too (same bytes as on the Hub); nothing else changed.
    assert (checkpoint / "README.md").read_bytes() == files["README.md"]
    (checkpoint / "README.md").unlink()
    assert folder_hash(checkpoint) == before


# Permission errors (other namespace, read-only token), invalid tokens and offline mode are covered in-process by
# tests/hf_gpt1/test_hub.py; here: one error found before any request and one from the network, as the CLI shows them.
@pytest.mark.parametrize("case", ["no-token", "network-down"])
def test_errors_are_clear_and_leave_the_folder_untouched(case, checkpoint, hub_server: HubServer, tmp_path):
    before = folder_hash(checkpoint)
    repo_id, env = f"{USER}/gpt1-error", _isolated_env(tmp_path, hub_server.url, token=hub_server.token)
    if case == "no-token":
        env["HF_TOKEN"] = ""
        expected = ["no Hugging Face token found", "huggingface-cli login", "HF_TOKEN", "--token"]
    else:
        env["HF_ENDPOINT"] = _closed_endpoint()
        expected = ["unreachable", "network connection", env["HF_ENDPOINT"]]
    result = run_script(str(checkpoint), repo_id, env=env)
    assert result.returncode == 1, (result.stdout, result.stderr[-3000:])
    assert result.stderr.startswith("push_to_hub.py: error: ") and "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "is unchanged" in result.stderr
    assert folder_hash(checkpoint) == before
    assert not any(r.path.endswith("/commit/main") for r in hub_server.requests)


def test_invalid_folder_exits_2(checkpoint, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    result = run_script(str(tmp_path), f"{USER}/x", "--dry-run", env=_isolated_env(tmp_path, _closed_endpoint()))
    assert result.returncode == 2
    assert "not a publishable GPT-1 checkpoint" in result.stderr and "expected 'gpt1'" in result.stderr
    assert "no weights" in result.stderr and "tokenizer_config.json is missing" in result.stderr
