"""Fixtures for the task adapter tests: the real GPT-1 tokenizer and writers for small data files in
the exact formats of the original releases (for tasks whose data is not in shared/)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import datasets
import pytest

datasets.disable_progress_bars()


@pytest.fixture(scope="session")
def gpt1_tokenizer(tokenizer_dir: Path):
    from hf_gpt1.tokenization_gpt1 import load_gpt1_tokenizer

    return load_gpt1_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def rocstories_dir(shared_data: Path) -> Path:
    return shared_data / "rocstories"


class Writers:
    """Write data files in the original formats. Exposed as the ``files`` fixture because test
    modules are imported by path and cannot share a helper module."""

    @staticmethod
    def tsv(
        path: Path, rows: Sequence[Sequence[object]], header: Sequence[str] | None = None, bom: bool = False
    ) -> Path:
        """GLUE-style TSV: tab-separated, no quoting, ``\\n`` line ends (as download_glue_data.py)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["\t".join(header)] if header is not None else []
        lines += ["\t".join(str(x) for x in row) for row in rows]
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    @staticmethod
    def csv(path: Path, rows: Sequence[Sequence[object]], header: Sequence[str]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        return path

    @staticmethod
    def jsonl(path: Path, records: Sequence[dict]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    @staticmethod
    def json(path: Path, obj: object) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj), encoding="utf-8")
        return path


@pytest.fixture(scope="session")
def files() -> Writers:
    return Writers()
