"""Print pip constraints that pin every declared dependency to its floor (`name>=X` -> `name==X`).

    python .ci/lowest_constraints.py [--extras dev] [--pyproject pyproject.toml] > constraints.txt

Reads [project].dependencies of pyproject.toml (plus the named optional-dependency groups) and turns each lower bound
into an exact pin, so `pip install -c constraints.txt -e ".[dev]"` builds the environment of the lowest versions we
declare (`make test-lowest`). Dependencies of our dependencies are not pinned: they resolve freely.

Every requirement must carry a `>=` floor (a range without one has no "lowest" to test): the script exits 1 naming
any requirement that lacks it. Requirements whose environment marker is false here are skipped.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a fresh venv has no packaging of its own, but pip carries one
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name


def floor_pins(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"{pyproject}: no optional-dependencies group {extra!r} (have: {sorted(optional)})")
        lines += optional[extra]

    pins: dict[str, str] = {}
    missing: list[str] = []
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        floors = [spec.version for spec in req.specifier if spec.operator == ">="]
        if len(floors) != 1:
            missing.append(line)
            continue
        name = canonicalize_name(req.name)
        if name in pins and pins[name] != floors[0]:
            raise SystemExit(f"{name} is declared with two floors: {pins[name]} and {floors[0]}")
        pins[name] = floors[0]
    if missing:
        raise SystemExit(
            "every dependency needs exactly one '>=' floor so the lowest versions are defined; without one: "
            + ", ".join(missing)
        )
    return [f"{name}=={version}" for name, version in pins.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    parser.add_argument("--extras", action="append", default=[], help="optional-dependencies group to include")
    args = parser.parse_args()
    pins = floor_pins(args.pyproject, args.extras)
    print(f"# lowest declared versions, from {args.pyproject.name} (.ci/lowest_constraints.py); do not edit")
    print("\n".join(pins))


if __name__ == "__main__":
    sys.exit(main())
