"""hf_gpt1.file_modes: saved folders get the modes of a plain create under the user's umask, whatever the writer's
temporary files had (safetensors' 0600 weights, mkdtemp's 0700 folders). Real files, real umasks; the save paths that
use it are checked where they are tested (trainer, pretraining output, conversion, PEFT adapters)."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from hf_gpt1.file_modes import current_umask, reset_modes_to_umask


@contextlib.contextmanager
def _umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_safetensors_alone_writes_weights_owner_only(tmp_path):
    """Why the module exists. If a safetensors release fixes safetensors#782 this fails: the workaround can go."""
    with _umask(0o022):
        save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
        (tmp_path / "config.json").write_text("{}")
    assert (_mode(tmp_path / "model.safetensors"), _mode(tmp_path / "config.json")) == (0o600, 0o644)


def test_current_umask_reads_without_changing_it():
    for mask in (0o022, 0o077, 0o002):
        with _umask(mask):
            assert current_umask() == mask
            assert current_umask() == mask  # unchanged by the first read
    # A fresh process started with a given umask reports it (not this process's, not a default).
    code = "from hf_gpt1.file_modes import current_umask; print(oct(current_umask()))"
    result = subprocess.run(
        [sys.executable, "-c", f"import os; os.umask(0o027); {code}"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "0o27"


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_a_staged_folder_gets_the_umask_modes(tmp_path, mask, file_mode, dir_mode):
    import tempfile

    with _umask(mask):
        staged = tempfile.mkdtemp(dir=tmp_path)  # 0700, as conversions stage their output
        save_file({"w": torch.zeros(2)}, os.path.join(staged, "model.safetensors"))
        os.makedirs(os.path.join(staged, "sub"), mode=0o700)
        open(os.path.join(staged, "sub", "adapter_model.safetensors"), "wb").close()
        os.chmod(os.path.join(staged, "sub", "adapter_model.safetensors"), 0o600)
        script = os.path.join(staged, "run.sh")
        open(script, "w").close()
        os.chmod(script, 0o700)
        reset_modes_to_umask(staged)
    assert _mode(staged) == dir_mode and _mode(os.path.join(staged, "sub")) == dir_mode
    assert _mode(os.path.join(staged, "model.safetensors")) == file_mode
    assert _mode(os.path.join(staged, "sub", "adapter_model.safetensors")) == file_mode
    assert _mode(script) == dir_mode  # an executable stays executable, under the same mask


def test_a_single_file_is_reset_and_its_neighbours_and_link_targets_are_not(tmp_path):
    weights, private, outside = tmp_path / "model.safetensors", tmp_path / "notes.txt", tmp_path / "outside.txt"
    for path in (weights, private, outside):
        path.write_text("x")
        os.chmod(path, 0o600)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "link").symlink_to(outside)
    with _umask(0o022):
        reset_modes_to_umask(weights)
        reset_modes_to_umask(folder)
    assert (_mode(weights), _mode(private), _mode(outside)) == (0o644, 0o600, 0o600)
