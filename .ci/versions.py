"""Print the installed versions of the named distributions on one line: `python .ci/versions.py LABEL NAME...`.

The compatibility stages (`make test-newest`, `make test-lowest`) print this before their tests, so the CI log
shows which versions were tested. A full `pip freeze` of the environment is written beside it (freeze.txt).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path


def main() -> None:
    label, names = sys.argv[1], sys.argv[2:]
    versions = []
    for name in names:
        try:
            versions.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    print(f"[{label}] python=={platform.python_version()} " + " ".join(versions), flush=True)
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    (Path(sys.prefix) / "freeze.txt").write_text(freeze)


if __name__ == "__main__":
    main()
