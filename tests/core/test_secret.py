"""A secret (a BitLocker key) is never shown: not by repr, str, a dataclass or a partial."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vm2kvmd.core.secret import Secret

KEY = "424242-131313-575757-686868-797979-808080-919191-020202"


@dataclass(frozen=True)
class Holder:
    key: Secret | None


def test_a_secret_is_not_shown() -> None:
    secret = Secret(KEY)
    partial = functools.partial(print, key=secret)
    for text in (repr(secret), str(secret), f"{secret}", repr(Holder(secret)), repr(partial)):
        assert KEY not in text, text
    assert secret.text == KEY


def test_scrub_replaces_an_echoed_secret() -> None:
    secret = Secret(KEY)
    assert secret.scrub(f"cryptsetup: bad key {KEY} for /dev/sda2") == "cryptsetup: bad key *** for /dev/sda2"
    assert secret.scrub("No key available with this passphrase.") == "No key available with this passphrase."
    assert Secret("").scrub("text") == "text"
