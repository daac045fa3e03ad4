"""File modes of the folders we save: what a plain `open(path, "w")` / `mkdir` would give under the current umask.

Two writers we rely on create owner-only files: safetensors (0.8) writes every `*.safetensors` through a temporary
file created 0600 and renames it into place (safetensors/safetensors#782), and `tempfile.mkdtemp` creates 0700
folders. A saved model would then be readable by its owner only, while the config.json beside it is 0644: a serving
container running as another user, or a colleague on a shared disk, could read the config and fail on the weights.
Every save of ours therefore ends with `reset_modes_to_umask(staging folder)` before the rename into place, or, for a
save into a folder that may hold the user's own files, with `reset_modes_to_umask(each weights file)`. A umask of 077
still yields owner-only files: the user's umask decides, not the writer's temporary-file policy.

(A bare `model.save_pretrained(folder)` is transformers' and safetensors' code, unchanged by us; it behaves the same
for every model class.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["current_umask", "reset_modes_to_umask"]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (`/proc/self/status` on Linux).

    The portable way, `os.umask(0)` then restoring it, briefly leaves the process with umask 0: a file another thread
    creates in that window would be world-writable. It is only the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def reset_modes_to_umask(path: str | os.PathLike[str]) -> None:
    """Give `path` (and, for a folder, everything under it) the modes a plain create would: folders
    `0o777 & ~umask`, files `0o666 & ~umask` (an executable file keeps its execute bits under the same mask).
    Symlinks are left alone."""
    mask = current_umask()
    root = Path(path)
    paths = [root, *root.rglob("*")] if root.is_dir() and not root.is_symlink() else [root]
    for item in paths:
        info = item.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if stat.S_ISDIR(info.st_mode):
            wanted = 0o777 & ~mask
        else:
            executable = info.st_mode & 0o111
            wanted = (0o777 if executable else 0o666) & ~mask
        if stat.S_IMODE(info.st_mode) != wanted:
            os.chmod(item, wanted)
