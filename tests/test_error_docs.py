"""docs/dbus-api.md names every error code a caller can receive."""

from __future__ import annotations

from pathlib import Path

from vm2kvmd.errors import ErrorCode

DOC = Path(__file__).resolve().parents[1] / "docs" / "dbus-api.md"


def test_every_error_code_is_documented() -> None:
    text = DOC.read_text()
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in text]
    assert missing == []
