"""Golden files: compare a rendered text with its file, or rewrite the file under ``--regenerate``."""

from __future__ import annotations

from pathlib import Path

import pytest


def check_golden(golden: Path, text: str, *, regenerate: bool, test_file: str) -> None:
    """``text`` must equal ``golden``; with ``regenerate`` the file is (re)written instead."""
    if regenerate:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    elif not golden.exists():
        pytest.fail(f"{golden.name} does not exist; run pytest {test_file} --regenerate", pytrace=False)
    else:
        assert text == golden.read_text(encoding="utf-8"), f"{golden.name} differs; --regenerate and review"
